"""``ppd bench sam``: encoder, naive decode and fast-path decode, side by side.

* encoder: median seconds per image (no cache), its FLOPs (counted) and the share of
  the FLOP limit (encoder FLOPs over the peak matmul rate) each encoder path reaches;
* naive decode: what a SamPredictor loop does per prompt set: prompt encoder,
  stock mask decoder, upsampling to the original size, threshold, Dice there;
* fast path: ``Segmenter.decode_input_frame`` (256x256 logits) and Dice against
  the ground truth downsampled once per image to the low-res frame.

Both paths see the same prompt sets (positives inside, negatives outside the GT).
The physical limit is the stock decoder's FLOPs per call (counted with
``torch.utils.flop_counter``) over this machine's matmul rate measured in the
same run; the fast path's fraction of it can exceed 100 % because it skips work.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppd import data

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the profiler's CUDA-probe chatter
from ppd.encoders import ENCODERS
from ppd.errors import ConfigError
from ppd.metrics import dice
from ppd.sam import Segmenter, downsample_mask
from ppd.sam.segmenter import compiled_encoder


def _median_time(fn, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def matmul_rate(seconds: float = 1.0) -> dict[str, float]:
    """GFLOP/s of float32 GEMMs: the decoder's typical shape and a large square one."""
    out = {}
    for name, (m, k, n) in {"4096x256x256": (4096, 256, 256), "2048^3": (2048, 2048, 2048)}.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        reps = max(3, int(seconds / max(2 * m * k * n / 150e9, 1e-4)))
        t = _median_time(lambda a=a, b=b: a @ b, reps)
        out[name] = 2 * m * k * n / t / 1e9
    return out


