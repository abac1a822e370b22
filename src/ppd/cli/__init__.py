"""The ``ppd`` command line.

Every deliberate failure is a :class:`ppd.errors.PPDError`: printed as one line on
stderr with a non-zero exit code (2), no traceback unless ``--debug``, and no
partial output files (outputs are written to temporary files and renamed).

Commands live in ``ppd.cli.images`` (segment, demo, refine, oneshot), ``ppd.cli.runs``
(bench, train, eval-agents, eval, data), ``ppd.cli.serve`` (serve) and ``ppd.cli.scale``
(embed, --ray); nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ppd.cli.common import (  # noqa: F401
    DEFENDER_OPT_HELP,
    adapt_opt,
    cycle_opt,
    instances_opt,
    output_stems,
    read_prompts_json,
    votes_opt,
)
from ppd.cli.images import cmd_demo, cmd_oneshot, cmd_refine, cmd_segment
from ppd.cli.runs import cmd_bench, cmd_data, cmd_eval, cmd_eval_agents, cmd_train, parse_weights  # noqa: F401
from ppd.cli.scale import add_parser as add_embed
from ppd.cli.scale import ray_opts
from ppd.encoders import DEFAULT_ENCODER, ENCODERS
from ppd.errors import PPDError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too (``ppd help`` / ``-h`` shows usage)."""

    def error(self, message: str):
        self.exit(2, f"ppd: error: {message} (see '{self.prog} -h')\n")

