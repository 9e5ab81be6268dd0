"""`generate`: encode the audio once, then one short loop of (decoder step -> processors -> search).

What the loop needs from a model (the protocol; `SpeechEncoderDecoderModel` provides it):
    model.encode(input_values, attention_mask) -> (encoder states (B, T, D), frame mask (B, T) or None)
    model.decoder(input_ids, encoder_hidden_states=..., encoder_attention_mask=..., cache=..., logits_to_keep=1)
        -> object with .logits (N, 1, V)
    model.decoder.new_cache() -> DecoderCache (reorder(index) for beams)
The decoder gets one encoder row per utterance for its K rows (beams, or samples): it reads K adjacent decoder
rows per encoder row, so the encoder output is never copied per beam (see attention.py, `fold_rows`).
    model.config (token ids), model.generation_config, model.max_target_positions

With the cache (the default) the decoder sees only the newest token per step: the self-attention keys and
values of earlier tokens are in the cache, and the cross-attention ones are computed on the first step and
reused. `use_cache=False` instead re-runs the whole prefix with a fresh cache every step: slow, but a direct
check that the cache changes nothing.

Shape legend: B utterances, T frames, D width, K beams, N = B·K rows fed to the decoder, S tokens so far, V vocab.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .config import DEFAULT_MAX_NEW_TOKENS, GenerationConfig
from .logits_process import apply_processors, build_processors
from .search import BeamSearch, greedy, sample


@dataclass
class GenerateOutput:
    sequences: torch.Tensor  # (B*num_return_sequences, S) token ids, start token first, pad after EOS
    scores: tuple[torch.Tensor, ...]  # per step, the processed scores (N, V) the search chose from
    sequences_scores: torch.Tensor | None = None  # (B*num_return_sequences,) beam search: length-penalized score


@dataclass
class _Settings:
    """The per-call values derived from the config, checked once."""

    config: GenerationConfig
    start: int
    eos: list[int]
    pad: int | None
    max_length: int
    min_length: int


def resolve_config(model: Any, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> _Settings:
    """Defaults (model.generation_config, else the model config's ids) overridden by generation_config, then by
    kwargs; lengths resolved as transformers does; every bad value is a ValueError naming it."""
    base = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(model.config)
    if generation_config is not None:
        # Fields the caller's config leaves at None fall back to the model's (transformers' "defaults_only").
        base = base.update(**{k: v for k, v in dataclasses.asdict(generation_config).items() if k != "extra" and v is not None})
    config = base.update(**kwargs)

    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise ValueError("decoder_start_token_id is not set (neither in the config nor passed); the decoder needs a first token.")
    eos = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id or [])
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else None)

    positions = getattr(model, "max_target_positions", None)
    if config.max_new_tokens is not None:
        if config.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}.")
        max_length = 1 + config.max_new_tokens
    elif config.max_length is not None:
        max_length = config.max_length
    else:
        max_length = 1 + DEFAULT_MAX_NEW_TOKENS
        if positions is not None:
            max_length = min(max_length, positions)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2 (it counts the start token), got {max_length}.")
    if positions is not None and max_length > positions:
        raise ValueError(
            f"max_length={max_length} (start token included; max_new_tokens={config.max_new_tokens}) is beyond the "
            f"decoder's {positions} positions; ask for at most {positions - 1} new tokens."
        )
    min_length = 1 + config.min_new_tokens if config.min_new_tokens is not None else config.min_length

    K, n = config.num_beams, config.num_return_sequences
    if not (isinstance(K, int) and K >= 1):
        raise ValueError(f"num_beams must be an int >= 1, got {K!r}.")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"num_return_sequences must be an int >= 1, got {n!r}.")
    if K > 1 and n > K:
        raise ValueError(f"num_return_sequences={n} is more than num_beams={K}; beam search can return at most num_beams.")
    if K > 1 and config.do_sample:
        raise ValueError("Beam sampling (num_beams > 1 with do_sample=True) is not implemented; use one or the other.")
    if K == 1 and not config.do_sample and n > 1:
        raise ValueError(f"Greedy decoding returns one sequence per input; num_return_sequences={n} needs num_beams >= {n} or do_sample=True.")
    if config.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {config.early_stopping!r}.")
    # temperature, top_k and top_p are checked by their processors (logits_process.py), built right after this.
    if not isinstance(config.length_penalty, (int, float)):
        raise ValueError(f"length_penalty must be a number, got {config.length_penalty!r}.")
    check_token_ids(config, start, pad, model.config.decoder.vocab_size)
    return _Settings(config, start, eos, pad, max_length, min_length)


def check_token_ids(config: GenerationConfig, start: int, pad: int | None, vocab: int) -> None:
    """Every token id the caller can set must exist in the decoder's vocabulary (else: an IndexError deep inside)."""
    named = {"decoder_start_token_id": [start], "pad_token_id": [pad], "forced_bos_token_id": [config.forced_bos_token_id],
             "forced_eos_token_id": config.forced_eos_token_id, "suppress_tokens": config.suppress_tokens}
    for name, ids in named.items():
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        bad = [i for i in ids if i is not None and not (isinstance(i, int) and 0 <= i < vocab)]
        if bad:
            raise ValueError(f"{name}={bad} is outside the decoder's vocabulary of {vocab} tokens.")


@torch.no_grad()
def generate(
    model: Any,
    input_values: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    **kwargs: Any,
) -> torch.Tensor | GenerateOutput:
    """Decode `input_values` (B, L audio samples) into token ids (B*num_return_sequences, S), transformers' rules.

    kwargs: any GenerationConfig field, plus `generator` (a torch.Generator for sampling) and `return_dict`
    (True: a GenerateOutput with per-step scores and, for beams, sequences_scores)."""
    generator = kwargs.pop("generator", None)
    return_dict = kwargs.pop("return_dict", None)
    s = resolve_config(model, generation_config, kwargs)
    config = s.config
    return_dict = config.return_dict_in_generate if return_dict is None else return_dict
    processors = build_processors(config, s.max_length, s.min_length)

    enc, enc_mask = model.encode(input_values, attention_mask)  # (B, T, D), (B, T) or None
    B = enc.shape[0]
    # Rows per utterance: one per beam (or per returned sample), adjacent; they all read the utterance's row of
    # `enc`, whose cross-attention keys/values are computed once per utterance.
    rows_per_input = config.num_beams if config.num_beams > 1 else config.num_return_sequences
    start = torch.full((B,), s.start, dtype=torch.long, device=enc.device)

    def next_scores(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """(N, S) tokens so far -> (N, V) fp32 logits of the next token, and the cache to keep."""
        if config.use_cache:
            feed = ids[:, -1:] if cache.seq_len > 0 else ids  # only what the cache has not seen
        else:
            cache, feed = model.decoder.new_cache(), ids
        out = model.decoder(
            feed, encoder_hidden_states=enc, encoder_attention_mask=enc_mask, cache=cache, logits_to_keep=1
        )
        return out.logits[:, -1].float(), cache

    cache = model.decoder.new_cache()
    if config.num_beams > 1:
        return _beam_loop(s, processors, start, next_scores, cache, return_dict)
    return _sample_loop(s, processors, start.repeat_interleave(rows_per_input), next_scores, cache, generator, return_dict)


def _sample_loop(s, processors, start, next_scores, cache, generator, return_dict):
    """Greedy (do_sample=False) or multinomial sampling, one row per sequence."""
    ids = start[:, None]  # (N, 1)
    unfinished = torch.ones_like(start, dtype=torch.bool)
    eos = torch.tensor(s.eos, dtype=torch.long, device=ids.device)
    all_scores = []
    while True:
        logits, cache = next_scores(ids, cache)
        scores = apply_processors(processors, ids, logits)
        if return_dict:  # only kept when asked for: (N, V) per step adds up over long generations
            all_scores.append(scores)
        token = sample(scores, generator) if s.config.do_sample else greedy(scores)  # (N,)
        if s.eos:
            # Rows that already ended only grow padding, so the batch stays one rectangle.
            token = torch.where(unfinished, token, torch.full_like(token, s.pad))
            unfinished &= ~token[:, None].eq(eos).any(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)  # (N, S+1)
        # One host sync per step to decide whether to stop; transformers does the same.
        if ids.shape[1] >= s.max_length or not bool(unfinished.any()):
            break
    if return_dict:
        return GenerateOutput(sequences=ids, scores=tuple(all_scores))
    return ids


def _beam_loop(s, processors, start, next_scores, cache, return_dict):
    """Beam search: all beams of all utterances go through the decoder as one batch of N = B*K rows."""
    c = s.config
    beams = BeamSearch(start, c.num_beams, s.max_length, s.eos, s.pad, c.length_penalty, c.early_stopping)
    all_scores = []
    while not beams.done:
        ids = beams.running_ids()  # (N, S)
        logits, cache = next_scores(ids, cache)
        log_probs = apply_processors(processors, ids, logits.log_softmax(dim=-1))
        if return_dict:
            all_scores.append(log_probs)
        parents = beams.step(log_probs)
        if c.use_cache:
            cache.reorder(parents)  # each new beam continues its parent's keys and values
    sequences, sequences_scores = beams.finalize(c.num_return_sequences)
    if return_dict:
        return GenerateOutput(sequences=sequences, scores=tuple(all_scores), sequences_scores=sequences_scores)
    return sequences
