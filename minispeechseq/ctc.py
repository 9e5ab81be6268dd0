"""CTC: a speech encoder with one Linear on top, trained with Connectionist Temporal Classification.

The simplest recognizer there is, and the other half of the family this project is about: wav2vec2-base-960h and
most wav2vec2 / HuBERT checkpoints on the hub are CTC models. Instead of a decoder that writes the text token by
token while listening through cross-attention, every encoder frame predicts one token of a small alphabet
(characters, `|` between words) or the blank:

    waveform (B, L) ──encoder──> frames (B, T, D) ──dropout, lm_head──> logits (B, T, V)

Reading the text is greedy CTC decoding: the best token per frame, repeats merged, blanks dropped
(`argmax` here, the merging in the tokenizer's `batch_decode`). Training maximises the probability of the
transcript summed over every frame alignment that collapses to it (`F.ctc_loss`, Graves et al., 2006).
Compared with the encoder-decoder: no language model inside, one pass (fast), output length bounded by frames,
no looping, but no reordering either (no translation).

transformers' semantics, kept: the blank is `pad_token_id`; `ctc_loss_reduction` ("sum" by default, or "mean":
each utterance's loss divided by its label length, then averaged); `ctc_zero_infinity` (impossible alignments
give 0 instead of inf); labels use -100 (any negative id) for padding.

Shape legend: B batch, L audio samples, T frames, D encoder width, V vocabulary, S label tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .modeling import ModelOutput, PreTrainedModel
from .wav2vec2 import HubertModel, Wav2Vec2Model
from .wav2vec2_config import HubertConfig, Wav2Vec2Config


@dataclass
class CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # the CTC loss, reduced as config.ctc_loss_reduction says
    logits: torch.Tensor | None = None  # (B, T, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # the encoder's, with output_hidden_states
    attentions: tuple[torch.Tensor, ...] | None = None  # the encoder's, with output_attentions (eager)


class _ForCTC(PreTrainedModel):
    """An encoder (`encoder_class`) and the CTC head. Subclasses name the encoder and its config."""

    encoder_class: ClassVar[type]
    checkpoint_head = "ctc"  # checkpoints: the encoder under wav2vec2. / hubert., plus lm_head

    def __init__(self, config: Wav2Vec2Config | HubertConfig):
        super().__init__(config)
        if not isinstance(config.vocab_size, int) or config.vocab_size < 1:
            raise ValueError(
                f"A CTC model needs the size of its alphabet: config.vocab_size is {config.vocab_size!r} "
                "(len(tokenizer) of the vocab.json it was trained with)."
            )
        self.encoder = self.encoder_class(config)  # initialises itself (wav2vec2's and HuBERT's own schemes)
        self.dropout = nn.Dropout(config.final_dropout)
        self.lm_head = nn.Linear(self.encoder.output_size, config.vocab_size)
        self._init_weights(self.lm_head)  # normal(0, initializer_range), zero bias: transformers' init
        self.use_attn_implementation(self.encoder.attn_implementation)  # the encoder's, already checked

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the conv feature encoder (the usual first step of CTC fine-tuning)."""
        self.encoder.freeze_feature_encoder()

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> CausalLMOutput:
        """input_values (B, L); attention_mask (B, L), 1 = real sample; labels (B, S), negative = padding.
        Returns logits (B, T, V) and, with labels, the CTC loss."""
        enc = self.encoder(input_values, attention_mask=attention_mask, output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions)
        logits = self.lm_head(self.dropout(enc.last_hidden_state))  # (B, T, V)
        loss = self.ctc_loss(logits, labels, input_values, attention_mask) if labels is not None else None
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states, attentions=enc.attentions)

    def ctc_loss(self, logits: torch.Tensor, labels: torch.Tensor, input_values: torch.Tensor,
                 attention_mask: torch.Tensor | None) -> torch.Tensor:
        config = self.config
        if labels.dim() != 2 or labels.shape[0] != logits.shape[0]:
            raise ValueError(f"labels must be (batch, tokens) with batch {logits.shape[0]}, got {tuple(labels.shape)}.")
        if bool((labels >= config.vocab_size).any()):
            raise ValueError(f"labels contain ids >= vocab_size ({config.vocab_size}); the CTC alphabet has no such "
                             "token (is the tokenizer the model's?).")
        if config.ctc_loss_reduction not in ("sum", "mean"):
            raise ValueError(f"ctc_loss_reduction must be 'sum' or 'mean', got {config.ctc_loss_reduction!r}.")
        samples = (attention_mask.sum(-1) if attention_mask is not None
                   else torch.full((logits.shape[0],), input_values.shape[-1], device=logits.device))
        frames = self.encoder.output_lengths(samples).long()  # (B,) real frames per utterance
        real = labels >= 0  # (B, S)
        # F.ctc_loss wants time first and log-probabilities, in fp32 (half precision underflows the sums).
        log_probs = logits.log_softmax(dim=-1, dtype=torch.float32).transpose(0, 1)  # (T, B, V)
        return F.ctc_loss(
            log_probs, labels.masked_select(real), frames, real.sum(-1),
            blank=config.pad_token_id, reduction=config.ctc_loss_reduction, zero_infinity=config.ctc_zero_infinity,
        )


class Wav2Vec2ForCTC(_ForCTC):
    """wav2vec2 + CTC head: transformers' Wav2Vec2ForCTC (e.g. facebook/wav2vec2-base-960h)."""

    config_class = Wav2Vec2Config
    encoder_class = Wav2Vec2Model


class HubertForCTC(_ForCTC):
    """HuBERT + CTC head: transformers' HubertForCTC (e.g. facebook/hubert-large-ls960-ft)."""

    config_class = HubertConfig
    encoder_class = HubertModel
