"""``ppd serve``: the browser app on a local uvicorn server."""

from __future__ import annotations

import ipaddress

from ppd.cli.common import _defender_opts, _segmenter, adapt_config, adapt_opt
from ppd.errors import CheckpointError, ConfigError

_MISSING = "ppd serve needs the serve extra: pip install 'ppd[serve]' (fastapi, uvicorn, python-multipart)"


def allowed_hosts(host: str, extra: list[str] | None) -> list[str]:
    """Host-header names the app answers to: loopback names, the bound address, and ``--allow-host``."""
    from ppd.serve.app import LOOPBACK_HOSTS

    names = list(LOOPBACK_HOSTS)
    try:
        ip = ipaddress.ip_address(host)
        if not ip.is_unspecified:  # 0.0.0.0 names no host a browser would send
            names += [host, f"[{host}]"] if ip.version == 6 else [host]
    except ValueError:
        names.append(host)  # a host name
    return names + list(extra or [])


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {port}")


def cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn
    except ImportError:
        raise ConfigError(_MISSING) from None
    check_port(args.port)
    adapt = adapt_config(args)  # bad settings: refused before SAM loads
    from ppd.refine import Defender, load_agent
    from ppd.sam.allocator import limit_arenas
    from ppd.serve.app import create_app

    limit_arenas()  # one malloc arena per request thread would keep ~1 GB more under load
    seg = _segmenter(args)
    defender = Defender(load_agent(args.defender, "defender"), segmenter=seg, **_defender_opts(args))
    app = create_app(seg, defender, allowed_hosts=allowed_hosts(args.host, args.allow_host),
                     attacker=_attacker(args.defender), adapt=adapt)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"ppd serve: open http://{host}:{args.port}/ in a browser (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _attacker(defender_spec):
    """The attacker one-shot runs with "adapt" play against: the one trained with the defender, or None
    (those runs are then refused; everything else works)."""
    from ppd.train.adapt import attacker_beside

    try:
        return attacker_beside(defender_spec)
    except CheckpointError:
        return None


def add_parser(sub, sam_opts, defender_opt_help: str) -> None:
    sv = sub.add_parser("serve", help="a local browser app: click prompts, watch the defender, run one-shot")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--allow-host", action="append", metavar="NAME",
                    help="also answer requests for this Host name (when bound beyond loopback); repeatable")
    sv.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    sv.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=defender_opt_help)
    sv.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    adapt_opt(sv, switch=False)
    sam_opts(sv)
    sv.set_defaults(func=cmd_serve)
