"""How well can a start set's wrong prompts be told from its right ones? (issue #20, lever "auxiliary head")

For (reference, target) pairs of the `ppd eval` protocol (seeded references and targets, cycle
FM -> k-means K per class), every start-set prompt gets the defender's own state-0 observation
(the 21 slot features of ``ppd.game.observation``) plus two numbers the k-means thinning knows:
the share of same-class candidates it stands for, and how many candidates that class had. Its
label is whether it is right (a positive on the object, a negative off it).

``collect`` writes these per split; ``probe`` fits a logistic regression on the train pairs
and, on val, reports the AUC and what pruning by it would give: every prompt whose predicted
probability of being right is below a threshold is dropped (at least one per class is kept),
and SAM segments with the rest; mDSC against the start set's.

Run: .venv/bin/python benchmarks/prompt_correctness.py collect --split train --dataset kvasir --references 8 --limit 40
     .venv/bin/python benchmarks/prompt_correctness.py probe --train A.npz[,B.npz] --val C.npz
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ppd import data
from ppd.evaluate.harness import select
from ppd.game.observation import geometry, observe
from ppd.graph import decode_summary
from ppd.oneshot import OneShotReference, propose
from ppd.prompts import PromptSet
from ppd.refine import Defender, load_agent
from ppd.sam import Segmenter


def support(points: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per start-set prompt: the share of its class's candidates nearest to it (what it stands for)."""
    out = np.zeros(len(idx), np.float32)
    for lab in (0, 1):
        mine = np.nonzero(labels[idx] == lab)[0]
        cand = points[labels == lab]
        if len(mine) == 0 or len(cand) == 0:
            continue
        d = ((cand[:, None, :] - points[idx[mine]][None]) ** 2).sum(-1)
        out[mine] = np.bincount(d.argmin(1), minlength=len(mine)) / len(cand)
    return out


def sam_evidence(seg, frame, graph, ref, pts: np.ndarray, labs: np.ndarray) -> np.ndarray:
    """Per prompt, what SAM says about it (7 numbers): leaving it out of the set (change in SAM's IoU,
    in the mask's reference agreement, IoU of the two low-res masks), and, for a positive, decoding it
    alone (SAM's IoU, mask area, reference agreement, overlap with the whole set's mask)."""
    from ppd.refine import _agreement

    def answer(keep):
        low = seg.decode(frame, pts[keep], labs[keep], lowres=True)
        m = (low.logits > 0).numpy()
        frac, _ = decode_summary(low.logits, m, graph, frame.lowres_scale, [])
        fg, bg = _agreement(graph, ref, frac)
        return low.iou, np.nan_to_num(fg - bg), m

    n = len(pts)
    iou0, agr0, m0 = answer(np.ones(n, bool))
    out = np.zeros((n, 7), np.float32)
    for i in range(n):
        keep = np.ones(n, bool)
        keep[i] = False
        if keep.any() and (labs[keep] == 1).any():
            iou, agr, m = answer(keep)
            out[i, :3] = iou - iou0, agr - agr0, (m & m0).sum() / max((m | m0).sum(), 1)
        if labs[i] == 1:
            one = np.zeros(n, bool)
            one[i] = True
            iou, agr, m = answer(one)
            out[i, 3:] = iou, m.mean(), agr, (m & m0).sum() / max(m.sum(), 1)
    return out


def collect(args) -> None:
    seg = Segmenter(encoder=args.encoder)
    d = Defender(load_agent(None, "defender"), segmenter=seg)
    samples = [s for s in data.load_dataset(args.data, split=args.split) if s.dataset == args.dataset]
    refs, targets = select(samples, args.references, None, args.limit, args.seed)
    ref_frames = {r.id: OneShotReference.make(seg.frame(r.image()), r.mask()) for r in refs}
    rows, feats, y, pair_of = d.agent.rows, [], [], []
    pairs = []  # (target id, ref id, start points, labels)
    t0 = time.perf_counter()
    for n, t in enumerate(targets):
        frame, gt = seg.frame(t.image()), t.mask()
        graph = d.graph_of(frame)
        for r in refs:
            prop = propose(ref_frames[r.id], frame, args.k, True, seed=args.seed)
            pts, labs = prop.points, prop.labels
            if len(pts) == 0 or len(pts) > rows:
                continue
            gref = ref_frames[r.id].graph_reference(d.config.graph_grid)
            prompts = PromptSet.from_points(np.zeros((rows, 2)), np.zeros(rows), np.zeros(rows, bool))
            prompts.points[: len(pts)], prompts.labels[: len(pts)], prompts.active[: len(pts)] = pts, labs, True
            valid = np.zeros(rows, bool)
            valid[: len(pts)] = True
            geo = geometry(graph, prompts, gref)
            slot_logits, node_frac, iou, _ = d._state(frame, graph, prompts, valid)
            obs = observe(graph, geo, prompts, valid, slot_logits, node_frac, iou, 0, 10, rows)
            sup = support(prop.candidates.points, prop.candidates.labels, prop.index)
            n_cls = np.array([(prop.candidates.labels == lab).sum() for lab in labs], np.float32) / 100.0
            ctx = np.repeat(obs["context"][None], len(pts), 0)
            f = np.c_[obs["slots"][: len(pts)], sup, np.minimum(n_cls, 1.0), ctx]
            if args.sam_evidence:
                f = np.c_[f, sam_evidence(seg, frame, graph, gref, pts, labs)]
            xi = np.clip(pts[:, 0].astype(int), 0, gt.shape[1] - 1)
            yi = np.clip(pts[:, 1].astype(int), 0, gt.shape[0] - 1)
            right = gt[yi, xi] == (labs == 1)
            feats.append(f.astype(np.float32))
            y.append(right)
            pair_of.append(np.full(len(pts), len(pairs)))
            pairs.append((t.id, r.id, pts, labs))
        print(f"{n + 1}/{len(targets)} targets, {time.perf_counter() - t0:.0f} s", flush=True)
    np.savez(args.out, X=np.concatenate(feats), y=np.concatenate(y), pair=np.concatenate(pair_of),
             targets=np.array([p[0] for p in pairs]), refs=np.array([p[1] for p in pairs]),
             dataset=args.dataset, split=args.split)
    print(f"wrote {args.out}: {len(pairs)} pairs, {sum(len(v) for v in y)} prompts, "
          f"{100 * np.concatenate(y).mean():.1f} % right")


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 500) -> tuple[np.ndarray, ...]:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd).float()
    yt = torch.from_numpy(y.astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.item()), mu, sd


