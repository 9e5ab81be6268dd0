"""Multi-head attention, written once for every model in minispeechseq.

The same `Attention` module is the encoder's self-attention, the decoders' causal self-attention and their
cross-attention to the speech encoder. The only difference between self- and cross-attention is where keys
and values come from (`source`), exactly as in "The Annotated Transformer": `src_attn(x, memory, memory)`.

The core computation, `attend`, has three interchangeable backends behind one signature:
- "eager": the explicit math, softmax(Q Kᵀ · scale + mask) V. The only backend that returns the weights.
- "sdpa":  torch.nn.functional.scaled_dot_product_attention with the same mask (fused kernels, less memory).
- "flash": FlashAttention-2 (the `flash_attn` package's varlen kernels when installed, else torch SDPA
           restricted to its flash backend). CUDA and fp16/bf16 only; anywhere else it raises, never falls back.

Masks are described, not materialised, by the caller: a key padding mask (which keys are real) and a causal flag.
Each backend turns that description into what it needs (an additive bias, or sequence lengths for flash).

Shape legend: B batch, H heads, Sq query length, Sk key length, hd head size, D model width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .cache import CrossAttentionCache, SelfAttentionCache
from .files.memory import check_eager_memory, eager_limit_bytes

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash")


def check_attn_implementation(name: str) -> str:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation={name!r} is not known; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}.")
    return name


def build_mask(
    key_padding_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, device: torch.device
) -> torch.Tensor | None:
    """Which (query, key) pairs may attend: a bool tensor (B or 1, 1, Sq, Sk), True = allowed; None = all.

    `causal` aligns the queries with the *last* Sq keys, so the same rule serves a full forward (Sq == Sk)
    and a decoding step with a KV cache (Sq = 1 new token, Sk = past + 1).
    """
    allowed = None
    if causal and not (q_len == 1 and k_len >= 1):
        q_pos = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # (Sq, 1) absolute positions
        k_pos = torch.arange(k_len, device=device)[None, :]  # (1, Sk)
        allowed = (k_pos <= q_pos)[None, None]  # (1, 1, Sq, Sk)
    if key_padding_mask is not None:
        if key_padding_mask.shape[-1] != k_len:
            raise ValueError(
                f"The attention mask covers {key_padding_mask.shape[-1]} positions but there are {k_len} keys; "
                "it must have one entry per key (past tokens included when decoding with a cache)."
            )
        pad = key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Sk)
        allowed = pad if allowed is None else allowed & pad
    return allowed


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # The most negative finite number, not -inf: a row with no allowed key (left padding, an empty utterance)
    # then softmaxes to a uniform distribution instead of NaN, as in transformers.
    bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)


def eager_attention(q, k, v, allowed, scale, dropout, training):
    """The textbook formula. q (B, H, Sq, hd), k/v (B, H, Sk, hd) -> out (B, H, Sq, hd), weights (B, H, Sq, Sk)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (B, H, Sq, Sk)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    # Softmax in fp32 even for bf16/fp16 inputs: the exp of large scores is where half precision loses most.
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    weights = F.dropout(weights, dropout, training)
    return torch.matmul(weights, v), weights  # (B, H, Sq, hd)


def sdpa_attention(q, k, v, allowed, scale, dropout, training, causal_only):
    """causal_only: the mask is exactly the square causal one (no padding), which SDPA can build itself."""
    if allowed is None or causal_only:
        # Let SDPA build the causal mask itself: that unlocks its fastest kernels.
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout if training else 0.0, is_causal=causal_only, scale=scale
        )
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=_additive(allowed, q.dtype), dropout_p=dropout if training else 0.0, scale=scale
    )


def _flash_attn_varlen():
    try:
        from flash_attn import flash_attn_varlen_func  # optional, CUDA-only package
    except ImportError:
        return None
    return flash_attn_varlen_func


