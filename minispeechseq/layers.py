"""Small pieces every model shares: the activation functions config.json files name, fixed sinusoidal positions,
the causal-LM loss, and the two rules about token ids, each written once: the vocabulary rule (`check_vocabulary`)
and the positions rule (`check_positions`). (Attention lives in attention.py, the cache in cache.py, the decoder
skeleton and its input checks in decoders/base.py.)

This module imports nothing but torch, so weights_convert/ may use it too (Speech2Text2's converter writes and
checks the sinusoid table that checkpoints store) without importing any model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

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


def sinusoids(positions: torch.Tensor, dim: int, padding_idx: int | None) -> torch.Tensor:
    """fairseq/tensor2tensor sinusoidal embeddings of integer `positions` (any shape) -> (*positions.shape, dim).

    [sin(p·f_0) .. sin(p·f_{h-1}), cos(p·f_0) .. cos(p·f_{h-1})] with h = dim // 2 and f_i = 10000^(-i/(h-1)):
    sines and cosines in two halves, not interleaved, and h - 1 in the exponent where "Attention Is All You Need"
    has h (tensor2tensor's variant). Odd widths get a zero last column; position `padding_idx` is all zeros.
    (Speech2Text2's positions; its converter checks and writes the table checkpoints store.)
    """
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=positions.device).float() * -(math.log(10000.0) / (half - 1)))  # (h,)
    angles = positions.float().unsqueeze(-1) * freqs  # (..., h)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # (..., 2h)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))  # (..., dim)
    if padding_idx is not None:
        emb = emb.masked_fill((positions == padding_idx).unsqueeze(-1), 0.0)
    return emb


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


# ------------------------------------------------------------------------------------------- the token rules
def check_vocabulary(ids: torch.Tensor | list, vocab_size: int, name: str, advice: str = "",
                     ignore: int | None = None) -> None:
    """The vocabulary rule: a token id indexes the embedding table and the logits, so 0 <= id < vocab_size.

    `ids`: a tensor (one host sync) or a list of ints, None entries skipped; `ignore`: a value allowed anyway (the
    loss's -100). A ValueError names `name`, up to ten ids outside, and `advice` (what to do), if given."""
    if isinstance(ids, torch.Tensor):
        outside = (ids < 0) | (ids >= vocab_size)
        if ignore is not None:
            outside &= ids != ignore
        bad = ids[outside].unique()[:10].tolist() if bool(outside.any()) else []
    else:
        bad = [i for i in ids if i is not None and not (isinstance(i, int) and 0 <= i < vocab_size)]
    if bad:
        raise ValueError(f"{name}={bad} is outside the decoder's vocabulary of {vocab_size} tokens (ids 0 to "
                         f"{vocab_size - 1}){'; ' + advice if advice else ''}.")


def check_positions(tokens: int, max_positions: int, what: str, advice: str) -> None:
    """The positions rule: a decoder has a position embedding (learned, or a sinusoid table of that size) for
    `max_positions` tokens, so a sequence may not be longer. `what` names the sequence, `advice` says what to do."""
    if tokens > max_positions:
        raise ValueError(f"{what}: {tokens} tokens, beyond the decoder's {max_positions} positions; {advice}.")
