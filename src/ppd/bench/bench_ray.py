"""``ppd bench ray``: serial vs Ray for embedding and for a small eval, in one run.

Three ways to use the same cores: this process with 2 torch threads (the serial path), Ray with
1 actor of 2 threads (what Ray itself costs), and Ray with 2 actors of 1 thread each (what
process parallelism gives). Every configuration embeds the same images into its own fresh
cache and computes the same eval rows into its own fresh result cache; times include building
the workers (loading SAM), as a user waits for them. On a 2-core machine this measures
overheads, not scaling: docs/SCALE.md says what more machines give.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ppd.io import atomic_write

CONFIGS = (("serial, 1 process x 2 threads", None, 2), ("Ray, 1 worker x 2 threads", 1, 2),
           ("Ray, 2 workers x 1 thread", 2, 1))


def run(data_root=None, n_images: int = 8, dataset: str = "ecssd", eval_targets: int = 4, eval_refs: int = 2,
        cache_dir=None, out: str | None = None) -> dict:
    import torch

    from ppd import data
    from ppd.cluster import embed
    from ppd.cluster.eval_ray import executor
    from ppd.cluster.ray_setup import RaySettings, init
    from ppd.evaluate import harness
    from ppd.sam import Segmenter

    samples = [s for s in data.load_dataset(data_root, dataset=dataset, split="val")][:n_images]
    t0 = time.perf_counter()
    ray = init(RaySettings(None, workers=2, threads=1))
    res: dict = {"images": len(samples), "dataset": dataset, "ray_start_s": round(time.perf_counter() - t0, 2),
                 "embed": {}, "eval": {}}
    threads0 = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="ppd-bench-ray-") as tmp:
        tmp = Path(tmp)
        for name, workers, threads in CONFIGS:  # 1. embedding, each into a fresh cache
            spec = embed.SegmenterSpec(cache_dir=str(tmp / f"emb-{workers}-{threads}"))
            settings = None if workers is None else RaySettings(None, workers, threads)
            torch.set_num_threads(threads)
            r = embed.run(spec, samples, settings, progress=False)
            res["embed"][name] = {"wall_s": round(r["wall_s"], 2), "images_per_min": round(r["images_per_min"], 1),
                                  "worker_s_per_image": round(r["worker_s"] / len(samples), 3)}
        torch.set_num_threads(threads0)
        shared = tmp / "emb-shared"  # 2. eval: embeddings made once (not timed), rows computed per configuration
        kw = dict(dataset=dataset, split="val", methods=["fm-kmeans", "fm-ppd"], references=eval_refs,
                  limit=eval_targets, progress=False)
        rows_of = {}
        for name, workers, threads in CONFIGS:
            torch.set_num_threads(threads)
            seg = Segmenter(cache_dir=shared, threads=threads)
            ex = None if workers is None else executor(RaySettings(None, workers, threads),
                                                       embed.SegmenterSpec(cache_dir=str(shared)))
            if workers is None:  # warm the shared embeddings once
                harness.run(data_root, cache_path=tmp / "warm.jsonl", segmenter=seg,
                            **{**kw, "methods": ["fm-kmeans"]})
            t1 = time.perf_counter()
            rows, _ = harness.run(data_root, cache_path=tmp / f"rows-{workers}-{threads}.jsonl", segmenter=seg,
                                  executor=ex, **kw)
            wall = time.perf_counter() - t1
            rows_of[name] = rows
            res["eval"][name] = {"rows": len(rows), "wall_s": round(wall, 2),
                                 "rows_per_min": round(60 * len(rows) / wall, 1)}
        torch.set_num_threads(threads0)
    serial = rows_of[CONFIGS[0][0]]
    for name, _, _ in CONFIGS[1:]:
        d = [abs(a.dice - b.dice) for a, b in zip(serial, rows_of[name], strict=True)]
        res["eval"][name]["max_abs_dice_diff_vs_serial"] = max(d)
        res["eval"][name]["rows_differing"] = sum(x > 1e-6 for x in d)
    ray.shutdown()
    _print(res)
    if out:
        atomic_write(out, lambda p: p.write_text(json.dumps(res, indent=1)))
    return res


def _print(r: dict) -> None:
    print(f"ppd bench ray: {r['images']} {r['dataset']} val images; local Ray started in {r['ray_start_s']:.1f} s")
    base = r["embed"][CONFIGS[0][0]]["wall_s"]
    print("embedding (fresh cache each; wall includes loading SAM in every worker):")
    for name, x in r["embed"].items():
        print(f"  {name:32s} {x['wall_s']:7.1f} s  {x['images_per_min']:6.1f} img/min  "
              f"{x['worker_s_per_image']:.2f} s/img in a worker  ({base / x['wall_s']:.2f}x serial)")
    base = r["eval"][CONFIGS[0][0]]["wall_s"]
    print("eval rows (fm-kmeans + fm-ppd, embeddings cached):")
    for name, x in r["eval"].items():
        extra = (f"; Dice vs serial: max |diff| {x['max_abs_dice_diff_vs_serial']:.2e}, "
                 f"{x['rows_differing']} of {x['rows']} rows differ") if "rows_differing" in x else ""
        print(f"  {name:32s} {x['wall_s']:7.1f} s  {x['rows_per_min']:6.1f} rows/min  ({base / x['wall_s']:.2f}x "
              f"serial){extra}")
