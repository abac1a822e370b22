"""Does a linear probe fitted on the reference alone make better start sets? (issue #20, Kvasir >= 65)

Feature matching asks, per reference patch, for its single nearest target patch (and, with
``cycle``, the reverse). That is a 1-nearest-neighbour classifier, sensitive to one odd patch.
A PerSAM-F / linear-probe style alternative: fit a logistic regression on the reference's own
patches (SAM embedding, inside vs outside its mask, nothing else), then score every target patch.
No ground truth of the target is read. Start sets measured (each k-means-thinned to K per class):

* ``cycle``: cycle-consistent matches (today's start set: fm-kmeans / fm-ppd);
* ``cycle&probe``: those matches the probe agrees with (a positive on a patch it scores >= 0.5,
  a negative below); a class the probe empties keeps its matches;
* ``plain&probe``: plain matches the probe agrees with (the probe instead of the cycle check);
* ``pruneT``: today's start set, less each prompt the probe gives a score below T for its label
  (the likeliest of each class stays).

Also the AUC of the probe's score for telling today's right start-set prompts from wrong ones.
Prints mDSC % (mean over targets, then mean ± sd over references) unrefined and, with
``--defend``, refined by the shipped defender.

Run: .venv/bin/python benchmarks/probe_start.py --dataset kvasir --references 10 --seed 1 --limit 40 --defend
"""

from __future__ import annotations

import time

import numpy as np
import torch
from prompt_correctness import auc
from protocol_args import protocol_parser, protocol_samples, report_rows, write_rows

from ppd.matching import Candidates, kmeans_thin
from ppd.metrics import dice
from ppd.oneshot import OneShotReference, match
from ppd.refine import Defender
from ppd.sam import Segmenter

SETS = ("cycle", "cycle&probe", "plain&probe", "prune0.3", "prune0.5")


def fit_probe(ref: OneShotReference, l2: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Logistic regression, the reference's patches wholly inside vs wholly outside its mask (balanced)."""
    f = ref.features
    x = f.grid[f.valid].astype(np.float64)
    frac = ref.frac[f.valid]
    sel = (frac >= 1.0) | (frac <= 0.0)
    if (frac[sel] >= 1).sum() == 0:  # an object smaller than a patch
        sel, y = np.ones(len(frac), bool), frac >= frac.max() * 0.5
    else:
        y = frac >= 1.0
    x, y = x[sel], y[sel]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd).float()
    yt = torch.from_numpy(y.astype(np.float32))
    wpos = float((~y).sum() / max(y.sum(), 1))  # balance the two classes
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            xt @ w + b, yt, pos_weight=torch.tensor(wpos)) + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.item()), mu, sd


def probe_map(probe, feats) -> np.ndarray:
    w, b, mu, sd = probe
    z = ((feats.grid.reshape(-1, feats.grid.shape[-1]) - mu) / sd) @ w + b
    return (1 / (1 + np.exp(-z))).reshape(feats.grid.shape[:2])


def at_points(pmap: np.ndarray, pts: np.ndarray, patch: float) -> np.ndarray:
    r = np.clip((pts[:, 1] / patch).astype(int), 0, pmap.shape[0] - 1)
    c = np.clip((pts[:, 0] / patch).astype(int), 0, pmap.shape[1] - 1)
    return pmap[r, c]


def agree(c: Candidates, p: np.ndarray) -> Candidates:
    ok = np.where(c.labels == 1, p >= 0.5, p < 0.5)
    for lab in (0, 1):  # a class the probe would empty keeps its matches
        cls = c.labels == lab
        if cls.any() and not ok[cls].any():
            ok[cls] = True
    return Candidates(c.points[ok], c.labels[ok])


def main() -> None:
    ap = protocol_parser(__doc__)
    ap.add_argument("--defend", action="store_true")
    ap.add_argument("--l2", type=float, default=1e-2)
    ap.add_argument("--sets", default=",".join(SETS), help="the start sets to score (cycle always)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg) if args.defend else None
    refs, targets = protocol_samples(args)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask(), r.image())) for r in refs]
    probes = {r.id: fit_probe(ref, args.l2) for r, ref in made}
    rows, scores, rights, t0 = [], [], [], time.perf_counter()
    for n, t in enumerate(targets):
        fr, gt = seg.frame(t.image()), t.mask()
        feats = fr.features()
        for r, ref in made:
            pmap = probe_map(probes[r.id], feats)
            cyc = match(ref, fr, True, feats)
            cands = {"cycle": cyc, "cycle&probe": agree(cyc, at_points(pmap, cyc.points, feats.patch_size))}
            plain = match(ref, fr, False, feats)
            cands["plain&probe"] = agree(plain, at_points(pmap, plain.points, feats.patch_size))
            sets = {}
            for name, c in cands.items():
                if len(c) and (c.labels == 1).any():
                    idx = kmeans_thin(c.points, c.labels, args.k, seed=0)
                    sets[name] = c.points[idx], c.labels[idx]
            pts, labs = sets["cycle"]
            p = at_points(pmap, pts, feats.patch_size)
            score = np.where(labs == 1, p, 1 - p)
            for tau in (0.3, 0.5):
                keep = score >= tau
                for lab in (0, 1):
                    cls = np.nonzero(labs == lab)[0]
                    if len(cls) and not keep[cls].any():
                        keep[cls[score[cls].argmax()]] = True
                sets[f"prune{tau:g}"] = pts[keep], labs[keep]
            for name, (pts, labs) in sets.items():
                if name != "cycle" and name not in args.sets.split(","):
                    continue
                row = {"set": name, "ref": r.id, "target": t.id, "n": int(len(pts)),
                       "fm-kmeans": dice(seg.decode(fr, pts, labs).mask, gt)}
                if d is not None:
                    gref = ref.graph_reference(d.config.graph_grid)
                    row["fm-ppd"] = dice(d.refine_frame(fr, pts, labs, gref).mask, gt)
                rows.append(row)
                if name == "cycle":
                    xi = np.clip(pts[:, 0].astype(int), 0, gt.shape[1] - 1)
                    yi = np.clip(pts[:, 1].astype(int), 0, gt.shape[0] - 1)
                    scores.append(score)
                    rights.append(gt[yi, xi] == (labs == 1))
        print(f"{n + 1}/{len(targets)} targets, {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:
            write_rows(args.out, rows)
    cols = ["fm-kmeans"] + (["fm-ppd"] if d is not None else [])
    report_rows(rows, [r.id for r in refs], args, cols, "fm-kmeans", "fm-kmeans")
    for name in dict.fromkeys(x["set"] for x in rows):  # paired against today's start set, per reference
        for col in cols:
            per_ref = []
            for r in refs:
                a = {x["target"]: x[col] for x in rows if x["set"] == name and x["ref"] == r.id}
                b = {x["target"]: x[col] for x in rows if x["set"] == "cycle" and x["ref"] == r.id}
                both = sorted(set(a) & set(b))
                per_ref.append(100 * np.mean([a[k] for k in both]))
            print(f"{name:12s} {col:9s} {np.mean(per_ref):5.1f} ± {np.std(per_ref):4.1f}")
    s, y = np.concatenate(scores), np.concatenate(rights)
    print(f"start-set prompts: {len(y)}, {100 * y.mean():.1f} % right; AUC of the probe's score {auc(s, y):.3f}")


if __name__ == "__main__":
    main()
