"""SAM's image encoder on OpenVINO (``Segmenter(encoder="openvino")``, CLI ``--encoder openvino``).

The encoder is the largest single cost of one-shot, eval and the browser app's first
click. OpenVINO's CPU plugin runs MobileSAM's TinyViT about 2x faster than torch eager
on 2 cores, in float32, and is the default path (``ppd.encoders``). Its embeddings are
within ~2.4e-6 (relative) of a float64 reference against torch's ~7e-7, so about 3 % of the
float16 values frames hold round differently from eager's; feature matching then finds a
candidate more or less now and then, which the stable k-means seeding absorbs
(docs/bench_sam.txt, docs/tuning/session14).

The model is converted once from the verified MobileSAM weights (``ov.convert_model`` on
the torch module: no download, no ONNX step) into the cache folder, under a name keyed by
the weights' hash and the torch / OpenVINO versions. The IR is two files (.xml + .bin), so
it is written into a private temporary folder that is renamed into place: readers see a
whole model or none. The build time and the SHA-256 of the two files are kept.

Precision is pinned to float32: on a CPU with AMX, OpenVINO would otherwise run in
bfloat16 by default (7x faster here, but embeddings move by ~2 %, outside the accuracy
bound of issue #18).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ppd.encoders import import_runtime

#: the files of a model folder: the IR, and the IR's hash as written at build time (checked at load)
_XML, _BIN, _SHA = "encoder.xml", "encoder.bin", "encoder.sha256"
_NAMES = re.compile(rb' name="[^"]*"')


def _runtime():
    return import_runtime("openvino", "openvino", "OpenVINO")


def model_dir(cache_root: Path, model_sha256: str) -> Path:
    ov = _runtime()
    return (Path(cache_root) / "openvino" /
            f"encoder-{model_sha256[:16]}-torch{torch.__version__}-ov{ov.__version__.split('-')[0]}")


def _convert(model, dest: Path) -> None:
    """Convert the torch encoder to OpenVINO IR in ``dest`` (a fresh folder)."""
    ov = _runtime()
    x = torch.zeros(1, 3, 1024, 1024)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python control flow, not for users
        ir = ov.convert_model(model.image_encoder.eval(), example_input=x)
    ov.save_model(ir, str(dest / _XML), compress_to_fp16=False)
    (dest / _SHA).write_text(ir_sha256(dest) + "\n")


def build(model, model_sha256: str, cache_root: str | os.PathLike) -> tuple[Path, float]:
    """The model folder, converting it first if absent or damaged (its files no longer match the hash
    written when it was built); and the seconds spent converting (0 if cached).

    Two processes may build at once: each converts into its own temporary folder, the first rename
    wins and the other discards its copy (a rename onto a non-empty folder fails)."""
    final = model_dir(Path(cache_root), model_sha256)
    if final.exists():
        if _intact(final):
            return final, 0.0
        shutil.rmtree(final, ignore_errors=True)  # damaged (a truncated or edited file): build it again
    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    try:
        _convert(model, tmp)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / _SHA).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, time.perf_counter() - t0


def ir_sha256(folder: Path) -> str:
    """One SHA-256 over the IR (what the embedding cache key names): the weights file, and the graph
    file without its ``name`` attributes, which OpenVINO numbers from a process-wide counter (two
    conversions of the same model differ only there; names do not change what is computed)."""
    h = hashlib.sha256()
    h.update(_NAMES.sub(b"", (folder / _XML).read_bytes()))
    with open(folder / _BIN, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _intact(folder: Path) -> bool:
    try:
        return ir_sha256(folder) == (folder / _SHA).read_text().strip()
    except OSError:
        return False


class OpenVinoEncoder:
    """Callable like ``model.image_encoder``: (1, 3, 1024, 1024) float32 -> (1, 256, 64, 64) float32."""

    def __init__(self, model, model_sha256: str, cache_root: str | os.PathLike, threads: int | None = None) -> None:
        ov = _runtime()
        self.path, self.build_s = build(model, model_sha256, cache_root)
        self.sha256 = ir_sha256(self.path)
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self._request = ov.Core().compile_model(str(self.path / _XML), "CPU", config).create_infer_request()
        self._lock = threading.Lock()  # one infer request: calls from two threads take turns

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().numpy(), np.float32)
        with self._lock:
            out = np.array(self._request.infer({0: x})[0], copy=True)
        return torch.from_numpy(out)