def auc(score: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    r = rankdata(score)
    npos, nneg = y.sum(), (~y).sum()
    return float((r[y].sum() - npos * (npos + 1) / 2) / max(npos * nneg, 1))


def probe(args) -> None:
    from ppd.metrics import dice

    tr = [np.load(p) for p in args.train.split(",")]
    x = np.concatenate([t["X"] for t in tr])
    y = np.concatenate([t["y"] for t in tr]).astype(bool)
    w, b, mu, sd = fit_logistic(x, y)
    va = np.load(args.val)
    xv, yv, pair = va["X"], va["y"].astype(bool), va["pair"]
    p = 1 / (1 + np.exp(-(((xv - mu) / sd) @ w + b)))
    print(f"train {len(y)} prompts ({100 * y.mean():.0f} % right); val {len(yv)} ({100 * yv.mean():.0f} % right)")
    print(f"AUC val: logistic {auc(p, yv):.3f}; single features: " + ", ".join(
        f"{i}:{auc(xv[:, i], yv):.2f}" for i in range(xv.shape[1]) if abs(auc(xv[:, i], yv) - 0.5) > 0.1))
    if not args.simulate:
        return
    seg = Segmenter(encoder=args.encoder)
    samples = {s.id: s for s in data.load_dataset(args.data, split=str(va["split"])) if s.dataset == str(va["dataset"])}
    refs = {r: OneShotReference.make(seg.frame(samples[r].image()), samples[r].mask()) for r in set(va["refs"])}
    taus = [float(v) for v in args.taus.split(",")]
    per_ref: dict = {}
    for i, (tid, rid) in enumerate(zip(va["targets"], va["refs"], strict=True)):
        t = samples[tid]
        frame, gt = seg.frame(t.image()), t.mask()
        prop = propose(refs[rid], frame, args.k, True, seed=0)
        pts, labs = prop.points, prop.labels
        pi = p[pair == i]
        assert len(pi) == len(pts)
        row = [dice(seg.decode(frame, pts, labs).mask, gt)]
        for tau in taus:
            keep = pi >= tau
            for lab in (0, 1):  # keep the most likely right prompt of each class that was given
                cls = np.nonzero(labs == lab)[0]
                if len(cls) and not keep[cls].any():
                    keep[cls[pi[cls].argmax()]] = True
            row.append(dice(seg.decode(frame, pts[keep], labs[keep]).mask, gt))
        for tau in taus if args.flip else []:  # flip the label instead of dropping the prompt
            flip = labs.copy()
            flip[pi < tau] = 1 - flip[pi < tau]
            if not (flip == 1).any():
                flip[pi.argmax()] = 1
            row.append(dice(seg.decode(frame, pts, flip).mask, gt))
        right = yv[pair == i]
        oracle = right.copy()
        for lab in (0, 1):
            cls = np.nonzero(labs == lab)[0]
            if len(cls) and not oracle[cls].any():
                oracle[cls[0]] = True
        row.append(dice(seg.decode(frame, pts[oracle], labs[oracle]).mask, gt))
        if args.flip:
            row.append(dice(seg.decode(frame, pts, np.where(right, labs, 1 - labs)).mask, gt))
        per_ref.setdefault(rid, []).append(row)
    m = np.array([np.mean(v, 0) for v in per_ref.values()]) * 100
    names = (["start set"] + [f"prune p<{t:g}" for t in taus] + [f"flip p<{t:g}" for t in taus if args.flip]
             + ["drop all wrong (ceiling)"] + (["flip all wrong (ceiling)"] if args.flip else []))
    for j, nm in enumerate(names):
        print(f"  {nm:26s} {m[:, j].mean():5.1f} ± {m[:, j].std():4.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--data", default=None)
    c.add_argument("--split", default="val")
    c.add_argument("--dataset", required=True)
    c.add_argument("--references", type=int, default=5)
    c.add_argument("--limit", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("-k", type=int, default=10)
    c.add_argument("--encoder", default="eager")
    c.add_argument("--sam-evidence", action="store_true", help="add sam_evidence's 7 numbers per prompt")
    c.add_argument("--out", required=True)
    p = sub.add_parser("probe")
    p.add_argument("--data", default=None)
    p.add_argument("--train", required=True)
    p.add_argument("--val", required=True)
    p.add_argument("--simulate", action="store_true")
    p.add_argument("--taus", default="0.3,0.4,0.5,0.6")
    p.add_argument("--flip", action="store_true", help="also flip the labels of unlikely prompts instead of dropping")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--encoder", default="eager")
    args = ap.parse_args()
    collect(args) if args.cmd == "collect" else probe(args)


if __name__ == "__main__":
    main()
