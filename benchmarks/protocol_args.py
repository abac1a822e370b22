"""The ``ppd eval`` protocol's options, rows and report, shared by the val tuning scripts that replay it."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np

from ppd import data
from ppd.evaluate.harness import select


def protocol_parser(doc: str) -> argparse.ArgumentParser:
    """Dataset, split, data root, references, seed, target limit, K and defender (val defaults: 10 refs, seed 1)."""
    a = argparse.ArgumentParser(description=doc.splitlines()[0])
    a.add_argument("--dataset", required=True)
    a.add_argument("--split", default="val")
    a.add_argument("--data", default=None)
    a.add_argument("--references", type=int, default=10)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--k", type=int, default=10)
    a.add_argument("--defender", default=None, help="checkpoint (default: the shipped defender)")
    return a


def protocol_samples(args) -> tuple[list, list]:
    """The seeded references and targets ``ppd eval`` would use for these options."""
    samples = [s for s in data.load_dataset(args.data, split=args.split) if s.dataset == args.dataset]
    return select(samples, args.references, None, args.limit, args.seed)


def write_rows(path: str, rows: list[dict]) -> None:
    """All rows so far as gzipped JSON lines, written to a temp file then renamed (a kill keeps the last)."""
    tmp = Path(path + ".tmp")
    with gzip.open(tmp, "wt") as fh:
        fh.writelines(json.dumps(x, separators=(",", ":")) + "\n" for x in rows)
    tmp.replace(path)


def read_rows(path: str) -> list[dict]:
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def report_rows(rows: list[dict], ref_ids: list[str], args, cols: list[str], base: str, fallback: str) -> None:
    """Per set: each column's mDSC % (mean over targets, then mean ± sd over references) and its change
    against ``base``; a row without a column counts as its ``fallback`` column."""
    print(f"{args.dataset} {args.split}: {len({x['target'] for x in rows})} targets x {len(ref_ids)} references "
          f"(seed {args.seed})")
    for name in dict.fromkeys(x["set"] for x in rows):
        mine = [x for x in rows if x["set"] == name]
        per_ref = {k: np.array([100 * np.mean([x.get(k, x[fallback]) for x in mine if x["ref"] == r])
                                for r in ref_ids]) for k in cols}
        print(name)
        for k, s in per_ref.items():
            gain = s.mean() - per_ref[base].mean()
            print(f"  {k:12s} {s.mean():5.1f} ± {s.std():4.1f}  ({gain:+.2f} vs {base})")


def rows_parser(doc: str) -> argparse.ArgumentParser:
    """:func:`protocol_parser` plus ``--out`` (rows written as targets finish) and ``--rows`` (report only)."""
    a = protocol_parser(doc)
    a.add_argument("--out", default=None, help="a .jsonl.gz file for the rows (written as targets finish)")
    a.add_argument("--rows", default=None, help="only report the rows of an earlier --out file (no model)")
    return a


def replay_or_setup(args, report) -> tuple | None:
    """With ``--rows``: ``report(rows, ref_ids, args)`` on the rows of an earlier run, and None. Else the
    segmenter, the defender (``--defender``), the references made once (sample, OneShotReference with
    its pixels) and the targets."""
    if args.rows:
        rows = read_rows(args.rows)
        report(rows, list(dict.fromkeys(x["ref"] for x in rows)), args)
        return None
    from ppd.oneshot import OneShotReference
    from ppd.refine import Defender
    from ppd.sam import Segmenter

    seg = Segmenter()
    d = Defender(args.defender, segmenter=seg)
    refs, targets = protocol_samples(args)
    made = [(r, OneShotReference.make(seg.frame(r.image()), r.mask(), r.image())) for r in refs]
    return seg, d, made, targets


def plan_rows(target: str, ref: str, masks: dict[str, dict[str, np.ndarray]], gt: np.ndarray,
              plans: dict[str, tuple[str, ...]]) -> list[dict]:
    """Per set name (``fm-kmeans``, ``fm-ppd``) with a first start set ``o0``: each start set's Dice
    (``one:<name>``) and each plan's, the pixel-wise majority of its sets' masks."""
    from ppd.metrics import dice
    from ppd.oneshot import majority

    rows = []
    for set_name, ms in masks.items():
        if "o0" not in ms:
            continue
        row = {"target": target, "ref": ref, "set": set_name}
        row.update({f"one:{k}": round(float(dice(m, gt)), 4) for k, m in ms.items()})
        for plan, names in plans.items():
            row[plan] = round(float(dice(majority([ms[k] for k in names if k in ms]), gt)), 4)
        rows.append(row)
    return rows


def set_masks(seg, d, ref, frames: dict, feats: dict, base, sets: dict, args) -> dict[str, dict[str, np.ndarray]]:
    """Per set name (``fm-kmeans``: unrefined, ``fm-ppd``: refined by ``d``) the mask of each start set in
    ``sets`` (name -> (reference view, target view, k-means seed offset)), on the target as it is.
    ``frames`` / ``feats``: the target's views ("" as it is) and their patch features; ``base``: the
    reference as it is matched on the target as it is (a seed offset re-thins it, nothing is re-matched)."""
    from ppd.oneshot import flip_array, propose, rethin

    masks: dict[str, dict[str, np.ndarray]] = {"fm-kmeans": {}, "fm-ppd": {}}
    for name, (view, tv, offset) in sets.items():
        v, fr = ref.view(view, seg), frames[tv]
        if view or tv:  # a new match: this view of the reference on this view of the target
            p = propose(v, fr, args.k, None, args.seed + offset, feats[tv])
        else:  # the same match, thinned with another seed
            p = rethin(base, args.k, args.seed + offset) if offset else base
        if len(p.points) == 0:
            continue
        km = seg.decode(fr, p.points, p.labels).mask
        pp = d.refine_frame(fr, p.points, p.labels, v.graph_reference(d.config.graph_grid)).mask
        # a flip is its own inverse
        masks["fm-kmeans"][name], masks["fm-ppd"][name] = (flip_array(km, tv), flip_array(pp, tv)) if tv \
            else (km, pp)
    return masks
