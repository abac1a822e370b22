"""The names of SAM's image-encoder paths, importable without torch (the CLI builds its options from them).

``openvino`` (the default since session 14) runs MobileSAM's encoder compiled by OpenVINO in
float32, ~2x faster than torch on 2 cores; ``eager`` is torch itself, the reference; ``onnx``
(~1.5x) is ONNX Runtime (docs/bench_sam.txt). The compiled paths' embeddings differ from torch's
by ~2.5e-6 relative. That used to flip about one one-shot start set in ten, because scipy's
k-means++ redrew every centre when feature matching found one candidate more or less; with the
stable seeding of :func:`ppd.matching.stable_plusplus` one-shot masks agree with eager ones within
the accuracy bound of issue #18 (mean mask IoU >= 0.99, mDSC within 0.3; docs/bench_sam.txt).
"""

import importlib

ENCODERS = ("eager", "openvino", "onnx")
DEFAULT_ENCODER = "openvino"


def import_runtime(module: str, encoder: str, name: str):
    """The runtime ``module`` a compiled encoder path needs, or a one-line ConfigError naming its extra."""
    from ppd.errors import ConfigError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"encoder '{encoder}' needs {name}: pip install 'ppd[{encoder}]' (or use torch's own "
                          "encoder: --encoder eager)") from None
