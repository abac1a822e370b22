"""Ray scale-out (#19) on a real local Ray instance, through the real MobileSAM: ``ppd embed --ray`` and
``ppd eval --ray`` against the serial paths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import need, pick  # noqa: E402

ray = need("ray")


@pytest.fixture(scope="module")
def local_ray():
    from ppd.cluster.ray_setup import RaySettings, init

    settings = RaySettings(None, workers=2, threads=1)
    init(settings)
    yield settings
    ray.shutdown()


@pytest.fixture()
def one_thread():
    """The serial path with the workers' thread count, so results can be compared bit for bit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_embed_on_ray_fills_one_cache(local_ray, manifest, tmp_path, segmenter):
    """Two workers, the same image given twice (two writers of one entry): every entry whole and readable,
    equal to this process's encoding; a second run finds everything cached."""
    from ppd.cluster import embed
    from ppd.sam.cache import EmbeddingCache, image_key

    samples = pick(manifest, "dsb2018", "val", 3)
    spec = embed.SegmenterSpec(cache_dir=str(tmp_path))
    res = embed.run(spec, samples + samples[:1], local_ray, progress=False)
    assert res["embedded"] + res["cached"] == 4 and res["embedded"] >= 3
    cache = EmbeddingCache(tmp_path)
    for s in samples:
        image = s.image()
        hit = cache.get(image_key(image), segmenter.embed_key)
        assert hit is not None, s.id
        mine = segmenter.encode(image).half().numpy()
        # 1-thread workers vs this process's threads: float sums in another order, then fp16 rounding
        assert np.abs(hit[0]["embedding"].astype(np.float32) - mine.astype(np.float32)).max() < 2e-2
    assert not list(tmp_path.rglob("*.tmp"))
    again = embed.run(spec, samples, local_ray, progress=False)
    assert again["cached"] == 3 and again["embedded"] == 0


def test_eval_on_ray_equals_serial_and_resumes(local_ray, one_thread, data_root, tmp_path, cache_dir):
    from ppd.cli import main
    from ppd.cluster.embed import SegmenterSpec
    from ppd.cluster.eval_ray import executor
    from ppd.evaluate import harness

    kw = dict(dataset="ecssd", split="val", methods=["fm-kmeans", "fm-ppd", "fm-random"], references=1, limit=3,
              progress=False)
    serial_rows, serial_sum = harness.run(data_root, cache_path=tmp_path / "serial.jsonl", **kw,
                                          segmenter=lambda: __import__("ppd.sam", fromlist=["Segmenter"]).Segmenter(
                                              cache_dir=cache_dir, threads=1))
    ex = executor(local_ray, SegmenterSpec(cache_dir=str(cache_dir)))
    ray_cache = tmp_path / "ray.jsonl"
    ray_rows, ray_sum = harness.run(data_root, cache_path=ray_cache, executor=ex, **kw)

    def same(a, b):
        assert [(r.method, r.reference, r.target, r.key, r.n_prompts, r.n_kept) for r in a] == \
               [(r.method, r.reference, r.target, r.key, r.n_prompts, r.n_kept) for r in b]
        assert max(abs(x.dice - y.dice) + abs(x.iou - y.iou) for x, y in zip(a, b, strict=True)) <= 1e-6

    same(serial_rows, ray_rows)
    assert [(s.method, round(s.mdsc, 9)) for s in serial_sum] == [(s.method, round(s.mdsc, 9)) for s in ray_sum]
    cached = {json.loads(line)["key"] for line in ray_cache.read_text().splitlines()}
    assert cached == {r.key for r in serial_rows}

    # a killed run: the cache lost its last rows; the next run computes only those, on Ray, from the CLI
    lines = ray_cache.read_text().splitlines()
    ray_cache.write_text("\n".join(lines[:4]) + "\n")
    (cache_dir / "eval").mkdir(exist_ok=True)
    (cache_dir / "eval" / "results.jsonl").write_text(ray_cache.read_text())
    out = tmp_path / "out"
    assert main(["eval", "--data", str(data_root), "--dataset", "ecssd", "--split", "val", "--methods",
                 "fm-kmeans,fm-ppd,fm-random", "--references", "1", "--limit", "3", "--out", str(out),
                 "--cache-dir", str(cache_dir), "--ray", "--workers", "2", "--threads", "1"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["runner"] == {"ray": "local", "workers": 2, "threads": 1} and info["cache_hits"] >= 4
    import csv

    with open(out / "per_image.csv") as f:
        got = {(r["method"], r["target"]): float(r["dice"]) for r in csv.DictReader(f)}
    assert got == pytest.approx({(r.method, r.target): r.dice for r in serial_rows}, abs=1e-5)  # 5 decimals


def test_embed_and_ray_bad_input(tmp_path, capsys):
    """One line and exit 2, before Ray or SAM start."""
    from ppd.cli import main

    for argv, words in ((["embed", "--ray", "--workers", "0"], "--workers"),
                        (["embed", "--data", str(tmp_path / "none")], "images/ and masks/"),
                        (["embed", "--no-cache"], "--no-cache"),
                        (["embed", "--dataset", "nosuch"], "nosuch"),
                        (["eval", "--dataset", "ecssd", "--out", str(tmp_path / "o"), "--ray", "--threads", "0"],
                         "--threads")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("ppd: error:") and "\n" not in err and words in err, (argv, err)
