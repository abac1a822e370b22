"""Share of the attack's damage the defender repaired, with a bootstrap 95 % interval over targets.

Reads the ``per_image.csv`` of ``ppd eval --methods ideal,ideal-attacked,ideal-attacked-defended[,...-ref]``
(a reference method's rows are averaged per target first). Share = (defended - attacked) / (ideal -
attacked) over the targets' means; 2,000 seeded resamples of the targets. Session 17::

    python benchmarks/repair_ci.py docs/results17_attack/*/per_image.csv
"""

from __future__ import annotations

import csv
import sys

import numpy as np

DEFENDED = ("ideal-attacked-defended", "ideal-attacked-defended-ref")


def _share(ideal: np.ndarray, attacked: np.ndarray, defended: np.ndarray, idx: np.ndarray) -> float:
    return float((defended[idx].mean() - attacked[idx].mean()) / (ideal[idx].mean() - attacked[idx].mean()))


def repair(path: str, draws: int = 2000) -> str:
    by: dict[str, dict[str, list[float]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            by.setdefault(r["target"], {}).setdefault(r["method"], []).append(float(r["dice"]))
    targets = sorted(by)
    col = lambda m: np.array([np.mean(by[t][m]) for t in targets])  # noqa: E731
    ideal, attacked = col("ideal"), col("ideal-attacked")
    rng = np.random.default_rng(0)
    out = [f"{path}: {len(targets)} targets"]
    for m in DEFENDED:
        if not all(m in by[t] for t in targets):
            continue
        d = col(m)
        boot = [_share(ideal, attacked, d, rng.integers(0, len(targets), len(targets))) for _ in range(draws)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out.append(f"  {m}: {_share(ideal, attacked, d, np.arange(len(targets))):.0%} [{lo:.0%}, {hi:.0%}]")
    return "\n".join(out)


if __name__ == "__main__":
    print("\n".join(repair(p) for p in sys.argv[1:]))