def flash_attention(q, k, v, key_padding_mask, causal, scale, dropout, training):
    """FlashAttention. Padding is handled by lengths (the kernels take no mask), one sequence at a time."""
    if q.device.type != "cuda" or q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"attn_implementation='flash' needs a CUDA device and float16/bfloat16 tensors, got {q.device.type} "
            f"{str(q.dtype).replace('torch.', '')}. Move the model with .to('cuda', torch.bfloat16), "
            "or use attn_implementation='sdpa'."
        )
    B, H, Sq, hd = q.shape
    Sk = k.shape[2]
    if causal and 1 < Sq != Sk:
        raise ValueError("The flash path supports causal attention over a full sequence or one new token at a time.")
    causal = causal and Sq > 1
    dropout = dropout if training else 0.0
    varlen = _flash_attn_varlen()
    k_lens = (
        torch.full((B,), Sk, dtype=torch.int32, device=q.device)
        if key_padding_mask is None
        else key_padding_mask.sum(-1, dtype=torch.int32)
    )
    # Causal self-attention over a right-padded batch: padded queries are dropped along with padded keys
    # (their outputs are zero), so each sequence is square and the causal diagonal is where it belongs.
    trim_q = causal and key_padding_mask is not None
    if varlen is not None:
        # flash_attn wants (total_tokens, H, hd) with cumulative sequence offsets.
        k_keep = (
            torch.ones(B, Sk, dtype=torch.bool, device=q.device)
            if key_padding_mask is None
            else key_padding_mask.bool()
        )
        q_keep = k_keep if trim_q else torch.ones(B, Sq, dtype=torch.bool, device=q.device)
        q_lens = q_keep.sum(-1, dtype=torch.int32)
        q_flat = q.transpose(1, 2)[q_keep]  # (total_q, H, hd)
        k_flat, v_flat = k.transpose(1, 2)[k_keep], v.transpose(1, 2)[k_keep]  # (total_k, H, hd)
        cu_q = F.pad(q_lens.cumsum(0, dtype=torch.int32), (1, 0))
        cu_k = F.pad(k_lens.cumsum(0, dtype=torch.int32), (1, 0))
        out_flat = varlen(
            q_flat, k_flat, v_flat, cu_q, cu_k, int(q_lens.max()), int(k_lens.max()),
            dropout_p=dropout, softmax_scale=scale, causal=causal,
        )
        out = q.new_zeros(B, Sq, H, hd)
        out[q_keep] = out_flat
        return out.transpose(1, 2)  # (B, H, Sq, hd)
    outs = []
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scale)
        for b in range(B):  # the flash backend takes no mask: keep each sequence's real positions, wherever
            keep = key_padding_mask[b].bool()  # the padding is (left or right)
            q_rows = keep if trim_q else slice(None)
            ob = F.scaled_dot_product_attention(
                q[b : b + 1, :, q_rows], k[b : b + 1, :, keep], v[b : b + 1, :, keep],
                dropout_p=dropout, is_causal=causal, scale=scale,
            )  # (1, H, Sq or real length, hd)
            full = q.new_zeros(1, H, Sq, hd)
            full[:, :, q_rows] = ob
            outs.append(full)
    return torch.cat(outs, dim=0)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
    impl: str = "sdpa",
    return_weights: bool = False,
    eager_max_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q kᵀ · scale + mask) v with the chosen backend.

    q (B, H, Sq, hd); k, v (B, H, Sk, hd); key_padding_mask (B, Sk), nonzero = a real key.
    Returns the output (B, H, Sq, hd) and, for "eager" with return_weights, the weights (B, H, Sq, Sk).
    eager_max_bytes: the eager path's memory limit for this call (default: files/memory.py's `eager_limit_bytes()`;
    an Attention module passes the limit it was given with its backend, read once).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if return_weights and impl != "eager":
        raise ValueError(
            f"Attention weights are only computed by attn_implementation='eager' (this model uses {impl!r}); "
            "call model.set_attn_implementation('eager') first."
        )
    if impl == "flash":
        return flash_attention(q, k, v, key_padding_mask, causal, scale, dropout, training), None
    if impl == "eager":  # before build_mask: even the (B, 1, Sq, Sk) bool mask is large for long audio
        check_eager_memory(q, k, eager_max_bytes)
    Sq, Sk = q.shape[2], k.shape[2]
    allowed = build_mask(key_padding_mask, causal, Sq, Sk, q.device)
    if impl == "eager":
        out, weights = eager_attention(q, k, v, allowed, scale, dropout, training)
        return out, (weights if return_weights else None)
    if impl == "sdpa":
        causal_only = causal and Sq == Sk and key_padding_mask is None
        return sdpa_attention(q, k, v, allowed, scale, dropout, training, causal_only), None
    raise ValueError(f"Unknown attention implementation {impl!r}; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}.")


