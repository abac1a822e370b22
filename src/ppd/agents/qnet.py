"""The Q-network: one score per prompt row, weights shared across images and set sizes.

A DeepSets-style network: every row (a prompt's features plus the state's context)
is embedded by a shared MLP; masked mean- and max-pooling over the valid rows
gives a summary of the whole prompt set; a second shared MLP scores each row from
its embedding, the summary and the context. Relations between prompts in both
spaces of the dual graph arrive pre-aggregated in the row features (see
``ppd.game.observation``), which is what lets a per-row network see them. An
optional extra head scores the defender's "stop" action from the summary alone.
:class:`MPQNet` adds message passing between the prompts over the dual-space graph
(``DQNConfig.arch = "mp"``); docs/TRAINING.md compares the two.
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
                 stop: bool = False, slot_cols: list[int] | None = None, ctx_cols: list[int] | None = None) -> None:
        super().__init__()
        # the observation columns this network reads (None = all): an agent trained on fewer
        # features than the game now offers keeps reading exactly the ones it was trained on
        self.slot_cols = None if slot_cols is None else torch.tensor(slot_cols, dtype=torch.long)
        self.ctx_cols = None if ctx_cols is None else torch.tensor(ctx_cols, dtype=torch.long)
        if slot_cols is not None:
            n_slot, n_ctx = len(slot_cols), len(ctx_cols if ctx_cols is not None else range(n_ctx))
        self.n_actions = n_actions  # rows that are actions (attacker: its pool rows); None = all rows
        self.stop = stop
        self.embed = mlp([n_slot + n_ctx, hidden, hidden])
        self.head = mlp([hidden + 2 * hidden + n_ctx, hidden, 1])
        self.stop_head = mlp([2 * hidden + n_ctx, hidden, 1]) if stop else None

    def rows(self, slots: torch.Tensor, context: torch.Tensor, valid: torch.Tensor,
             pairs: torch.Tensor | None) -> torch.Tensor:
        """(B, R, H) embedding of every row (DeepSets: each row on its own)."""
        # layer 1 on [slot_i, context] as W_s slot_i + (W_c context + b): the context part once per
        # state instead of once per row (same parameters; no (B, R, F + C) copy)
        first, rest = self.embed[0], self.embed[1:]
        n = slots.shape[-1]
        z = slots @ first.weight[:, :n].T + (context @ first.weight[:, n:].T + first.bias)[:, None, :]
        return torch.relu(rest(z))

    def forward(self, slots: torch.Tensor, context: torch.Tensor, pairs: torch.Tensor | None = None) -> torch.Tensor:
        """(B, R, F), (B, C) [, (B, R, R) node cosines] -> Q-values (B, A): A = n_actions or R rows (+1 for stop)."""
        if self.slot_cols is not None:
            slots = slots.index_select(-1, self.slot_cols)
        if self.ctx_cols is not None:
            context = context.index_select(-1, self.ctx_cols)
        b, r, _ = slots.shape
        valid = slots[..., 0] > 0.5  # feature 0 marks real rows
        # rows past the last valid row of the whole batch are padding: skip them, score -inf-free 0
        keep = int(valid.any(0).nonzero().max()) + 1 if valid.any() else 1
        x = slots[:, :keep]
        v = valid[:, :keep, None]
        h = self.rows(x, context, valid[:, :keep], pairs)
        cnt = v.sum(1).clamp(min=1)
        hv = h * v
        mean = hv.sum(1) / cnt
        mx = hv.amax(1)  # h >= 0 (ReLU), so zeroed padding rows never win a max over real rows
        summary = torch.cat([mean, mx, context], -1)  # (B, 2H + C)
        # head layer 1 on [h_i, summary] computed as W_h h_i + (W_s summary + b): the summary
        # part once per state instead of once per row (same parameters, ~3x fewer FLOPs)
        # (only rows that are actions are scored: the attacker's ideal rows feed the pooling only)
        first, rest = self.head[0], self.head[1:]
        hid = h.shape[-1]
        scored = keep if self.n_actions is None else min(keep, self.n_actions)
        z = h[:, :scored] @ first.weight[:, :hid].T + (summary @ first.weight[:, hid:].T + first.bias)[:, None, :]
        q_rows = rest(z)[..., 0]
        q = torch.zeros(b, r if self.n_actions is None else self.n_actions, dtype=q_rows.dtype)
        q[:, :scored] = q_rows
        if self.stop_head is not None:
            q = torch.cat([q, self.stop_head(summary)], 1)
        return q


class MPQNet(QNet):
    """Message passing over the prompts' dual-space graph, then the same pooled head as :class:`QNet`.

    Each of ``layers`` rounds (default 1: a second doubled the update time) lets
    every prompt attend to every other valid prompt (4 heads); the attention
    logits get a learned per-head bias from the two spaces of the graph: the
    feature-space cosine between the prompts' nodes (``pairs``, from the
    observation) and their physical distance (from the rows' x, y). So a prompt's
    score can depend on *which* other prompts are near it in
    either space, not only on the pooled statistics the row features carry.
    """

    def __init__(self, n_slot: int, n_ctx: int, hidden: int = 128, n_actions: int | None = None,
                 stop: bool = False, slot_cols: list[int] | None = None, ctx_cols: list[int] | None = None,
                 layers: int = 1, heads: int = 4, xy_cols: tuple[int, int] = (3, 4)) -> None:
        super().__init__(n_slot, n_ctx, hidden, n_actions, stop, slot_cols, ctx_cols)
        self.heads, self.xy_cols = heads, xy_cols
        self.qkv = nn.ModuleList(nn.Linear(hidden, 3 * hidden) for _ in range(layers))
        self.edge = nn.ModuleList(nn.Linear(2, heads) for _ in range(layers))  # (cos, dist) -> bias per head
        self.update = nn.ModuleList(mlp([2 * hidden, hidden, hidden]) for _ in range(layers))

    def rows(self, slots: torch.Tensor, context: torch.Tensor, valid: torch.Tensor,
             pairs: torch.Tensor | None) -> torch.Tensor:
        h = super().rows(slots, context, valid, pairs)  # each row embedded on its own, then messages
        b, r, hid = h.shape
        nh, d = self.heads, hid // self.heads
        xy = slots[..., list(self.xy_cols)]
        dist = (xy[:, :, None, :] - xy[:, None, :, :]).square().sum(-1).add(1e-12).sqrt()  # (B, R, R)
        cos = pairs[:, :r, :r] if pairs is not None else torch.zeros_like(dist)
        edges = torch.stack([cos, dist], -1)  # (B, R, R, 2)
        blocked = ~valid[:, None, None, :]  # never attend to padding rows
        for qkv, edge, upd in zip(self.qkv, self.edge, self.update, strict=True):
            q, k, v = qkv(h).view(b, r, 3, nh, d).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, R, d)
            logits = q @ k.transpose(-1, -2) / d**0.5 + edge(edges).permute(0, 3, 1, 2)
            att = torch.softmax(logits.masked_fill(blocked, -1e4), -1)
            msg = (att @ v).transpose(1, 2).reshape(b, r, hid)
            h = torch.relu(h + upd(torch.cat([h, msg], -1))) * valid[..., None]
        return h
