"""Quick one-shot look (not the `ppd eval` harness): FM -> k-means vs FM -> k-means -> defender.

Each target gets a seeded random reference of the same dataset; whole masks; Dice at
the original size. Usage:
  .venv/bin/python benchmarks/oneshot_quick.py eval kvasir:60 ph2:40 ecssd:60
  .venv/bin/python benchmarks/oneshot_quick.py val ecssd:50 dsb2018:10
"""

import sys
import time

import numpy as np

from ppd import data
from ppd.evaluate.oneshot_val import evaluate
from ppd.refine import Defender
from ppd.sam import Segmenter


def main(split: str, specs: list[str]) -> None:
    seg = Segmenter()
    rng = np.random.default_rng(0)
    samples = []
    for spec in specs:
        ds, n = spec.split(":")
        rows = data.load_dataset(dataset=ds, split=split)
        samples += [rows[i] for i in sorted(rng.choice(len(rows), min(int(n), len(rows)), replace=False))]
    t = time.time()
    res = evaluate(samples, {"fm-ppd": Defender(segmenter=seg)}, seg, progress=False)
    for d, row in res.items():
        print(d, {k: round(v, 3) for k, v in row.items()}, flush=True)
    print("seconds", round(time.time() - t))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
