"""The dual-space patch graph of one image (PAPER.md, "Environment").

Nodes are patches of SAM's image embedding, optionally average-pooled from the
64x64 grid to a coarser one; only patches that overlap the image (not SAM's
padding) are nodes. Each node has an L2-normalised feature vector and a centre
in original-image pixels. Two normalised distances relate nodes:

* feature distance ``||f_i - f_j|| / 2`` in [0, 1] (unit vectors),
* physical distance ``||c_i - c_j|| / diagonal`` in [0, 1],

and a neighbour structure (the k nearest nodes in feature space) serves the observation.
Full N x N matrices are never kept: :meth:`DualGraph.distances` computes the
block between two node subsets on demand (the game only ever needs prompt x
prompt or prompt x region blocks), and the k-NN lists are built in row chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID = 64  # SAM's embedding grid


@dataclass
class DualGraph:
    feats: np.ndarray  # (N, C) float32, unit L2 norm
    centers: np.ndarray  # (N, 2) float32 node centres (x, y) in original pixels
    cell: np.ndarray  # (N, 2) int32 (row, col) on the graph grid
    grid: int  # graph grid side (64 = native patches, 32 = 2x2 pooled, ...)
    patch_px: float  # side of one graph cell in original pixels
    image_size: tuple[int, int]  # (H, W) original
    knn_feat: np.ndarray  # (N, k) int32 nearest nodes in feature space (self excluded)
    index: np.ndarray  # (grid, grid) int32 node id of each cell, -1 for padding

    @property
    def n(self) -> int:
        return len(self.feats)

    @property
    def diagonal(self) -> float:
        h, w = self.image_size
        return float(np.hypot(h, w))

    def node_of(self, points: np.ndarray) -> np.ndarray:
        """Node id of the patch containing each (x, y) point in original pixels."""
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        col = np.clip((pts[:, 0] / self.patch_px).astype(int), 0, self.grid - 1)
        row = np.clip((pts[:, 1] / self.patch_px).astype(int), 0, self.grid - 1)
        ids = self.index[row, col]
        if (ids < 0).any():  # a point on the last partial patch row / column: nearest valid cell
            for k in np.nonzero(ids < 0)[0]:
                d = np.abs(self.cell - np.array([row[k], col[k]])).sum(1)
                ids[k] = int(d.argmin())
        return ids

    def distances(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (feature, physical) distance blocks between node sets ``a`` and ``b``."""
        fa, fb = self.feats[a], self.feats[b]
        cos = np.clip(fa @ fb.T, -1.0, 1.0)
        feat = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0)) / 2.0
        ca, cb = self.centers[a], self.centers[b]
        phys = np.sqrt(((ca[:, None, :] - cb[None, :, :]) ** 2).sum(-1)) / self.diagonal
        return feat.astype(np.float32), phys.astype(np.float32)


def _knn(x: np.ndarray, k: int, metric_sq, chunk: int = 1024) -> np.ndarray:
    n = len(x)
    k = min(k, n - 1)
    out = np.empty((n, max(k, 0)), np.int32)
    if k <= 0:
        return out
    for s in range(0, n, chunk):
        d = metric_sq(x[s:s + chunk], x)
        d[np.arange(len(d)), np.arange(s, s + len(d))] = np.inf
        part = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1)
        out[s:s + chunk] = np.take_along_axis(part, order, 1)
    return out


def build_graph(grid_feats: np.ndarray, valid: np.ndarray, patch_size: float, image_size: tuple[int, int],
                grid: int = 32, k: int = 8) -> DualGraph:
    """Dual-space graph from SAM patch features.

    ``grid_feats`` (64, 64, C) and ``valid`` (64, 64) as from ``Segmenter.features()``;
    ``patch_size`` is one 64-grid patch in original pixels. ``grid`` must divide 64.
    """
    if GRID % grid:
        raise ValueError(f"grid must divide {GRID}, got {grid}")
    f = GRID // grid
    c = grid_feats.shape[-1]
    pooled = grid_feats.reshape(grid, f, grid, f, c).mean((1, 3))
    v = valid.reshape(grid, f, grid, f).any((1, 3))
    rows, cols = np.nonzero(v)
    feats = pooled[rows, cols].astype(np.float32)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-8)
    cell_px = patch_size * f
    h, w = image_size
    centers = np.stack([np.minimum((cols + 0.5) * cell_px, w - 0.5),
                        np.minimum((rows + 0.5) * cell_px, h - 0.5)], 1).astype(np.float32)
    index = np.full((grid, grid), -1, np.int32)
    index[rows, cols] = np.arange(len(rows), dtype=np.int32)
    knn_f = _knn(feats, k, lambda a, b: 2.0 - 2.0 * (a @ b.T))
    return DualGraph(feats=feats, centers=centers, cell=np.stack([rows, cols], 1).astype(np.int32),
                     grid=grid, patch_px=float(cell_px), image_size=(int(h), int(w)),
                     knn_feat=knn_f, index=index)


def graph_of(frame, grid: int = 32, k: int = 8) -> DualGraph:
    """The dual graph of a :class:`ppd.sam.Frame`, built once per (grid, k) and kept in the frame's memo."""
    key = ("graph", grid, k)
    g = frame.memo.get(key)
    if g is None:
        f = frame.features()
        g = frame.memo[key] = build_graph(f.grid, f.valid, f.patch_size, frame.original_size, grid=grid, k=k)
    return g


