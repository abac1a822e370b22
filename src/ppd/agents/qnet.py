"""The Q-network: one score per prompt row, weights shared across images and set sizes.

A DeepSets-style network: every row (a prompt's features plus the state's context)
is embedded by a shared MLP; masked mean- and max-pooling over the valid rows
gives a summary of the whole prompt set; a second shared MLP scores each row from
its embedding, the summary and the context. Relations between prompts in both
spaces of the dual graph arrive pre-aggregated in the row features (see
``ppd.game.observation``), which is what lets a per-row network see them. An
optional extra head scores the defender's "stop" action from the summary alone.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class QNet(nn.Module):
    def __init__(self, n_slot: int, n_ctx: int, hidden: int = 128, n_actions: int | None = None,
                 stop: bool = False) -> None:
        super().__init__()
        self.n_actions = n_actions  # rows that are actions (attacker: its pool rows); None = all rows
        self.stop = stop
        self.embed = mlp([n_slot + n_ctx, hidden, hidden])
        self.head = mlp([hidden + 2 * hidden + n_ctx, hidden, 1])
        self.stop_head = mlp([2 * hidden + n_ctx, hidden, 1]) if stop else None

    def forward(self, slots: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """(B, R, F), (B, C) -> Q-values (B, A): A = n_actions or R rows (+1 for stop)."""
        b, r, _ = slots.shape
        valid = slots[..., 0] > 0.5  # feature 0 marks real rows
        # rows past the last valid row of the whole batch are padding: skip them, score -inf-free 0
        keep = int(valid.any(0).nonzero().max()) + 1 if valid.any() else 1
        x = slots[:, :keep]
        v = valid[:, :keep, None]
        ctx = context[:, None, :].expand(b, keep, -1)
        h = torch.relu(self.embed(torch.cat([x, ctx], -1)))
        cnt = v.sum(1).clamp(min=1)
        mean = (h * v).sum(1) / cnt
        mx = torch.where(v, h, torch.full_like(h, -1e4)).max(1).values
        mx = torch.where(v.any(1), mx, torch.zeros_like(mx))
        summary = torch.cat([mean, mx, context], -1)  # (B, 2H + C)
        # head layer 1 on [h_i, summary] computed as W_h h_i + (W_s summary + b): the summary
        # part once per state instead of once per row (same parameters, ~3x fewer FLOPs)
        first, rest = self.head[0], self.head[1:]
        hid = h.shape[-1]
        z = h @ first.weight[:, :hid].T + (summary @ first.weight[:, hid:].T + first.bias)[:, None, :]
        q_rows = rest(z)[..., 0]
        q = torch.zeros(b, r, dtype=q_rows.dtype)
        q[:, :keep] = q_rows
        if self.n_actions is not None:
            q = q[:, : self.n_actions]
        if self.stop_head is not None:
            q = torch.cat([q, self.stop_head(summary)], 1)
        return q