class Attention(nn.Module):
    """Multi-head attention: self-attention when `source` is None, cross-attention to `source` otherwise.

    dim: the width of the queries and of the output. kv_dim: the width of `source` (cross-attention to an
    encoder of another width, transformers' `cross_attention_hidden_size`). scale: the factor applied to
    q·k (default 1/sqrt(head size); GPT-2 can turn it off or also divide by the layer index).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kv_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
    ):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"The hidden size ({dim}) must be divisible by the number of attention heads ({num_heads}).")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5 if scale is None else scale
        self.dropout = dropout
        self.impl = "sdpa"  # set through the model's set_attn_implementation()
        self.eager_max_bytes: int | None = None  # the eager path's memory limit, read when eager is chosen
        kv_dim = dim if kv_dim is None else kv_dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, S, _ = x.shape
        return x.view(B, S, self.num_heads, self.head_dim).transpose(1, 2)  # (B, S, D) -> (B, H, S, hd)

    def forward(
        self,
        x: torch.Tensor,
        source: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: SelfAttentionCache | CrossAttentionCache | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, Sq, D); source (B_src, T, kv_dim) for cross-attention, where each encoder row serves B / B_src
        adjacent rows of x (1 in training; the beams of an utterance in beam search). Returns (B, Sq, D) and,
        with output_attentions (eager only), the weights (B, H, Sq, Sk).

        With a cache, self-attention appends this step's keys/values to it and attends over all of them;
        cross-attention computes keys/values from `source` on the first call and reuses them afterwards.
        """
        B, Sq, _ = x.shape
        q = self.q_proj(x)  # (B, Sq, D)
        if source is None:  # self-attention: keys and values from the same tokens
            k, v = self._heads(self.k_proj(x)), self._heads(self.v_proj(x))  # (B, H, Sq, hd)
            if cache is not None:
                k, v = cache.update(k, v)  # (B, H, past + Sq, hd)
            out, weights = self._attend(self._heads(q), k, v, key_padding_mask, causal, output_attentions)
            return self.out_proj(merge_heads(out)), weights

        # Cross-attention: keys and values from the encoder output, computed once per utterance.
        if cache is not None and cache.is_set:
            k, v = cache.k, cache.v  # (B_src, H, T, hd)
        else:
            k, v = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))  # (B_src, H, T, hd)
            if cache is not None:
                cache.set(k, v)
        if key_padding_mask is not None and key_padding_mask.shape[0] != k.shape[0]:
            raise ValueError(
                f"The encoder attention mask has {key_padding_mask.shape[0]} rows but the encoder keys have "
                f"{k.shape[0]}; give one mask row per encoder row."
            )
        group = rows_per_source(B, k.shape[0])
        q = self._heads(fold_rows(q, group))  # (B_src, H, g·Sq, hd)
        out, weights = self._attend(q, k, v, key_padding_mask, False, output_attentions)
        out = unfold_rows(merge_heads(out), group)  # (B_src, g·Sq, D) -> (B, Sq, D)
        if weights is not None:
            weights = unfold_rows(weights.transpose(1, 2), group).transpose(1, 2)  # (B, H, Sq, T)
        return self.out_proj(out), weights

    def _attend(self, q, k, v, key_padding_mask, causal, output_attentions):
        return attend(
            q, k, v,
            key_padding_mask=key_padding_mask, causal=causal, scale=self.scale,
            dropout=self.dropout, training=self.training, impl=self.impl, return_weights=output_attentions,
            eager_max_bytes=self.eager_max_bytes,
        )


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, S, hd) -> (B, S, H·hd): the heads side by side again."""
    B, H, S, hd = x.shape
    return x.transpose(1, 2).reshape(B, S, H * hd)


# Beam search keeps K hypotheses per utterance (sampling with num_return_sequences, n samples): K adjacent
# decoder rows that all listen to the same encoder output. Their cross-attention keys and values are identical,
# so they are computed and cached once per utterance, with B_src rows where the decoder has B = B_src·K. Cross-
# attention has no mask between queries (no causality, one padding mask per utterance), so the K rows' queries
# can be stacked into one row of K·Sq queries: the same attention, with each utterance's keys read once per step
# instead of K times. `fold_rows` stacks them; `unfold_rows` puts each row's outputs back in its place.
def rows_per_source(decoder_rows: int, source_rows: int) -> int:
    """How many adjacent decoder rows read each encoder row: the beams (or samples) of one utterance."""
    if source_rows == 0 or decoder_rows % source_rows != 0:
        raise ValueError(
            f"{decoder_rows} decoder rows cannot share {source_rows} encoder rows; each encoder row must serve the "
            "same number of adjacent decoder rows (its beams or samples)."
        )
    return decoder_rows // source_rows


def fold_rows(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B·g, S, ...) -> (B, g·S, ...): each run of g adjacent rows becomes one row of g·S positions."""
    return x.reshape(x.shape[0] // group, group * x.shape[1], *x.shape[2:])


def unfold_rows(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, g·S, ...) -> (B·g, S, ...): the inverse of fold_rows."""
    return x.reshape(x.shape[0] * group, x.shape[1] // group, *x.shape[2:])


def set_attn_implementation(module: nn.Module, name: str) -> None:
    """Switch every Attention inside `module` to the backend `name` ("eager", "sdpa" or "flash")."""
    use_attn_implementation(module, check_attn_implementation(name))


def use_attn_implementation(module: nn.Module, name: str) -> None:
    """set_attn_implementation for a name already checked (a load checks it once, before reading any file). The
    eager path's memory limit is read here, once, rather than from the environment at every attention call."""
    limit = eager_limit_bytes() if name == "eager" else None
    for m in module.modules():
        if isinstance(m, Attention):
            m.impl, m.eager_max_bytes = name, limit
