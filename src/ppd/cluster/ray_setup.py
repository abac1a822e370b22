"""Starting or joining Ray, and the worker settings every ppd actor shares."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ppd.errors import ConfigError

MISSING = "--ray needs the ray extra: pip install 'ppd[ray]'"


@dataclass(frozen=True)
class RaySettings:
    """``address``: None or "local" = start a local instance; "auto" or "HOST:PORT" = join a cluster.
    ``workers`` actors, each pinned to ``threads`` torch threads (and asking Ray for as many CPUs)."""

    address: str | None = None
    workers: int = 2
    threads: int = 1

    def __post_init__(self) -> None:
        if self.workers < 1 or self.threads < 1:
            raise ConfigError(f"--workers and --threads must be at least 1, got {self.workers}, {self.threads}")


def init(settings: RaySettings):
    """``ray`` after ``ray.init`` (a no-op when already initialised, e.g. by a caller's own cluster code)."""
    try:
        import ray
    except ImportError:
        raise ConfigError(MISSING) from None
    if not ray.is_initialized():
        local = settings.address in (None, "", "local")
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if local:  # enough logical CPUs for the workers asked, even beyond the cores (then they share)
            need = settings.workers * settings.threads
            ray.init(num_cpus=max(need, os.cpu_count() or 1), **kw)
        else:
            ray.init(address=settings.address, **kw)
    have = ray.cluster_resources().get("CPU", 0)
    if settings.workers * settings.threads > have:  # Ray would leave the extra actors pending forever
        raise ConfigError(f"{settings.workers} workers x {settings.threads} threads need "
                          f"{settings.workers * settings.threads} CPUs; this Ray instance has {have:g}")
    return ray


def pin_threads(threads: int) -> None:
    """Inside a worker: torch (and the OpenMP / BLAS pools it uses) runs exactly ``threads`` threads."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch.set_num_threads(threads)
