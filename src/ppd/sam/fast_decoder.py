"""A low-resolution fast path through SAM's mask decoder, for callers that decode a lot.

The RL game re-runs SAM after every action, tens of thousands of times per image
set. SAM's decoder spends most of its ~3.7 GFLOP on the 64x64 image side, and a
good part of that does not depend on the prompts at all. This module computes the
same function as ``MaskDecoder`` (same weights, same maths, float32) but

1. prepares every prompt-independent image-side tensor once per image: the
   positional encoding, the image embedding plus the "no mask" embedding, and in
   the first transformer block the keys and values of the token-to-image
   attention and the queries of the image-to-token attention (~0.8 GFLOP saved);
2. in the final token-to-image attention computes only the output tokens that are
   read (IoU token and the wanted mask tokens) and reassociates the products so
   the 64x64 keys and values are never projected (~0.5 GFLOP saved);
3. stops at SAM's 256x256 low-resolution logits: no upsampling to the padded
   1024 frame nor to the original size, and only the wanted mask is formed;
4. optionally runs in bfloat16 (a copy of the decoder; the point encoding and
   the image-side preparation stay float32): matmuls run ~2.3x faster on CPUs
   with AVX512-BF16, at a small cost in agreement (see ``ppd bench sam``).

``tests/test_sam.py`` checks the result against the stock decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(T, C) -> (n, T, C/n)."""
    t, c = x.shape
    return x.view(t, n, c // n).transpose(0, 1)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """(n, T, c) -> (T, n*c)."""
    n, t, c = x.shape
    return x.transpose(0, 1).reshape(t, n * c)


@dataclass
class ImageContext:
    """Prompt-independent tensors of one image, prepared once by :func:`prepare`."""

    keys0: torch.Tensor  # (4096, 256) image embedding + no-mask embedding
    pe: torch.Tensor  # (4096, 256) dense positional encoding
    k1: torch.Tensor  # (heads, 4096, d) block-1 token->image keys
    v1: torch.Tensor  # (heads, 4096, d) block-1 token->image values
    q1t: torch.Tensor  # (heads, d, 4096) block-1 image->token queries, transposed, pre-scaled
    up: Upscaler  # output upscaling as matmuls
    decoder: torch.nn.Module  # the mask decoder to run (float32, or a bfloat16 copy)

    @property
    def dtype(self) -> torch.dtype:
        return self.keys0.dtype


@torch.inference_mode()
def prepare(model, embedding: torch.Tensor, decoder: torch.nn.Module | None = None) -> ImageContext:
    """Precompute the image side of the decoder for ``embedding`` (1, 256, 64, 64).

    The preparation runs in float32; with a ``decoder`` in another dtype (a
    bfloat16 copy of ``model.mask_decoder``) the prepared tensors are cast to it.
    """
    pe_enc = model.prompt_encoder
    tr = model.mask_decoder.transformer
    blk = tr.layers[0]
    n = tr.num_heads
    dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1)
    keys0 = (embedding + dense).flatten(2)[0].transpose(0, 1).contiguous()
    pe = pe_enc.get_dense_pe().flatten(2)[0].transpose(0, 1).contiguous()
    a = blk.cross_attn_token_to_image
    k1 = _heads(a.k_proj(keys0 + pe), n).contiguous()
    v1 = _heads(a.v_proj(keys0), n).contiguous()
    b = blk.cross_attn_image_to_token
    d = b.internal_dim // n
    q1t = (_heads(b.q_proj(keys0 + pe), n) / math.sqrt(d)).transpose(1, 2).contiguous()
    dec = decoder if decoder is not None else model.mask_decoder
    dt = dec.iou_token.weight.dtype
    return ImageContext(keys0=keys0.to(dt), pe=pe.to(dt), k1=k1.to(dt), v1=v1.to(dt), q1t=q1t.to(dt),
                        up=make_upscaler(dec), decoder=dec)