def decoder_flops(seg: Segmenter, coords: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """FLOPs of one stock decoder call and of one fast-path call (same prompts)."""
    from torch.utils.flop_counter import FlopCounterMode

    m = seg.model
    with torch.inference_mode():
        sparse, dense = m.prompt_encoder(points=(coords[None], labels[None]), boxes=None, masks=None)
        with FlopCounterMode(display=False) as fc:
            m.mask_decoder(image_embeddings=seg.embedding, image_pe=m.prompt_encoder.get_dense_pe(),
                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                           multimask_output=False)
        stock = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            seg.decode_input_frame(coords, labels)
        fast = fc.get_total_flops()
    return stock, fast


def encoder_flops(seg: Segmenter, image: np.ndarray) -> int:
    """FLOPs of one image-encoder call (TinyViT on the 1024 input), counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    x = seg.preprocess(image)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        seg.model.image_encoder(x)
    return fc.get_total_flops()


def _encoder_times(seg: Segmenter, picked: list, cache_dir) -> dict[str, dict]:
    """Every encoder path on the same inputs, interleaved image by image (so load hits all alike): the
    median seconds of the encoder call alone (after one warm-up each), and for the compiled paths their
    build time and model hash. A path whose runtime is not installed is left out."""
    paths: dict[str, object] = {"eager": seg.model.image_encoder}
    for name in ENCODERS:
        if name != "eager":
            try:
                paths[name] = compiled_encoder(name, seg.model, seg.model_sha256, cache_dir)
            except ConfigError:  # the runtime is not installed
                continue
    times: dict[str, list[float]] = {k: [] for k in paths}
    with torch.inference_mode():
        for s in picked:
            x = seg.preprocess(s.image())
            for name, enc in paths.items():
                enc(x)  # warm-up
                t0 = time.perf_counter()
                enc(x)
                times[name].append(time.perf_counter() - t0)
    out = {}
    for name, enc in paths.items():
        out[name] = {"median_s": float(np.median(times[name]))}
        if name != "eager":
            out[name] |= {"build_s": enc.build_s, "sha256": enc.sha256, "path": str(enc.path)}
    return out


def _prompt_sets(gt: np.ndarray, n_sets: int, n_points: int, rng: np.random.Generator):
    pos = np.argwhere(gt)[:, ::-1]
    neg = np.argwhere(~gt)[:, ::-1]
    sets = []
    for _ in range(n_sets):
        n_pos = max(1, n_points // 2 + 1)
        p = pos[rng.integers(0, len(pos), n_pos)]
        q = neg[rng.integers(0, len(neg), n_points - n_pos)]
        sets.append((np.concatenate([p, q]).astype(float), np.array([1] * n_pos + [0] * (n_points - n_pos))))
    return sets


def _where_time_goes(seg: Segmenter, coords, labels, n: int = 20) -> list[tuple[str, float]]:
    from torch.profiler import ProfilerActivity, profile

    saved = os.dup(2)  # the CUDA build's profiler writes chatter straight to fd 2
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                seg.decode_input_frame(coords, labels)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows) or 1.0
    groups = {"matmul (mm/addmm/bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
              "softmax": ("aten::_softmax",), "layer norm": ("aten::native_layer_norm",),
              "gelu / relu": ("aten::gelu", "aten::relu", "aten::clamp_min"),
              "copies / layout": ("aten::copy_", "aten::clone", "aten::contiguous"),
              "elementwise add/mul/div": ("aten::add", "aten::mul", "aten::div", "aten::sub")}
    shares = []
    seen = 0.0
    for g, names in groups.items():
        t = sum(tt for k, tt in rows if k in names)
        seen += t
        shares.append((g, t / total))
    shares.append(("other (small ops, dispatch)", 1 - seen / total))
    return shares


def stock_full_mask(seg: Segmenter, c: torch.Tensor, lab: torch.Tensor, frame=None) -> np.ndarray:
    """What a SamPredictor loop computes: stock decoder, upsampled to the original size
    (on ``frame``, default the segmenter's current image)."""
    m = seg.model
    fr = frame or seg.current
    with torch.inference_mode():
        sparse, dense = m.prompt_encoder(points=(c[None], lab[None]), boxes=None, masks=None)
        low, _ = m.mask_decoder(image_embeddings=fr.embedding32(), image_pe=m.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False)
        return (m.postprocess_masks(low, fr.input_size, fr.original_size)[0, 0] > 0).numpy()


def _decode_fns(seg: Segmenter, prepared: list, gt: np.ndarray, gt_low: np.ndarray):
    """Two closures cycling over the same prompt sets: naive (full res + Dice) and fast path."""
    naive_it, fast_it = itertools.cycle(prepared), itertools.cycle(prepared)

    def naive() -> float:
        return dice(stock_full_mask(seg, *next(naive_it)), gt)

    def fast() -> float:
        return dice((seg.decode_input_frame(*next(fast_it)).logits > 0).numpy(), gt_low)

    return naive, fast


def run(data_root=None, n_images: int = 4, n_decodes: int = 30, n_points: int = 5,
        cache_dir=None, out=None, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    samples = data.load_dataset(data_root, split="val")
    by_ds: dict[str, list] = {}
    for s in samples:
        by_ds.setdefault(s.dataset, []).append(s)
    picked = []
    while len(picked) < n_images and any(by_ds.values()):  # round-robin over datasets
        for ds in sorted(by_ds):
            if by_ds[ds] and len(picked) < n_images:
                picked.append(by_ds[ds].pop(0))
    seg = Segmenter(cache_dir=cache_dir, use_cache=False)
    print(f"ppd bench sam: {len(picked)} val images ({', '.join(sorted({s.dataset for s in picked}))}), "
          f"{n_decodes} prompt sets of {n_points} points each, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    enc_t, naive_t, fast_t, agree = [], [], [], []
    for s in picked:
        image, gt = s.image(), s.mask()
        t0 = time.perf_counter()
        seg.set_image(image)
        enc_t.append(time.perf_counter() - t0)
        sets = _prompt_sets(gt, n_decodes, n_points, rng)
        gt_low = downsample_mask(gt, seg.lowres_valid_shape)
        prepared = [(torch.as_tensor(seg.to_input_frame(p), dtype=torch.float32), torch.as_tensor(lab))
                    for p, lab in sets]
        naive, fast = _decode_fns(seg, prepared, gt, gt_low)
        naive_t.append(_median_time(naive, n_decodes))
        fast_t.append(_median_time(fast, n_decodes))
        for c, lab in prepared[:5]:
            a = seg.upsample(seg.decode_input_frame(c, lab).logits)
            b = stock_full_mask(seg, c, lab)
            agree.append((a & b).sum() / max((a | b).sum(), 1))
    c0, l0 = prepared[0]
    stock_flops, fast_flops = decoder_flops(seg, c0, l0)
    enc_flops = encoder_flops(seg, picked[0].image())
    encoders = _encoder_times(seg, picked, cache_dir)
    rates = matmul_rate()
    peak = max(rates.values())
    limit = stock_flops / (peak * 1e9)
    enc, nv, fs = encoders["eager"]["median_s"], float(np.median(naive_t)), float(np.median(fast_t))
    enc_limit = enc_flops / (peak * 1e9)
    shares = _where_time_goes(seg, c0, l0)
    res = {"images": [f"{s.dataset}/{s.id}" for s in picked], "points": n_points, "decodes_per_image": n_decodes,
           "encoder_s": enc, "set_image_s": float(np.median(enc_t)), "encoder_gflop": enc_flops / 1e9,
           "encoder_flop_limit_s": enc_limit,
           "encoder_fraction_of_limit": {k: enc_limit / v["median_s"] for k, v in encoders.items()},
           "encoder_speedup_vs_eager": {k: enc / v["median_s"] for k, v in encoders.items()},
           "encoders": encoders, "naive_decode_s": nv, "fast_decode_s": fs,
           "speedup": nv / fs,
           "stock_decoder_gflop": stock_flops / 1e9, "fast_path_gflop": fast_flops / 1e9,
           "matmul_gflops": rates, "flop_limit_s": limit, "fraction_of_limit": limit / fs,
           "fast_vs_full_mask_iou_min": float(np.min(agree)), "time_shares": dict(shares),
           "threads": torch.get_num_threads()}
    print(f"  set_image (no cache)        median {np.median(enc_t) * 1e3:8.1f} ms / image (default encoder "
          f"{seg.encoder}, preprocessing included)")
    print(f"  encoder FLOPs               {enc_flops / 1e9:8.2f} GFLOP / image; FLOP limit {enc_limit * 1e3:.1f} ms "
          "at the peak matmul rate below")
    for name, e in encoders.items():
        built = (f" (model built once in {e['build_s']:.1f} s, sha256 {e['sha256'][:12]})"
                 if name != "eager" else "")
        print(f"  encoder {name:19s} median {e['median_s'] * 1e3:8.1f} ms / image: {enc / e['median_s']:.2f}x eager, "
              f"{100 * enc_limit / e['median_s']:.1f} % of the limit{built}")
    print(f"  naive decode (full res)     median {nv * 1e3:8.1f} ms / prompt set")
    print(f"  fast path (256x256 logits)  median {fs * 1e3:8.1f} ms / prompt set")
    print(f"  speed-up fast vs naive      {nv / fs:8.2f}x   (goal >= 1.5x)")
    print(f"  stock decoder FLOPs         {stock_flops / 1e9:8.2f} GFLOP / call "
          f"(fast path computes {fast_flops / 1e9:.2f} GFLOP)")
    print("  matmul rate                 " + ", ".join(f"{k}: {v:.0f} GFLOP/s" for k, v in rates.items()))
    print(f"  FLOP limit (stock / peak)   {limit * 1e3:8.1f} ms / call")
    print(f"  fast path reaches           {100 * limit / fs:8.1f} % of that limit (goal >= 70 %)")
    print(f"  fast vs full mask agreement min IoU {np.min(agree):.4f} over {len(agree)} prompt sets")
    print("  where the fast path's time goes (profiler self-time shares):")
    for g, sh in shares:
        print(f"    {g:30s} {100 * sh:5.1f} %")
    if out:
        Path(out).write_text(json.dumps(res, indent=1) + "\n")
    return res
