"""Resident memory while streaming many one-shot targets through one process (issue #18 item 4).

Streams the first N images of a Kvasir split (the first is the reference) through
``ppd.oneshot.stream`` with the shipped defender and prints RSS and the count of live Python
objects every 20 targets, then the RSS slope over 30-target windows.

Run: .venv/bin/python benchmarks/rss_stream.py [SPLIT] [N]   (default: eval 160)
"""

from __future__ import annotations

import gc
import sys

import numpy as np

from ppd import data
from ppd.bench.bench_oneshot import rss_mb
from ppd.oneshot import OneShot, stream
from ppd.refine import Defender
from ppd.sam import Segmenter


def main(split: str = "eval", n: int = 160) -> None:
    samples = sorted(data.load_dataset(None, dataset="kvasir", split=split), key=lambda s: s.id)[:n]
    seg = Segmenter()
    pipe = OneShot(seg, Defender(segmenter=seg), k=10)
    pipe.set_reference(samples[0].image(), samples[0].mask())
    rss = []
    for i, _ in enumerate(stream(pipe, [s.image for s in samples[1:]])):
        rss.append(rss_mb())
        if i % 20 == 19:
            print(f"{i + 1} targets: RSS {rss[-1]:.0f} MiB, {len(gc.get_objects())} live Python objects", flush=True)
    x = np.arange(len(rss))
    for a in range(10, len(rss) - 20, 30):
        print(f"slope over targets {a + 1}-{a + 30}: {np.polyfit(x[a:a + 30], rss[a:a + 30], 1)[0]:+.2f} MiB/target")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "eval", int(sys.argv[2]) if len(sys.argv) > 2 else 160)
