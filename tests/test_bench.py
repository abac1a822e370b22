"""The benchmarks run end to end (small settings) and report consistent figures."""

from ppd.bench import bench_game, bench_sam


def test_bench_sam_smoke(cache_dir, capsys):
    res = bench_sam.run(n_images=1, n_decodes=3, cache_dir=cache_dir)
    out = capsys.readouterr().out
    assert "speed-up fast vs naive" in out and "of that limit" in out
    assert 3.0 < res["stock_decoder_gflop"] < 4.5 and res["fast_path_gflop"] < res["stock_decoder_gflop"]
    assert res["fast_vs_full_mask_iou_min"] >= 0.99


def test_bench_game_smoke(cache_dir, capsys):
    res = bench_game.run(n_episodes=4, n_images=3, cache_dir=cache_dir, progress=False)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("speed-up ratio: ")
    assert res["states"] > 4 and res["speedup"] > 0
    for ph in res["phases"].values():
        assert ph["memo_hits"] + ph["memo_misses"] >= ph["states"]


def test_bench_refine_smoke(capsys):
    from ppd.bench import bench_refine

    res = bench_refine.run(n_targets=1)
    assert res["targets"] == 1 and res["refine_s_median"] > 0 and res["decodes_median"] >= 1
    assert "one-shot end to end" in capsys.readouterr().out
