"""``ppd bench refine``: defender refinement time and one-shot time per target.

* refine: the defender on a k-means-thinned one-shot set (<= 20 prompts; its graph is built on its first call),
  the target's embedding already computed (the encoder is excluded), with the
  number of SAM decodes it made;
* one-shot end to end: feature matching + k-means + refine + final mask, for a
  target whose embedding is *not* cached (cold encoder), the reference embedded once.

Images: val split (ECSSD and DSB2018), references seeded within each dataset.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ppd import data
from ppd.oneshot import OneShot
from ppd.refine import Defender, load_agent
from ppd.sam import Segmenter


def run(data_root=None, n_targets: int = 6, defender=None, seed: int = 0, out=None) -> dict:
    rng = np.random.default_rng(seed)
    samples = [s for s in data.load_dataset(data_root, split="val") if s.dataset in ("ecssd", "dsb2018")]
    picks = [samples[i] for i in rng.choice(len(samples), min(n_targets, len(samples)), replace=False)]
    seg = Segmenter(use_cache=False)  # cold: every target is encoded
    pipe = OneShot(seg, Defender(load_agent(defender, "defender"), segmenter=seg), k=10, seed=seed,
                   instances="single")
    refine_s, decodes, e2e_s, enc_s = [], [], [], []
    print(f"ppd bench refine: {len(picks)} val targets, cold encoder, references embedded once")
    for s in picks:
        same = [r for r in samples if r.dataset == s.dataset and r.id != s.id]
        ref = same[rng.integers(len(same))]
        pipe.set_reference(ref.image(), ref.mask())  # reference: not timed
        image = s.image()
        t0 = time.perf_counter()
        frame = seg.frame(image)  # encoder
        t1 = time.perf_counter()
        prop = pipe.propose(frame)
        t2 = time.perf_counter()
        n0 = seg.decode_count
        res = pipe.run(frame, prop).refined  # the defender (graph built on its first call) and the final mask
        t3 = time.perf_counter()
        decodes.append(seg.decode_count - n0)
        idx = prop.index
        enc_s.append(t1 - t0)
        refine_s.append(t3 - t2)
        e2e_s.append(t3 - t0)
        print(f"  {s.dataset}/{s.id[:12]:12s} prompts {len(idx):2d} kept {int(res.kept.sum()):2d}  "
              f"encode {t1 - t0:5.2f} s  refine {t3 - t2:5.2f} s ({decodes[-1]} decodes)  "
              f"one-shot total {t3 - t0:5.2f} s")
    r = {"targets": len(picks), "refine_s_median": float(np.median(refine_s)),
         "decodes_median": float(np.median(decodes)), "encode_s_median": float(np.median(enc_s)),
         "oneshot_s_median": float(np.median(e2e_s))}
    print(f"  median refine {r['refine_s_median']:.2f} s / image ({r['decodes_median']:.0f} decodes; goal <= 0.5 s)")
    print(f"  median one-shot end to end {r['oneshot_s_median']:.2f} s / target (encoder {r['encode_s_median']:.2f} s;"
          f" goal <= 2.0 s)")
    if out:
        Path(out).write_text(json.dumps(r, indent=1) + "\n")
    return r
