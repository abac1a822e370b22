"""On-disk cache of SAM image embeddings.

Encoding an image costs ~1.4 s on this CPU while a decode costs ~50 ms, so a
dataset's embeddings should be a one-time cost. Entries are keyed by the SHA-256
of the image pixels and of the SAM weights, stored as float16 safetensors (2 MiB
an image) with a checksum of the payload in the header, written to a temporary
file and renamed into place (so a kill never leaves a partial entry and two
processes can share one cache), and verified on read: a corrupt entry is deleted
and recomputed.

Location: ``cache_dir`` argument, else ``$PPD_CACHE_DIR``, else ``~/.cache/ppd``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from ppd.errors import CacheError
from ppd.io import atomic_write

log = logging.getLogger(__name__)
ENV_VAR = "PPD_CACHE_DIR"
FORMAT_VERSION = "1"


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.home() / ".cache" / "ppd"


def image_key(image: np.ndarray) -> str:
    """Content hash of an ``HxWx3 uint8`` image (pixels and shape)."""
    h = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def _payload_sha(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name]).data)
    return h.hexdigest()


class EmbeddingCache:
    """A folder of ``<model>/<image[:2]>/<image>.safetensors`` entries."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0

    def path(self, image_sha: str, model_sha: str) -> Path:
        return self.root / "embeddings" / model_sha[:16] / image_sha[:2] / f"{image_sha}.safetensors"

    def get(self, image_sha: str, model_sha: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The cached arrays and metadata, or None when absent or corrupt (then deleted)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        p = self.path(image_sha, model_sha)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="np") as f:
                meta = dict(f.metadata() or {})
            arrays = load_file(str(p))
            ok = (meta.get("format") == FORMAT_VERSION and meta.get("image_sha256") == image_sha
                  and meta.get("model_sha256") == model_sha and meta.get("payload_sha256") == _payload_sha(arrays))
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError):
            ok = False
        if not ok:
            log.warning("corrupt embedding cache entry %s: recomputing", p)
            try:
                p.unlink()
            except OSError:
                pass
            self.misses += 1
            return None
        self.hits += 1
        return arrays, json.loads(meta.get("extra", "{}"))

    def put(self, image_sha: str, model_sha: str, arrays: dict[str, np.ndarray], extra: dict) -> Path | None:
        """Store an entry atomically. A cache that cannot be written only logs a warning."""
        from safetensors.numpy import save_file

        p = self.path(image_sha, model_sha)
        meta = {"format": FORMAT_VERSION, "image_sha256": image_sha, "model_sha256": model_sha,
                "payload_sha256": _payload_sha(arrays), "extra": json.dumps(extra)}
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            return atomic_write(p, lambda tmp: save_file(arrays, str(tmp), metadata=meta))
        except OSError as e:
            log.warning("cannot write embedding cache %s: %s", p, e)
            return None

    def check_usable(self) -> None:
        """Raise CacheError if the root exists but is not a writable directory."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"cache path is not a directory: {self.root}")
