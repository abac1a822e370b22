"""Helpers the ``ppd`` commands share: argument parsing of prompts, outputs written all-or-nothing, the
defender's limits read without torch, and the options several commands take."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from ppd.encoders import DEFAULT_ENCODER
from ppd.errors import InvalidPromptError


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

    return Segmenter(checkpoint=args.checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                     encoder=getattr(args, "encoder", DEFAULT_ENCODER))

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

class WriteBehind:
    """Writes outputs on a helper thread while the next target is computed (``ppd oneshot``; ``ppd bench
    oneshot`` times the same). At most ``pending`` writes wait (their images are held); leaving the block
    waits for the rest and raises the first write error."""

    def __init__(self, pending: int = 2) -> None:
        self.pending = pending

    def __enter__(self) -> WriteBehind:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self._ex, self._futures = ThreadPoolExecutor(1, thread_name_prefix="ppd-write"), deque()
        return self

    def submit(self, fn, *args) -> None:
        self._futures.append(self._ex.submit(fn, *args))
        while len(self._futures) > self.pending:
            self._futures.popleft().result()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                for f in self._futures:
                    f.result()
        finally:
            self._ex.shutdown(wait=True)


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

def votes_opt(sp) -> None:
    """--votes N: N start sets (flipped references, flipped targets, then k-means seeds), each refined,
    masks voted."""
    sp.add_argument("--votes", type=int, default=1,
                    help="N start sets: from the reference as it is and flipped left-right, up-down, both, "
                         "then matched on the target flipped the same three ways, then other k-means seeds; "
                         "each refined, and the pixel-wise majority of their masks (single objects; N times "
                         "the defender's time, and up to 3 more encoder passes per target; default 1)")


DEFENDER_OPT_HELP = ("override a setting the defender refines with (repeatable; e.g. max_removals=12, "
                     "select=reference, hypotheses=8 for prompts whose labels may be flipped; see "
                     "ppd.refine.DefenderConfig)")


def expand_targets(items: list[str]) -> list[str]:
    """``--target`` values: image files as given, and each folder as its image files (sorted by name, not
    recursive). A folder without images is an error, never an empty run."""
    from ppd.data import IMAGE_EXTS
    from ppd.errors import InvalidImageError

    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise InvalidImageError(f"--target {item}: a folder without images ({', '.join(IMAGE_EXTS)})")
            out += found
        else:
            out.append(item)
    return out


def adapt_opt(sp, switch: bool = True) -> None:
    """--adapt [--adapt-decodes N] [--adapt-views V]: test-time adaptation of the defender to the one-shot
    reference. ``switch`` False (``ppd serve``: each request says whether to adapt): only its settings."""
    if switch:
        sp.add_argument("--adapt", action="store_true",
                        help="first adapt the defender to the reference: the training game played on its 8 "
                             "rotated / mirrored, cropped and re-coloured views, from the given agents "
                             "(about a minute per reference on a CPU; ppd.train.adapt)")
    implies = "; implies --adapt" if switch else " of one-shot runs with 'adapt'"
    sp.add_argument("--adapt-decodes", type=int, metavar="N",
                    help=f"SAM decodes of that adaptation game (default 1500{implies})")
    sp.add_argument("--adapt-views", choices=("jitter", "dihedral"),
                    help="the images that game is played on: the reference's 8 rotated / mirrored views, "
                         f"also cropped and re-coloured (jitter, the default), or as they are (dihedral{implies})")
    sp.add_argument("--adapt-choose", choices=("iou", "agree", "adapted"),
                    help="after adapting, both the adapted and the given defender refine each start set and the "
                         "result with the higher SAM-predicted IoU (iou, the default) or agreement with the "
                         f"reference object (agree) is kept; or the adapted one refines alone (adapted{implies})")


def adapt_config(args, seed: int = 0):
    """The :class:`ppd.train.adapt.AdaptConfig` of --adapt / --adapt-decodes, or None."""
    given = {"decodes": args.adapt_decodes, "views": args.adapt_views, "choose": args.adapt_choose}
    if not getattr(args, "adapt", False) and all(v is None for v in given.values()):
        return None
    from ppd.train.adapt import AdaptConfig

    return AdaptConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
