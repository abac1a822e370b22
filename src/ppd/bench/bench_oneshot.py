"""``ppd bench oneshot``: folder throughput of the one-shot pipeline, today's loop vs the streamed one.

Both paths segment the same targets from the same reference with the shipped defender, each
with a fresh embedding cache (every target is encoded: a new folder), and write what ``ppd
oneshot`` writes (mask, overlay, prompts JSON):

* loop (session 6's ``ppd oneshot``, torch eager encoder): per target read -> encode -> propose ->
  refine -> write, each stage timed (their shares of the time);
* stream (``ppd.oneshot.stream``): the next target is read and encoded on a helper thread while this
  one is refined, and outputs are written by a second helper; with the eager encoder, then with each
  compiled one (OpenVINO, the default, and ONNX Runtime: ``--encoder``; models cached).

Also: the masks of the loop and the eager stream are compared (they must be equal), those of the
compiled encoders by IoU against the loop's, and the process's resident memory is read after every
eager streamed target (growth per target, from a line fit past the first 10).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ppd.io import atomic_write

STAGES = ("read", "encode", "propose", "refine", "write")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.unpackbits(a).astype(bool), np.unpackbits(b).astype(bool)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _pipe(cache: Path, agent, encoder: str = "eager"):
    from ppd.oneshot import OneShot
    from ppd.refine import Defender
    from ppd.sam import Segmenter

    seg = Segmenter(cache_dir=cache, encoder=encoder)
    return OneShot(seg, Defender(agent, segmenter=seg), k=10)


def run(data_root=None, n_targets: int = 50, dataset: str = "kvasir", split: str = "val", out: str | None = None,
        progress: bool = True) -> dict:
    from tqdm.auto import tqdm

    from ppd import data
    from ppd.cli.common import WriteBehind, _write_refined
    from ppd.refine import load_agent

    samples = sorted(data.load_dataset(data_root, dataset=dataset, split=split), key=lambda s: s.id)
    ref, targets = samples[0], samples[1:1 + n_targets]
    agent = load_agent(None, "defender")
    res: dict = {"dataset": dataset, "split": split, "targets": len(targets), "reference": ref.id}
    masks: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="ppd-bench-oneshot-") as tmp:
        tmp = Path(tmp)
        # ---------------------------------------------------------------- today's loop, stage by stage
        (tmp / "out-loop").mkdir()
        pipe = _pipe(tmp / "cache-loop", agent)
        pipe.set_reference(ref.image(), ref.mask())
        times = {k: 0.0 for k in STAGES}
        masks["loop"] = []
        t_all = time.perf_counter()
        for s in tqdm(targets, desc="loop", disable=not progress):
            t0 = time.perf_counter()
            image = s.image()
            t1 = time.perf_counter()
            frame = pipe.seg.frame(image)
            t2 = time.perf_counter()
            prop = pipe.propose(frame)
            t3 = time.perf_counter()
            result = pipe.run(frame, prop)
            t4 = time.perf_counter()
            _write_refined(tmp / "out-loop", s.id, image, result.refined)
            t5 = time.perf_counter()
            for k, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[k] += dt
            masks["loop"].append(np.packbits(result.mask))  # packed: the bench's own memory stays small
        wall_loop = time.perf_counter() - t_all
        total = sum(times.values())
        res["loop"] = {"wall_s": round(wall_loop, 2), "images_per_min": round(60 * len(targets) / wall_loop, 1),
                       "stage_s": {k: round(v, 2) for k, v in times.items()},
                       "stage_share": {k: round(v / total, 3) for k, v in times.items()}}
        del pipe
        # ---------------------------------------------------------------- the streamed path, each encoder
        from ppd.errors import ConfigError
        from ppd.oneshot import stream

        rss: list[float] = []
        for name, encoder in (("stream", "eager"), ("stream_openvino", "openvino"), ("stream_onnx", "onnx")):
            try:
                pipe = _pipe(tmp / f"cache-{name}", agent, encoder)
            except ConfigError:  # its runtime is not installed
                continue
            pipe.set_reference(ref.image(), ref.mask())
            (tmp / f"out-{name}").mkdir()
            masks[name] = []
            t_all = time.perf_counter()
            with WriteBehind() as writer:  # as ppd oneshot writes
                for s, (image, _frame, result) in tqdm(zip(targets, stream(pipe, [s.image for s in targets]),
                                                           strict=True), total=len(targets), desc=name,
                                                       disable=not progress):
                    writer.submit(_write_refined, tmp / f"out-{name}", s.id, image, result.refined)
                    masks[name].append(np.packbits(result.mask))
                    if encoder == "eager":
                        rss.append(rss_mb())
            wall = time.perf_counter() - t_all
            res[name] = {"encoder": encoder, "wall_s": round(wall, 2),
                         "images_per_min": round(60 * len(targets) / wall, 1),
                         "speedup_vs_loop": round(wall_loop / wall, 2)}
            if encoder != "eager":
                ious = [_iou(a, b) for a, b in zip(masks["loop"], masks[name], strict=True)]
                res[name] |= {"mask_iou_vs_eager_mean": round(float(np.mean(ious)), 4),
                              "mask_iou_vs_eager_min": round(float(np.min(ious)), 4)}
            del pipe
    res["speedup"] = res["stream"]["speedup_vs_loop"]
    res["masks_equal"] = all(np.array_equal(a, b) for a, b in zip(masks["loop"], masks["stream"], strict=True))
    x = np.arange(len(rss))[10:]
    slope = float(np.polyfit(x, np.asarray(rss)[10:], 1)[0]) if len(x) >= 5 else float("nan")
    res["rss_mb"] = {"after_first": round(rss[0]), "peak": round(max(rss)), "last": round(rss[-1]),
                     "growth_mb_per_target": round(slope, 2)}
    _print(res)
    if out:
        atomic_write(out, lambda p: p.write_text(json.dumps(res, indent=1)))
    return res


def _print(r: dict) -> None:
    print(f"ppd bench oneshot: {r['targets']} {r['dataset']} {r['split']} targets, reference {r['reference']}, "
          "shipped defender, cold encoder, outputs written")
    lp = r["loop"]
    print(f"  loop (today's per-target loop): {lp['wall_s']:7.1f} s  {lp['images_per_min']:5.1f} images/min")
    print("    stage shares: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in lp["stage_share"].items()))
    st = r["stream"]
    print(f"  stream (encode next / write last on helper threads): {st['wall_s']:7.1f} s  "
          f"{st['images_per_min']:5.1f} images/min  -> {r['speedup']:.2f}x the loop (goal >= 1.4x)")
    for name in ("stream_openvino", "stream_onnx"):
        if name in r:
            so = r[name]
            print(f"  stream + {so['encoder']} encoder (--encoder {so['encoder']}): {so['wall_s']:7.1f} s  "
                  f"{so['images_per_min']:5.1f} images/min  -> {so['speedup_vs_loop']:.2f}x the loop (goal >= 1.4x);"
                  f" masks vs eager: mean IoU {so['mask_iou_vs_eager_mean']:.4f}, "
                  f"min {so['mask_iou_vs_eager_min']:.4f}")
    print(f"  masks equal between the loop and the stream (eager): {r['masks_equal']}")
    m = r["rss_mb"]
    print(f"  RSS over the streamed targets: {m['after_first']} MiB after the first, peak {m['peak']} MiB, "
          f"growth {m['growth_mb_per_target']:+.2f} MiB / target (fit over targets 11..{r['targets']})")
