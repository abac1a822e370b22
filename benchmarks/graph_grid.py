"""Choosing the graph grid (64x64 native patches vs pooled 32x32 / 16x16) on the val split.

For each grid: time to build the graph (the encoder costs ~1 s), and how well a
node's feature tells object from background: ROC AUC of the cosine similarity to
the object prototype (mean feature of object nodes), and the share of "mixed"
nodes (20-80 % object) that carry no clean feature. Run: .venv/bin/python
benchmarks/graph_grid.py [N_PER_DATASET]
"""

import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from ppd import data
from ppd.graph import build_graph
from ppd.sam import Segmenter


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    npos, nneg = labels.sum(), (~labels).sum()
    if npos == 0 or nneg == 0:
        return float("nan")
    return float((ranks[labels].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def main(n: int = 10) -> None:
    seg = Segmenter()
    samples = data.load_dataset(split="val")
    rows = {}
    for ds in ("ecssd", "dsb2018"):
        for s in [x for x in samples if x.dataset == ds][:n]:
            seg.set_image(s.image())
            f = seg.features()
            gt = torch.as_tensor(s.mask(), dtype=torch.float32)[None, None]
            h, w = seg.original_size
            for grid in (16, 32, 64):
                t0 = time.perf_counter()
                g = build_graph(f.grid, f.valid, f.patch_size, (h, w), grid=grid, k=8)
                dt = time.perf_counter() - t0
                # object share of each node's cell, from the mask resized to the padded grid frame
                side = grid * g.patch_px
                pad = F.pad(gt, (0, int(np.ceil(side)) - w, 0, int(np.ceil(side)) - h))
                share = F.adaptive_avg_pool2d(pad, grid)[0, 0].numpy()[g.cell[:, 0], g.cell[:, 1]]
                lab = share > 0.5
                proto = g.feats[lab].mean(0) if lab.any() else g.feats.mean(0)
                a = auc(g.feats @ proto, lab)
                mixed = ((share > 0.2) & (share < 0.8)).sum() / max((share > 0.2).sum(), 1)
                rows.setdefault((ds, grid), []).append((dt, a, mixed, g.n))
    print(f"{'dataset':8s} {'grid':>4s} {'nodes':>6s} {'build ms':>8s} {'AUC obj/bg':>10s} {'mixed share':>11s}")
    for (ds, grid), v in sorted(rows.items()):
        v = np.array(v, float)
        print(f"{ds:8s} {grid:>4d} {v[:, 3].mean():6.0f} {1e3 * v[:, 0].mean():8.1f} {np.nanmean(v[:, 1]):10.3f} "
              f"{v[:, 2].mean():11.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
