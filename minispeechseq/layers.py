"""Small pieces every model shares: the activation functions config.json files name, fixed sinusoidal positions,
the causal-LM loss, and the checks of the decoder interface's inputs. (Attention lives in attention.py, the cache
in cache.py, the decoder skeleton in decoders/base.py.)

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
    # Each encoder row may serve several adjacent decoder rows (the beams of one utterance): see attention.py.
    if encoder_hidden_states is not None and (
        encoder_hidden_states.shape[0] == 0 or B % encoder_hidden_states.shape[0] != 0
    ):
        raise ValueError(
            f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]} but input_ids has {B}; give one "
            "encoder row per decoder row, or one per group of adjacent rows (the beams of an utterance)."
        )
    if (
        encoder_attention_mask is not None
        and encoder_hidden_states is not None
        and tuple(encoder_attention_mask.shape) != tuple(encoder_hidden_states.shape[:2])
    ):
        raise ValueError(
            f"encoder_attention_mask has shape {tuple(encoder_attention_mask.shape)}; expected "
            f"{tuple(encoder_hidden_states.shape[:2])} (batch, frames) like encoder_hidden_states."
        )
