"""``ppd eval --ray``: the harness's missing rows computed by Ray actors.

Each actor builds the same :class:`ppd.evaluate.harness.Harness` as the driver (SAM, agents and
settings loaded once) and computes whole units (one target with every method and reference
still missing), so work shared inside a target (its frame, the proposal every fm-* method
uses, the defender's removal count that fm-random reads) stays shared. Rows come back to the
driver, which alone writes the result cache, as they arrive: a killed run resumes. Keys are the
driver's; an actor whose weights or settings hash differently is refused before any work.
"""

from __future__ import annotations

from collections.abc import Iterator

from ppd.errors import ConfigError, PPDError


def executor(settings, seg_spec):
    """An ``executor`` for :meth:`Harness.run` on Ray (``settings``: RaySettings; ``seg_spec``: SegmenterSpec)."""

    def run(harness, refs, pending) -> Iterator[list]:
        if not pending:
            return
        from ppd.cluster.ray_setup import init, pin_threads

        ray = init(settings)

        @ray.remote(num_cpus=settings.threads)
        class EvalWorker:
            def __init__(self, seg_spec, threads: int, methods, cfg, defender, attacker, defender_opts) -> None:
                from ppd.evaluate.harness import Harness

                pin_threads(threads)
                self.h = Harness(seg_spec.build(threads), methods, cfg, defender=defender, attacker=attacker,
                                 defender_opts=defender_opts)
                self.refs: dict = {}

            def hashes(self) -> dict:
                return self.h.hashes

            def compute(self, unit, known: list) -> list:
                for row in known:  # rows the driver already has that this unit's methods read (fm-random)
                    self.h.cache.rows[row.key] = row
                return self.h.compute(unit, self.refs)

        h = harness
        for spec in (h.defender_spec, h.attacker_spec):
            if spec is not None and not isinstance(spec, str | bytes) and not hasattr(spec, "__fspath__"):
                raise ConfigError("--ray needs agents given as checkpoint paths (workers load them themselves)")
        actors = [EvalWorker.remote(seg_spec, settings.threads, h.methods, h.cfg, h.defender_spec, h.attacker_spec,
                                    h.defender_opts) for _ in range(min(settings.workers, len(pending)))]
        for got in ray.get([a.hashes.remote() for a in actors]):
            if got != h.hashes:
                raise ConfigError(f"a Ray worker's SAM / agent hashes differ from this process's ({got} vs "
                                  f"{h.hashes}): install the same ppd, weights and agents on every node")
        from ray.util import ActorPool

        pool = ActorPool(actors)

        def submit(actor, unit):
            # rows the unit's methods read: its own cached ones, and the defended rows whose removal count
            # fm-random / ideal-attacked-random reuse even when the defended method is not run now
            keys = set(unit.keys.values())
            refs_of = {r.id: r for _, r in unit.todo if r is not None}
            keys.add(h.key("ideal-attacked-defended", unit.target, None, unit.obj))
            keys |= {h.key("fm-ppd", unit.target, r, unit.obj) for r in refs_of.values()}
            known = [h.cache.rows[k] for k in keys if k in h.cache.rows]
            return actor.compute.remote(unit, known)

        try:
            yield from pool.map_unordered(submit, pending)
        except ray.exceptions.RayError as e:  # a worker's own PPDError (bad data, missing agent): one line
            cause = getattr(e, "cause", None)
            if isinstance(cause, PPDError):
                raise cause from None
            raise

    return run
