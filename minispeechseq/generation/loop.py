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

from typing import Any

import torch

from .config import GenerationConfig
from .logits_process import apply_processors, build_processors
from .outputs import GenerateOutput, as_tuples
from .search import BeamSearch, greedy, sample
from .settings import check_decoding_memory, resolve_config


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
