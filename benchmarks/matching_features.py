"""Which encoder features should one-shot matching compare? (issue #20, "evidence"; docs/TRAINING.md, session 9)

``extract`` runs MobileSAM's TinyViT on every image of a split and keeps, per image, the output of
each of its four stages (stage 1 average-pooled from 128x128 to the 64x64 grid) and SAM's final
embedding ("neck"), float16, in ``--feats``. ``compare`` runs the ``ppd eval`` protocol (seeded
references and targets, cycle-consistent matching, k-means K = 10 per class) with the matching done
on each variant (``l0``..``l3``, ``neck``, or ``a+b``: both, each scaled to unit length) and reports
mDSC of the start set segmented as it is (fm-kmeans) or, with ``--defend``, refined by the shipped
defender (fm-ppd). The defender's graph reads SAM's embedding in every variant; only the matching
changes.

Run: .venv/bin/python benchmarks/matching_features.py extract --split val --datasets kvasir,ecssd,ph2,dsb2018
     .venv/bin/python benchmarks/matching_features.py compare --dataset kvasir --limit 95 --variants neck,l2 [--defend]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ppd import data
from ppd.evaluate.harness import select
from ppd.matching import _unit, kmeans_thin, match_patches, patch_fractions
from ppd.metrics import dice
from ppd.oneshot import OneShotReference
from ppd.refine import Defender
from ppd.sam import Segmenter


def extract(args) -> None:
    seg = Segmenter()
    enc = seg.model.image_encoder
    outs: dict[int, torch.Tensor] = {}
    for i, layer in enumerate(enc.layers):
        layer.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o))
    feats = Path(args.feats)
    feats.mkdir(parents=True, exist_ok=True)
    for s in data.load_dataset(args.data, split=args.split):
        p = feats / f"{s.id}.npz"
        if s.dataset not in args.datasets.split(",") or p.exists():
            continue
        with torch.inference_mode():
            neck = enc(seg.preprocess(s.image()))
        l0 = F.avg_pool2d(outs[0][0].reshape(128, 128, -1).permute(2, 0, 1)[None], 2)[0].permute(1, 2, 0)
        grid = {f"l{i}": outs[i][0].reshape(64, 64, -1) for i in (1, 2, 3)}
        np.savez(feats / f"{s.id}.tmp.npz", l0=l0.half().numpy(), neck=neck[0].permute(1, 2, 0).half().numpy(),
                 **{k: v.half().numpy() for k, v in grid.items()})
        os.replace(feats / f"{s.id}.tmp.npz", p)


def _variant(feats: Path, sample_id: str, variant: str) -> np.ndarray:
    z = np.load(feats / f"{sample_id}.npz")
    return np.concatenate([_unit(z[p].astype(np.float32)) for p in variant.split("+")], -1)


def compare(args) -> None:
    seg = Segmenter()
    defender = Defender(args.defender, segmenter=seg) if args.defend else None
    samples = [s for s in data.load_dataset(args.data, split=args.split) if s.dataset == args.dataset]
    refs, targets = select(samples, args.references, None, args.limit, args.seed)
    variants, feats = args.variants.split(","), Path(args.feats)
    ref = {}
    for r in refs:
        fr = seg.frame(r.image())
        graph_ref = (OneShotReference.make(fr, r.mask()).graph_reference(defender.config.graph_grid)
                     if defender else None)
        ref[r.id] = (patch_fractions(r.mask(), fr.input_size), {v: _variant(feats, r.id, v) for v in variants},
                     graph_ref)
    dsc = {v: {r.id: [] for r in refs} for v in variants}
    right = {v: [] for v in variants}
    for t in targets:
        fr, gt = seg.frame(t.image()), t.mask()
        pf = fr.features()
        tf = {v: _variant(feats, t.id, v) for v in variants}
        for r in refs:
            frac, rf, graph_ref = ref[r.id]
            for v in variants:
                c = match_patches(rf[v], pf.valid, frac, tf[v], pf.valid, pf.patch_size, fr.original_size, cycle=True)
                idx = kmeans_thin(c.points, c.labels, args.k, seed=args.seed)
                pts, labs = c.points[idx], c.labels[idx]
                if not (labs == 1).any():
                    d = 0.0
                elif defender is not None:
                    d = dice(defender.refine_frame(fr, pts, labs, reference=graph_ref).mask, gt)
                else:
                    d = dice(seg.decode(fr, pts, labs).mask, gt)
                dsc[v][r.id].append(d)
                xi = np.clip(pts[:, 0].astype(int), 0, gt.shape[1] - 1)
                yi = np.clip(pts[:, 1].astype(int), 0, gt.shape[0] - 1)
                right[v].extend(gt[yi, xi] == (labs == 1))
    method = "fm-ppd" if defender else "fm-kmeans"
    print(f"{args.dataset} {args.split}, {len(targets)} targets x {len(refs)} references, {method}:")
    for v in variants:
        m = np.array([np.mean(x) for x in dsc[v].values()]) * 100
        print(f"  {v:14s} mDSC {m.mean():5.1f} ± {m.std():4.1f}   right prompts {100 * np.mean(right[v]):.1f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("extract", "compare"):
        p = sub.add_parser(name)
        p.add_argument("--data", default=None)
        p.add_argument("--split", default="val")
        p.add_argument("--feats", default="runs/matching_features")
    e = sub.choices["extract"]
    e.add_argument("--datasets", required=True)
    c = sub.choices["compare"]
    c.add_argument("--dataset", required=True)
    c.add_argument("--references", type=int, default=5)
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-k", type=int, default=10)
    c.add_argument("--variants", default="neck,l2")
    c.add_argument("--defend", action="store_true", help="refine each start set with the defender (fm-ppd)")
    c.add_argument("--defender", default=None, help="a defender checkpoint (default: the shipped one)")
    args = ap.parse_args()
    extract(args) if args.cmd == "extract" else compare(args)


if __name__ == "__main__":
    main()