def decode_summary(logits, mask: np.ndarray, graph: DualGraph, scale: np.ndarray,
                   points: list[tuple[float, float]]) -> tuple[np.ndarray, dict]:
    """What observations read from a decode: the mask share of each graph node (0..255)
    and the low-res logit at each point (-20 where there was no decode: empty mask)."""
    f = 256 // graph.grid
    frac = mask.reshape(graph.grid, f, graph.grid, f).mean((1, 3))[graph.cell[:, 0], graph.cell[:, 1]]
    node_frac = np.round(frac * 255).astype(np.uint8)
    logit_at = {}
    for (x, y) in points:
        if logits is None:
            logit_at[(x, y)] = -20.0
        else:
            logit_at[(x, y)] = float(logits[min(int(y * scale[1]), 255), min(int(x * scale[0]), 255)])
    return node_frac, logit_at


def mask_fractions(graph: DualGraph, mask: np.ndarray) -> np.ndarray:
    """Share (0..1) of each node's cell covered by a full-resolution boolean ``mask``.

    Cells are squares of ``patch_px`` original pixels clipped to the image; the sums
    come from one integral image, so this costs O(H*W) whatever the grid.
    """
    h, w = graph.image_size
    if mask.shape != (h, w):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, graph image is {w}x{h}")
    ii = np.zeros((h + 1, w + 1), np.int64)
    ii[1:, 1:] = np.asarray(mask, bool).cumsum(0).cumsum(1)
    r, c = graph.cell[:, 0].astype(np.float64), graph.cell[:, 1].astype(np.float64)
    y0 = np.clip(np.floor(r * graph.patch_px), 0, h).astype(int)
    y1 = np.clip(np.floor((r + 1) * graph.patch_px), 0, h).astype(int)
    x0 = np.clip(np.floor(c * graph.patch_px), 0, w).astype(int)
    x1 = np.clip(np.floor((c + 1) * graph.patch_px), 0, w).astype(int)
    y1, x1 = np.maximum(y1, np.minimum(y0 + 1, h)), np.maximum(x1, np.minimum(x0 + 1, w))
    area = np.maximum((y1 - y0) * (x1 - x0), 1)
    inside = ii[y1, x1] - ii[y0, x1] - ii[y1, x0] + ii[y0, x0]
    return (inside / area).astype(np.float32)


def prototypes(weights: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit mean features of the nodes weighted by ``weights`` (0..1 shares under a mask) and by
    ``1 - weights`` (the rest): the object and background prototypes (zero when a side is empty)."""
    w = weights.astype(np.float32)
    fg, bg = w @ feats, (1.0 - w) @ feats
    return ((fg / max(float(np.linalg.norm(fg)), 1e-8)).astype(np.float32),
            (bg / max(float(np.linalg.norm(bg)), 1e-8)).astype(np.float32))


@dataclass
class Reference:
    """What a one-shot reference tells about the object sought: its graph's node features
    and the share of each node under the reference mask.

    The game and the defender read three numbers per prompt from it (see
    ``ppd.game.observation``): similarity to the reference object's mean feature,
    the margin over its background's mean feature, and the mask share of the
    prompt's nearest reference nodes in feature space (a soft backward match).
    """

    feats: np.ndarray  # (M, C) float32 unit node features of the reference image
    frac: np.ndarray  # (M,) float32 share of each node under the reference mask, 0..1

    def __post_init__(self) -> None:
        if len(self.feats) != len(self.frac) or len(self.frac) == 0:
            raise ValueError("reference needs one mask share per node, and at least one node")
        self.proto_fg, self.proto_bg = prototypes(self.frac, self.feats)

    @classmethod
    def from_mask(cls, graph: DualGraph, mask: np.ndarray) -> Reference:
        return cls(graph.feats, mask_fractions(graph, mask))

    @classmethod
    def from_frame(cls, frame, mask: np.ndarray, grid: int = 32) -> Reference:
        """From a reference :class:`ppd.sam.Frame` and its mask (the graph is built without k-NN lists)."""
        return cls.from_mask(graph_of(frame, grid, 0), np.asarray(mask, bool))

    @classmethod
    def from_features(cls, grid_feats: np.ndarray, valid: np.ndarray, patch_size: float,
                      image_size: tuple[int, int], mask: np.ndarray, grid: int = 32) -> Reference:
        """From a reference image's SAM patch features (as :func:`build_graph` takes them) and its mask.
        The graph is built without k-NN lists: a reference only needs node features and cells."""
        graph = build_graph(grid_feats, valid, patch_size, image_size, grid=grid, k=0)
        return cls.from_mask(graph, np.asarray(mask, bool))

    def prompt_features(self, feats: np.ndarray, k: int = 8) -> np.ndarray:
        """(P, 3) per-prompt [sim to object mean, margin over background mean (x5), k-NN mask share]
        for unit node features ``feats`` (P, C) of the prompts' nodes on the target."""
        if len(feats) == 0:
            return np.zeros((0, 3), np.float32)
        fg, bg = feats @ self.proto_fg, feats @ self.proto_bg
        sim = feats @ self.feats.T
        k = min(k, sim.shape[1])
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        knn_frac = self.frac[near].mean(1)
        return np.stack([fg, np.clip(5.0 * (fg - bg), -1.0, 1.0), knn_frac], 1).astype(np.float32)
