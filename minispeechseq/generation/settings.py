"""One `generate` call's settings, resolved and checked before the loop runs (loop.py calls this in two lines).

- `resolve_config`: the model's generation config, overridden by the caller's config, then by keyword arguments;
  the prompt and the lengths resolved as transformers does; every bad value refused with its name.
- `generation_prompt`: the prompt a call starts every sequence with, decided here only (`prompt_of`), so that
  a caller who must tell the prompt from the text (the recognizer's word timestamps) asks instead of guessing.
- `check_token_ids`: every id the caller can set exists in the decoder's vocabulary.
- `decoding_bytes` / `check_decoding_memory`: what decoding would hold at its peak, refused before the encoder
  runs when it cannot fit.
- `check_settings`: the same checks without audio, once before a batch of inputs (the command line).

Shape legend: B utterances, P prompt tokens, T frames, L audio samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..cache import SelfAttentionCache
from ..files.memory import check_fits
from ..layers import check_positions, check_vocabulary
from .config import DEFAULT_MAX_NEW_TOKENS, GenerationConfig
from .logits_process import build_processors


@dataclass
class _Settings:
    """The per-call values derived from the config, checked once."""

    config: GenerationConfig
    prompt: torch.Tensor  # (B, P) every sequence's first tokens, start token first
    eos: list[int]
    pad: int | None
    max_length: int  # prompt included
    min_length: int  # prompt included


def resolve_config(model: Any, generation_config: GenerationConfig | None, kwargs: dict[str, Any],
                   batch: int, decoder_input_ids: torch.Tensor | None, device: torch.device) -> _Settings:
    """Defaults (model.generation_config, else the model config's ids) overridden by generation_config, then by
    kwargs; the prompt and lengths resolved as transformers does; every bad value is a ValueError naming it."""
    config = merged_config(model, generation_config, kwargs)
    eos = [config.eos_token_id] if isinstance(config.eos_token_id, int) else list(config.eos_token_id or [])
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else None)
    prompt = prompt_of(config, decoder_input_ids, batch, device)
    P = prompt.shape[1]

    positions = getattr(model, "max_target_positions", None)
    if config.max_new_tokens is not None:
        if config.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {config.max_new_tokens}.")
        max_length = P + config.max_new_tokens
    elif config.max_length is not None:
        max_length = config.max_length
    else:
        max_length = P + DEFAULT_MAX_NEW_TOKENS
        if positions is not None:
            max_length = min(max_length, positions)
    if max_length <= P:
        raise ValueError(
            f"max_length={max_length} leaves no room after the {P}-token prompt (it counts the prompt, start token "
            "included); use max_new_tokens to count new tokens only."
        )
    if positions is not None:
        check_positions(max_length, positions, f"max_length={max_length} (prompt of {P} included; max_new_tokens="
                        f"{config.max_new_tokens})", f"ask for at most {positions - P} new tokens")
    min_length = P + config.min_new_tokens if config.min_new_tokens is not None else config.min_length

    K, n = config.num_beams, config.num_return_sequences
    if not (isinstance(K, int) and K >= 1):
        raise ValueError(f"num_beams must be an int >= 1, got {K!r}.")
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"num_return_sequences must be an int >= 1, got {n!r}.")
    if K > 1 and n > K:
        raise ValueError(f"num_return_sequences={n} is more than num_beams={K}; beam search can return at most num_beams.")
    if K == 1 and not config.do_sample and n > 1:
        raise ValueError(f"Greedy decoding returns one sequence per input; num_return_sequences={n} needs num_beams >= {n} or do_sample=True.")
    if config.early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {config.early_stopping!r}.")
    # temperature, top_k and top_p are checked by their processors (logits_process.py), built right after this.
    if not isinstance(config.length_penalty, (int, float)):
        raise ValueError(f"length_penalty must be a number, got {config.length_penalty!r}.")
    check_token_ids(config, prompt, pad, model.config.decoder.vocab_size)
    return _Settings(config, prompt, eos, pad, max_length, min_length)


def merged_config(model: Any, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> GenerationConfig:
    """The model's generation config (else its config's token ids), then the caller's config, then kwargs."""
    base = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(model.config)
    if generation_config is not None:
        # Fields the caller's config leaves at None fall back to the model's (transformers' "defaults_only").
        base = base.update(**{k: v for k, v in dataclasses.asdict(generation_config).items() if k != "extra" and v is not None})
    return base.update(**kwargs)


def generation_prompt(model: Any, batch: int, device: torch.device, generation_config: GenerationConfig | None = None,
                      decoder_input_ids: torch.Tensor | None = None, **generate_kwargs: Any) -> torch.Tensor:
    """(B, P) the tokens `generate(model, ..., generation_config, decoder_input_ids=..., **generate_kwargs)` starts
    every sequence with, and returns in front of what it generated. The arguments are generate's; those that are
    no generation setting (generator, encoder_outputs...) do not change the prompt and are passed over."""
    fields = GenerationConfig.field_names()
    settings = {k: v for k, v in generate_kwargs.items() if k in fields}
    return prompt_of(merged_config(model, generation_config, settings), decoder_input_ids, batch, device)


