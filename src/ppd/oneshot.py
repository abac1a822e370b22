"""One-shot prompts by feature matching (PAPER.md, "Inference"), then k-means thinning.

From one reference image and its mask: every reference patch of SAM's 64x64
embedding grid that lies wholly inside the mask votes for its nearest target
patch (cosine similarity of SAM features) as a *positive* candidate, every patch
wholly outside for a *negative* one. Candidates sit at target patch centres; a
target patch claimed twice by one class is one candidate, one claimed by both
classes is dropped.

That gives hundreds to thousands of candidates, too many for SAM (a decode with
thousands of points takes about a second) and for a defender that removes one
per step, so :func:`kmeans_thin` keeps at most K per class: k-means on the
candidates' coordinates, and the candidate nearest each centroid.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ppd.errors import ConfigError, ImageNotSetError, InvalidPromptError
from ppd.graph import Reference
from ppd.instances import MANY_IOU_MARGIN, check_mode, resolve_mode, start_k, union_of_instances
from ppd.io import check_image_array, check_reference_mask
from ppd.prompts import check_k
from ppd.refine import Defender, RefineResult
from ppd.sam import Frame, Segmenter
from ppd.sam.frame import GRID, IMG_SIZE, PatchFeatures


@dataclass
class Candidates:
    points: np.ndarray  # (N, 2) x, y in target pixels
    labels: np.ndarray  # (N,) 1 / 0

    def __len__(self) -> int:
        return len(self.points)


def patch_fractions(mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Share of each 64x64-grid patch covered by ``mask`` (padding counts as outside)."""
    ih, iw = input_size
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    m = F.interpolate(m, (ih, iw), mode="nearest")
    m = F.pad(m, (0, IMG_SIZE - iw, 0, IMG_SIZE - ih))
    return F.avg_pool2d(m, IMG_SIZE // GRID)[0, 0].numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def match_patches(ref_grid: np.ndarray, ref_valid: np.ndarray, ref_frac: np.ndarray, tgt_grid: np.ndarray,
                  tgt_valid: np.ndarray, patch_size: float, size: tuple[int, int], cycle: bool = False) -> Candidates:
    """Feature matching on 64x64 feature grids (see the module doc).

    ``ref_frac`` is the reference mask's share of each patch (:func:`patch_fractions`);
    ``patch_size`` and ``size`` (H, W) describe the target in original pixels. ``cycle``: keep a
    candidate only if the target patch's own nearest reference patch lies on the same side of the
    reference mask (forward-backward consistency, as in Matcher / PerSAM-style pipelines).
    """
    inside = ref_valid & (ref_frac >= 1.0)
    outside = ref_valid & (ref_frac <= 0.0)
    if not inside.any():  # an object smaller than a patch: use the patches most covered
        inside = ref_valid & (ref_frac > 0) & (ref_frac >= ref_frac[ref_valid].max() * 0.5)
    rows, cols = np.nonzero(tgt_valid)
    tgt = torch.as_tensor(_unit(tgt_grid[rows, cols]))
    claims = np.zeros((len(rows), 2), bool)  # [negative, positive]
    for lab, sel in ((1, inside), (0, outside)):
        if sel.any():
            nearest = (torch.as_tensor(_unit(ref_grid[sel])) @ tgt.T).argmax(1).numpy()
            claims[np.unique(nearest), lab] = True
    keep = claims.any(1) & ~claims.all(1)
    if cycle:
        rr, rc = np.nonzero(ref_valid)
        back = (tgt @ torch.as_tensor(_unit(ref_grid[rr, rc])).T).argmax(1).numpy()
        inside_back = ref_frac[rr[back], rc[back]] >= 0.5
        keep &= np.where(claims[:, 1], inside_back, ~inside_back)
    h, w = size
    pts = np.stack([np.minimum((cols[keep] + 0.5) * patch_size, w - 1),
                    np.minimum((rows[keep] + 0.5) * patch_size, h - 1)], 1)
    return Candidates(points=pts.astype(np.float32), labels=claims[keep, 1].astype(np.int64))


#: Whether one-shot start sets come from cycle-consistent matches by default (``match_patches``).
CYCLE = True


@dataclass
class OneShotReference:
    """A reference image (as a frame) and its mask, as feature matching and the defender read them."""

    frame: Frame
    mask: np.ndarray  # (H, W) bool
    frac: np.ndarray  # (64, 64) the mask's share of each patch (patch_fractions)
    _refs: dict = field(default_factory=dict, repr=False)  # graph grid -> Reference
    _features: PatchFeatures | None = field(default=None, repr=False)

    @property
    def features(self) -> PatchFeatures:
        """The reference frame's patch features, made once (every target is matched against them)."""
        if self._features is None:
            self._features = self.frame.features()
        return self._features

    @classmethod
    def make(cls, frame: Frame, mask: np.ndarray) -> OneShotReference:
        mask = check_reference_mask(mask, frame.original_size)
        return cls(frame, mask, patch_fractions(mask, frame.input_size))

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


