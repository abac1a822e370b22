"""The names of SAM's image-encoder paths, importable without torch (the CLI builds its options from them).

``openvino`` (the default) and ``onnx`` run the same MobileSAM encoder compiled, in float32;
``eager`` is torch itself, the reference they are measured against (docs/bench_sam.txt).
"""

ENCODERS = ("openvino", "onnx", "eager")
DEFAULT_ENCODER = "openvino"
