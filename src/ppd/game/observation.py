"""What an agent sees: fixed-shape per-prompt features and a small context vector.

Every prompt slot gets ``N_SLOT_FEATURES`` numbers in [-1, 1] (see ``SLOT_FEATURES``):
its status, label and position; SAM's current answer at the point; and its
relations, in both spaces of the dual graph, to the active positives, the active
negatives and the current mask (the mean feature of the nodes under the mask is
the "object prototype", of the others the "background prototype"). Provenance
(which prompts are harmful) is never part of the observation.

When a one-shot reference is known (``ppd.graph.Reference``: the reference
image's node features and mask shares), three more numbers per prompt say how
much its patch looks like the reference object (``ref_*``), and ``has_ref`` says
whether they mean anything; without one they are 0. (Beyond the paper, whose
defender never sees the reference: the object sought is otherwise unknown to it.)

The prompt x prompt feature / physical distance blocks are computed once per
episode (the layout is fixed within an episode); a step only re-weights them by
the active flags, and no N x N patch matrix is ever formed. A state is kept
compactly as a :class:`State` (its :class:`Episode` plus the active flags and
five numbers per prompt from SAM's answer); :func:`assemble` turns any batch of
them into observations, for the game (one at a time) and for the replay buffer
(a whole training batch at once), so both see exactly the same features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ppd.graph import DualGraph, Reference, prototypes
from ppd.prompts import PromptSet

SLOT_FEATURES = (
    "valid", "active", "label", "x", "y", "logit", "inside_mask", "label_agrees_with_mask",
    "sim_mask_proto", "sim_bg_proto", "mean_sim_pos", "max_sim_pos", "mean_sim_neg", "max_sim_neg",
    "min_dist_pos", "min_dist_neg", "knn_mask_frac", "node_mask_frac",
    "ref_sim", "ref_margin", "ref_knn_frac",
)
CONTEXT_FEATURES = ("sam_iou", "mask_area", "n_pos", "n_neg", "t_frac", "steps_left", "has_ref")
#: the features of agents trained before the one-shot reference was part of the game (ship1-3);
#: an agent reads the columns named in its checkpoint, so these still load and act as trained
LEGACY_SLOT_FEATURES = SLOT_FEATURES[:18]
LEGACY_CONTEXT_FEATURES = CONTEXT_FEATURES[:6]
N_SLOT_FEATURES = len(SLOT_FEATURES)
N_CONTEXT = len(CONTEXT_FEATURES)


@dataclass
class Geometry:
    """Per-episode, prompt-level view of the graph."""

    nodes: np.ndarray  # (P,) node of each slot
    feats: np.ndarray  # (P, C) unit features of each slot's node
    cos: np.ndarray  # (P, P) cosine similarity between slots
    dist: np.ndarray  # (P, P) normalised physical distance between slot points
    knn: np.ndarray  # (P, k) feature-space neighbours of each slot's node
    xy: np.ndarray  # (P, 2) position / image size
    scale: np.ndarray  # (2,) (W, H) / image diagonal: turns xy differences into normalised distances
    ref: np.ndarray | None = None  # (P, 3) reference features of each slot (Reference.prompt_features)


def geometry(graph: DualGraph, prompts: PromptSet, reference: Reference | None = None) -> Geometry:
    nodes = graph.node_of(prompts.points) if len(prompts) else np.zeros(0, np.int32)
    feats = graph.feats[nodes]
    h, w = graph.image_size
    xy = prompts.points.astype(np.float32) / np.array([w, h], np.float32)
    scale = np.array([w, h], np.float32) / graph.diagonal
    dist = pair_distances(torch.from_numpy(xy)[None], torch.from_numpy(scale)[None])[0].numpy()
    return Geometry(nodes=nodes, feats=feats, cos=feats @ feats.T, dist=dist, knn=graph.knn_feat[nodes], xy=xy,
                    scale=scale, ref=None if reference is None else reference.prompt_features(feats))


def pair_distances(xy: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, P, P) physical distances / image diagonal from (B, P, 2) positions / image size."""
    s = xy * scale[:, None, :]
    return torch.hypot(s[:, :, None, 0] - s[:, None, :, 0], s[:, :, None, 1] - s[:, None, :, 1])


