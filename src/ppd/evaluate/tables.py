"""``ppd eval``'s rows and what is made of them: summaries, the markdown table, the output files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppd.errors import ConfigError
from ppd.evaluate.methods import METHODS


@dataclass
class Row:
    dataset: str
    method: str
    reference: str  # "-" for methods without a reference
    target: str
    dice: float
    iou: float
    seconds: float
    n_prompts: int  # prompts given to SAM before any refinement
    n_kept: int  # prompts SAM finally saw
    key: str = ""


@dataclass
class Summary:
    dataset: str
    method: str
    mdsc: float  # %, mean over references of the mean over targets
    mdsc_sd: float  # sd over references (nan with one reference or none used)
    miou: float
    miou_sd: float
    s_per_img: float
    n: int  # targets
    n_refs: int


def _sd(x: list[float]) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else float("nan")


def summarize(rows: list[Row]) -> list[Summary]:
    out = []
    for ds in sorted({r.dataset for r in rows}):
        for m in [m for m in METHODS if any(r.method == m and r.dataset == ds for r in rows)]:
            rs = [r for r in rows if r.dataset == ds and r.method == m]
            by_ref: dict[str, list[Row]] = {}
            for r in rs:
                by_ref.setdefault(r.reference, []).append(r)
            d = [100 * np.mean([r.dice for r in v]) for v in by_ref.values()]
            j = [100 * np.mean([r.iou for r in v]) for v in by_ref.values()]
            out.append(Summary(ds, m, float(np.mean(d)), _sd(d), float(np.mean(j)), _sd(j),
                               float(np.mean([r.seconds for r in rs])), len({r.target for r in rs}),
                               len(by_ref) if METHODS[m].reference else 0))
    return out


def format_table(summary: list[Summary]) -> str:
    """Markdown: ``method | mDSC | mIoU | s/img | n`` per dataset."""
    def pm(v, sd):
        return f"{v:.1f}" if not np.isfinite(sd) else f"{v:.1f} ± {sd:.1f}"

    lines = []
    for ds in dict.fromkeys(s.dataset for s in summary):
        lines += [f"**{ds}**", "", "| method | mDSC | mIoU | s/img | n |", "|---|---|---|---|---|"]
        for s in [s for s in summary if s.dataset == ds]:
            lines.append(f"| {s.method} | {pm(s.mdsc, s.mdsc_sd)} | {pm(s.miou, s.miou_sd)} | "
                         f"{s.s_per_img:.2f} | {s.n} |")
        lines.append("")
    return "\n".join(lines)


def write_outputs(out: Path, rows: list[Row], summary: list[Summary], run_info: dict) -> None:
    """per_image.csv, summary.csv, summary.md and run.json, each written atomically."""
    import csv
    import io

    from ppd.io import atomic_write

    def text(path: Path, body: str) -> None:
        atomic_write(path, lambda tmp: tmp.write_text(body))

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "method", "reference", "target", "dice", "iou", "seconds", "n_prompts", "n_kept"])
    for r in rows:
        w.writerow([r.dataset, r.method, r.reference, r.target, f"{r.dice:.5f}", f"{r.iou:.5f}",
                    f"{r.seconds:.4f}", r.n_prompts, r.n_kept])
    text(out / "per_image.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "method", "mDSC", "mDSC_sd", "mIoU", "mIoU_sd", "s_per_img", "n", "n_refs"])
    for s in summary:
        w.writerow([s.dataset, s.method, f"{s.mdsc:.3f}", f"{s.mdsc_sd:.3f}", f"{s.miou:.3f}", f"{s.miou_sd:.3f}",
                    f"{s.s_per_img:.4f}", s.n, s.n_refs])
    text(out / "summary.csv", buf.getvalue())
    text(out / "summary.md", format_table(summary) + "\n")
    text(out / "run.json", json.dumps(run_info, indent=1) + "\n")


def read_base(base: str | os.PathLike, dataset: str, split: str, refs: list[str], targets: list[str],
              config: dict, skip: list[str]) -> tuple[list[Row], dict]:
    """Rows of an earlier ``ppd eval`` output folder for the methods not in ``skip``, after checking that
    it used the same dataset, split, references, targets and settings (else :class:`ConfigError`)."""
    import csv

    base = Path(base)
    try:
        info = json.loads((base / "run.json").read_text())
        with open(base / "per_image.csv", newline="") as f:
            raw = list(csv.DictReader(f))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--base {base}: not a readable ppd eval output ({type(e).__name__}: {e})") from None
    same = {"dataset": (info.get("dataset"), dataset), "split": (info.get("split"), split),
            "references": (info.get("references"), refs), "config": (info.get("config"), config),
            "targets": (sorted({r["target"] for r in raw}), sorted(targets))}
    diff = [k for k, (a, b) in same.items() if a != b]
    if diff:
        raise ConfigError(f"--base {base} was run with other {', '.join(diff)}; its rows cannot be combined")
    rows = [Row(r["dataset"], r["method"], r["reference"], r["target"], float(r["dice"]), float(r["iou"]),
                float(r["seconds"]), int(r["n_prompts"]), int(r["n_kept"])) for r in raw if r["method"] not in skip]
    taken = list(dict.fromkeys(r.method for r in rows))
    return rows, {"dir": str(base), "git_commit": info.get("git_commit"), "methods": taken,
                  "hashes": info.get("hashes")}