#: k-means seeds of the start sets whose masks are voted: seed, seed + VOTE_SEED_STEP, ...
VOTE_SEED_STEP = 1000


def check_votes(votes: int) -> None:
    if not isinstance(votes, int | np.integer) or isinstance(votes, bool) or votes < 1:
        raise ConfigError(f"--votes must be a whole number of at least 1, got {votes!r}")


def rethin(p: Proposal, k: int, seed: int) -> Proposal:
    """The same candidates thinned by k-means with another seed (matching is not repeated)."""
    t0 = time.perf_counter()
    idx = kmeans_thin(p.candidates.points, p.candidates.labels, k, seed=seed)
    return Proposal(p.candidates, idx, 0.0, time.perf_counter() - t0)


def other_start_sets(p: Proposal, k: int, seed: int, votes: int) -> list[Proposal]:
    """The start sets voted with ``p`` (thinned with ``seed``): seeds seed + VOTE_SEED_STEP, ... (votes - 1)."""
    return [rethin(p, k, seed + VOTE_SEED_STEP * j) for j in range(1, votes)]


def majority(masks: list[np.ndarray]) -> np.ndarray:
    """Pixel-wise majority of boolean masks (with an even count a tie is background)."""
    return np.mean(np.stack(masks), axis=0) > 0.5


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
    # votes > 1: the results of the start sets from the other k-means seeds, and the pixel-wise majority
    # of every set's mask (``mask``); ``proposal`` / ``refined`` stay the first seed's
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
        objects, else ``single``). ``votes`` > 1 (single objects): as many start sets from other k-means
        seeds, each refined, and the pixel-wise majority of their masks (docs/TRAINING.md, session 10)."""
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
            if not isinstance(image, Frame):
                mask = check_reference_mask(mask, check_image_array(image))
            ref = OneShotReference.make(self.frame(image), mask)
        mode = resolve_mode(self.instances, ref.mask)
        if self.defender is not None:  # many objects: the denser start set must fit the defender's rows
            check_k(start_k(mode, self.k), self.defender.agent.rows, " (many objects: --instances single)")
        self.ref, self.mode = ref, mode
        return ref

    def _need_reference(self) -> OneShotReference:
        if self.ref is None:
            raise ImageNotSetError("call set_reference(image, mask) first")
        return self.ref

    def propose(self, target: np.ndarray | Frame) -> Proposal:
        return propose(self._need_reference(), self.frame(target), start_k(self.mode, self.k), self.cycle, self.seed)

    def run(self, target: np.ndarray | Frame, proposal: Proposal | None = None) -> OneShotResult:
        """The final mask on ``target`` (and every step that led to it). An empty start set is an error."""
        frame = self.frame(target)
        prop = proposal or self.propose(frame)
        if len(prop.points) == 0:
            raise InvalidPromptError("feature matching found no prompt on this target")
        out = OneShotResult(prop, self._refine(frame, prop), self.mode)
        if self.votes > 1 and self.mode == "single":
            others = other_start_sets(prop, start_k(self.mode, self.k), self.seed, self.votes)
            out.others = [self._refine(frame, p) for p in others]
            out.voted = majority([out.refined.mask] + [r.mask for r in out.others])
        return out

    def _refine(self, frame: Frame, prop: Proposal) -> RefineResult:
        pts, labs = prop.points, prop.labels
        if self.defender is None:
            res = RefineResult(points=pts, labels=labs, kept=np.ones(len(pts), bool), stop_reason="no defender")
            pred = self.seg.decode(frame, pts, labs)
            res.mask, res.iou = pred.mask, pred.iou
        else:
            cfg = self.defender.config
            if self.mode == "many":  # see ppd.instances.MANY_IOU_MARGIN
                cfg = replace(cfg, iou_margin=max(cfg.iou_margin, MANY_IOU_MARGIN))
            ref = self.ref.graph_reference(cfg.graph_grid)
            res = self.defender.refine_frame(frame, pts, labs, reference=ref, config=cfg)
        if self.mode == "union" and (labs[res.kept] == 1).any():
            res.mask, _ = union_of_instances(self.seg, frame, pts[res.kept], labs[res.kept])
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
            yield image, frame, pipe.run(frame)


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


def kmeans_thin(points: np.ndarray, labels: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """Indices of at most ``k`` prompts per class: the point nearest each k-means centroid."""
    from scipy.cluster.vq import kmeans2

    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k (prompts kept per class) must be an integer of at least 1, got {k!r}")
    keep = []
    for lab in (1, 0):
        idx = np.nonzero(labels == lab)[0]
        if len(idx) <= k:
            keep += idx.tolist()
            continue
        pts = points[idx].astype(np.float64)
        cent, _ = kmeans2(pts, k, minit="++", seed=seed)
        d = ((pts[:, None, :] - cent[None]) ** 2).sum(-1)
        chosen = set()
        for c in range(len(cent)):  # nearest unused candidate to each centroid
            for j in np.argsort(d[:, c]):
                if j not in chosen:
                    chosen.add(int(j))
                    break
        keep += idx[sorted(chosen)].tolist()
    return np.array(sorted(keep), dtype=np.int64)
