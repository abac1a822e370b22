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
import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from ppd.errors import ConfigError, InvalidMaskError, InvalidPromptError, OutputError, PPDError
from ppd.io import OutputDir
from ppd.prompts import check_k


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
    from ppd.io import check_box, check_points, check_writable, read_image
    from ppd.viz import overlay

    outs = [check_writable(args.out, (".png",))] + ([check_writable(args.overlay, (".png",))] if args.overlay else [])
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
    return _demo_clicks(args) if args.clicks else _demo_oneshot(args)


def _demo_oneshot(args) -> int:
    """The main job: one-shot FM -> k-means -> shipped defender -> SAM on the shipped groups."""
    from ppd.io import read_image, read_mask
    from ppd.metrics import dice
    from ppd.oneshot import OneShot
    from ppd.refine import Defender, load_agent

    check_k(args.k, _defender_rows(args.defender))
    out = OutputDir(args.out).ensure()
    root = resources.files("ppd") / "assets" / "oneshot"

    def load(name, mask=False):
        with resources.as_file(root / name) as p:
            return read_mask(p) if mask else read_image(p)

    seg = _segmenter(args)
    opts = {"k": args.k, "cycle": args.cycle, "instances": args.instances}
    pipe = OneShot(seg, Defender(load_agent(args.defender, "defender"), segmenter=seg, **_defender_opts(args)),
                   **opts)
    plain = OneShot(seg, None, **opts)  # the same start sets and mode, no defender: the "before" column
    print(f"{'target':10s} {'FM':>5s} {'k-means':>7s} {'kept':>4s} {'Dice FM-kmeans':>14s} {'Dice FM-PPD':>11s} "
          f"{'time':>6s}  overlay")
    for g in json.loads((root / "groups.json").read_text()):
        ref = pipe.set_reference(load(g["ref"]), load(g["ref_mask"], mask=True))
        plain.set_reference(ref.frame, ref.mask)
        print(f"-- {g['name']}: reference {g['ref']} (masks: {g['masks']}; "
              f"{MODE_NOTE[pipe.mode]})")
        for tname, mname in zip(g["targets"], g["target_masks"], strict=True):
            image, gt = load(tname), load(mname, mask=True)
            t0 = time.perf_counter()
            frame = seg.frame(image)
            out1 = pipe.run(frame)
            dt = time.perf_counter() - t0
            res, prop = out1.refined, out1.proposal
            base = plain.run(frame, prop).mask
            stem = Path(tname).stem
            _write_refined(out, stem, image, res)
            print(f"{stem:10s} {len(prop.candidates):>5d} {len(prop.index):>7d} {int(res.kept.sum()):>4d} "
                  f"{dice(base, gt):>14.3f} {dice(res.mask, gt):>11.3f} {dt:>5.2f}s  {out / (stem + '.overlay.png')}")
    print(f"wrote masks, overlays and prompt JSONs to {out}/ (green: kept positives, red: kept negatives, "
          f"yellow crosses: prompts the defender suppressed)")
    return 0


def _demo_clicks(args) -> int:
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
    elif args.what == "refine":
        from ppd.bench import bench_refine

        bench_refine.run(data_root=args.data, n_targets=args.images or 6, seed=args.seed, out=args.out)
    elif args.what == "replay":
        from ppd.bench import bench_replay

        bench_replay.run(data_root=args.data, n_transitions=args.transitions, n_images=args.images or 12,
                         seed=args.seed, cache_dir=args.cache_dir, out=args.out)
    elif args.what == "game":
        from ppd.bench import bench_game

        bench_game.run(data_root=args.data, n_episodes=args.episodes, n_images=args.images or 24,
                       seed=args.seed, cache_dir=args.cache_dir, out=args.out)
    return 0


