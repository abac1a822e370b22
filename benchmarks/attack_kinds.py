"""What the shipped attacker does to the ideal prompts, and how far removal alone could repair it.

For the seeded targets of ``ppd eval --limit N`` (5 references, seed 0, as the attack ablation):
the attacker's moves by kind (ppd.prompts: BG_POS, DISTRACTOR, OBJ_NEG, BOUNDARY, MISLABEL), and the
Dice of the ideal set, the attacked set, the attacked set refined by the defender (with
``--hypotheses`` label hypotheses) and the attacked set with *exactly* the attacker's prompts removed
(``clean``, a ground-truth oracle that no removal-only defender can beat by much). Session 17::

    python benchmarks/attack_kinds.py --data ../shared/data --dataset ph2 --limit 20 --out docs/tuning/session17/ph2.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ppd import data
from ppd.evaluate.attack_defence import attack, attacker_game
from ppd.evaluate.harness import select
from ppd.metrics import dice
from ppd.prompts import IDEAL, MISLABEL
from ppd.refine import Defender, load_agent
from ppd.sam import Segmenter

KINDS = ("ideal", "bg_pos", "distractor", "obj_neg", "boundary", "mislabel")


def main() -> None:
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--data", default=None)
    a.add_argument("--dataset", required=True)
    a.add_argument("--split", default="val")
    a.add_argument("--limit", type=int, default=20)
    a.add_argument("--hypotheses", type=int, default=0)
    a.add_argument("--out", required=True)
    args = a.parse_args()
    samples = data.load_dataset(args.data, dataset=args.dataset, split=args.split)
    _, targets = select(samples, 5, None, args.limit, 0)
    seg = Segmenter()
    attacker = load_agent(None, "attacker")
    defender = Defender(None, seg, hypotheses=args.hypotheses)
    lines, scores, counts = [], {k: [] for k in ("ideal", "attacked", "defended", "clean")}, np.zeros(len(KINDS))
    t0 = time.perf_counter()
    for s in targets:
        frame, gt = seg.frame(s.image()), s.mask()
        ideal, att = attack(attacker_game(seg, s, frame, 0), attacker, 0, -1, 8)
        clean = att.kind == IDEAL
        d = {"ideal": dice(seg.decode(frame, ideal.points, ideal.labels).mask, gt),
             "attacked": dice(seg.decode(frame, att.points, att.labels).mask, gt),
             "defended": dice(defender.refine_frame(frame, att.points, att.labels).mask, gt),
             "clean": dice(seg.decode(frame, att.points[clean], att.labels[clean]).mask, gt) if clean.any() else 0.0}
        n = np.bincount(att.kind, minlength=len(KINDS))
        counts += n
        for k, v in d.items():
            scores[k].append(v)
        lines.append(f"{s.id}  moves " + " ".join(f"{KINDS[k]} {n[k]}" for k in range(1, len(KINDS)) if n[k])
                     + "  " + "  ".join(f"{k} {v:.3f}" for k, v in d.items()))
    m = {k: 100 * float(np.mean(v)) for k, v in scores.items()}
    share = lambda x: (x - m["attacked"]) / max(m["ideal"] - m["attacked"], 1e-9)  # noqa: E731
    moves = counts[1:].sum()
    lines += ["", f"{args.dataset} {args.split}, {len(targets)} targets, attacker T = 8, defender hypotheses = "
              f"{args.hypotheses}, {time.perf_counter() - t0:.0f} s",
              "attacker moves: " + ", ".join(f"{KINDS[k]} {counts[k] / moves:.0%}" for k in range(1, len(KINDS))),
              f"mislabel share of the moves: {counts[MISLABEL] / moves:.0%}",
              "mDSC %: " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()),
              f"repaired: defended {share(m['defended']):.0%}, clean (every attacker prompt removed) "
              f"{share(m['clean']):.0%}"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-5:]))


if __name__ == "__main__":
    main()
