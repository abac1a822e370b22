"""One-shot prompts by feature matching (PAPER.md, "Inference"), then k-means thinning, then the
defender: :class:`OneShot`, the pipeline every entry point goes through.

The matching and thinning themselves are :mod:`ppd.matching` (pure array code); this module holds
the reference (:class:`OneShotReference`), the start sets (:func:`propose`, voting) and the pipeline.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ppd.errors import ConfigError, ImageNotSetError, InvalidPromptError
from ppd.graph import Reference
from ppd.instances import MANY_IOU_MARGIN, check_mode, resolve_mode, start_k, union_of_instances
from ppd.io import check_image_array, check_reference_mask
from ppd.matching import Candidates, kmeans_thin, match_patches, patch_fractions  # noqa: F401 (re-exported)
from ppd.prompts import check_k
from ppd.refine import Defender, RefineResult
from ppd.sam import Frame, Segmenter
from ppd.sam.frame import PatchFeatures
from ppd.views import (  # noqa: F401 (re-exported: the views' names lived here before session 16)
    FLIPS,
    VIEWS,
    VOTE_PLAN,
    VOTE_PLANS,
    VOTE_SEED_STEP,
    VOTE_VIEWS,
    check_votes,
    flip_array,
    flip_points,
    majority,
    vote_plan,
)

#: Whether one-shot start sets come from cycle-consistent matches by default (``match_patches``).
CYCLE = True


@dataclass
class OneShotReference:
    """A reference image (as a frame) and its mask, as feature matching and the defender read them."""

    frame: Frame
    mask: np.ndarray  # (H, W) bool
    frac: np.ndarray  # (64, 64) the mask's share of each patch (patch_fractions)
    image: np.ndarray | None = field(default=None, repr=False)  # the pixels (flipped views need them)
    _refs: dict = field(default_factory=dict, repr=False)  # graph grid -> Reference
    _features: PatchFeatures | None = field(default=None, repr=False)
    _views: dict = field(default_factory=dict, repr=False)  # flip -> OneShotReference

    @property
    def features(self) -> PatchFeatures:
        """The reference frame's patch features, made once (every target is matched against them)."""
        if self._features is None:
            self._features = self.frame.features()
        return self._features

    @classmethod
    def make(cls, frame: Frame, mask: np.ndarray, image: np.ndarray | None = None) -> OneShotReference:
        """``image``: the frame's pixels, kept when given (voting over flipped views embeds them flipped)."""
        mask = check_reference_mask(mask, frame.original_size)
        return cls(frame, mask, patch_fractions(mask, frame.input_size), image)

    def view(self, flip: str, segmenter: Segmenter) -> OneShotReference:
        """This reference flipped (``flip`` in :data:`VIEWS`: image and mask), embedded once and kept.
        SAM's features are not flip-equivariant, so a flipped reference matches other target patches."""
        if not flip:
            return self
        if flip not in self._views:
            if self.image is None:
                raise ConfigError("voting over flipped references needs the reference image: give "
                                  "set_reference an image array, not a Frame")
            img = flip_array(self.image, flip)
            self._views[flip] = OneShotReference.make(segmenter.frame(img), flip_array(self.mask, flip), img)
        return self._views[flip]

    def graph_reference(self, grid: int = 32) -> Reference:
        """What the defender reads about the object sought (built once per graph grid)."""
        if grid not in self._refs:
            self._refs[grid] = Reference.from_frame(self.frame, self.mask, grid)
        return self._refs[grid]


@dataclass
class Proposal:
    """One-shot prompts on one target: every feature-matching candidate and the k-means start set."""

    candidates: Candidates
    index: np.ndarray  # indices of the start set into ``candidates``
    match_s: float = 0.0  # seconds of feature matching
    thin_s: float = 0.0  # seconds of matching and thinning together

    @property
    def points(self) -> np.ndarray:
        return self.candidates.points[self.index]

    @property
    def labels(self) -> np.ndarray:
        return self.candidates.labels[self.index]


