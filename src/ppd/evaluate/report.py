"""docs/RESULTS.md from ``ppd eval`` outputs: tables, paired bootstrap, bar chart, overlays.

``python -m ppd.evaluate.report RESULTS_DIR --out docs/RESULTS.md`` reads
``RESULTS_DIR/<dataset>/{per_image.csv,summary.csv,run.json}`` (one ``ppd eval``
output folder per dataset) and writes the markdown, ``RESULTS_DIR/bars.png`` and
a few overlays (``RESULTS_DIR/overlays/``: the k-means set and what the defender
keeps, on the targets where the defender gained and lost most). Nothing here
re-scores anything: every number comes from the eval runs' CSVs.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from ppd.evaluate.methods import METHODS, TRAINING_FREE

#: PAPER.md, "Published results" (mean Dice %, SAM ViT-L-class + DINO features, V100).
PAPER = {"VOC": {"PerSAM": 51.4, "GBMSeg": 56.7, "FM": 41.3, "FM-PPD": 73.0},
         "ISIC": {"PerSAM": 42.4, "GBMSeg": 63.8, "FM-PPD": 76.3},
         "Kvasir": {"PerSAM": 27.4, "GBMSeg": 38.1, "FM": 31.4, "FM-PPD": 64.1}}
OURS_FOR_PAPER = {"Kvasir": "kvasir", "ISIC": "ph2", "VOC": "ecssd"}
KVASIR_TARGET = 65.0
TARGET_MARGIN = 2.0  # Dice points over the best training-free method (issue #20)
THUMB_HEIGHT = 240  # overlay strips are downscaled to this height


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def per_target(rows: list[dict], method: str) -> dict[str, float]:
    """Dice per target averaged over references."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["method"] == method:
            acc.setdefault(r["target"], []).append(float(r["dice"]))
    return {t: float(np.mean(v)) for t, v in acc.items()}


