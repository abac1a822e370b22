"""Keep numpy's and scipy's OpenBLAS thread pools to one thread, so torch has the cores.

ppd interleaves torch (SAM's decoder, on its OpenMP pool) with small numpy / scipy matrix
products (observations, graph prototypes, k-means). Each such product wakes OpenBLAS's own
pool, whose workers then busy-wait for more work while torch's next call needs the same
cores. On 2 cores this made a fast-path decode inside the game 21 ms instead of 14 ms
(`ppd bench game`, docs/bench_game.txt): one OpenBLAS thread removes the contention, and
the numpy products are too small to gain from more. Process-wide and idempotent; a user's
own ``OPENBLAS_NUM_THREADS`` is respected.
"""

from __future__ import annotations

import os

_done = False


def quiet_numpy_blas() -> bool:
    """Limit the loaded OpenBLAS pools to one thread (and those loaded later, through the environment).
    Returns True if the limit is in place, False if the user set ``OPENBLAS_NUM_THREADS`` or
    threadpoolctl is missing."""
    global _done
    if _done:
        return True
    if "OPENBLAS_NUM_THREADS" in os.environ:
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # read by OpenBLAS libraries loaded from now on
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        return False
    # those already loaded (numpy's, perhaps scipy's), by name: OpenBLAS only, never MKL, which a conda
    # build of torch may share with numpy (limiting it would make torch's own matmuls single-threaded)
    openblas = {i["prefix"]: 1 for i in threadpool_info() if i["internal_api"] == "openblas"}
    if openblas:
        threadpool_limits(limits=openblas)
    _done = True
    return True