def match(ref: OneShotReference, target: Frame, cycle: bool | None = None,
          target_features: PatchFeatures | None = None) -> Candidates:
    """Every feature-matching candidate of ``ref``'s object on ``target`` (:func:`match_patches`);
    ``target_features``: the target's ``features()`` when the caller has them already."""
    f, rf = target_features or target.features(), ref.features
    return match_patches(rf.grid, rf.valid, ref.frac, f.grid, f.valid, f.patch_size, target.original_size,
                         cycle=CYCLE if cycle is None else bool(cycle))


def rethin(p: Proposal, k: int, seed: int) -> Proposal:
    """The same candidates thinned by k-means with another seed (matching is not repeated)."""
    t0 = time.perf_counter()
    idx = kmeans_thin(p.candidates.points, p.candidates.labels, k, seed=seed)
    return Proposal(p.candidates, idx, 0.0, time.perf_counter() - t0)


@dataclass
class StartSet:
    """A voted start set: its proposal, the reference view it was matched from, and the frame it lies
    on: the target, or the target's view ``flip`` (:func:`target_view`), whose results :meth:`back`
    maps onto the target."""

    proposal: Proposal
    ref: OneShotReference
    frame: Frame
    flip: str = ""

    def unview(self, mask: np.ndarray) -> np.ndarray:
        """A mask on :attr:`frame` as it lies on the target (a flip is its own inverse)."""
        return flip_array(mask, self.flip) if self.flip else mask

    def back(self, res: RefineResult) -> RefineResult:
        """``res`` (refined on :attr:`frame`) with its points and mask on the target."""
        if not self.flip:
            return res
        return replace(res, points=flip_points(res.points, self.flip, self.frame.original_size),
                       mask=None if res.mask is None else self.unview(res.mask))


def target_view(target: Frame, flip: str, segmenter: Segmenter, image: np.ndarray | None) -> Frame:
    """``target`` seen through the flip ``flip``, embedded once and kept in the target frame's memo.
    ``image``: the target's pixels (only read on the first call for this flip)."""
    key = ("target_view", flip)
    if key not in target.memo:
        if image is None:
            raise ConfigError("votes over flipped views of the target need its pixels: run(image) or "
                              "run(frame, image=image)")
        image = check_image_array(image)
        if tuple(np.shape(image)[:2]) != tuple(target.original_size):
            raise ConfigError(f"image is {np.shape(image)[1]}x{np.shape(image)[0]}, its frame "
                              f"{target.original_size[1]}x{target.original_size[0]}")
        target.memo[key] = segmenter.frame(flip_array(image, flip))
    return target.memo[key]


def other_start_sets(ref: OneShotReference, target: Frame, p: Proposal, k: int, seed: int, votes: int,
                     segmenter: Segmenter, cycle: bool | None = None,
                     target_features: PatchFeatures | None = None,
                     views: tuple[tuple[str, str], ...] = VOTE_VIEWS,
                     image: np.ndarray | None = None) -> list[StartSet]:
    """The start sets voted with ``p`` (``ref`` matched on ``target``, thinned with ``seed``), in
    :func:`vote_plan` order: a flipped reference, or the reference on a flipped view of the target
    (``image``: the target's pixels), is matched anew; the reference as it is on the target as it is
    reuses ``p``'s candidates, thinned with another seed."""
    out = []
    for flip, tflip, offset in vote_plan(votes, views):
        view = ref.view(flip, segmenter)
        if tflip:
            fr = target_view(target, tflip, segmenter, image)
            out.append(StartSet(propose(view, fr, k, cycle, seed + offset), view, fr, tflip))
        elif flip:
            out.append(StartSet(propose(view, target, k, cycle, seed + offset, target_features), view, target))
        else:
            out.append(StartSet(rethin(p, k, seed + offset), ref, target))
    return out


def propose(ref: OneShotReference, target: Frame, k: int = 10, cycle: bool | None = None,
            seed: int = 0, target_features: PatchFeatures | None = None) -> Proposal:
    """Feature matching from ``ref`` onto ``target``, then k-means thinning to ``k`` per class."""
    t0 = time.perf_counter()
    cand = match(ref, target, cycle, target_features)
    match_s = time.perf_counter() - t0
    idx = kmeans_thin(cand.points, cand.labels, k, seed=seed)
    return Proposal(cand, idx, match_s, time.perf_counter() - t0)