def paired_bootstrap(a: dict[str, float], b: dict[str, float], n: int = 10_000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over shared targets (Dice points) and its 95 % percentile interval."""
    ts = sorted(set(a) & set(b))
    d = np.array([a[t] - b[t] for t in ts]) * 100
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _bars(summaries: dict[str, list[dict]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(s["method"] == m for v in summaries.values() for s in v)]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(methods)
    cmap = plt.get_cmap("tab20")
    for j, m in enumerate(methods):
        xs, ys, es = [], [], []
        for i, (_ds, summ) in enumerate(summaries.items()):
            s = next((s for s in summ if s["method"] == m), None)
            if s is not None:
                xs.append(i + (j - len(methods) / 2 + 0.5) * width)
                ys.append(float(s["mDSC"]))
                sd = float(s["mDSC_sd"])
                es.append(sd if np.isfinite(sd) else 0.0)
        ax.bar(xs, ys, width, yerr=es, label=m, color=cmap(j), capsize=2,
               edgecolor="black" if m == "fm-ppd" else None, linewidth=1.5 if m == "fm-ppd" else 0)
    ax.set_xticks(range(len(summaries)), list(summaries))
    ax.set_ylabel("mDSC (%)")
    ax.set_ylim(0, 100)
    ax.axhline(KVASIR_TARGET, color="grey", ls=":", lw=1)
    ax.legend(ncol=6, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("One-shot, eval split: mean Dice over targets, mean ± sd over 5 references")
    fig.tight_layout()
    from ppd.io import atomic_write

    atomic_write(out_png, lambda t: fig.savefig(t, dpi=110, format="png"))
    plt.close(fig)


def _overlays(results: Path, datasets: dict[str, dict], per: int = 2) -> list[tuple[str, str, str, float, float]]:
    """Re-run FM -> k-means -> defender on the targets with the largest gain and loss (first reference)."""
    from PIL import Image

    from ppd import data
    from ppd.io import atomic_write
    from ppd.oneshot import OneShot
    from ppd.refine import Defender
    from ppd.sam import Segmenter
    from ppd.viz import overlay

    seg = Segmenter()
    dfd = Defender(segmenter=seg)
    out_dir = results / "overlays"
    out_dir.mkdir(exist_ok=True)
    made = []
    for ds, info in datasets.items():
        run = info["run"]
        # the start sets the run was scored on
        c = run["config"]
        opts = {"k": c["k"], "cycle": bool(c.get("cycle", False)), "seed": c["seed"], "instances": "single",
                "votes": c.get("votes", 1)}
        pipe, plain = OneShot(seg, dfd, **opts), OneShot(seg, None, **opts)
        root = Path(run["data_root"])
        samples = {s.id: s for s in data.load_dataset(root, dataset=ds, split=run["split"])}
        ref = samples[run["references"][0]]
        rows = [r for r in info["rows"] if r["reference"] == ref.id]
        km = {r["target"]: float(r["dice"]) for r in rows if r["method"] == "fm-kmeans"}
        pp = {r["target"]: float(r["dice"]) for r in rows if r["method"] == "fm-ppd"}
        gains = sorted(km, key=lambda t: pp[t] - km[t])
        picks = list(dict.fromkeys(gains[-per:][::-1] + gains[:1]))
        plain.set_reference(pipe.set_reference(ref.image(), ref.mask()))
        for t in picks:
            s = samples[t]
            image = s.image()
            frame = seg.frame(image)
            one = pipe.run(frame, image=image)
            res, pts, labs = one.refined, one.proposal.points, one.proposal.labels
            before = plain.run(frame, one.proposal, image=image).mask  # with --votes: both masks voted
            k = res.kept
            left = overlay(image, before, pts, labs)
            right = overlay(image, one.mask, pts[k], labs[k], pts[~k], labs[~k])
            gt = overlay(image, s.mask())
            name = f"{ds}_{t}.jpg"
            strip = Image.fromarray(np.concatenate([gt, left, right], 1))
            scale = THUMB_HEIGHT / strip.height  # small figures: the images' licences are research-use
            strip = strip.resize((round(strip.width * scale), THUMB_HEIGHT), Image.LANCZOS)
            atomic_write(out_dir / name, lambda tmp, im=strip: im.save(tmp, format="JPEG", quality=85))
            made.append((ds, t, f"{results.name}/overlays/{name}", km[t], pp[t]))
    return made


def _read_run(d: Path) -> dict:
    return {"summary": _read_csv(d / "summary.csv"), "rows": _read_csv(d / "per_image.csv"),
            "run": json.loads((d / "run.json").read_text())}


def _oracle_share(summary: list[dict], rows: list[dict]) -> tuple[float, float, str, str]:
    """(greedy oracle mDSC, share of its gain over fm-kmeans that fm-ppd takes, prompts kept by fm-ppd and
    by the oracle) from one run that holds all three methods on the same targets."""
    sm = {s["method"]: float(s["mDSC"]) for s in summary}
    orc = sm.get("fm-greedy-oracle", np.nan)
    share = (sm["fm-ppd"] - sm["fm-kmeans"]) / (orc - sm["fm-kmeans"]) if orc > sm["fm-kmeans"] else np.nan

    def kept(m):
        ks = [float(r["n_kept"]) for r in rows if r["method"] == m]
        return f"{np.mean(ks):.1f}" if ks else "–"
    return orc, share, kept("fm-ppd"), kept("fm-greedy-oracle")


def build(results: str | Path, out_md: str | Path, overlays: bool = True) -> str:
    results = Path(results)
    datasets: dict[str, dict] = {}
    for d in sorted(p for p in results.iterdir() if (p / "summary.csv").is_file()):
        datasets[d.name] = _read_run(d)
        if (results / "oracle" / d.name / "summary.csv").is_file():  # the greedy oracle on a target subset
            datasets[d.name]["oracle"] = _read_run(results / "oracle" / d.name)
    if not datasets:
        raise SystemExit(f"no <dataset>/summary.csv under {results}")
    order = [d for d in ("kvasir", "ph2", "ecssd") if d in datasets] + [d for d in datasets
                                                                        if d not in ("kvasir", "ph2", "ecssd")]
    datasets = {d: datasets[d] for d in order}
    _bars({d: v["summary"] for d, v in datasets.items()}, results / "bars.png")
    rel = Path(results).name
    cycle = any(v["run"].get("config", {}).get("cycle") for v in datasets.values())
    L = ["# Results: one-shot segmentation on the eval split", "",
         "Generated by `make results` (its `ppd eval` runs, then `python -m ppd.evaluate.report "
         f"docs/{rel} --out {Path(out_md).as_posix()}`). Start sets: "
         + ("cycle-consistent feature matches" if cycle else "plain feature matches")
         + ", k-means-thinned. Frozen configuration: the shipped defender and attacker "
         "(`src/ppd/assets/`, trained on the train split, every choice made on val), MobileSAM (ViT-T) on "
         "this 2-core CPU, K = 10 prompts per class after k-means. Never tuned on these numbers.", "",
         "Protocol (`ppd eval`, see `src/ppd/evaluate/harness.py`): per dataset 5 seeded reference images "
         "(seed 0); the targets are a seeded subset of the other eval images (`--limit`, because a full "
         "run does not fit a session: the greedy oracle alone costs ~7 s per target and reference); "
         "the same references and targets for every method; whole masks; Dice / IoU at the stored "
         "size, no post-processing; mean over targets for each reference, then mean ± sd over the 5 "
         "references; `s/img` = seconds of the method's own prompt engineering and decodes per target "
         "(target encoder excluded, ~1.0 s, shared by all methods), measured inside these runs, some of "
         "which shared the 2 cores with other jobs: read them as relative costs (`ppd bench refine` gives "
         "clean timings).", ""]
    L += ["## Tables", ""]
    for ds, v in datasets.items():
        run = v["run"]
        L += [f"### {ds}", "", f"`{' '.join(['ppd', *run['argv'][1:]]) if run.get('argv') else 'ppd eval'}` — "
              f"{run['n_targets']} targets, references {', '.join(run['references'])}; git {run['git_commit'][:10]}",
              "", "| method | mDSC | mIoU | s/img | n |", "|---|---|---|---|---|"]
        for s in v["summary"]:
            def pm(a, b):
                return f"{float(a):.1f}" if not np.isfinite(float(b)) else f"{float(a):.1f} ± {float(b):.1f}"
            bold = "**" if s["method"] == "fm-ppd" else ""
            L.append(f"| {bold}{s['method']}{bold} | {bold}{pm(s['mDSC'], s['mDSC_sd'])}{bold} | "
                     f"{pm(s['mIoU'], s['mIoU_sd'])} | {float(s['s_per_img']):.2f} | {s['n']} |")
        L.append("")
    L += [f"![bars]({rel}/bars.png)", "", "## Does the defender help? (`fm-ppd` − `fm-kmeans`)", "",
          "Paired over targets (Dice per target averaged over the 5 references), 10,000 bootstrap "
          "resamples of the targets, 95 % percentile interval, Dice points. *Share of oracle gain* = "
          "(fm-ppd − fm-kmeans) / (fm-greedy-oracle − fm-kmeans): how much of what removal-only "
          "refinement could gain the defender captures; where the greedy oracle (~7 s per target and "
          "reference) ran on a smaller target subset (`<results>/oracle/<dataset>`, one start set, no votes), "
          "the share and the prompts kept are that subset's own fm-kmeans, fm-ppd and oracle.", "",
          "| dataset | fm-kmeans | fm-ppd | gain [95 % CI] | fm-random gain | greedy oracle | share of oracle gain |"
          " prompts kept (fm-ppd / oracle) | best training-free baseline | target met? |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for ds, v in datasets.items():
        rows = v["rows"]
        km, pp = per_target(rows, "fm-kmeans"), per_target(rows, "fm-ppd")
        if not km or not pp:
            continue
        g, lo, hi = paired_bootstrap(pp, km)
        sm = {s["method"]: float(s["mDSC"]) for s in v["summary"]}
        rnd = sm.get("fm-random", np.nan) - sm["fm-kmeans"]
        oracle_run, sub = v, ""
        if "fm-greedy-oracle" not in sm and "oracle" in v:  # the oracle ran on a subset: share within it
            oracle_run = v["oracle"]
            sub = f" ({oracle_run['run']['n_targets']} targets, 1 start set)"
        orc, share, kept_ppd, kept_orc = _oracle_share(oracle_run["summary"], oracle_run["rows"])
        base = {m: sm[m] for m in TRAINING_FREE if m in sm}
        best = max(base, key=base.get)
        _, lo_best, _ = paired_bootstrap(pp, per_target(rows, best))
        beats = sm["fm-ppd"] >= base[best] + TARGET_MARGIN and lo_best > 0
        met = beats and (ds != "kvasir" or sm["fm-ppd"] >= KVASIR_TARGET)
        verdicts.append((ds, beats, met))
        n_in = np.mean([float(r["n_prompts"]) for r in oracle_run["rows"] if r["method"] == "fm-ppd"])
        L.append(f"| {ds} | {sm['fm-kmeans']:.1f} | {sm['fm-ppd']:.1f} | {g:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
                 f"{rnd:+.1f} | {orc:.1f}{sub} | {100 * share:.0f} % | {kept_ppd} / {kept_orc} "
                 f"of {n_in:.1f} | {best} {base[best]:.1f} | "
                 f"{'yes' if met else 'no'} |")
    L += ["", f"**Project target** (issue #20): the shipped defender beats the best training-free method "
          f"({', '.join(TRAINING_FREE)}; fm-kmeans is its own start set) by ≥ {TARGET_MARGIN:.0f} points, with "
          f"the paired 95 % CI against it above 0, on every eval dataset, and reaches "
          f"≥ {KVASIR_TARGET:.0f} mDSC on kvasir. "
          + ("**Met.**" if verdicts and all(m for _, _, m in verdicts) else
             "**Not met** on: " + ", ".join(ds for ds, _, m in verdicts if not m) + "."), ""]
    L += ["## Against the paper", "",
          "| paper dataset → ours | paper FM | paper PerSAM | paper GBMSeg | paper FM-PPD | our fm | our persam |"
          " our fm-gbmseg | our fm-kmeans | our fm-ppd |", "|---|---|---|---|---|---|---|---|---|---|"]
    for pds, ods in OURS_FOR_PAPER.items():
        if ods not in datasets:
            continue
        sm = {s["method"]: float(s["mDSC"]) for s in datasets[ods]["summary"]}
        p = PAPER[pds]

        def c(x):
            return f"{x:.1f}" if x is not None and np.isfinite(x) else "–"
        L.append(f"| {pds} → {ods} | {c(p.get('FM'))} | {c(p.get('PerSAM'))} | {c(p.get('GBMSeg'))} | "
                 f"{c(p.get('FM-PPD'))} | {c(sm.get('fm'))} | {c(sm.get('persam'))} | {c(sm.get('fm-gbmseg'))} | "
                 f"{c(sm.get('fm-kmeans'))} | {c(sm.get('fm-ppd'))} |")
    L += ["", "Differences, stated: the paper (PAPER.md) uses a ViT-L-class SAM (~10× larger than MobileSAM) and "
          "DINO patch features for matching, on GPUs; we match on MobileSAM's own image embedding (no DINOv2 "
          "weights exist offline) on a 2-core CPU. Its ISIC and VOC are replaced here by PH2 (also dermoscopy) "
          "and ECSSD (natural salient objects); only Kvasir is the same dataset, and our Kvasir targets are a "
          "seeded subset. The paper's FM-PPD starts from all FM prompts (its own thinning, if any, is not "
          "described); ours from the k-means-thinned set, which is already a strong baseline. Our GBMSeg and "
          "PerSAM are re-implementations of their training-free prompt engineering "
          "(`src/ppd/evaluate/baselines.py`), not their released code.", ""]
    if overlays:
        made = _overlays(results, datasets)
        L += ["## Examples", "",
              "Left to right: ground truth; the fm-kmeans set and SAM's mask; what the defender keeps "
              "(discs) and suppresses (yellow crosses; ring colour = label) and SAM's mask. First reference; "
              "the targets where the defender gained most, and where it lost most. Thumbnails derived from "
              "Kvasir-SEG, PH2 and ECSSD images (research-use terms, see `../shared/data/README.md`), shown "
              "only to illustrate the results.", ""]
        for ds, t, path, a, b in made:
            L += [f"**{ds} {t}**: fm-kmeans {100 * a:.1f} → fm-ppd {100 * b:.1f}", "", f"![{ds} {t}]({path})", ""]
    text = "\n".join(L) + "\n"
    from ppd.io import atomic_write

    atomic_write(Path(out_md), lambda t: t.write_text(text))
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="folder of ppd eval outputs, one subfolder per dataset")
    p.add_argument("--out", default="docs/RESULTS.md")
    p.add_argument("--no-overlays", action="store_true")
    a = p.parse_args(argv)
    build(a.results, a.out, overlays=not a.no_overlays)


if __name__ == "__main__":
    main()
