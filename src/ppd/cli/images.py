"""``ppd segment``, ``demo``, ``refine`` and ``oneshot``: commands that read images and write masks."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np

from ppd.cli.common import (
    MODE_NOTE,
    WriteBehind,
    _defender_opts,
    _defender_rows,
    _parse_box,
    _parse_point,
    _say,
    _segmenter,
    _write_outputs,
    _write_refined,
    adapt_config,
    expand_targets,
    output_stems,
    read_prompts_json,
)
from ppd.errors import ConfigError, InvalidMaskError, InvalidPromptError, OutputError
from ppd.io import OutputDir
from ppd.prompts import check_k


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
            out1 = pipe.run(frame, image=image)
            dt = time.perf_counter() - t0
            res, prop = out1.refined, out1.proposal
            base = plain.run(frame, prop, image=image).mask
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
    from ppd.hypotheses import DRAWS
    from ppd.io import check_points
    from ppd.refine import Defender, load_agent

    opts = _defender_opts(args)
    if args.check_labels and opts.setdefault("hypotheses", DRAWS) == 0:
        raise ConfigError("--check-labels refines label hypotheses: drop --defender-opt hypotheses=0")
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
    from ppd.oneshot import OneShot, check_votes
    from ppd.refine import Defender, load_agent

    check_k(args.k, None if args.no_defender else _defender_rows(args.defender), ", or --no-defender")
    check_votes(args.votes)
    opts = _defender_opts(args)
    adapt = adapt_config(args, args.seed)
    if adapt is not None and args.no_defender:
        raise ConfigError("--adapt adapts the defender: it cannot go with --no-defender")
    out = OutputDir(args.out)
    agent = None if args.no_defender else load_agent(args.defender, "defender")
    attacker = None
    if adapt is not None:  # checked before SAM loads
        from ppd.train.adapt import attacker_beside

        attacker = load_agent(attacker_beside(args.defender), "attacker")
    if agent is not None:
        check_k(args.k, agent.rows, ", or --no-defender")
    ref = read_image(args.ref)
    ref_mask = read_mask(args.ref_mask, shape=ref.shape[:2], threshold=args.mask_threshold)
    paths = expand_targets(args.target)
    for t in paths:  # all readable before any work (then dropped: memory does not grow with the folder)
        read_image(t)
    stems = output_stems(paths)
    for t, stem in zip(paths, stems, strict=True):
        if stem != Path(t).stem:
            _say(f"{t}: shares its file name with another target; its outputs are named {stem}.*")
    _say("loading SAM ...")
    seg = _segmenter(args)
    defender = None if agent is None else Defender(agent, segmenter=seg, **opts)
    if adapt is not None:
        from ppd.train.adapt import adapt_defender

        _say(f"adapting the defender to the reference ({adapt.decodes} decodes) ...")
        defender = adapt_defender(defender, ref, ref_mask, attacker, adapt, progress=True)
    pipe = OneShot(seg, defender, k=args.k,
                   cycle=args.cycle, seed=args.seed, instances=args.instances, votes=args.votes)
    _say("embedding the reference ...")
    pipe.set_reference(ref, ref_mask)
    if pipe.mode != "single":
        _say(f"the reference holds several objects: {MODE_NOTE[pipe.mode]} (--instances)")
    from ppd.oneshot import stream

    # the next target is read and embedded, and the last one's files written, while this one is refined
    results = stream(pipe, [functools.partial(read_image, t) for t in paths])
    bar = tqdm(zip(paths, stems, strict=True), total=len(paths), desc="targets", disable=len(paths) < 2)
    with out, WriteBehind() as writer:
        for path, stem in bar:
            try:
                image, _frame, result = next(results)
            except InvalidPromptError as e:  # e.g. feature matching found no prompt: name the file
                raise InvalidPromptError(f"{path}: {e}") from None
            prop, res = result.proposal, result.refined
            voted = "" if result.voted is None else f"; mask voted over {1 + len(result.others)} start sets"
            if result.voted is not None:  # the files show the first start set's prompts and the voted mask
                res = dataclasses.replace(res, mask=result.voted)
            writer.submit(_write_refined, out.ensure(), stem, image, res)
            tqdm.write(f"{stem}: {len(prop.candidates)} FM candidates -> {len(prop.index)} after k-means -> "
                       f"{int(res.kept.sum())} kept; SAM IoU {res.iou:.3f}{voted}")
    return 0