@dataclass
class OneShotResult:
    proposal: Proposal
    refined: RefineResult  # over the start set: kept / suppressed, final mask (all kept without a defender)
    mode: str = "single"  # ppd.instances mode: "single", "many" (K >= 32) or "union" (one mask per positive)
    # votes > 1: the results of the other voted start sets (flipped references, flipped views of the
    # target, other k-means seeds: vote_plan; points and masks on the target as it is), and the pixel-wise
    # majority of every set's mask (``mask``); ``proposal`` / ``refined`` stay the first set's
    others: list[RefineResult] = field(default_factory=list)
    voted: np.ndarray | None = None

    @property
    def mask(self) -> np.ndarray:
        return self.refined.mask if self.voted is None else self.voted


class OneShot:
    """The one-shot pipeline: feature matching -> k-means start set -> defender -> SAM's mask.

    ``set_reference`` once, ``run`` per target (an image or a frame). Without a defender the
    start set is segmented as it is. The CLI, the demo, ``ppd eval``, the benchmarks and the
    trainer's one-shot start sets all go through :func:`propose` / this class."""

    def __init__(self, segmenter: Segmenter, defender: Defender | None = None, k: int = 10,
                 cycle: bool | None = None, seed: int = 0, instances: str = "auto", votes: int = 1) -> None:
        """``instances`` (:mod:`ppd.instances`): ``single`` (K as given, one SAM mask), ``many`` (a denser
        start set, K >= 32, one SAM mask: for "all nuclei" references), ``union`` (one SAM mask per kept
        positive, their union) or ``auto`` (``many`` when the reference mask holds several separate
        objects, else ``single``). ``votes`` > 1 (single objects): as many start sets, from the reference
        flipped left-right, up-down, both, then from the target flipped the same ways, then from other
        k-means seeds (:func:`vote_plan`), each refined, and the pixel-wise majority of their masks
        (docs/TRAINING.md, sessions 11 and 16). Flipped references are embedded once per reference,
        flipped targets once per target frame."""
        rows = None if defender is None else defender.agent.rows
        check_k(k, rows)
        check_votes(votes)
        check_mode(instances)
        if instances == "many":
            check_k(start_k("many", k), rows)
        self.seg, self.defender = segmenter, defender
        self.k, self.seed, self.instances, self.votes = k, seed, instances, int(votes)
        self.cycle = CYCLE if cycle is None else bool(cycle)
        self.ref: OneShotReference | None = None
        self.mode = "single"  # the mode resolved for the current reference

    def frame(self, image: np.ndarray | Frame) -> Frame:
        return image if isinstance(image, Frame) else self.seg.frame(image)

    def set_reference(self, image: np.ndarray | Frame | OneShotReference,
                      mask: np.ndarray | None = None) -> OneShotReference:
        """An image (or frame) and its mask, or a :class:`OneShotReference` made before (its features and
        graph reference, built on first use, are then shared)."""
        if isinstance(image, OneShotReference):
            ref = image
        else:
            pixels = None
            if not isinstance(image, Frame):
                mask = check_reference_mask(mask, check_image_array(image))
                pixels = image
            ref = OneShotReference.make(self.frame(image), mask, pixels)
        mode = resolve_mode(self.instances, ref.mask)
        if self.defender is not None:  # many objects: the denser start set must fit the defender's rows
            check_k(start_k(mode, self.k), self.defender.agent.rows, " (many objects: --instances single)")
        if self.votes > 1 and mode == "single" and ref.image is None:
            raise ConfigError("votes > 1 flips the reference image: give set_reference the image array, not a Frame")
        self.ref, self.mode = ref, mode
        return ref

    def _need_reference(self) -> OneShotReference:
        if self.ref is None:
            raise ImageNotSetError("call set_reference(image, mask) first")
        return self.ref

    def propose(self, target: np.ndarray | Frame) -> Proposal:
        return propose(self._need_reference(), self.frame(target), start_k(self.mode, self.k), self.cycle, self.seed)

    def run(self, target: np.ndarray | Frame, proposal: Proposal | None = None,
            image: np.ndarray | None = None) -> OneShotResult:
        """The final mask on ``target`` (and every step that led to it). An empty start set is an error.
        ``image``: the pixels of a ``target`` given as a frame (votes over views of the target need them)."""
        if not isinstance(target, Frame):
            image = target  # checked where it is read: by the segmenter here, by target_view for its flips
        frame = self.frame(target)
        prop = proposal or self.propose(frame)
        if len(prop.points) == 0:
            raise InvalidPromptError("feature matching found no prompt on this target")
        ref = self._need_reference()
        out = OneShotResult(prop, self._refine(frame, prop, ref), self.mode)
        if self.votes > 1 and self.mode == "single":
            others = other_start_sets(ref, frame, prop, start_k(self.mode, self.k), self.seed, self.votes, self.seg,
                                      self.cycle, image=image)
            out.others = [s.back(self._refine(s.frame, s.proposal, s.ref)) for s in others]
            out.voted = majority([out.refined.mask] + [r.mask for r in out.others])
        return out

    def _refine(self, frame: Frame, prop: Proposal, ref: OneShotReference) -> RefineResult:
        pts, labs = prop.points, prop.labels
        if self.defender is None:
            res = RefineResult(points=pts, labels=labs, kept=np.ones(len(pts), bool), stop_reason="no defender")
            pred = self.seg.decode(frame, pts, labs)
            res.mask, res.iou = pred.mask, pred.iou
        else:
            cfg = self.defender.config
            if self.mode == "many":  # see ppd.instances.MANY_IOU_MARGIN
                cfg = replace(cfg, iou_margin=max(cfg.iou_margin, MANY_IOU_MARGIN))
            res = self.defender.refine_frame(frame, pts, labs, reference=ref.graph_reference(cfg.graph_grid),
                                             config=cfg)
        if self.mode == "union" and (res.labels[res.kept] == 1).any():  # res.labels: as refined (hypotheses)
            res.mask, _ = union_of_instances(self.seg, frame, pts[res.kept], res.labels[res.kept])
        return res


