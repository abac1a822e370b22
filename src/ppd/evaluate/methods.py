"""The methods ``ppd eval`` compares: one function each, in a registry with named fields.

A method reads one target (:class:`TargetJob`: its frame, ground truth, the
segmenter, the settings and the agents) and, if it uses one, one reference
(:class:`RefJob`: the reference and the target's one-shot proposal, computed
once and shared by every ``fm-*`` method), and returns an :class:`Outcome`. The
harness times the call and caches the row; ``Outcome.shared_s`` is the time of
the shared stages a method builds on (matching, thinning, the attack), charged
to it so that ``s/img`` is each method's full cost without the image encoder.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ppd.data import Sample
from ppd.evaluate import baselines

if TYPE_CHECKING:  # the pipeline imports torch: only when a method runs (the CLI lists methods without it)
    from ppd.oneshot import OneShotReference, Proposal, StartSet
    from ppd.sam import Frame


@dataclass
class Outcome:
    mask: np.ndarray  # SAM's final mask at the target's size
    n_prompts: int  # prompts given to SAM before any refinement
    n_kept: int  # prompts SAM finally saw
    shared_s: float = 0.0  # seconds of shared stages this method builds on


@dataclass
class RefJob:
    """One reference for one target: the reference and the target's one-shot proposal (lazy)."""

    sample: Sample
    ref: OneShotReference
    job: TargetJob
    removed: int | None = None  # prompts the defender removed from the proposal (fm-ppd, for fm-random)
    _proposal: Proposal | None = None
    _others: list[StartSet] | None = None

    @property
    def proposal(self) -> Proposal:
        if self._proposal is None:
            from ppd.oneshot import propose

            c = self.job.cfg
            self._proposal = propose(self.ref, self.job.frame, c.k, c.cycle, seed=c.seed,
                                     target_features=self.job.features)
        return self._proposal

    @property
    def others(self) -> list[StartSet]:
        """With ``votes`` > 1: the other voted start sets (as OneShot votes: views of the reference and of
        the target, other seeds)."""
        if self._others is None:
            from ppd.oneshot import other_start_sets

            c, j = self.job.cfg, self.job
            self._others = other_start_sets(self.ref, j.frame, self.proposal, c.k, c.seed, c.votes, j.seg, c.cycle,
                                            j.features, image=j.pixels)
        return self._others


@dataclass
class TargetJob:
    """One target and what any method may read. ``agents`` gives the defender / attacker (loaded on first
    use); ``cached_removed(method, ref)`` the removal count of a cached defended row, or None."""

    sample: Sample
    frame: Frame
    gt: np.ndarray
    seg: object
    cfg: object  # harness.EvalConfig
    agents: object
    cached_removed: Callable[[str, Sample | None], int | None]
    obj: int = -1  # the object scored (ppd.game.objects: -1 = the whole mask, else one instance)
    wants_attack: bool = False  # an ideal-attacked* method will run (else only the ideal prompts are made)
    removed: int | None = None  # ideal-attacked-defended's removal count (for ideal-attacked-random)
    _attack: tuple | None = field(default=None, repr=False)
    _features: object | None = field(default=None, repr=False)
    _pixels: np.ndarray | None = field(default=None, repr=False)

    @property
    def features(self):
        """The target frame's patch features, made once for every reference and method."""
        if self._features is None:
            self._features = self.frame.features()
        return self._features

    @property
    def pixels(self) -> np.ndarray:
        """The target's image (votes over flipped views of the target embed it flipped), read once."""
        if self._pixels is None:
            self._pixels = self.sample.image()
        return self._pixels

    @property
    def name(self) -> str:
        """The target as rows name it: the image id, and ``#K`` for one object of it."""
        return target_name(self.sample.id, self.obj)

    def decode(self, pts, labs, box=None, multimask: bool = False) -> np.ndarray:
        if len(pts) == 0 and box is None:
            return np.zeros_like(self.gt, bool)
        return self.seg.decode(self.frame, pts, labs, box=box, multimask=multimask).mask

    def attacked(self) -> tuple:
        """(ideal prompts, attacked set or None, seconds): the game's ideal prompts of the object and,
        when an attacked method runs, the set after ``attack_steps`` moves of the attacker (who is shown
        no reference, as the defender is not)."""
        if self._attack is None:
            from ppd.evaluate.attack_defence import attack, attacker_game
            cfg = self.cfg
            t0 = time.perf_counter()
            env = attacker_game(self.seg, self.sample, self.frame, cfg.seed)
            if self.wants_attack:
                ideal, att = attack(env, self.agents.attacker, 0, self.obj, cfg.attack_steps)
            else:
                ideal, _, _ = env.arena.attack_layout(0, self.obj)
                ideal, att = ideal.subset(np.nonzero(ideal.active)[0]), None
            self._attack = (ideal, att, time.perf_counter() - t0)
        return self._attack