#: what a decode says about each prompt slot (stored per state by the replay buffer; the rest
#: of an observation follows from the episode's layout and the active flags)
DECODE_COLUMNS = ("logit", "sim_mask_proto", "sim_bg_proto", "knn_mask_frac", "node_mask_frac")


def decode_columns(graph: DualGraph, geo: Geometry, slot_logits: np.ndarray,
                   node_frac: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(P, 5) ``DECODE_COLUMNS``, (P,) logit > 0, mask area: all an observation reads from a decode."""
    logit = slot_logits.astype(np.float32)
    frac = node_frac.astype(np.float32) / 255.0
    proto_m, proto_b = prototypes(frac, graph.feats)
    knn_frac = frac[geo.knn].mean(1) if geo.knn.shape[1] else frac[geo.nodes]
    cols = np.stack([np.tanh(logit / 8.0), geo.feats @ proto_m, geo.feats @ proto_b, knn_frac, frac[geo.nodes]], 1)
    return cols.astype(np.float32), logit > 0, float(frac.mean())


def _relations(cos_off: torch.Tensor, dist_off: torch.Tensor, sel: torch.Tensor):
    """Per slot, over the *other* selected slots (B, P): mean and max cosine, and the smallest
    distance (x2, capped at 1; 1 when there is none). ``cos_off`` / ``dist_off`` are the (B, P, P)
    cosines / distances with 4 subtracted / added on the diagonal: a cosine is >= -1 and a
    distance <= 1.5, so an offset of 4 takes a slot out of a max / min without a mask."""
    self_f = sel.float()
    cnt = sel.sum(1, keepdim=True) - self_f
    diag = cos_off.diagonal(dim1=1, dim2=2) + 4.0
    total = torch.bmm(cos_off, self_f[..., None])[..., 0] + (4.0 - diag) * self_f  # without the diagonal
    mean = total / cnt.clamp(min=1)
    off = 4.0 * (1.0 - self_f)[:, None, :]
    mx = (cos_off - off).amax(-1)
    near = (dist_off + off).amin(-1)
    return mean, torch.where(mx > -2.0, mx, 0.0), (near * 2.0).clamp(max=1.0)


def assemble(cos: torch.Tensor, dist: torch.Tensor, xy: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor,
             active: torch.Tensor, decode: torch.Tensor, inside: torch.Tensor, ref: torch.Tensor,
             has_ref: torch.Tensor, iou: torch.Tensor, area: torch.Tensor, t: torch.Tensor, horizon: torch.Tensor,
             max_steps: int | torch.Tensor, p_max: int, pairs: bool = False,
             episode_of: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A batch of observations from its parts (all (B, ...) tensors; P slots padded to ``p_max`` rows).

    The one place observations are made: the game calls it with B = 1, the replay buffer
    with a whole batch of stored compact states. ``episode_of`` (B,): ``cos`` and ``dist`` are
    given once per episode, (E, P, P), and state b belongs to episode ``episode_of[b]``.
    """
    b, p = valid.shape
    act = active & valid
    lab = labels.float()
    pos, neg = act & (labels == 1), act & (labels == 0)
    inside_f = inside.float()
    eye = 4.0 * torch.eye(p)
    cos_off, dist_off = cos - eye, dist + eye
    if episode_of is not None:
        cos_off, dist_off = cos_off[episode_of], dist_off[episode_of]
        cos = cos[episode_of] if pairs else cos
    mean_p, max_p, near_p = _relations(cos_off, dist_off, pos)
    mean_n, max_n, near_n = _relations(cos_off, dist_off, neg)
    f = torch.stack([valid.float(), act.float(), lab, xy[..., 0], xy[..., 1], decode[..., 0], inside_f,
                     (lab == inside_f).float(), decode[..., 1], decode[..., 2], mean_p, max_p, mean_n, max_n,
                     near_p, near_n, decode[..., 3], decode[..., 4],
                     ref[..., 0], ref[..., 1], ref[..., 2]], -1)
    f = f * valid[..., None]
    slots = torch.zeros(b, p_max, N_SLOT_FEATURES)
    slots[:, :p] = f
    hf = horizon.float()
    ctx = torch.stack([iou, area, pos.sum(1) / 20.0, neg.sum(1) / 20.0, t / hf.clamp(min=1), (hf - t) / max_steps,
                       has_ref.float()], 1)
    out = {"slots": slots.clamp(-1.0, 1.0), "context": ctx.float().clamp(-1.0, 1.0)}
    if pairs:
        pm = torch.zeros(b, p_max, p_max)
        pm[:, :p, :p] = torch.where(valid[:, :, None] & valid[:, None, :], cos, 0.0)
        out["pairs"] = pm.clamp(-1.0, 1.0)
    return out


def observe(graph: DualGraph, geo: Geometry, prompts: PromptSet, valid: np.ndarray, slot_logits: np.ndarray,
            node_frac: np.ndarray, sam_iou: float, t: int, horizon: int, p_max: int,
            max_steps: int = 15, pairs: bool = False) -> dict[str, np.ndarray]:
    """Observation dict ``{"slots": (p_max, F), "context": (N_CONTEXT,)}`` for the current state, plus
    ``"pairs"``: (p_max, p_max) feature-space cosines between the slots' nodes when ``pairs`` (what a
    message-passing Q-network reads; physical distances follow from the slots' x, y)."""
    decode, inside, area = decode_columns(graph, geo, slot_logits, node_frac)
    return observe_parts(geo, prompts.labels, valid, prompts.active, decode, inside, sam_iou, area, t, horizon,
                         p_max, max_steps, pairs)


def observe_parts(geo: Geometry, labels: np.ndarray, valid: np.ndarray, active: np.ndarray, decode: np.ndarray,
                  inside: np.ndarray, iou: float, area: float, t: int, horizon: int, p_max: int, max_steps: int,
                  pairs: bool = False) -> dict[str, np.ndarray]:
    """One observation (numpy) from a state's parts, through :func:`assemble`."""
    p = len(labels)
    one = torch.from_numpy
    ref = geo.ref if geo.ref is not None else np.zeros((p, 3), np.float32)
    with torch.no_grad():
        out = assemble(one(np.ascontiguousarray(geo.cos, np.float32))[None], one(geo.dist)[None], one(geo.xy)[None],
                       one(labels.astype(np.int64))[None], one(valid.astype(bool))[None],
                       one(active.astype(bool))[None], one(decode)[None], one(inside)[None],
                       one(ref.astype(np.float32))[None], torch.tensor([geo.ref is not None]),
                       torch.tensor([iou], dtype=torch.float32), torch.tensor([area], dtype=torch.float32),
                       torch.tensor([float(t)]), torch.tensor([horizon]), max_steps, p_max, pairs)
    return {k: v[0].numpy() for k, v in out.items()}


@dataclass(eq=False)
class Episode:
    """What stays fixed through an episode: the image, its prompt slots and their geometry."""

    image: int  # index of the image in the game's bank
    graph_feats: np.ndarray  # (N, C) the image's node features (the graph's array, not a copy)
    geo: Geometry
    labels: np.ndarray  # (P,) int8
    valid: np.ndarray  # (P,) bool: slot holds a prompt
    horizon: int
    max_steps: int


@dataclass(eq=False)
class State:
    """One game state, compactly: its episode plus what changes from step to step. The replay
    buffer stores these (``ppd.agents.replay``) and rebuilds observations with :func:`assemble`."""

    episode: Episode
    t: int
    active: np.ndarray  # (P,) bool, a copy
    decode: np.ndarray  # (P, 5) float32 ``DECODE_COLUMNS``
    inside: np.ndarray  # (P,) bool: SAM's logit > 0 at the prompt
    iou: float  # SAM's predicted IoU
    area: float  # share of the graph nodes under the mask

    def observe(self, p_max: int, pairs: bool = False) -> dict[str, np.ndarray]:
        e = self.episode
        return observe_parts(e.geo, e.labels, e.valid, self.active, self.decode, self.inside, self.iou, self.area,
                             self.t, e.horizon, p_max, e.max_steps, pairs)
