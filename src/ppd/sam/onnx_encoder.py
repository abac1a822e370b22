"""SAM's image encoder on ONNX Runtime (``Segmenter(encoder="onnx")``, CLI ``--encoder onnx``).

The encoder is the largest single cost of one-shot (about 0.75 s of a 1 s target on
this CPU). Exported once from the verified MobileSAM weights (no download) with
``torch.onnx``, into the cache folder under a name keyed by the weights' hash and the
torch / ONNX Runtime versions, written to a temporary file and renamed; the build time
and the file's SHA-256 are kept. Measured (docs/bench_sam.txt): 1.6x faster than torch
eager on 2 cores, embeddings within 1e-6 relative. Embeddings made this way are cached
apart from eager ones (``Segmenter.embed_key``), and ``ppd eval`` keys its rows by it.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ppd.encoders import import_runtime
from ppd.io import atomic_write, file_sha256


def _runtime():
    return import_runtime("onnxruntime", "onnx", "ONNX Runtime")


def export_path(cache_root: Path, model_sha256: str) -> Path:
    ort = _runtime()
    return Path(cache_root) / "onnx" / f"encoder-{model_sha256[:16]}-torch{torch.__version__}-ort{ort.__version__}.onnx"


class OnnxEncoder:
    """Callable like ``model.image_encoder``: (1, 3, 1024, 1024) float32 -> (1, 256, 64, 64) float32."""

    def __init__(self, model, model_sha256: str, cache_root: str | os.PathLike, threads: int | None = None) -> None:
        ort = _runtime()
        self.path = export_path(Path(cache_root), model_sha256)
        self.build_s = 0.0
        if not self.path.is_file():
            t0 = time.perf_counter()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            x = torch.zeros(1, 3, 1024, 1024)

            def export(tmp: Path) -> None:
                with torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the tracer's notes on constant folding, not for users
                    torch.onnx.export(model.image_encoder.eval(), (x,), str(tmp), input_names=["x"],
                                      output_names=["embedding"], opset_version=17, dynamo=False)

            atomic_write(self.path, export)
            self.build_s = time.perf_counter() - t0
        self.sha256 = file_sha256(self.path)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {"x": np.ascontiguousarray(x.detach().numpy(), np.float32)})[0]
        return torch.from_numpy(out)
