"""What `generate(..., return_dict_in_generate=True)` returns, and the score of each chosen token.

Field names are transformers' (GenerateEncoderDecoderOutput / GenerateBeamEncoderDecoderOutput), so code written
for them reads ours. Per-step fields are tuples with one entry per generated token:
    scores[t]          (N, V)  the processed scores the search chose from (beam search: processed log-probs)
    logits[t]          (N, V)  the decoder's raw logits, fp32
    decoder_attentions[t][layer]   (N, H, q, P + q)   self-attention weights (q = the prompt at t = 0, then 1)
    cross_attentions[t][layer]     (N, H, q, T)       which frames each new token listened to
    decoder_hidden_states[t][i]    (N, q, D)          embeddings, then each layer's output
The rows N are the rows the decoder ran at that step: B·num_return_sequences for greedy and sampling, B·K for
beam search (rows as they were at step t, before that step's reordering; `beam_indices` says which row each
returned token came from).

Shape legend: B utterances, K beams, N rows, V vocabulary, H heads, T encoder frames, D width, S tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..modeling import ModelOutput


@dataclass
class GenerateOutput(ModelOutput):
    sequences: torch.Tensor  # (B*num_return_sequences, S) token ids, prompt first, pad after EOS
    scores: tuple[torch.Tensor, ...] | None = None  # output_scores: per step (N, V)
    logits: tuple[torch.Tensor, ...] | None = None  # output_logits: per step (N, V), unprocessed
    sequences_scores: torch.Tensor | None = None  # beam search: (B*num_return_sequences,) length-penalized score
    beam_indices: torch.Tensor | None = None  # beam search: (B*num_return_sequences, S - prompt) row per token, -1 after the end
    encoder_attentions: tuple[torch.Tensor, ...] | None = None  # output_attentions: (B, H, T, T) per layer
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None  # output_hidden_states: (B, T, D) per layer
    decoder_attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None  # per step, per layer
    cross_attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None  # per step, per layer
    decoder_hidden_states: tuple[tuple[torch.Tensor, ...], ...] | None = None  # per step, per layer (+ embeddings)


def compute_transition_scores(
    sequences: torch.Tensor,
    scores: tuple[torch.Tensor, ...],
    beam_indices: torch.Tensor | None = None,
    normalize_logits: bool = False,
) -> torch.Tensor:
    """The score each generated token had when it was chosen: (rows, steps), as transformers'
    `compute_transition_scores`.

    sequences (R, prompt + steps'); scores: the per-step (N, V) tuple of `generate`'s output; beam_indices
    (R, steps) for beam search, the row of `scores[t]` each token came from (-1 once the hypothesis ended; those
    positions score 0). Without beam_indices, row r of the sequences is row r of every scores[t] (greedy,
    sampling). normalize_logits: log-softmax each step's scores first (for `output_logits`, or for warped
    sampling scores, whose softmax is the distribution that was sampled).

    Summed over a beam hypothesis and divided by its length ** length_penalty, these give its sequences_scores.
    """
    steps = len(scores)
    if steps == 0:
        return sequences.new_zeros(sequences.shape[0], 0, dtype=torch.float32)
    stacked = torch.stack(scores)  # (steps, N, V)
    if normalize_logits:
        stacked = stacked.float().log_softmax(dim=-1)
    if beam_indices is None:
        if stacked.shape[1] != sequences.shape[0]:
            raise ValueError(
                f"{sequences.shape[0]} sequences but the scores have {stacked.shape[1]} rows per step; beam search "
                "output needs its beam_indices."
            )
        beam_indices = torch.arange(sequences.shape[0], device=sequences.device)[:, None].expand(-1, steps)
    ended = beam_indices < 0  # (R, steps')
    length = int((~ended).sum(-1).max()) if ended.numel() else 0  # the longest hypothesis, in tokens
    rows = beam_indices[:, :length].clamp(min=0)  # (R, length)
    tokens = sequences[:, sequences.shape[1] - length:]  # (R, length): the generated tokens, aligned at the end
    step = torch.arange(length, device=sequences.device)[None, :].expand_as(rows)  # (R, length)
    chosen = stacked[step, rows, tokens]  # (R, length): scores[t][row, token]
    return chosen.masked_fill(ended[:, :length], 0.0)


def as_tuples(per_step: list[Any] | None) -> tuple[Any, ...] | None:
    return tuple(per_step) if per_step is not None else None
