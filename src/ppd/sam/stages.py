"""MobileSAM's image encoder with its third stage exposed: the features one-shot matching reads.

SAM's final embedding (the "neck", 256 channels) is made for the mask decoder. TinyViT's
third stage (320 channels, on the same 64x64 grid, before the last stage and the neck) keeps
more of what an object looks like: matched together with the neck, it gives better one-shot
start sets on every val domain (docs/TRAINING.md, session 9). One pass of the encoder makes
both, so the stage costs no extra time; the compiled paths (OpenVINO, ONNX) are converted
from this module and return both too.
"""

from __future__ import annotations

import torch

#: channels of the exposed stage (TinyViT-5M's third stage in MobileSAM)
STAGE_CHANNELS = 320


class EncoderWithStage(torch.nn.Module):
    """(1, 3, 1024, 1024) -> (neck (1, 256, 64, 64), stage (1, 320, 64, 64)).

    The same computation as ``TinyViT.forward`` (MobileSAM's ``forward_features``), layer by
    layer, keeping the third stage's tokens on the way: the neck is bit-identical to the
    encoder's own output (tested)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        if len(encoder.layers) != 4:
            raise ValueError(f"expected MobileSAM's TinyViT (4 stages), got {len(encoder.layers)}")
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder
        x = e.patch_embed(x)
        for layer in e.layers[:3]:
            x = layer(x)
        stage = x
        x = e.layers[3](x)
        b, _, c = x.size()
        neck = e.neck(x.view(b, 64, 64, c).permute(0, 3, 1, 2))
        return neck, stage.view(b, 64, 64, stage.shape[-1]).permute(0, 3, 1, 2)