def _attend(attn_mod, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SAM's Attention on unbatched (T, C) token inputs."""
    n = attn_mod.num_heads
    qh = _heads(attn_mod.q_proj(q), n)
    kh = _heads(attn_mod.k_proj(k), n)
    vh = _heads(attn_mod.v_proj(v), n)
    w = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(qh.shape[-1]), dim=-1)
    return attn_mod.out_proj(_merge(w @ vh))


def _tokens_to_image(a, q: torch.Tensor, kh_t: torch.Tensor, vh: torch.Tensor) -> torch.Tensor:
    """Token queries (T, 256) attend to image keys ``kh_t`` (n, d, 4096) and values ``vh`` (n, 4096, d)."""
    n, d, _ = kh_t.shape
    qh = _heads(a.q_proj(q), n) / math.sqrt(d)
    w = torch.softmax(qh @ kh_t, dim=-1)  # (n, T, 4096)
    return a.out_proj(_merge(w @ vh))


def _image_to_tokens(a, qh_t: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Image queries ``qh_t`` (n, d, 4096), pre-scaled, attend to tokens (T, 256) -> (4096, 256).

    Scores are laid out token-major (n, T, 4096) and normalised over dim 1: the
    softmax kernel is ~15x slower on a short last dimension (T ~ 10) than this way.
    """
    n = qh_t.shape[0]
    kh = _heads(a.k_proj(k), n)
    vh = _heads(a.v_proj(v), n)
    w = torch.softmax(kh @ qh_t, dim=1)  # (n, T, 4096)
    return a.out_proj(_merge(w.transpose(1, 2) @ vh))


@torch.inference_mode()
def decode_lowres(model, ctx: ImageContext, coords: torch.Tensor, labels: torch.Tensor,
                  multimask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's low-res logits for one prompt set.

    ``coords`` (N, 2) float32 in the 1024 input frame (already resized, not yet
    shifted by half a pixel), ``labels`` (N,) with 1 / 0. Returns ``(logits, iou)``:
    (1, 256, 256) and (1,) for a single mask, (3, 256, 256) and (3,) with ``multimask``.
    """
    dec = ctx.decoder
    tr = dec.transformer
    n = tr.num_heads
    # point encoding stays float32: its sin/cos of pixel coordinates needs the precision
    sparse = model.prompt_encoder._embed_points(coords[None].float(), labels[None].float(), pad=True)[0]
    sparse = sparse.to(ctx.dtype)
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens, sparse], dim=0)  # (T, 256)
    qpe = tokens

    # Block 1 (skip_first_layer_pe): the image side is prepared in ctx.
    b1 = tr.layers[0]
    q = b1.norm1(_attend(b1.self_attn, tokens, tokens, tokens))
    q = b1.norm2(q + _tokens_to_image(b1.cross_attn_token_to_image, q + qpe, ctx.k1.transpose(1, 2), ctx.v1))
    q = b1.norm3(q + b1.mlp(q))
    qq = q + qpe
    keys = b1.norm4(ctx.keys0 + _image_to_tokens(b1.cross_attn_image_to_token, ctx.q1t, qq, q))

    # Remaining blocks: the same maths, image side computed per call.
    for blk in tr.layers[1:]:
        qq = q + qpe
        q = blk.norm1(q + _attend(blk.self_attn, qq, qq, q))
        kpe = keys + ctx.pe
        a = blk.cross_attn_token_to_image
        kh_t = a.k_proj(kpe).view(-1, n, a.internal_dim // n).permute(1, 2, 0)
        vh = _heads(a.v_proj(keys), n)
        q = blk.norm2(q + _tokens_to_image(a, q + qpe, kh_t, vh))
        q = blk.norm3(q + blk.mlp(q))
        a = blk.cross_attn_image_to_token
        d = a.internal_dim // n
        qh_t = (a.q_proj(kpe) / math.sqrt(d)).view(-1, n, d).permute(1, 2, 0)
        qq = q + qpe
        keys = blk.norm4(keys + _image_to_tokens(a, qh_t, qq, q))

    # Final token->image attention, only for the output tokens that are read, with
    # (q Wk^T) (keys+pe)^T and (w keys) Wv^T instead of projecting 4096 keys/values.
    m = 1 + (dec.num_mask_tokens if multimask else 1)
    a = tr.final_attn_token_to_image
    d = a.internal_dim // n
    qh = _heads(a.q_proj(q[:m] + qpe[:m]), n) / math.sqrt(d)  # (n, m, d)
    wk = a.k_proj.weight.view(n, d, -1)  # (n, d, 256)
    scores = (qh @ wk) @ (keys + ctx.pe).T  # k bias adds a per-query constant: softmax ignores it
    w = torch.softmax(scores, dim=-1)  # (n, m, 4096)
    wv = a.v_proj.weight.view(n, d, -1)  # (n, d, 256)
    vals = (w @ keys) @ wv.transpose(1, 2) + a.v_proj.bias.view(n, 1, d)  # rows of w sum to 1
    qf = tr.norm_final_attn(q[:m] + a.out_proj(_merge(vals)))

    # Upscale the image side and form only the wanted masks.
    idx = range(1, dec.num_mask_tokens) if multimask else range(0, 1)
    hyper = torch.stack([dec.output_hypernetworks_mlps[i](qf[1 + i]) for i in idx])  # (k, 32)
    logits = _upscale_and_project(ctx.up, keys, hyper)
    iou = dec.iou_prediction_head(qf[0])[list(idx)]
    return logits.float(), iou.float()


@dataclass
class Upscaler:
    """``output_upscaling`` (two stride-2 2x2 transposed convolutions) as two matmuls.

    A 2x2 stride-2 transposed convolution maps each input pixel's channels to a 2x2
    block of output pixels independently, i.e. one (C_in, 4 C_out) matmul in
    channels-last layout; the pixel shuffle is deferred to the final (k, 256, 256)
    masks, so the 32x256x256 feature map is never permuted or copied.
    """

    w1: torch.Tensor  # (256, 4*64) columns ordered (a, b, out)
    b1: torch.Tensor
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    ln_eps: float
    w2: torch.Tensor  # (64, 4*32)
    b2: torch.Tensor


def make_upscaler(dec) -> Upscaler:
    c1, ln, _, c2, _ = dec.output_upscaling
    return Upscaler(
        w1=c1.weight.permute(0, 2, 3, 1).reshape(c1.in_channels, -1).contiguous(),
        b1=c1.bias.repeat(4), ln_w=ln.weight, ln_b=ln.bias, ln_eps=ln.eps,
        w2=c2.weight.permute(0, 2, 3, 1).reshape(c2.in_channels, -1).contiguous(),
        b2=c2.bias.repeat(4))


def _upscale_and_project(up: Upscaler, keys: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """keys (4096, 256) rows (i, j) -> masks (k, 256, 256) = hyper . upscaled features."""
    c1 = up.ln_w.shape[0]
    y = torch.addmm(up.b1, keys, up.w1).view(-1, c1)  # rows (i, j, a, b)
    y = F.gelu(F.layer_norm(y, (c1,), up.ln_w, up.ln_b, up.ln_eps))
    y = F.gelu(torch.addmm(up.b2, y, up.w2))  # rows (i, j, a, b), cols (a2, b2, o)
    k = hyper.shape[0]
    flat = y.view(-1, hyper.shape[1])
    m = (flat @ hyper[0])[:, None] if k == 1 else flat @ hyper.T  # (i, j, a, b, a2, b2) x k
    # output pixel (4i + 2a + a2, 4j + 2b + b2)
    return m.view(64, 64, 2, 2, 2, 2, k).permute(6, 0, 2, 4, 1, 3, 5).reshape(k, 256, 256)


def upsample_logits(model, logits: torch.Tensor, input_size: tuple[int, int],
                    original_size: tuple[int, int]) -> torch.Tensor:
    """SAM's postprocessing: low-res logits -> logits at the original image size."""
    x = F.interpolate(logits[None], (1024, 1024), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, original_size, mode="bilinear", align_corners=False)[0]
