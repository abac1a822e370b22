"""The ``ppd`` command line.

Every deliberate failure is a :class:`ppd.errors.PPDError`: printed as one line on
stderr with a non-zero exit code (2), no traceback unless ``--debug``, and no
partial output files (outputs are written to temporary files and renamed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ppd.errors import InvalidPromptError, OutputError, PPDError


def _parse_point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        x, y = float(parts[0]), float(parts[1])
        lab = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise InvalidPromptError(f"--point must be X,Y or X,Y,LABEL (LABEL 1 or 0), got {text!r}") from None
    if lab not in (0, 1):
        raise InvalidPromptError(f"--point label must be 1 (positive) or 0 (negative), got {lab}")
    return x, y, lab


def _parse_box(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
        if len(vals) != 4:
            raise ValueError
    except ValueError:
        raise InvalidPromptError(f"--box must be X0,Y0,X1,Y1, got {text!r}") from None
    return vals


def _write_outputs(outputs: list[tuple[Path, np.ndarray]]) -> None:
    """Write every PNG or none: on failure the files already written are removed."""
    from ppd.io import write_png

    done: list[Path] = []
    try:
        for path, arr in outputs:
            write_png(path, arr)
            done.append(path)
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        raise


def _segmenter(args):
    from ppd.sam import Segmenter

    return Segmenter(checkpoint=args.checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache)


# ----------------------------------------------------------------------------- segment
def cmd_segment(args) -> int:
    from ppd.io import check_writable, read_image
    from ppd.sam.segmenter import check_box, check_points
    from ppd.viz import overlay

    outs = [check_writable(args.out)] + ([check_writable(args.overlay)] if args.overlay else [])
    if len({p.resolve() for p in outs}) != len(outs):
        raise OutputError("--out and --overlay must be different files")
    pts = [_parse_point(p) for p in args.point or []]
    box = _parse_box(args.box) if args.box else None
    if not pts and box is None:
        raise InvalidPromptError("give at least one --point or a --box")
    image = read_image(args.image)
    size = image.shape[:2]
    points = np.array([p[:2] for p in pts], float).reshape(-1, 2)
    labels = np.array([p[2] for p in pts], int)
    check_points(points, labels, size)  # fail before loading SAM
    if box is not None:
        check_box(box, size)
    seg = _segmenter(args)
    seg.set_image(image)
    pred = seg.predict(points if len(points) else None, labels if len(points) else None, box=box,
                       multimask=args.multimask)
    outputs = [(Path(args.out), pred.mask)]
    if args.overlay:
        outputs.append((Path(args.overlay), overlay(image, pred.mask, points, labels)))
    _write_outputs(outputs)
    print(f"{args.out}: {int(pred.mask.sum())} px foreground, SAM predicted IoU {pred.iou:.3f}")
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from ppd.io import read_image, read_mask
    from ppd.metrics import dice
    from ppd.viz import overlay

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = resources.files("ppd") / "assets" / "samples"
    items = json.loads((samples / "samples.json").read_text())
    seg = _segmenter(args)
    print(f"{'image':14s} {'size':>9s} {'prompts':>7s} {'SAM IoU':>7s} {'Dice':>6s} {'time':>6s}  output")
    for it in items:
        with resources.as_file(samples / it["image"]) as p:
            image = read_image(p)
        pts, labs = np.array(it["points"], float), np.array(it["labels"], int)
        t0 = time.perf_counter()
        seg.set_image(image)
        pred = seg.predict(pts, labs)
        dt = time.perf_counter() - t0
        d = "  -  "
        if it.get("mask"):
            with resources.as_file(samples / it["mask"]) as p:
                d = f"{dice(pred.mask, read_mask(p, shape=image.shape[:2])):.3f}"
        stem = Path(it["image"]).stem
        _write_outputs([(out / f"{stem}.mask.png", pred.mask),
                        (out / f"{stem}.overlay.png", overlay(image, pred.mask, pts, labs))])
        h, w = image.shape[:2]
        print(f"{stem:14s} {w:>4d}x{h:<4d} {len(pts):>7d} {pred.iou:>7.3f} {d:>6s} {dt:>5.2f}s  "
              f"{out / (stem + '.overlay.png')}")
    print(f"wrote masks and overlays for {len(items)} shipped sample images to {out}/")
    return 0


# ----------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from ppd.bench import bench_sam

    if args.what == "sam":
        bench_sam.run(data_root=args.data, n_images=args.images or 4, n_decodes=args.decodes, n_points=args.points,
                      cache_dir=args.cache_dir, out=args.out)
    elif args.what == "game":
        from ppd.bench import bench_game

        bench_game.run(data_root=args.data, n_episodes=args.episodes, n_images=args.images or 24,
                       seed=args.seed, cache_dir=args.cache_dir, out=args.out)
    return 0


# ----------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from ppd import data

    if args.what == "verify":
        n = data.verify(args.data)
        print(f"{n} files match SHA256SUMS in {args.data or data.default_root()}")
    else:
        samples = data.load_dataset(args.data)
        counts: dict[tuple[str, str], int] = {}
        for s in samples:
            counts[(s.dataset, s.split)] = counts.get((s.dataset, s.split), 0) + 1
        for (ds, sp), n in sorted(counts.items()):
            print(f"{ds:10s} {sp:6s} {n:5d}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (``ppd help`` / ``-h`` shows usage)."""

    def error(self, message: str):
        self.exit(2, f"ppd: error: {message} (see '{self.prog} -h')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ppd", description="Point Prompt Defender: robust point prompts for SAM.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def sam_opts(sp):
        sp.add_argument("--checkpoint", help="MobileSAM weights (default: $PPD_SAM_CHECKPOINT or the package)")
        sp.add_argument("--cache-dir", help="embedding cache (default: $PPD_CACHE_DIR or ~/.cache/ppd)")
        sp.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")

    s = sub.add_parser("segment", help="segment one image from point / box prompts")
    s.add_argument("image")
    s.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="a point in pixels; LABEL 1 = positive (default), 0 = negative; repeatable")
    s.add_argument("--box", metavar="X0,Y0,X1,Y1")
    s.add_argument("--multimask", action="store_true", help="best of SAM's three masks by predicted IoU")
    s.add_argument("--out", required=True, metavar="MASK.png")
    s.add_argument("--overlay", metavar="OVERLAY.png")
    sam_opts(s)
    s.set_defaults(func=cmd_segment)

    d = sub.add_parser("demo", help="run the main job on the shipped sample images")
    d.add_argument("--out", default="out/demo")
    sam_opts(d)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks printing figures measured side by side")
    b.add_argument("what", choices=["sam", "game"])
    b.add_argument("--data", help="data root (default ../shared/data)")
    b.add_argument("--images", type=int, help="images to use (sam: 4 val images; game: 24 train images)")
    b.add_argument("--episodes", type=int, default=40, help="game: episodes to replay")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--decodes", type=int, default=30, help="decodes per image and path")
    b.add_argument("--points", type=int, default=5, help="points per prompt set")
    b.add_argument("--out", help="also write the figures as JSON here")
    b.add_argument("--cache-dir")
    b.set_defaults(func=cmd_bench)

    dt = sub.add_parser("data", help="inspect or verify a data root")
    dt.add_argument("what", choices=["verify", "list"])
    dt.add_argument("--data", help="data root (default ../shared/data)")
    dt.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PPDError as e:
        if args.debug:
            raise
        print(f"ppd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppd: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"ppd: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