def stream(pipe: OneShot, loaders: Iterable[Callable[[], np.ndarray]], prefetch: int = 1
           ) -> Iterator[tuple[np.ndarray, Frame, OneShotResult]]:
    """``pipe.run`` over many targets, in order: per target (image, frame, result). While one target is
    refined here, the next ``prefetch`` are read and embedded on a helper thread: the defender's small
    decodes leave cores idle that the encoder uses (``ppd bench oneshot``). Same results as a loop."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def load(fn):
        image = fn()
        return image, pipe.frame(image)

    it = iter(loaders)
    with ThreadPoolExecutor(1, thread_name_prefix="ppd-encode") as ex:
        pending = deque(ex.submit(load, fn) for fn in itertools.islice(it, max(1, prefetch)))
        while pending:
            image, frame = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(load, nxt))
            yield image, frame, pipe.run(frame, image=image)


class FeatureMatcher:
    """Reference patches -> nearest target patches. ``set_reference`` once, ``match`` per target.
    ``cycle``: keep only forward-backward consistent matches (default :data:`CYCLE`)."""

    def __init__(self, segmenter: Segmenter, cycle: bool | None = None) -> None:
        self.seg = segmenter
        self.cycle = CYCLE if cycle is None else bool(cycle)
        self.ref: OneShotReference | None = None
        self.reference: Reference | None = None

    def set_reference(self, image: np.ndarray | Frame, mask: np.ndarray) -> None:
        if not isinstance(image, Frame):
            mask = check_reference_mask(mask, check_image_array(image))
            image = self.seg.frame(image)
        self.ref = OneShotReference.make(image, mask)
        # what the defender reads about the object sought (Defender.set_reference)
        self.reference = self.ref.graph_reference()

    def match(self, image: np.ndarray | Frame) -> Candidates:
        """Every candidate on ``image`` (an array or a frame)."""
        if self.ref is None:
            raise ImageNotSetError("call set_reference(image, mask) first")
        frame = image if isinstance(image, Frame) else self.seg.frame(image)
        return match(self.ref, frame, self.cycle)
