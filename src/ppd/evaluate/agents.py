"""The agents a ``ppd eval`` run uses, loaded on first use."""

from __future__ import annotations


class Agents:
    """The defender and attacker a harness runs, loaded on first use (a run of training-free methods
    never loads them)."""

    def __init__(self, segmenter, defender=None, attacker=None, defender_opts: dict | None = None,
                 seed: int = 0) -> None:
        self.seg, self.specs, self.opts, self.seed = segmenter, (defender, attacker), dict(defender_opts or {}), seed
        self._defender = self._attacker = self._untrained = None

    @property
    def defender(self):
        if self._defender is None:
            from ppd.refine import Defender, load_agent

            self._defender = Defender(load_agent(self.specs[0], "defender", seed=self.seed), segmenter=self.seg,
                                      **self.opts)
        return self._defender

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
