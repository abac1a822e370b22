"""The names of SAM's image-encoder paths, importable without torch (the CLI builds its options from them).

``eager`` is torch itself, the default and the reference; ``openvino`` (~2x faster on 2 cores)
and ``onnx`` (~1.5x) run the same MobileSAM encoder compiled, in float32 (docs/bench_sam.txt).
The compiled paths stay opt-in: their float32 rounding differs from torch's, and through the
float16 embedding cache and the pipeline's discrete choices (argmax matches, k-means, the
defender's removals) that flips the start set of about one one-shot pair in ten, which
breaks the accuracy bound of issue #18 (mean mask IoU >= 0.99, mDSC within 0.3).
"""

import importlib

ENCODERS = ("eager", "openvino", "onnx")
DEFAULT_ENCODER = "eager"


def import_runtime(module: str, encoder: str, name: str):
    """The runtime ``module`` a compiled encoder path needs, or a one-line ConfigError naming its extra."""
    from ppd.errors import ConfigError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"encoder '{encoder}' needs {name}: pip install 'ppd[{encoder}]' (or use the default "
                          f"encoder '{DEFAULT_ENCODER}')") from None
