"""The ``ppd eval`` protocol's options, shared by the val tuning scripts that replay it."""

from __future__ import annotations

import argparse


def protocol_parser(doc: str) -> argparse.ArgumentParser:
    """Dataset, split, data root, references, seed, target limit, K and defender (val defaults: 10 refs, seed 1)."""
    a = argparse.ArgumentParser(description=doc.splitlines()[0])
    a.add_argument("--dataset", required=True)
    a.add_argument("--split", default="val")
    a.add_argument("--data", default=None)
    a.add_argument("--references", type=int, default=10)
    a.add_argument("--seed", type=int, default=1)
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--k", type=int, default=10)
    a.add_argument("--defender", default=None, help="checkpoint (default: the shipped defender)")
    return a
