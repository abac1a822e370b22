"""Offline selection experiments on stored val trajectories (session 7, docs/TRAINING.md "Lever 3b").

Reads docs/tuning/session5/traj_<dataset>_ship7_{cycle,plain}.json (every visited state of the
defender scored) and prints (1) choosing plain or cycle start sets per pair by a GT-free score,
(2) a ridge-regression state selector, leave one reference out. No SAM decodes.

Run: .venv/bin/python benchmarks/selection_offline.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from trajectory_val import rules  # noqa: E402

TRAJ = Path(__file__).parents[1] / "docs" / "tuning" / "session5"
DATASETS = ("kvasir", "ecssd", "ph2", "dsb2018")


def pairs(ds: str, kind: str) -> list[dict]:
    return json.loads((TRAJ / f"traj_{ds}_ship7_{kind}.json").read_text())["pairs"]


def per_ref_mean(values: dict[str, list[float]]) -> float:
    return float(np.mean([100 * np.mean(v) for v in values.values()]))


def plain_or_cycle() -> None:
    rule = "SAM IoU, whole budget"
    for ds in DATASETS:
        c = {(p["ref"], p["target"]): p for p in pairs(ds, "cycle")}
        pl = {(p["ref"], p["target"]): p for p in pairs(ds, "plain")}
        keys = [k for k in c if k in pl]
        out: dict[str, dict[str, list[float]]] = {}
        for k in keys:
            got = {}
            for kind, p in (("cycle", c[k]), ("plain", pl[k])):
                i = rules(p)[rule]
                tr = np.array(p["trace"], float)
                agree = tr[i, 1] - tr[i, 2]
                got[kind] = (p["dice"][i], tr[i, 0], -9.0 if np.isnan(agree) else agree)
            (dc, ic, rc), (dp, ip, rp) = got["cycle"], got["plain"]
            choice = {"cycle": dc, "plain": dp, "higher IoU": dc if ic >= ip else dp,
                      "better agreement": dc if rc >= rp else dp, "IoU + agreement": dc if ic + rc >= ip + rp else dp,
                      "GT-better (ceiling)": max(dc, dp)}
            for name, v in choice.items():
                out.setdefault(name, {}).setdefault(k[0], []).append(v)
        print(ds, ", ".join(f"{n} {per_ref_mean(v):.1f}" for n, v in out.items()))


def features(p: dict) -> tuple[np.ndarray, np.ndarray]:
    tr = np.array(p["trace"], float)
    n = len(tr)
    q = np.array([0.0] + list(p["q"]), float)[:n]
    fg, bg = np.nan_to_num(tr[:, 1]), np.nan_to_num(tr[:, 2])
    x = np.stack([tr[:, 0], tr[:, 0] - tr[0, 0], fg, bg, fg - bg, (fg - bg) - (fg[0] - bg[0]), np.arange(n) / 10,
                  q, np.cumsum(q), np.ones(n)], 1)
    return x, np.array(p["dice"][:n]) - p["dice"][0]


def learned_selector(train_sets: tuple[str, ...], test: str, lam: float = 1e-2) -> float:
    held = pairs(test, "cycle")
    scores = {}
    for r in sorted({p["ref"] for p in held}):  # leave one reference out
        train = [p for ds in train_sets for p in pairs(ds, "cycle") if not (ds == test and p["ref"] == r)]
        x = np.concatenate([features(p)[0] for p in train])
        y = np.concatenate([features(p)[1] for p in train])
        w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
        scores[r] = [p["dice"][int(np.argmax(features(p)[0] @ w))] for p in held if p["ref"] == r]
    return per_ref_mean(scores)


if __name__ == "__main__":
    plain_or_cycle()
    for ds in DATASETS:
        print(f"learned selector {ds}: same dataset {learned_selector((ds,), ds):.1f}, "
              f"all four {learned_selector(DATASETS, ds):.1f}")
