"""The agents a ``ppd eval`` run uses, loaded on first use."""

from __future__ import annotations


class Agents:
    """The defender and attacker a harness runs, loaded on first use (a run of training-free methods
    never loads them)."""

    def __init__(self, segmenter, defender=None, attacker=None, defender_opts: dict | None = None,
                 seed: int = 0, adapt=None) -> None:
        """``adapt``: a :class:`ppd.train.adapt.AdaptConfig` for :meth:`defender_for` (None: no adaptation)."""
        self.seg, self.specs, self.opts, self.seed = segmenter, (defender, attacker), dict(defender_opts or {}), seed
        self.adapt = adapt
        self._defender = self._attacker = self._untrained = None
        self._adapted: dict = {}  # reference (dataset, id) -> its adapted Defender
        self.adapt_seconds: dict[str, float] = {}  # reference id -> seconds its adaptation took (run.json)

    @property
    def defender(self):
        if self._defender is None:
            from ppd.refine import Defender, load_agent

            self._defender = Defender(load_agent(self.specs[0], "defender", seed=self.seed), segmenter=self.seg,
                                      **self.opts)
        return self._defender

    def defender_for(self, ref):
        """The defender that refines start sets matched from reference sample ``ref``: the defender, or with
        ``adapt`` a copy of it adapted to that reference (made once, kept for the run)."""
        if self.adapt is None:
            return self.defender
        key = (ref.dataset, ref.id)
        if key not in self._adapted:
            import time

            from ppd.train.adapt import adapt_defender, attacker_beside

            t0 = time.perf_counter()
            self._adapted[key] = adapt_defender(self.defender, ref.image(), ref.mask(),
                                                attacker_beside(self.specs[0]), self.adapt)
            self.adapt_seconds[ref.id] = round(time.perf_counter() - t0, 2)
        return self._adapted[key]

    @property
    def untrained(self):
        """A randomly initialised defender shaped like the evaluated one (seeded), its settings alike."""
        if self._untrained is None:
            from ppd.refine import Defender, load_agent

            self._untrained = Defender(load_agent("untrained", "defender", like=self.defender.agent, seed=self.seed),
                                       segmenter=self.seg, config=self.defender.config)
        return self._untrained

    @property
    def attacker(self):
        if self._attacker is None:
            from ppd.refine import load_agent

            self._attacker = load_agent(self.specs[1], "attacker", seed=self.seed)
        return self._attacker
