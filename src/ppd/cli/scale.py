"""``ppd embed`` and the ``--ray`` options shared with ``ppd eval``."""

from __future__ import annotations

from ppd.encoders import DEFAULT_ENCODER


def ray_opts(sp) -> None:
    sp.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="run on Ray (extra ppd[ray]): no ADDRESS = start a local instance; 'auto' or HOST:PORT = "
                         "join a cluster")
    sp.add_argument("--workers", type=int, default=2, help="--ray: actors, each loading SAM once (default 2)")
    sp.add_argument("--threads", type=int, default=1, help="--ray: torch threads per actor (default 1)")


def ray_settings(args):
    """A RaySettings from ``--ray/--workers/--threads``, or None without ``--ray``."""
    if getattr(args, "ray", None) is None:
        return None
    from ppd.cluster.ray_setup import RaySettings

    return RaySettings(args.ray, args.workers, args.threads)


def seg_spec(args):
    from ppd.cluster.embed import SegmenterSpec

    return SegmenterSpec(args.checkpoint, args.cache_dir, getattr(args, "encoder", DEFAULT_ENCODER))


def cmd_embed(args) -> int:
    from ppd import data
    from ppd.cluster import embed
    from ppd.errors import ConfigError, DataError

    if args.no_cache:
        raise ConfigError("ppd embed fills the embedding cache: --no-cache makes no sense here")
    settings = ray_settings(args)  # checked before any data is read
    samples = data.load_dataset(args.data, split=args.split)
    if args.dataset:
        names = sorted({s.dataset for s in samples})
        samples = [s for s in samples if s.dataset in args.dataset.split(",")]
        if not samples:
            raise DataError(f"no {args.split or ''} images of {args.dataset!r} (have: {', '.join(names) or 'none'})")
    if not samples:
        split = f" split {args.split}" if args.split else ""
        raise DataError(f"no images in {args.data or data.default_root()}{split}")
    if args.limit:
        samples = samples[: args.limit]
    res = embed.run(seg_spec(args), samples, settings)
    where = "this process" if settings is None else f"Ray ({settings.workers} workers x {settings.threads} threads)"
    print(f"{res['images']} images: {res['embedded']} embedded, {res['cached']} already cached; "
          f"{res['wall_s']:.1f} s on {where}, {res['images_per_min']:.1f} images/min")
    return 0


def add_parser(sub, sam_opts) -> None:
    em = sub.add_parser("embed", help="precompute SAM embeddings of a data root into the cache (optionally on Ray)")
    em.add_argument("--data", help="data root (default ../shared/data)")
    em.add_argument("--split", help="only this split (default: every split)")
    em.add_argument("--dataset", help="only these datasets (comma-separated)")
    em.add_argument("--limit", type=int, help="the first N images (in the manifest's order)")
    ray_opts(em)
    sam_opts(em)
    em.set_defaults(func=cmd_embed)
