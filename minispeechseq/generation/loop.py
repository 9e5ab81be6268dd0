"""`generate`: encode the audio once, then one short loop of (decoder step -> processors -> search).

What the loop needs from a model (the protocol; `SpeechEncoderDecoderModel` provides it):
    model.get_encoder()(input_values, attention_mask=...) -> encoder output (its [0]: the states (B, T, D_enc))
    model.encode(attention_mask=..., encoder_outputs=...) -> (memory (B, T, D), frame mask (B, T) or None)
    model.decoder(input_ids, encoder_hidden_states=..., encoder_attention_mask=..., cache=..., logits_to_keep=1)
        -> object with .logits (N, 1, V)
    model.decoder.new_cache() -> DecoderCache (reorder(index) for beams)
    model.config (token ids), model.generation_config, model.max_target_positions
The decoder gets one encoder row per utterance for its K rows (beams, or samples): it reads K adjacent decoder
rows per encoder row, so the encoder output is never copied per beam (see attention.py, `fold_rows`).

Every sequence starts with a prompt: the start token, or `decoder_input_ids` (a forced prefix such as language or
task tokens; the start token is put in front when the prompt does not begin with it, as transformers does).
Lengths (max_length, min_length) count the prompt; max_new_tokens / min_new_tokens count what follows it.

With the cache (the default) the decoder sees only the newest token per step: the self-attention keys and
values of earlier tokens are in the cache, and the cross-attention ones are computed on the first step and
reused. `use_cache=False` instead re-runs the whole prefix with a fresh cache every step: slow, but a direct
check that the cache changes nothing.

Shape legend: B utterances, T frames, D width, K beams, N = B·K rows fed to the decoder, P prompt tokens,
S tokens so far, V vocab.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..cache import SelfAttentionCache
from ..files.memory import check_fits
from .config import DEFAULT_MAX_NEW_TOKENS, GenerationConfig
from .logits_process import apply_processors, build_processors
from .outputs import GenerateOutput, as_tuples
from .search import BeamSearch, greedy, sample


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
    prompt = decoder_prompt(decoder_input_ids, start, batch, device)
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
    if positions is not None and max_length > positions:
        raise ValueError(
            f"max_length={max_length} (prompt of {P} included; max_new_tokens={config.max_new_tokens}) is beyond the "
            f"decoder's {positions} positions; ask for at most {positions - P} new tokens."
        )
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
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        bad = [i for i in ids if i is not None and not (isinstance(i, int) and 0 <= i < vocab)]
        if bad:
            raise ValueError(f"{name}={bad} is outside the decoder's vocabulary of {vocab} tokens (ids 0 to "
                             f"{vocab - 1}).")


def decoding_bytes(model: Any, s: _Settings, batch: int, frames: int) -> int:
    """What decoding holds at its peak, a lower bound from the largest tensors (on the bundled model, 1 s of audio:
    1-5 % below the measured peak growth for 2 000 to 20 000 beams): the self-attention cache of every row (in chunks of
    SelfAttentionCache.chunk tokens, plus one layer's copy while beams are reordered), the scores of every row,
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
    """Refuse, before the encoder runs, a decoding that cannot fit (num_beams=100000 filled 22 GB of a 24 GB box)."""
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


def generate(
    model: Any,
    input_values: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    *,
    inputs: torch.Tensor | None = None,
    decoder_input_ids: torch.Tensor | None = None,
    encoder_outputs: Any = None,
    generator: torch.Generator | None = None,
    return_dict: bool | None = None,
    **kwargs: Any,
) -> torch.Tensor | GenerateOutput:
    """Decode `input_values` (B, L audio samples) into token ids (B*num_return_sequences, S), transformers' rules.

    inputs: transformers' name for input_values. decoder_input_ids (B, P) or (P,): a prompt every sequence starts
    with (returned as part of it). encoder_outputs: a previous `model.get_encoder()(input_values)` result, reused
    instead of the audio (several decodings of one encoding). generator: a torch.Generator for sampling.
    kwargs: any GenerationConfig field. With return_dict_in_generate, a GenerateOutput whose extras are asked for
    by output_scores / output_logits / output_attentions / output_hidden_states; `return_dict=True` is our
    shorthand for return_dict_in_generate with output_scores."""
    if inputs is not None:
        if input_values is not None:
            raise ValueError("Give the audio once: as input_values or as inputs (transformers' name), not both.")
        input_values = inputs
    if return_dict:
        kwargs.setdefault("return_dict_in_generate", True)
        kwargs.setdefault("output_scores", True)
    if input_values is None and encoder_outputs is None:
        raise ValueError("generate() needs the audio (input_values) or the encoder's output (encoder_outputs).")
    # Every setting is checked before the encoder runs: a typo costs no encoder pass.
    audio = input_values if encoder_outputs is None else encoder_outputs[0]  # (B, L) samples or (B, T, D) frames
    s = resolve_config(model, generation_config, kwargs, audio.shape[0], decoder_input_ids, audio.device)
    check_decoding_memory(model, s, audio, from_encoder=encoder_outputs is not None)
    config = s.config
    processors = build_processors(config, s.max_length, s.min_length)
    if encoder_outputs is None:
        encoder_outputs = model.get_encoder()(input_values, attention_mask=attention_mask,
                                              output_attentions=config.output_attentions,
                                              output_hidden_states=config.output_hidden_states)
    enc, enc_mask = model.encode(attention_mask=attention_mask, encoder_outputs=encoder_outputs)  # (B, T, D), (B, T)
    record = Record(config) if config.return_dict_in_generate else None
    # Asked of the decoder only when wanted (attention weights need the eager backend).
    extra_outputs = {k: True for k in ("output_attentions", "output_hidden_states") if getattr(config, k)}

    def next_scores(ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """(N, S) tokens so far -> (N, V) fp32 logits of the next token, and the cache to keep."""
        if config.use_cache:
            feed = ids[:, cache.seq_len:]  # only what the cache has not seen (the whole prompt at first)
        else:
            cache, feed = model.decoder.new_cache(), ids
        out = model.decoder(
            feed, encoder_hidden_states=enc, encoder_attention_mask=enc_mask, cache=cache, logits_to_keep=1,
            **extra_outputs,
        )
        logits = out.logits[:, -1].float()
        if record is not None:
            record.decoder_step(logits, out)
        return logits, cache

    # Rows per utterance: one per beam (or per returned sample), adjacent; they all read the utterance's row of
    # `enc`, whose cross-attention keys/values are computed once per utterance.
    cache = model.decoder.new_cache()
    if config.num_beams > 1:
        ids, extras = _beam_loop(s, processors, next_scores, cache, generator, record)
    else:
        prompt = s.prompt.repeat_interleave(config.num_return_sequences, dim=0)  # (N, P)
        ids, extras = _sample_loop(s, processors, prompt, next_scores, cache, generator, record)
    if record is None:
        return ids
    return record.output(ids, encoder_outputs, **extras)


class Record:
    """What return_dict_in_generate keeps, step by step; each kind only when its output_* flag asks for it
    (a long generation's per-step (N, V) scores add up)."""

    def __init__(self, config: GenerationConfig) -> None:
        self.config = config
        self.scores = [] if config.output_scores else None
        self.logits = [] if config.output_logits else None
        self.decoder_attentions = [] if config.output_attentions else None
        self.cross_attentions = [] if config.output_attentions else None
        self.decoder_hidden_states = [] if config.output_hidden_states else None

    def decoder_step(self, logits: torch.Tensor, out: Any) -> None:
        if self.logits is not None:
            self.logits.append(logits)
        if self.decoder_attentions is not None:
            self.decoder_attentions.append(out.attentions)
            self.cross_attentions.append(out.cross_attentions)
        if self.decoder_hidden_states is not None:
            self.decoder_hidden_states.append(out.hidden_states)

    def search_step(self, scores: torch.Tensor) -> None:
        if self.scores is not None:
            self.scores.append(scores)

    def output(self, sequences: torch.Tensor, encoder_outputs: Any, **extras: Any) -> GenerateOutput:
        return GenerateOutput(
            sequences=sequences,
            scores=as_tuples(self.scores),
            logits=as_tuples(self.logits),
            encoder_attentions=getattr(encoder_outputs, "attentions", None) if self.config.output_attentions else None,
            encoder_hidden_states=(getattr(encoder_outputs, "hidden_states", None)
                                   if self.config.output_hidden_states else None),
            decoder_attentions=as_tuples(self.decoder_attentions),
            cross_attentions=as_tuples(self.cross_attentions),
            decoder_hidden_states=as_tuples(self.decoder_hidden_states),
            **extras,
        )


def _sample_loop(s, processors, prompt, next_scores, cache, generator, record):
    """Greedy (do_sample=False) or multinomial sampling, one row per sequence."""
    ids = prompt  # (N, P)
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    eos = torch.tensor(s.eos, dtype=torch.long, device=ids.device)
    while True:
        logits, cache = next_scores(ids, cache)
        scores = apply_processors(processors, ids, logits)
        if record is not None:
            record.search_step(scores)
        token = sample(scores, generator) if s.config.do_sample else greedy(scores)  # (N,)
        if s.eos:
            # Rows that already ended only grow padding, so the batch stays one rectangle.
            token = torch.where(unfinished, token, torch.full_like(token, s.pad))
            unfinished &= ~token[:, None].eq(eos).any(-1)
        ids = torch.cat([ids, token[:, None]], dim=1)  # (N, S+1)
        # One host sync per step to decide whether to stop; transformers does the same.
        if ids.shape[1] >= s.max_length or not bool(unfinished.any()):
            break
    return ids, {}


def _beam_loop(s, processors, next_scores, cache, generator, record):
    """Beam search (and beam sampling): all beams of all utterances go through the decoder as one batch of
    N = B*K rows."""
    c = s.config
    beams = BeamSearch(s.prompt, c.num_beams, s.max_length, s.eos, s.pad, c.length_penalty, c.early_stopping,
                       do_sample=c.do_sample, generator=generator)
    while not beams.done:
        ids = beams.running_ids()  # (N, S)
        logits, cache = next_scores(ids, cache)
        log_probs = apply_processors(processors, ids, logits.log_softmax(dim=-1))
        if record is not None:
            record.search_step(log_probs)
        parents = beams.step(log_probs)
        if c.use_cache:
            cache.reorder(parents)  # each new beam continues its parent's keys and values
    sequences, sequences_scores = beams.finalize(c.num_return_sequences)
    return sequences, {"sequences_scores": sequences_scores, "beam_indices": beams.beam_indices(c.num_return_sequences)}
