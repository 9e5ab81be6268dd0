"""Small pieces every model shares: the activation functions config.json files name, a Linear layer that is fast
for the few-row products of decoding steps, a cheaper dropout on CPU, a Conv1d whose backward pass is two matrix
products, the causal-LM loss, and the checks of the decoder interface's inputs. (Attention lives in attention.py,
the cache in cache.py.)"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# The activations transformers' configs name (its ACT2FN keys). "gelu" is the exact erf form (BERT, BART);
# "gelu_new" is the tanh approximation of the original BERT/GPT-2 TensorFlow code, which torch computes as
# gelu(approximate="tanh") (GPT-2's default).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,  # Speech2Text2's default
    "silu": F.silu,
    "swish": F.silu,
    "selu": F.selu,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"Activation {name!r} is not supported; choose one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


# A decoding step multiplies each weight matrix by a handful of rows: 1 for greedy decoding, one per beam for
# beam search. Such a product is bound by reading the weights from memory, so 4 rows should cost what 1 row does,
# and every core should be reading. On CPU, fp32, F.linear (MKL's sgemm with the weight transposed) does neither:
# measured on this project's 2-core AVX2 machine, streaming weights that do not fit the cache, 1 row ran at
# 10-14 GB/s (using one core), 2-4 rows at 4-8 GB/s. Written as W @ xᵀ, with W cut into one slice of output
# features per thread and the slices run as one batched product (torch gives each batch entry its own thread),
# 1 row ran at 16-20 GB/s and 2-4 rows at 10-19 GB/s (GPT-2's LM head: 14 -> 20 GB/s for 1 row, 5.6 -> 15 for 4).
# Beyond ~6 rows neither form wins consistently, so larger products (the encoder, training) keep F.linear.
# The effect on whole decoding runs is in the README's performance section.
FEW_ROWS = 4


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x Wᵀ + b, as F.linear; for 1-4 rows of fp32 on CPU computed slice by slice of W, one slice per thread."""
    in_features = x.shape[-1]
    rows = x.numel() // in_features if in_features else 0
    if not (1 <= rows <= FEW_ROWS and x.is_cpu and x.dtype == torch.float32 and weight.is_contiguous()):
        return F.linear(x, weight, bias)
    # A decoding step runs ~100 of these, so this path is written with as few tensor operations as it can be:
    # each one costs a few microseconds of Python and dispatch, against ~100-500 us of weight streaming.
    out_features = weight.shape[0]
    parts = min(torch.get_num_threads(), out_features)
    if out_features % parts:  # e.g. GPT-2's LM head, 50257 rows: the last few rows of W come after the slices
        main = out_features - out_features % parts
        head = linear(x, weight[:main], None if bias is None else bias[:main])
        tail = F.linear(x, weight[main:], None if bias is None else bias[main:])
        return torch.cat([head, tail], dim=-1)
    xt = x.reshape(rows, in_features).t().expand(parts, in_features, rows)  # the same (in, rows) for every slice
    slices = weight.view(parts, out_features // parts, in_features)  # (parts, out / parts, in)
    if bias is None:
        out = torch.bmm(slices, xt)  # (parts, out / parts, rows)
    else:
        out = torch.baddbmm(bias.view(parts, out_features // parts, 1), slices, xt)  # b + W xᵀ, one operation
    if rows > 1:
        out = out.view(out_features, rows).t().contiguous()  # (rows, out)
    return out.view(*x.shape[:-1], out_features)  # for 1 row, (out, 1) and (1, out) are the same memory


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state_dict keys, same init), whose forward is `linear` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout: in training, zero each element with probability p and scale the others by 1 / (1 - p).

    On CPU (fp32) the mask comes from random 32-bit integers: an element is kept when its integer is at least
    p·2^32 above the smallest one, which is F.dropout's Bernoulli(1 - p) draw up to 2^-32. Drawing the integers
    64 bits at a time is the cheap part: for one attention map of wav2vec2-base over 10 s ((12, 499, 499)
    weights), 6 ms against 17 ms for uniform floats (`torch.rand`) and 25 ms for `bernoulli_`. Forward + backward
    measured 14 ms against F.dropout's 31 ms on this project's 2-core machine, and a training step has 12 of
    those maps. The backward pass keeps only the bool mask, 1 byte per element, as F.dropout does. Elsewhere (GPU,
    half precision, p of 0 or 1) F.dropout itself runs.
    """
    if not training or p == 0.0:
        return x
    if not (0.0 < p < 1.0 and x.device.type == "cpu" and x.dtype == torch.float32):
        return F.dropout(x, p, training=True)  # also the place where a p outside [0, 1] is refused
    n = x.numel()
    # (n + 1) // 2 integers of 64 uniform bits, seen as n integers of 32 bits, uniform over [-2^31, 2^31).
    bits = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-(2**63), None).view(torch.int32)[:n]
    keep = bits.view(x.shape) >= round(p * 2**32) - 2**31  # True with probability 1 - p
    return (x * keep).mul_(1.0 / (1.0 - p))  # the product keeps `keep` for backward; the scaling keeps nothing


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, train/eval switch), whose forward is `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class _Conv1dMatmulBackward(torch.autograd.Function):
    """F.conv1d (no padding, one group) whose backward pass is written as two matrix products.

    With x (B, C_in, L), W (C_out, C_in, K) and y[b, o, t] = sum over c, j of W[o, c, j] x[b, c, t*s + j]:
      - dW = dy @ windowsᵀ, where windows (B, C_in*K, T) holds the K samples each output frame read;
      - d(windows) = Wᵀ @ dy, and each window's gradient is added back where the window came from (dx).
    On CPU, fp32, these products run near the machine's matmul speed, while torch's own convolution backward
    (oneDNN) ran at about half of it on the wav2vec2 feature encoder's shapes: forward + backward of the
    whole feature encoder over 10 s of audio measured 1.96 -> 1.76 s (group norm, base) and 3.25 -> 2.90 s
    (layer norm, large) on this project's 2-core machine. The forward pass is F.conv1d itself.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride = stride
        return F.conv1d(x, weight, bias, stride=stride)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        s = ctx.stride
        B, C_in, L = x.shape
        C_out, _, K = weight.shape
        T = grad_out.shape[2]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[1]:
            windows = x.unfold(2, K, s).transpose(2, 3).reshape(B, C_in * K, T)  # (B, C_in, K, T) -> (B, C_in*K, T)
            grad_w = torch.matmul(grad_out, windows.transpose(1, 2)).sum(0).view(C_out, C_in, K)  # sum over batch
        if ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2))
        if ctx.needs_input_grad[0]:
            w_t = weight.reshape(C_out, C_in * K).t().contiguous()  # (C_in*K, C_out)
            grad_windows = torch.matmul(w_t, grad_out).view(B, C_in, K, T)  # (B, C_in*K, T) -> (B, C_in, K, T)
            grad_x = x.new_zeros(B, C_in, L)
            for j in range(K):  # tap j of window t read sample t*s + j
                grad_x[:, :, j : j + s * (T - 1) + 1 : s] += grad_windows[:, :, j]
        return grad_x, grad_w, grad_b, None


def conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """F.conv1d without padding or groups; on CPU in fp32, when gradients are needed, with the backward pass of
    `_Conv1dMatmulBackward`."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    fp32 = x.dtype == torch.float32 and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    if needs_grad and x.is_cpu and fp32:  # (CPU autocast runs the conv in bf16; torch's own backward handles that)
        return _Conv1dMatmulBackward.apply(x, weight, bias, stride)
    return F.conv1d(x, weight, bias, stride=stride)


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters, state_dict keys and init); without padding, dilation or groups (the wav2vec2
    feature encoder's convs), its forward is `conv1d` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == (0,) and self.dilation == (1,) and self.groups == 1 and self.padding_mode == "zeros":
            return conv1d(x, self.weight, self.bias, self.stride[0])
        return super().forward(x)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """Mean cross-entropy of logits (B, S, V) against labels (B, S); -100 is ignored; computed in fp32.

    shift=True: position t predicts token t+1, so `labels` may simply be the input ids (transformers' BERT and
    GPT-2 heads). shift=False: logits[:, t] is compared with labels[:, t] (transformers' BartForCausalLM,
    MBartForCausalLM and Speech2Text2ForCausalLM: "the labels are not shifted inside the model"). Each decoder
    keeps its transformers behaviour, so its documented examples give the same numbers.
    """
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but the logits cover {tuple(logits.shape[:2])} (batch, tokens); "
            "give one label per input token (-100 to ignore one), and leave logits_to_keep=0 when passing labels."
        )
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]  # (B, S-1, V), (B, S-1)
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten().to(logits.device), ignore_index=-100)


def check_decoder_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    encoder_hidden_states: torch.Tensor | None,
    encoder_attention_mask: torch.Tensor | None,
    past: int,
    max_positions: int,
    vocab_size: int,
) -> None:
    """Clear errors for the mistakes a caller can make with the decoder interface's tensors.
    (The vocabulary check costs one host sync; it runs once per call, not per layer.)"""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}.")
    B, S = input_ids.shape
    outside = (input_ids < 0) | (input_ids >= vocab_size)  # (B, S); one host sync below, not two
    if bool(outside.any()):
        bad = input_ids[outside].unique()[:10].tolist()
        raise ValueError(
            f"input_ids contain {bad}, outside the decoder's vocabulary of {vocab_size} tokens "
            "(is the tokenizer the one this model was trained with?)."
        )
    if past + S > max_positions:
        raise ValueError(
            f"{past + S} tokens ({past} cached + {S} new) exceed the {max_positions} positions this model has "
            "embeddings for; generate fewer tokens."
        )
    if attention_mask is not None and tuple(attention_mask.shape) != (B, past + S):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({B}, {past + S}): "
            "one entry per token, cached tokens included."
        )
    if encoder_hidden_states is not None and encoder_hidden_states.shape[0] != B:
        raise ValueError(f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]} but input_ids has {B}.")
    if (
        encoder_attention_mask is not None
        and encoder_hidden_states is not None
        and tuple(encoder_attention_mask.shape) != tuple(encoder_hidden_states.shape[:2])
    ):
        raise ValueError(
            f"encoder_attention_mask has shape {tuple(encoder_attention_mask.shape)}; expected "
            f"{tuple(encoder_hidden_states.shape[:2])} (batch, frames) like encoder_hidden_states."
        )