# ----------------------------------------------------------------------------- refine / oneshot
def read_prompts_json(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``{"points": [[x, y], ...], "labels": [1, 0, ...]}``, or ``{"points": [[x, y, label], ...]}`` without
    a ``labels`` key (extra keys such as status are ignored). Any other shape is refused, never reshaped."""
    from ppd.io import check_points

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise InvalidPromptError(f"cannot read prompts JSON {path}: {type(e).__name__}: {e}") from None
    if not isinstance(d, dict) or "points" not in d:
        raise InvalidPromptError(f"prompts JSON {path} must be an object with a \"points\" list")
    if d["points"] == []:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    try:  # shapes and labels only: the image's size is checked once it is read
        return check_points(d["points"], d.get("labels"), None)
    except InvalidPromptError as e:
        raise InvalidPromptError(f"prompts JSON {path}: {e}") from None


def _write_refined(out: Path, stem: str, image: np.ndarray, res) -> None:
    from ppd.io import atomic_write
    from ppd.viz import overlay

    k = res.kept
    ov = overlay(image, res.mask, res.points[k], res.labels[k], res.points[~k], res.labels[~k])
    _write_outputs([(out / f"{stem}.mask.png", res.mask), (out / f"{stem}.overlay.png", ov)])
    atomic_write(out / f"{stem}.prompts.json", lambda t: t.write_text(json.dumps(res.to_json(), indent=1) + "\n"))


def output_stems(paths: list[str]) -> list[str]:
    """Output name per input: its file stem, or ``STEM-I`` (I = its 1-based position in the list) when
    several inputs share a stem, so no output overwrites another."""
    stems = [Path(p).stem for p in paths]
    names, used = [], set()
    for i, stem in enumerate(stems, 1):
        name = stem if stems.count(stem) == 1 else f"{stem}-{i}"
        while name in used:  # e.g. a target literally named STEM-I
            name += "_"
        used.add(name)
        names.append(name)
    return names


def _defender_rows(spec) -> int | None:
    """The defender's prompt limit from its JSON, without importing torch, so that an oversized set is
    refused within a second; None if the JSON cannot say (loading the agent then reports why)."""
    try:
        if spec is None or str(spec) == "untrained":
            text = (resources.files("ppd") / "assets" / "defender.json").read_text()
        else:
            text = Path(spec).with_suffix(".json").read_text()
        return int(json.loads(text)["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _defender_opts(args) -> dict:
    """``--defender-opt KEY=VALUE`` overrides of the defender's saved settings (checked now, before SAM)."""
    from ppd.refine import DefenderConfig, parse_overrides

    opts = parse_overrides(getattr(args, "defender_opt", None))
    DefenderConfig(**opts)  # values in range
    return opts


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_refine(args) -> int:
    from ppd.io import read_image, read_mask
    from ppd.prompts import check_prompt_count

    if (args.ref is None) != (args.ref_mask is None):
        raise InvalidMaskError("--ref and --ref-mask go together")
    out = OutputDir(args.out)
    pts, labs = read_prompts_json(args.prompts)
    if len(pts) == 0:
        raise InvalidPromptError("the prompts JSON has no points")
    rows = _defender_rows(args.defender)
    if rows is not None:  # the same refusal as Defender.refine's, before torch loads
        check_prompt_count(len(pts), rows)
    from ppd.io import check_points
    from ppd.refine import Defender, load_agent

    opts = _defender_opts(args)
    agent = load_agent(args.defender, "defender")
    check_prompt_count(len(pts), agent.rows)  # before the image is read or SAM loads
    image = read_image(args.image)
    check_points(pts, labs, image.shape[:2])
    ref = read_image(args.ref) if args.ref else None
    ref_mask = read_mask(args.ref_mask, shape=ref.shape[:2], threshold=args.mask_threshold) if ref is not None else None
    _say("loading SAM ...")
    d = Defender(agent, segmenter=_segmenter(args), **opts)
    if ref is not None:
        _say("embedding the reference ...")
        d.set_reference(ref, ref_mask)
    d.set_image(image)
    res = d.refine(pts, labs)
    stem = Path(args.image).stem
    with out:
        _write_refined(out.ensure(), stem, image, res)
    print(f"{stem}: kept {int(res.kept.sum())} of {len(pts)} prompts ({res.stop_reason}); "
          f"SAM IoU {res.iou:.3f}; wrote {out.path}/{stem}.{{mask,overlay}}.png and .prompts.json")
    return 0


def cmd_oneshot(args) -> int:
    from tqdm.auto import tqdm

    from ppd.io import read_image, read_mask
    from ppd.oneshot import OneShot
    from ppd.refine import Defender, load_agent

    check_k(args.k, None if args.no_defender else _defender_rows(args.defender), ", or --no-defender")
    opts = _defender_opts(args)
    out = OutputDir(args.out)
    agent = None if args.no_defender else load_agent(args.defender, "defender")
    if agent is not None:
        check_k(args.k, agent.rows, ", or --no-defender")
    ref = read_image(args.ref)
    ref_mask = read_mask(args.ref_mask, shape=ref.shape[:2], threshold=args.mask_threshold)
    targets = [(t, read_image(t)) for t in args.target]  # all readable before any work
    stems = output_stems(args.target)
    for t, stem in zip(args.target, stems, strict=True):
        if stem != Path(t).stem:
            _say(f"{t}: shares its file name with another target; its outputs are named {stem}.*")
    _say("loading SAM ...")
    seg = _segmenter(args)
    pipe = OneShot(seg, None if agent is None else Defender(agent, segmenter=seg, **opts), k=args.k,
                   cycle=args.cycle, seed=args.seed, instances=args.instances)
    _say("embedding the reference ...")
    pipe.set_reference(ref, ref_mask)
    if pipe.mode != "single":
        _say(f"the reference holds several objects: {MODE_NOTE[pipe.mode]} (--instances)")
    bar = tqdm(list(zip(targets, stems, strict=True)), desc="targets", disable=len(targets) < 2)
    with out:
        for (path, image), stem in bar:
            frame = seg.frame(image)
            prop = pipe.propose(frame)
            if len(prop.candidates) == 0:
                raise InvalidPromptError(f"feature matching found no prompt on {path}")
            res = pipe.run(frame, prop).refined
            _write_refined(out.ensure(), stem, image, res)
            tqdm.write(f"{stem}: {len(prop.candidates)} FM candidates -> {len(prop.index)} after k-means -> "
                       f"{int(res.kept.sum())} kept; SAM IoU {res.iou:.3f}")
    return 0


# ----------------------------------------------------------------------------- train
def parse_weights(spec: str) -> dict[str, float]:
    """``ecssd:0.3,kvasir:0.7`` (a name without ``:W`` weighs 1) -> {name: weight}; ``all`` -> {}."""
    if spec.strip() == "all":
        return {"*": 1.0}
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ConfigError(f"--datasets: weight of {name!r} is not a number: {w!r}") from None
        if not name or weight <= 0 or not np.isfinite(weight):
            raise ConfigError(f"--datasets: give NAME:WEIGHT pairs with weights > 0, got {part.strip()!r}")
        out[name] = weight
    return out


def cmd_train(args) -> int:
    from dataclasses import replace

    from ppd import train
    from ppd.sam import Segmenter

    cfg = None
    if not args.resume:
        cfg = train.TrainConfig(seed=args.seed)
        for k in ("decode_budget", "max_minutes", "n_games", "checkpoint_minutes", "fm_fraction", "fm_refs_per_image",
                  "init", "eps_start", "fm_cycle"):
            v = getattr(args, k)
            if v is not None:
                cfg = replace(cfg, **{k: v})
        if args.ref_prob is not None:
            cfg = replace(cfg, game=replace(cfg.game, ref_prob=args.ref_prob))
        if args.datasets is not None:
            cfg = replace(cfg, game=replace(cfg.game, dataset_weights=parse_weights(args.datasets)))
        if args.arch is not None:
            cfg = replace(cfg, attacker=replace(cfg.attacker, arch=args.arch),
                          defender=replace(cfg.defender, arch=args.arch))
        if args.learning_starts is not None:
            cfg = replace(cfg, attacker=replace(cfg.attacker, learning_starts=args.learning_starts),
                          defender=replace(cfg.defender, learning_starts=args.learning_starts))
    def seg():
        return Segmenter(checkpoint=args.checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                         precision="auto")

    tr = train.run(args.data, args.split, args.out, resume=args.resume, cfg=cfg, segmenter=seg,
                   limit_images=args.images)
    print(f"trained {tr.round} rounds, {tr.env_steps} steps, {tr.decodes} decodes in {tr.seconds / 60:.1f} min; "
          f"agents in {args.out}/attacker.* and {args.out}/defender.*, curves in {args.out}/curves.png")
    return 0


# ----------------------------------------------------------------------------- eval-agents
def cmd_eval_agents(args) -> int:
    from ppd.evaluate import attack_defence

    text = attack_defence.run(args.data, split=args.split, attacker=args.attacker, defender=args.defender,
                              attack_steps=args.attack_steps, seed=args.seed, out_dir=args.out,
                              cache_dir=args.cache_dir, limit=args.limit, datasets=args.datasets,
                              oracle=not args.no_oracle)
    print(text)
    return 0


# ----------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from ppd.evaluate import harness
    from ppd.sam.cache import default_cache_dir

    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = harness.EvalConfig(k=args.k, seed=args.seed, attack_steps=args.attack_steps,
                             **({} if args.cycle is None else {"cycle": args.cycle}))
    cache_root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows, summary = harness.run(args.data, args.dataset, args.split, methods, references=args.references,
                                reference_id=args.reference, limit=args.limit, out_dir=args.out, cfg=cfg,
                                defender=args.defender, attacker=args.attacker, segmenter=lambda: _segmenter(args),
                                cache_path=cache_root / "eval" / "results.jsonl", argv=sys.argv, base=args.base,
                                defender_opts=_defender_opts(args))
    print(harness.format_table(summary))
    print(f"wrote {args.out}/summary.md, summary.csv, per_image.csv, run.json")
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


MODE_NOTE = {"single": "one object: one SAM mask", "many": "many objects: 32 prompts per class, one SAM mask",
             "union": "one SAM mask per kept positive, their union"}


def instances_opt(sp) -> None:
    sp.add_argument("--instances", choices=["auto", "single", "many", "union"], default="auto",
                    help="single: -k prompts per class, one SAM mask; many: a denser start set (at least 32 per "
                         "class), one SAM mask, for 'all nuclei' references; union: one SAM mask per kept "
                         "positive, their union; auto (default): many when the reference mask holds 3 or more "
                         "separate objects, else single")


def cycle_opt(sp) -> None:
    """--cycle / --no-cycle: the one-shot start set's matching (default: ppd.oneshot.CYCLE)."""
    sp.add_argument("--cycle", action=argparse.BooleanOptionalAction, default=None,
                    help="start sets from cycle-consistent (forward-backward) feature matches only "
                         "(default: the pipeline's, ppd.oneshot.CYCLE)")


DEFENDER_OPT_HELP = ("override a setting the defender refines with (repeatable; e.g. max_removals=12, "
                     "select=reference; see ppd.refine.DefenderConfig)")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (``ppd help`` / ``-h`` shows usage)."""

    def error(self, message: str):
        self.exit(2, f"ppd: error: {message} (see '{self.prog} -h')\n")


def build_parser() -> argparse.ArgumentParser:
    from ppd.evaluate.harness import METHODS

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

    d = sub.add_parser("demo", help="run the main job (one-shot + shipped defender) on the shipped samples")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--clicks", action="store_true", help="instead: segment the click samples (no defender)")
    d.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    d.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    d.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    cycle_opt(d)
    instances_opt(d)
    sam_opts(d)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks printing figures measured side by side")
    b.add_argument("what", choices=["sam", "game", "refine", "replay"])
    b.add_argument("--data", help="data root (default ../shared/data)")
    b.add_argument("--images", type=int, help="images to use (sam: 4 val images; game: 24 train images; replay: 12)")
    b.add_argument("--episodes", type=int, default=40, help="game: episodes to replay")
    b.add_argument("--transitions", type=int, default=1000, help="replay: random transitions stored per role")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--decodes", type=int, default=30, help="decodes per image and path")
    b.add_argument("--points", type=int, default=5, help="points per prompt set")
    b.add_argument("--out", help="also write the figures as JSON here")
    b.add_argument("--cache-dir")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("refine", help="refine a prompt set with the defender, then segment")
    r.add_argument("image")
    r.add_argument("--prompts", required=True, metavar="PROMPTS.json")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    r.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    r.add_argument("--ref", metavar="IMG", help="optional one-shot reference image of the object sought")
    r.add_argument("--ref-mask", metavar="MASK", help="its mask (required with --ref)")
    r.add_argument("--mask-threshold", type=float, metavar="T",
                   help="binarise a non-binary --ref-mask: foreground = grey level > T")
    sam_opts(r)
    r.set_defaults(func=cmd_refine)

    o = sub.add_parser("oneshot", help="one-shot segmentation: reference image + mask -> targets")
    o.add_argument("--ref", required=True, metavar="IMG")
    o.add_argument("--ref-mask", required=True, metavar="MASK")
    o.add_argument("--mask-threshold", type=float, metavar="T",
                   help="binarise a non-binary --ref-mask: foreground = grey level > T")
    o.add_argument("--target", required=True, nargs="+", metavar="IMG")
    o.add_argument("--out", required=True, metavar="DIR")
    o.add_argument("--no-defender", action="store_true", help="stop after k-means thinning")
    o.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    o.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    o.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    cycle_opt(o)
    instances_opt(o)
    o.add_argument("--seed", type=int, default=0)
    sam_opts(o)
    o.set_defaults(func=cmd_oneshot)

    t = sub.add_parser("train", help="adversarial DQN training of attacker and defender")
    t.add_argument("--data", help="data root (default ../shared/data)")
    t.add_argument("--split", default="train")
    t.add_argument("--out", required=True, metavar="runs/NAME")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--decodes", dest="decode_budget", type=int, help="SAM decode budget (default 40000)")
    t.add_argument("--minutes", dest="max_minutes", type=float, help="wall-clock cap of the training loop")
    t.add_argument("--games", dest="n_games", type=int, help="games per round (default 8)")
    t.add_argument("--checkpoint-minutes", dest="checkpoint_minutes", type=float)
    t.add_argument("--learning-starts", type=int, help="transitions before the first update")
    t.add_argument("--fm-fraction", type=float, help="share of defender episodes from one-shot sets (default 0.75)")
    t.add_argument("--fm-refs", dest="fm_refs_per_image", type=int,
                   help="references per train image for the one-shot sets (default 4)")
    t.add_argument("--fm-cycle", action=argparse.BooleanOptionalAction, default=None,
                   help="one-shot start sets from cycle-consistent matches (forward-backward agreement; default on)")
    t.add_argument("--ref-prob", type=float, help="share of episodes that see a one-shot reference (default 0.8)")
    t.add_argument("--arch", choices=["deepsets", "mp"], help="Q-network of both agents (default deepsets)")
    t.add_argument("--datasets", metavar="NAME:W,...",
                   help="datasets to train on and their sampling weights (default ecssd:0.6,dsb2018:0.25,"
                        "isbi2012:0.15, the cross-domain protocol; 'all' = every dataset of the split, equal weight)")
    t.add_argument("--init", metavar="shipped|RUN_DIR",
                   help="fine-tune: start both agents from the shipped ones or a run folder's attacker.* / defender.*")
    t.add_argument("--eps-start", type=float, help="exploration at the start (default 1.0; lower to fine-tune)")
    t.add_argument("--images", type=int, help="train on a seeded subset of N images (smoke runs)")
    t.add_argument("--seed", type=int, default=0)
    sam_opts(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval-agents", help="evidence: ideal -> attacked -> defended vs baselines on unseen images")
    e.add_argument("--data", help="data root (default ../shared/data)")
    e.add_argument("--split", default="val")
    e.add_argument("--datasets", help="comma-separated datasets (default: all of the split)")
    e.add_argument("--limit", type=int, help="at most N images per dataset (seeded)")
    e.add_argument("--attacker", help="attacker checkpoint (default: the shipped one)")
    e.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    e.add_argument("--attack-steps", type=int, default=8)
    e.add_argument("--no-oracle", action="store_true", help="skip the GT-guided greedy removal reference")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="write attack_defence.csv / .md here")
    e.add_argument("--cache-dir")
    e.set_defaults(func=cmd_eval_agents)

    ev = sub.add_parser("eval", help="one-shot evaluation of methods on a dataset (results table)")
    ev.add_argument("--data", help="data root: manifest.csv layout or images/ + masks/ (default ../shared/data)")
    ev.add_argument("--dataset", help="dataset name (required when the split holds several)")
    ev.add_argument("--split", default="eval")
    ev.add_argument("--methods", help="comma-separated (default: all): " + ", ".join(METHODS))
    ev.add_argument("--references", type=int, default=5, help="seeded reference images (default 5)")
    ev.add_argument("--reference", help="use this image id as the only reference")
    ev.add_argument("--limit", type=int, help="a seeded subset of N targets")
    ev.add_argument("--out", required=True, metavar="DIR")
    ev.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    ev.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    ev.add_argument("--attacker", help="attacker checkpoint (default: the shipped one)")
    ev.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    ev.add_argument("--attack-steps", type=int, default=8, help="attacker moves for ideal-attacked (default 8)")
    cycle_opt(ev)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--base", metavar="DIR", help="an earlier --out of the same protocol: its rows stand for the "
                    "methods not run now (checked: same dataset, references, targets, settings)")
    sam_opts(ev)
    ev.set_defaults(func=cmd_eval)

    dt = sub.add_parser("data", help="inspect or verify a data root")
    dt.add_argument("what", choices=["verify", "list"])
    dt.add_argument("--data", help="data root (default ../shared/data)")
    dt.set_defaults(func=cmd_data)
    return p


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ppd: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _warn_one_line
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