def prompt_of(config: GenerationConfig, decoder_input_ids: torch.Tensor | None, batch: int,
              device: torch.device) -> torch.Tensor:
    """The one place that decides the prompt: the start token (decoder_start_token_id, else bos_token_id, as
    transformers falls back), then the caller's decoder_input_ids if any."""
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.bos_token_id
    if start is None:
        raise ValueError("decoder_start_token_id is not set (neither in the config nor passed); the decoder needs a first token.")
    return decoder_prompt(decoder_input_ids, start, batch, device)


def decoder_prompt(decoder_input_ids: torch.Tensor | None, start: int, batch: int, device: torch.device) -> torch.Tensor:
    """(B, P) the tokens every sequence starts with: the start token, then the caller's prompt if any."""
    start_column = torch.full((batch, 1), start, dtype=torch.long, device=device)
    if decoder_input_ids is None:
        return start_column
    ids = torch.as_tensor(decoder_input_ids, device=device)
    if ids.dim() == 1:
        ids = ids[None, :].expand(batch, -1)  # one prompt for every utterance
    if ids.dim() != 2 or ids.shape[0] != batch or ids.dtype not in (torch.long, torch.int):
        raise ValueError(
            f"decoder_input_ids must be integer token ids of shape (batch, tokens) = ({batch}, P) or (P,), got "
            f"{ids.dtype} {tuple(ids.shape)}."
        )
    if ids.shape[1] == 0:
        return start_column
    ids = ids.long()
    if not bool((ids[:, 0] == start).all()):
        ids = torch.cat([start_column, ids], dim=1)  # transformers puts the start token in front too
    return ids


def check_token_ids(config: GenerationConfig, prompt: torch.Tensor, pad: int | None, vocab: int) -> None:
    """Every token id the caller can set must exist in the decoder's vocabulary: else an IndexError deep inside,
    or (an EOS id no token can produce) decoding that silently runs to max_length."""
    bad_words = [t for word in config.bad_words_ids or [] for t in (word if isinstance(word, list) else [word])]
    named = {"decoder_start_token_id / decoder_input_ids": prompt.unique().tolist(), "pad_token_id": [pad],
             "eos_token_id": config.eos_token_id, "forced_bos_token_id": [config.forced_bos_token_id],
             "forced_eos_token_id": config.forced_eos_token_id, "suppress_tokens": config.suppress_tokens,
             "bad_words_ids": bad_words}
    for name, ids in named.items():
        check_vocabulary(list(ids) if isinstance(ids, (list, tuple)) else [ids], vocab, name)


def decoding_bytes(model: Any, s: _Settings, batch: int, frames: int) -> int:
    """What decoding holds at its peak, a lower bound from the largest tensors: the self-attention cache of every
    row (in chunks of SelfAttentionCache.chunk tokens, plus one layer's copy while beams are reordered), the scores of every row,
    the beam bookkeeping, and the cross-attention keys / values and weights over `frames` encoder frames."""
    dec, c = model.config.decoder, s.config
    D, layers, H, V = dec.hidden_size, dec.num_hidden_layers, dec.num_attention_heads, dec.vocab_size
    rows = batch * (c.num_beams if c.num_beams > 1 else c.num_return_sequences)
    item = getattr(model, "dtype", torch.float32).itemsize  # the cache is in the model's dtype
    capacity = -(-s.max_length // SelfAttentionCache.chunk) * SelfAttentionCache.chunk
    self_cache = rows * (layers + 1) * 2 * D * capacity * item
    scores = 3 * rows * V * 4  # fp32 logits, log-probs, and the beams' summed scores
    beams = 8 * rows * s.max_length * 8 if c.num_beams > 1 else 0  # int64 tokens and rows, running and candidates
    cross = batch * layers * 2 * frames * D * item + 2 * rows * H * frames * 4
    return self_cache + scores + beams + cross


def check_decoding_memory(model: Any, s: _Settings, audio: torch.Tensor, from_encoder: bool) -> None:
    """Refuse, before the encoder runs, a decoding that cannot fit: a huge num_beams would otherwise fill memory
    (and swap) before failing."""
    if from_encoder:
        frames = audio.shape[1]  # (B, T, D) encoder states
    else:
        frames = audio.shape[-1] // max(getattr(model.get_encoder(), "samples_per_frame", 1), 1)  # (B, L) samples
    c = s.config
    check_fits(decoding_bytes(model, s, audio.shape[0], frames),
               f"decoding {audio.shape[0]} input(s) with num_beams={c.num_beams}, num_return_sequences="
               f"{c.num_return_sequences} and max_length={s.max_length}",
               "use fewer beams, fewer inputs per call or a smaller max_new_tokens", device=audio.device)


@torch.no_grad()
def check_settings(model: Any, generation_config: GenerationConfig | None = None, **kwargs: Any) -> None:
    """Check generation settings without any audio: what `generate` would refuse, said once before a batch of
    inputs rather than once per input (the CLI calls it first)."""
    s = resolve_config(model, generation_config, kwargs, 1, None, torch.device("cpu"))
    build_processors(s.config, s.max_length, s.min_length)
