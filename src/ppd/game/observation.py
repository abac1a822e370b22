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
the active flags, so building an observation costs ~0.1 ms and no N x N patch
matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppd.graph import DualGraph, Reference
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
    ref: np.ndarray | None = None  # (P, 3) reference features of each slot (Reference.prompt_features)


def geometry(graph: DualGraph, prompts: PromptSet, reference: Reference | None = None) -> Geometry:
    nodes = graph.node_of(prompts.points) if len(prompts) else np.zeros(0, np.int32)
    feats = graph.feats[nodes]
    pts = prompts.points.astype(np.float32)
    dist = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) / graph.diagonal
    h, w = graph.image_size
    return Geometry(nodes=nodes, feats=feats, cos=feats @ feats.T, dist=dist.astype(np.float32),
                    knn=graph.knn_feat[nodes], xy=pts / np.array([w, h], np.float32),
                    ref=None if reference is None else reference.prompt_features(feats))


def _masked_stats(values: np.ndarray, sel: np.ndarray, empty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise mean, max, min of ``values`` over columns ``sel`` excluding the diagonal."""
    p = len(values)
    m = np.broadcast_to(sel[None, :], (p, p)).copy()
    np.fill_diagonal(m, False)
    cnt = m.sum(1)
    has = cnt > 0
    mean = np.where(has, (values * m).sum(1) / np.maximum(cnt, 1), 0.0)
    mx = np.where(has, np.where(m, values, -np.inf).max(1, initial=-np.inf), 0.0)
    mn = np.where(has, np.where(m, values, np.inf).min(1, initial=np.inf), empty)
    return mean, mx, mn


def observe(graph: DualGraph, geo: Geometry, prompts: PromptSet, valid: np.ndarray, slot_logits: np.ndarray,
            node_frac: np.ndarray, sam_iou: float, t: int, horizon: int, p_max: int,
            max_steps: int = 15, pairs: bool = False) -> dict[str, np.ndarray]:
    """Observation dict ``{"slots": (p_max, F), "context": (N_CONTEXT,)}`` for the current state, plus
    ``"pairs"``: (p_max, p_max) feature-space cosines between the slots' nodes when ``pairs`` (what a
    message-passing Q-network reads; physical distances follow from the slots' x, y)."""
    p = len(prompts)
    act = prompts.active & valid
    lab = prompts.labels.astype(np.float32)
    pos, neg = act & (prompts.labels == 1), act & (prompts.labels == 0)
    logit = slot_logits.astype(np.float32)
    inside = (logit > 0).astype(np.float32)
    frac = node_frac.astype(np.float32) / 255.0
    wsum = frac.sum()
    if wsum > 0:
        proto_m = frac @ graph.feats
        proto_m /= max(np.linalg.norm(proto_m), 1e-8)
    else:
        proto_m = np.zeros(graph.feats.shape[1], np.float32)
    bg_w = 1.0 - frac
    proto_b = bg_w @ graph.feats
    proto_b /= max(np.linalg.norm(proto_b), 1e-8)
    mean_p, max_p, _ = _masked_stats(geo.cos, pos, 0.0)
    mean_n, max_n, _ = _masked_stats(geo.cos, neg, 0.0)
    _, _, min_dp = _masked_stats(geo.dist, pos, 1.0)
    _, _, min_dn = _masked_stats(geo.dist, neg, 1.0)
    f = np.zeros((p_max, N_SLOT_FEATURES), np.float32)
    if p:
        cols = [valid.astype(np.float32), act.astype(np.float32), lab, geo.xy[:, 0], geo.xy[:, 1],
                np.tanh(logit / 8.0), inside, (lab == inside).astype(np.float32),
                geo.feats @ proto_m, geo.feats @ proto_b, mean_p, max_p, mean_n, max_n,
                np.minimum(min_dp * 2.0, 1.0), np.minimum(min_dn * 2.0, 1.0),
                frac[geo.knn].mean(1) if geo.knn.shape[1] else frac[geo.nodes], frac[geo.nodes]]
        ref = geo.ref if geo.ref is not None else np.zeros((p, 3), np.float32)
        f[:p] = np.concatenate([np.stack(cols, 1), ref], 1)
        f[:p][~valid] = 0.0
    ctx = np.array([sam_iou, frac.mean(), pos.sum() / 20.0, neg.sum() / 20.0, t / max(horizon, 1),
                    (horizon - t) / max_steps, float(geo.ref is not None)], np.float32)
    out = {"slots": np.clip(f, -1.0, 1.0), "context": np.clip(ctx, -1.0, 1.0)}
    if pairs:
        pm = np.zeros((p_max, p_max), np.float32)
        if p:
            pm[:p, :p] = np.where(valid[:, None] & valid[None, :], geo.cos, 0.0)
        out["pairs"] = np.clip(pm, -1.0, 1.0)
    return out
