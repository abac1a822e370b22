"""``ppd embed``: precompute SAM embeddings of a data root into the cache, serially or on Ray.

Cached images are skipped (their entry exists under the segmenter's key). Cache entries are
written atomically (temporary file, rename), so several workers, on one machine or on many
sharing a folder, can fill one cache: a reader sees a whole entry or none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ppd.data import Sample
from ppd.encoders import DEFAULT_ENCODER


@dataclass(frozen=True)
class SegmenterSpec:
    """How a worker builds its Segmenter (plain values, so it travels to Ray workers)."""

    checkpoint: str | None = None
    cache_dir: str | None = None
    encoder: str = DEFAULT_ENCODER

    def build(self, threads: int | None = None):
        from ppd.sam import Segmenter

        return Segmenter(checkpoint=self.checkpoint, cache_dir=self.cache_dir, encoder=self.encoder, threads=threads)


def embed_one(seg, image_path: str | Path) -> tuple[str, float]:
    """("cached" | "embedded", seconds) for one image file."""
    from ppd.io import read_image
    from ppd.sam.cache import image_key

    t0 = time.perf_counter()
    image = read_image(image_path)
    if seg.cache is not None and seg.cache.path(image_key(image), seg.embed_key).is_file():
        return "cached", time.perf_counter() - t0
    seg.frame(image)
    return "embedded", time.perf_counter() - t0


def serial(spec: SegmenterSpec, samples: list[Sample], threads: int | None = None) -> Iterator[tuple[str, str, float]]:
    seg = spec.build(threads)
    for s in samples:
        yield (s.id, *embed_one(seg, s.image_path))


def on_ray(spec: SegmenterSpec, samples: list[Sample], settings) -> Iterator[tuple[str, str, float]]:
    """The same on Ray: ``settings.workers`` actors, each with its own Segmenter, fed one image at a time."""
    from ppd.cluster.ray_setup import init, pin_threads

    ray = init(settings)

    @ray.remote(num_cpus=settings.threads)
    class Embedder:
        def __init__(self, spec: SegmenterSpec, threads: int) -> None:
            pin_threads(threads)
            self.seg = spec.build(threads)

        def embed(self, sid: str, path: str) -> tuple[str, str, float]:
            return (sid, *embed_one(self.seg, path))

    from ray.util import ActorPool

    pool = ActorPool([Embedder.remote(spec, settings.threads) for _ in range(settings.workers)])
    yield from pool.map_unordered(lambda a, s: a.embed.remote(s.id, str(s.image_path)), samples)


def run(spec: SegmenterSpec, samples: list[Sample], settings=None, progress: bool = True,
        on_item: Callable[[str, str, float], None] | None = None) -> dict:
    """Embed ``samples`` (``settings``: a :class:`ppd.cluster.ray_setup.RaySettings`, or None = this process).
    Returns counts and timings."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    items = on_ray(spec, samples, settings) if settings is not None else serial(spec, samples)
    counts = {"embedded": 0, "cached": 0}
    busy = 0.0
    for sid, what, dt in tqdm(items, total=len(samples), unit="img", desc="embed", disable=not progress):
        counts[what] += 1
        busy += dt
        if on_item:
            on_item(sid, what, dt)
    wall = time.perf_counter() - t0
    return {**counts, "images": len(samples), "wall_s": wall, "worker_s": busy,
            "images_per_min": 60 * len(samples) / wall if wall > 0 else float("nan")}
