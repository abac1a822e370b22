"""``ppd bench``, ``train``, ``eval-agents``, ``eval`` and ``data``: commands that run over a data root."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ppd.cli.common import _defender_opts, _segmenter, adapt_config
from ppd.errors import ConfigError


# ----------------------------------------------------------------------------- bench
def cmd_bench(args) -> int:
    from ppd.bench import bench_sam

    if args.what == "sam":
        bench_sam.run(data_root=args.data, n_images=args.images or 4, n_decodes=args.decodes, n_points=args.points,
                      cache_dir=args.cache_dir, out=args.out)
    elif args.what == "refine":
        from ppd.bench import bench_refine

        bench_refine.run(data_root=args.data, n_targets=args.images or 6, seed=args.seed, out=args.out)
    elif args.what == "replay":
        from ppd.bench import bench_replay

        bench_replay.run(data_root=args.data, n_transitions=args.transitions, n_images=args.images or 12,
                         seed=args.seed, cache_dir=args.cache_dir, out=args.out)
    elif args.what == "serve":
        from ppd.bench import bench_serve

        bench_serve.run(cache_dir=args.cache_dir, clients=args.clients, client_clicks=args.clicks, out=args.out)
    elif args.what == "oneshot":
        from ppd.bench import bench_oneshot

        bench_oneshot.run(data_root=args.data, n_targets=args.images or 50, out=args.out)
    elif args.what == "ray":
        from ppd.bench import bench_ray

        bench_ray.run(data_root=args.data, n_images=args.images or 8, cache_dir=args.cache_dir, out=args.out)
    elif args.what == "game":
        from ppd.bench import bench_game

        bench_game.run(data_root=args.data, n_episodes=args.episodes, n_images=args.images or 24,
                       seed=args.seed, cache_dir=args.cache_dir, out=args.out)
    return 0

# ----------------------------------------------------------------------------- train
def parse_weights(spec: str) -> dict[str, float]:
    """``ecssd:0.3,kvasir:0.7`` (a name without ``:W`` weighs 1) -> {name: weight}; ``all`` -> {}."""
    if spec.strip() == "all":
        return {"*": 1.0}
    out: dict[str, float] = {}
    for part in spec.split(","):
        name, _, w = part.strip().partition(":")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ConfigError(f"--datasets: weight of {name!r} is not a number: {w!r}") from None
        if not name or weight <= 0 or not np.isfinite(weight):
            raise ConfigError(f"--datasets: give NAME:WEIGHT pairs with weights > 0, got {part.strip()!r}")
        out[name] = weight
    return out

def cmd_train(args) -> int:
    from dataclasses import replace

    from ppd import train
    from ppd.sam import Segmenter

    cfg = None
    if not args.resume:
        cfg = train.TrainConfig(seed=args.seed)
        for k in ("decode_budget", "max_minutes", "n_games", "checkpoint_minutes", "fm_fraction", "fm_refs_per_image",
                  "init", "eps_start", "fm_cycle", "attacked_no_reference"):
            v = getattr(args, k)
            if v is not None:
                cfg = replace(cfg, **{k: v})
        if args.ref_prob is not None:
            cfg = replace(cfg, game=replace(cfg.game, ref_prob=args.ref_prob))
        if args.datasets is not None:
            cfg = replace(cfg, game=replace(cfg.game, dataset_weights=parse_weights(args.datasets)))
        if args.arch is not None:
            cfg = replace(cfg, attacker=replace(cfg.attacker, arch=args.arch),
                          defender=replace(cfg.defender, arch=args.arch))
        if args.learning_starts is not None:
            cfg = replace(cfg, attacker=replace(cfg.attacker, learning_starts=args.learning_starts),
                          defender=replace(cfg.defender, learning_starts=args.learning_starts))
    def seg():
        return Segmenter(checkpoint=args.checkpoint, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                         precision="auto", encoder=args.encoder)

    tr = train.run(args.data, args.split, args.out, resume=args.resume, cfg=cfg, segmenter=seg,
                   limit_images=args.images)
    print(f"trained {tr.round} rounds, {tr.env_steps} steps, {tr.decodes} decodes in {tr.seconds / 60:.1f} min; "
          f"agents in {args.out}/attacker.* and {args.out}/defender.*, curves in {args.out}/curves.png")
    return 0

# ----------------------------------------------------------------------------- eval-agents
def cmd_eval_agents(args) -> int:
    from ppd.evaluate import attack_defence

    text = attack_defence.run(args.data, split=args.split, attacker=args.attacker, defender=args.defender,
                              attack_steps=args.attack_steps, seed=args.seed, out_dir=args.out,
                              cache_dir=args.cache_dir, limit=args.limit, datasets=args.datasets,
                              oracle=not args.no_oracle)
    print(text)
    return 0

# ----------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from ppd.cli.scale import ray_settings, seg_spec
    from ppd.oneshot import check_votes

    check_votes(args.votes)
    from ppd.evaluate import harness
    from ppd.sam.cache import default_cache_dir

    settings = ray_settings(args)
    executor = None
    if settings is not None:
        from ppd.cluster.eval_ray import executor as ray_executor

        executor = ray_executor(settings, seg_spec(args))
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    adapt = adapt_config(args, args.seed)
    cfg = harness.EvalConfig(k=args.k, seed=args.seed, attack_steps=args.attack_steps, votes=args.votes,
                             adapt=0 if adapt is None else adapt.decodes,
                             **({} if adapt is None else {"adapt_views": adapt.views, "adapt_choose": adapt.choose}),
                             **({} if args.cycle is None else {"cycle": args.cycle}))
    cache_root = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows, summary = harness.run(args.data, args.dataset, args.split, methods, references=args.references,
                                reference_id=args.reference, limit=args.limit, out_dir=args.out, cfg=cfg,
                                defender=args.defender, attacker=args.attacker, segmenter=lambda: _segmenter(args),
                                cache_path=cache_root / "eval" / "results.jsonl", argv=sys.argv, base=args.base,
                                defender_opts=_defender_opts(args), executor=executor,
                                runner=None if settings is None else {"ray": settings.address or "local",
                                                                      "workers": settings.workers,
                                                                      "threads": settings.threads})
    print(harness.format_table(summary))
    print(f"wrote {args.out}/summary.md, summary.csv, per_image.csv, run.json")
    return 0

# ----------------------------------------------------------------------------- data
def cmd_data(args) -> int:
    from ppd import data

    if args.what == "verify":
        n = data.verify(args.data)
        print(f"{n} files match SHA256SUMS in {args.data or data.default_root()}")
    else:
        samples = data.load_dataset(args.data)
        counts: dict[tuple[str, str], int] = {}
        for s in samples:
            counts[(s.dataset, s.split)] = counts.get((s.dataset, s.split), 0) + 1
        for (ds, sp), n in sorted(counts.items()):
            print(f"{ds:10s} {sp:6s} {n:5d}")
    return 0