def build_parser() -> argparse.ArgumentParser:
    from ppd.evaluate.harness import METHODS

    p = _Parser(prog="ppd", description="Point Prompt Defender: robust point prompts for SAM.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    def sam_opts(sp):
        sp.add_argument("--checkpoint", help="MobileSAM weights (default: $PPD_SAM_CHECKPOINT or the package)")
        sp.add_argument("--cache-dir", help="embedding cache (default: $PPD_CACHE_DIR or ~/.cache/ppd)")
        sp.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
        sp.add_argument("--encoder", choices=ENCODERS, default=DEFAULT_ENCODER,
                        help=f"SAM's image encoder (default {DEFAULT_ENCODER}): openvino (OpenVINO float32, "
                             "~1.8-2.1x eager on 2 cores), eager (torch, the reference) or onnx (ONNX Runtime, "
                             "~1.3-1.7x; needs ppd[onnx]); compiled once into the cache folder")

    s = sub.add_parser("segment", help="segment one image from point / box prompts")
    s.add_argument("image")
    s.add_argument("--point", action="append", metavar="X,Y[,LABEL]",
                   help="a point in pixels; LABEL 1 = positive (default), 0 = negative; repeatable")
    s.add_argument("--box", metavar="X0,Y0,X1,Y1")
    s.add_argument("--multimask", action="store_true", help="best of SAM's three masks by predicted IoU")
    s.add_argument("--out", required=True, metavar="MASK.png")
    s.add_argument("--overlay", metavar="OVERLAY.png")
    sam_opts(s)
    s.set_defaults(func=cmd_segment)

    d = sub.add_parser("demo", help="run the main job (one-shot + shipped defender) on the shipped samples")
    d.add_argument("--out", default="out/demo")
    d.add_argument("--clicks", action="store_true", help="instead: segment the click samples (no defender)")
    d.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    d.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    d.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    cycle_opt(d)
    instances_opt(d)
    sam_opts(d)
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="benchmarks printing figures measured side by side")
    b.add_argument("what", choices=["sam", "game", "refine", "replay", "serve", "ray", "oneshot"])
    b.add_argument("--data", help="data root (default ../shared/data)")
    b.add_argument("--images", type=int, help="images to use (sam: 4 val images; game: 24 train images; replay: 12; "
                   "oneshot: 50 kvasir val targets; ray: 8)")
    b.add_argument("--episodes", type=int, default=40, help="game: episodes to replay")
    b.add_argument("--transitions", type=int, default=1000, help="replay: random transitions stored per role")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--decodes", type=int, default=30, help="decodes per image and path")
    b.add_argument("--points", type=int, default=5, help="points per prompt set")
    b.add_argument("--clients", type=int, default=20, help="serve: concurrent clients of the load test")
    b.add_argument("--clicks", type=int, default=20, help="serve: clicks per client of the load test")
    b.add_argument("--out", help="also write the figures as JSON here")
    b.add_argument("--cache-dir")
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("refine", help="refine a prompt set with the defender, then segment")
    r.add_argument("image")
    r.add_argument("--prompts", required=True, metavar="PROMPTS.json")
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    r.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    r.add_argument("--check-labels", action="store_true",
                   help="the labels may be flipped (clicks made with the wrong button, a swapped label convention): "
                        "also refine label hypotheses (--defender-opt hypotheses=8, unless given)")
    r.add_argument("--ref", metavar="IMG", help="optional one-shot reference image of the object sought")
    r.add_argument("--ref-mask", metavar="MASK", help="its mask (required with --ref)")
    r.add_argument("--mask-threshold", type=float, metavar="T",
                   help="binarise a non-binary --ref-mask: foreground = grey level > T")
    sam_opts(r)
    r.set_defaults(func=cmd_refine)

    o = sub.add_parser("oneshot", help="one-shot segmentation: reference image + mask -> targets")
    o.add_argument("--ref", required=True, metavar="IMG")
    o.add_argument("--ref-mask", required=True, metavar="MASK")
    o.add_argument("--mask-threshold", type=float, metavar="T",
                   help="binarise a non-binary --ref-mask: foreground = grey level > T")
    o.add_argument("--target", required=True, nargs="+", metavar="IMG|DIR",
                   help="target images, or folders of them (their image files, sorted by name)")
    o.add_argument("--out", required=True, metavar="DIR")
    o.add_argument("--no-defender", action="store_true", help="stop after k-means thinning")
    o.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    o.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    o.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    cycle_opt(o)
    instances_opt(o)
    votes_opt(o)
    adapt_opt(o)
    o.add_argument("--seed", type=int, default=0)
    sam_opts(o)
    o.set_defaults(func=cmd_oneshot)

    t = sub.add_parser("train", help="adversarial DQN training of attacker and defender")
    t.add_argument("--data", help="data root (default ../shared/data)")
    t.add_argument("--split", default="train")
    t.add_argument("--out", required=True, metavar="runs/NAME")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--decodes", dest="decode_budget", type=int, help="SAM decode budget (default 40000)")
    t.add_argument("--minutes", dest="max_minutes", type=float, help="wall-clock cap of the training loop")
    t.add_argument("--games", dest="n_games", type=int, help="games per round (default 8)")
    t.add_argument("--checkpoint-minutes", dest="checkpoint_minutes", type=float)
    t.add_argument("--learning-starts", type=int, help="transitions before the first update")
    t.add_argument("--fm-fraction", type=float, help="share of defender episodes from one-shot sets (default 0.75)")
    t.add_argument("--fm-refs", dest="fm_refs_per_image", type=int,
                   help="references per train image for the one-shot sets (default 4)")
    t.add_argument("--fm-cycle", action=argparse.BooleanOptionalAction, default=None,
                   help="one-shot start sets from cycle-consistent matches (forward-backward agreement; default on)")
    t.add_argument("--ref-prob", type=float, help="share of episodes that see a one-shot reference (default 0.8)")
    t.add_argument("--attacked-no-ref", dest="attacked_no_reference", action="store_const", const=True,
                   help="the defender's episodes from attacked sets see no reference (as in the eval's "
                        "attack / defence ablation)")
    t.add_argument("--arch", choices=["deepsets", "mp"], help="Q-network of both agents (default deepsets)")
    t.add_argument("--datasets", metavar="NAME:W,...",
                   help="datasets to train on and their sampling weights (default ecssd:0.6,dsb2018:0.25,"
                        "isbi2012:0.15, the cross-domain protocol; 'all' = every dataset of the split, equal weight)")
    t.add_argument("--init", metavar="shipped|RUN_DIR",
                   help="fine-tune: start both agents from the shipped ones or a run folder's attacker.* / defender.*")
    t.add_argument("--eps-start", type=float, help="exploration at the start (default 1.0; lower to fine-tune)")
    t.add_argument("--images", type=int, help="train on a seeded subset of N images (smoke runs)")
    t.add_argument("--seed", type=int, default=0)
    sam_opts(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval-agents", help="evidence: ideal -> attacked -> defended vs baselines on unseen images")
    e.add_argument("--data", help="data root (default ../shared/data)")
    e.add_argument("--split", default="val")
    e.add_argument("--datasets", help="comma-separated datasets (default: all of the split)")
    e.add_argument("--limit", type=int, help="at most N images per dataset (seeded)")
    e.add_argument("--attacker", help="attacker checkpoint (default: the shipped one)")
    e.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    e.add_argument("--attack-steps", type=int, default=8)
    e.add_argument("--no-oracle", action="store_true", help="skip the GT-guided greedy removal reference")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="write attack_defence.csv / .md here")
    e.add_argument("--cache-dir")
    e.set_defaults(func=cmd_eval_agents)

    ev = sub.add_parser("eval", help="one-shot evaluation of methods on a dataset (results table)")
    ev.add_argument("--data", help="data root: manifest.csv layout or images/ + masks/ (default ../shared/data)")
    ev.add_argument("--dataset", help="dataset name (required when the split holds several)")
    ev.add_argument("--split", default="eval")
    ev.add_argument("--methods", help="comma-separated (default: all): " + ", ".join(METHODS))
    ev.add_argument("--references", type=int, default=5, help="seeded reference images (default 5)")
    ev.add_argument("--reference", help="use this image id as the only reference")
    ev.add_argument("--limit", type=int, help="a seeded subset of N targets")
    ev.add_argument("--out", required=True, metavar="DIR")
    ev.add_argument("--defender", help="defender checkpoint, or 'untrained' (default: the shipped one)")
    ev.add_argument("--defender-opt", action="append", metavar="KEY=VALUE", help=DEFENDER_OPT_HELP)
    ev.add_argument("--attacker", help="attacker checkpoint (default: the shipped one)")
    ev.add_argument("-k", type=int, default=10, help="prompts kept per class by k-means (default 10)")
    ev.add_argument("--attack-steps", type=int, default=8, help="attacker moves for ideal-attacked (default 8)")
    votes_opt(ev)
    adapt_opt(ev)
    cycle_opt(ev)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--base", metavar="DIR", help="an earlier --out of the same protocol: its rows stand for the "
                    "methods not run now (checked: same dataset, references, targets, settings)")
    sam_opts(ev)
    ray_opts(ev)
    ev.set_defaults(func=cmd_eval)

    from ppd.cli.serve import add_parser as add_serve

    add_serve(sub, sam_opts, DEFENDER_OPT_HELP)
    add_embed(sub, sam_opts)

    dt = sub.add_parser("data", help="inspect or verify a data root")
    dt.add_argument("what", choices=["verify", "list"])
    dt.add_argument("--data", help="data root (default ../shared/data)")
    dt.set_defaults(func=cmd_data)
    return p

def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"ppd: warning: {message}", file=sys.stderr)

def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _warn_one_line
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except PPDError as e:
        if args.debug:
            raise
        print(f"ppd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ppd: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"ppd: internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1