def target_name(image_id: str, obj: int = -1) -> str:
    return image_id if obj == -1 else f"{image_id}#{obj}"


def int_hash(text: str) -> int:
    """A stable 32-bit integer of a string (seeds per target / reference)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


# ---------------------------------------------------------------------- methods without a reference
def oracle_click(t: TargetJob, r: None) -> Outcome:
    return Outcome(t.decode(baselines.oracle_click(t.gt), np.ones(1, np.int64), multimask=True), 1, 1)


def oracle_box(t: TargetJob, r: None) -> Outcome:
    return Outcome(t.decode(np.zeros((0, 2)), np.zeros(0), box=baselines.mask_box(t.gt)), 0, 0)


def ideal(t: TargetJob, r: None) -> Outcome:
    p, _, setup = t.attacked()
    return Outcome(t.decode(p.points, p.labels), len(p), len(p), setup)


def ideal_attacked(t: TargetJob, r: None) -> Outcome:
    _, att, setup = t.attacked()
    return Outcome(t.decode(att.points, att.labels), len(att), len(att), setup)


def _defend_attacked(t: TargetJob, att):
    # the paper's ablation: no one-shot reference
    return t.agents.defender.refine_frame(t.frame, att.points, att.labels, reference=None)


def ideal_attacked_defended(t: TargetJob, r: None) -> Outcome:
    _, att, setup = t.attacked()
    res = _defend_attacked(t, att)
    t.removed = len(att) - int(res.kept.sum())
    return Outcome(res.mask, len(att), int(res.kept.sum()), setup)


def ideal_attacked_defended_ref(t: TargetJob, r: RefJob) -> Outcome:
    """The same attacked set, but the defender is shown a one-shot reference (the attacker was not)."""
    _, att, setup = t.attacked()
    d = t.agents.defender_for(r.sample)
    res = d.refine_frame(t.frame, att.points, att.labels, reference=r.ref.graph_reference(d.config.graph_grid))
    return Outcome(res.mask, len(att), int(res.kept.sum()), setup)


def ideal_attacked_untrained(t: TargetJob, r: None) -> Outcome:
    _, att, setup = t.attacked()
    res = t.agents.untrained.refine_frame(t.frame, att.points, att.labels, reference=None)
    return Outcome(res.mask, len(att), int(res.kept.sum()), setup)


def ideal_attacked_oracle(t: TargetJob, r: None) -> Outcome:
    _, att, setup = t.attacked()
    keep = baselines.greedy_oracle(t.seg, t.frame, att.points, att.labels, t.gt, t.cfg.greedy_max_removals)
    return Outcome(t.decode(att.points[keep], att.labels[keep]), len(att), int(keep.sum()), setup)


def ideal_attacked_random(t: TargetJob, r: None) -> Outcome:
    _, att, setup = t.attacked()
    if t.removed is None:
        t.removed = t.cached_removed("ideal-attacked-defended", None)
    if t.removed is None:
        t.removed = len(att) - int(_defend_attacked(t, att).kept.sum())
    keep = baselines.random_removal(att.labels, t.removed, np.random.default_rng([t.cfg.seed, int_hash(t.name)]))
    return Outcome(t.decode(att.points[keep], att.labels[keep]), len(att), int(keep.sum()), setup)


# ---------------------------------------------------------------------- one-shot methods
def fm(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    c = p.candidates
    return Outcome(t.decode(c.points, c.labels), len(c), len(c), p.match_s)


def _voted(r: RefJob, first: np.ndarray, run: Callable) -> tuple[np.ndarray, float]:
    """``first`` (the first start set's mask), or with ``votes`` > 1 the majority with ``run(start_set)`` (a
    mask on the start set's frame, flipped back here) of the other voted start sets; and the seconds of
    their matching and thinning."""
    if not r.others:
        return first, 0.0
    from ppd.oneshot import majority

    return majority([first] + [s.unview(run(s)) for s in r.others]), sum(s.proposal.thin_s for s in r.others)


def fm_kmeans(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    mask, thin_s = _voted(r, t.decode(p.points, p.labels),
                          lambda s: t.seg.decode(s.frame, s.proposal.points, s.proposal.labels).mask)
    return Outcome(mask, len(p.index), len(p.index), p.thin_s + thin_s)


def _defend(t: TargetJob, r: RefJob, s: StartSet | None = None):
    """The defender on ``s`` (on its own frame), or on the first start set; adapted to the reference when
    ``EvalConfig.adapt`` says so."""
    d = t.agents.defender_for(r.sample)
    p, view, frame = (r.proposal, r.ref, t.frame) if s is None else (s.proposal, s.ref, s.frame)
    return d.refine_frame(frame, p.points, p.labels, reference=view.graph_reference(d.config.graph_grid))


def fm_ppd(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    n = len(p.index)
    thin_s = 0.0
    if n:
        res = _defend(t, r)
        kept = int(res.kept.sum())
        mask, thin_s = _voted(r, res.mask, lambda s: _defend(t, r, s).mask)
    else:
        mask, kept = np.zeros_like(t.gt, bool), 0
    r.removed = n - kept  # the first seed's (fm-random removes as many)
    return Outcome(mask, n, kept, p.thin_s + thin_s)


def fm_random(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    pts, labs = p.points, p.labels
    if r.removed is None:  # fm-ppd came from the cache
        r.removed = t.cached_removed("fm-ppd", r.sample)
    if r.removed is None:
        r.removed = len(pts) - int(_defend(t, r).kept.sum())
    rng = np.random.default_rng([int_hash(f"{t.cfg.seed}|{t.sample.id}"), int_hash(r.sample.id)])
    keep = baselines.random_removal(labs, r.removed, rng)
    return Outcome(t.decode(pts[keep], labs[keep]), len(pts), int(keep.sum()), p.thin_s)


def fm_union(t: TargetJob, r: RefJob) -> Outcome:
    from ppd.instances import union_of_instances

    p = r.proposal
    n = len(p.index)
    if not (p.labels == 1).any():
        return Outcome(t.decode(p.points, p.labels), n, n, p.thin_s)
    mask, _ = union_of_instances(t.seg, t.frame, p.points, p.labels)
    return Outcome(mask, n, n, p.thin_s)


def fm_ppd_union(t: TargetJob, r: RefJob) -> Outcome:
    from ppd.instances import union_of_instances

    p = r.proposal
    n = len(p.index)
    if not n:
        return Outcome(np.zeros_like(t.gt, bool), 0, 0, p.thin_s)
    res = _defend(t, r)
    k, labs = res.kept, res.labels  # the labels as refined (a label hypothesis may change them)
    mask = union_of_instances(t.seg, t.frame, p.points[k], labs[k])[0] if (labs[k] == 1).any() else res.mask
    return Outcome(mask, n, int(k.sum()), p.thin_s)


def fm_gbmseg(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    pts, labs = p.points, p.labels
    rf, f = r.ref.features, t.features
    keep = baselines.gbmseg_prune(pts, labs, rf.grid, rf.valid, r.ref.frac, f.grid, f.patch_size)
    return Outcome(t.decode(pts[keep], labs[keep]), len(pts), int(keep.sum()), p.thin_s)


def persam(t: TargetJob, r: RefJob) -> Outcome:
    rf, f = r.ref.features, t.features
    p2, l2 = baselines.persam_points(rf.grid, r.ref.frac, rf.valid, f.grid, f.valid, f.patch_size,
                                     t.frame.original_size)
    first = t.decode(p2, l2, multimask=True)
    box = baselines.mask_box(first)
    return Outcome(t.decode(p2, l2, box=box) if box is not None else first, 2, 2)


def fm_greedy_oracle(t: TargetJob, r: RefJob) -> Outcome:
    p = r.proposal
    pts, labs = p.points, p.labels
    keep = (baselines.greedy_oracle(t.seg, t.frame, pts, labs, t.gt, t.cfg.greedy_max_removals) if len(pts)
            else np.zeros(0, bool))
    return Outcome(t.decode(pts[keep], labs[keep]), len(pts), int(keep.sum()), p.thin_s)


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Method:
    name: str
    reference: bool  # needs a one-shot reference (run once per reference)
    defender: bool  # reads the defender (its weights and settings enter the cache key)
    attacker: bool  # reads the attacker
    description: str
    run: Callable[[TargetJob, RefJob | None], Outcome]
    votes: bool = False  # reads EvalConfig.votes (the others' cache keys leave it out: their rows stay)


def _registry(*methods: Method) -> dict[str, Method]:
    return {m.name: m for m in methods}


#: In run order: a defended method runs before its random twin, which reuses its removal count.
METHODS: dict[str, Method] = _registry(
    Method("oracle-click", False, False, False, "one click at the GT interior point farthest from the border (sanity)",
           oracle_click),
    Method("oracle-box", False, False, False, "the GT bounding box (sanity)", oracle_box),
    Method("fm", True, False, False, "all feature-matching prompts", fm),
    Method("fm-kmeans", True, False, False, "FM thinned to at most K per class by k-means on coordinates "
           "(--votes N: N start sets from flipped references / k-means seeds, masks voted)", fm_kmeans, votes=True),
    Method("fm-ppd", True, True, False, "fm-kmeans + the defender (--votes N: each start set refined, masks voted)",
           fm_ppd, votes=True),
    Method("fm-random", True, True, False, "fm-kmeans minus as many random prompts as the defender removed",
           fm_random),
    Method("fm-gbmseg", True, False, False, "fm-kmeans pruned by GBMSeg-style rules", fm_gbmseg),
    Method("fm-union", True, False, False, "fm-kmeans, one SAM mask per positive, their union (many objects)",
           fm_union),
    Method("fm-ppd-union", True, True, False, "fm-ppd's kept prompts, one SAM mask per positive, their union",
           fm_ppd_union),
    Method("persam", True, False, False, "PerSAM-style best / worst point + cascaded box refinement", persam),
    Method("fm-greedy-oracle", True, False, False, "GT-guided greedy removal from fm-kmeans (GT-informed, not a bound)",
           fm_greedy_oracle),
    Method("ideal", False, False, False, "the game's ideal prompts from the GT", ideal),
    Method("ideal-attacked", False, False, True, "ideal prompts after the attacker (T steps)", ideal_attacked),
    Method("ideal-attacked-defended", False, True, True, "the attacked set refined by the defender",
           ideal_attacked_defended),
    Method("ideal-attacked-defended-ref", True, True, True, "the attacked set refined by the defender, shown "
           "a one-shot reference", ideal_attacked_defended_ref),
    Method("ideal-attacked-random", False, True, True, "the attacked set minus as many random prompts as the "
           "defender removed", ideal_attacked_random),
    Method("ideal-attacked-untrained", False, True, True, "the attacked set refined by a randomly initialised "
           "defender with the same settings", ideal_attacked_untrained),
    Method("ideal-attacked-oracle", False, False, True, "GT-guided greedy removal from the attacked set "
           "(GT-informed, not a bound)", ideal_attacked_oracle),
)
TRAINING_FREE = ("fm", "fm-kmeans", "fm-random", "fm-gbmseg", "persam")
