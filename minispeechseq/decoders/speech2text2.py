"""The Speech2Text2 decoder (Wang et al., 2021, "Large-Scale Self- and Semi-Supervised Learning for Speech
Translation"): the text decoder of facebook's wav2vec2 speech-translation checkpoints (s2t-wav2vec2-large-en-de...).

It is fairseq's transformer decoder, the same post-LN layer as BART (so we reuse `BartDecoderLayer`), with:
  - token embeddings always × √D by default (`scale_embedding=True`) and no LayerNorm on the embeddings;
  - *fixed sinusoidal* positions instead of learned ones, and padding-aware: padding tokens get no position
    (a zero vector) and real tokens are numbered 1, 2, 3... skipping the pads, as in fairseq's `make_positions`:
        position = cumsum(token != pad) · (token != pad) + padding_idx
    The table row `padding_idx` is all zeros, so pads receive nothing.

transformers removed this model in 5.0 (4.50.3 is the last release that can run it); tests compare against outputs
saved once with that release (tests/make_speech2text2_fixtures.py).

Shape legend: B batch, S new tokens, P past (cached) tokens, T encoder frames, D model width (d_model),
H heads, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..cache import DecoderCache
from ..config import ConfigMixin, extra_field
from ..layers import sinusoids
from .bart import BartDecoderLayer, FairseqDecoderSizes
from .base import CausalLMDecoder


@dataclass
class Speech2Text2Config(FairseqDecoderSizes, ConfigMixin):
    """transformers' (4.x) Speech2Text2Config: config.json keys and defaults."""

    model_type = "speech_to_text_2"

    vocab_size: int = 10000
    d_model: int = 256
    decoder_layers: int = 6
    decoder_attention_heads: int = 4
    decoder_ffn_dim: int = 2048
    decoder_layerdrop: float = 0.0  # probability of skipping a whole layer in training (LayerDrop)
    activation_function: str = "relu"
    dropout: float = 0.1  # on embeddings and on each sublayer's output
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    # The sinusoid table is computed, so any length works; this only sizes the table stored in checkpoints.
    max_target_positions: int = 1024
    use_cache: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    decoder_start_token_id: int | None = 2
    is_decoder: bool = False
    is_encoder_decoder: bool = False
    add_cross_attention: bool = False  # the layers always have cross-attention; kept for the round trip
    # Width of the encoder states the cross-attention reads (k_proj/v_proj input). None = d_model.
    cross_attention_hidden_size: int | None = None
    tie_word_embeddings: bool = True
    extra: dict = extra_field()


class Speech2Text2Cache(DecoderCache):
    """A DecoderCache that also remembers, per row, how many real (non-pad) tokens it has seen.

    Positions skip padding, so the position of a new token depends on the padding *in the past*, not only on
    the past length. transformers 4.x numbers the new tokens from the past length instead (its
    `create_position_ids_from_input_ids(..., past_key_values_length)`), so a cached step after padded tokens
    gets another position than the same token in a full forward pass; that is a bug there, which we avoid.
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__(num_layers)
        self.real_tokens: torch.Tensor | None = None  # (B,) count of non-pad tokens so far

    def reorder(self, index: torch.Tensor, cross: bool = False) -> None:
        super().reorder(index, cross)
        if self.real_tokens is not None:
            self.real_tokens = self.real_tokens.index_select(0, index)


class Speech2Text2ForCausalLM(CausalLMDecoder):
    """The Speech2Text2 decoder with its LM head: input_ids (B, S) + encoder states (B, T, D_enc) -> (B, S, V)."""

    config_class = Speech2Text2Config
    shift_labels = False  # as transformers' Speech2Text2ForCausalLM: labels are not shifted inside the model

    def __init__(self, config: Speech2Text2Config):
        super().__init__(config)
        if config.pad_token_id is None:
            raise ValueError(
                "Speech2Text2 needs pad_token_id: positions are numbered from it and pads get none. "
                "Set pad_token_id in the config (1 in the released checkpoints)."
            )
        D, V = config.d_model, config.vocab_size
        self.embed_tokens = nn.Embedding(V, D, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(D) if config.scale_embedding else 1.0
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(BartDecoderLayer(config, pre_norm=False) for _ in range(config.decoder_layers))
        self.final_norm = None  # post-LN
        self.lm_head = nn.Linear(D, V, bias=False)  # tied to embed_tokens
        self.post_init()

    @property
    def max_positions(self) -> int:
        return self.config.max_target_positions

    def new_cache(self) -> Speech2Text2Cache:
        return Speech2Text2Cache(len(self.layers))

    def positions(
        self, input_ids: torch.Tensor, cache: DecoderCache | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Padding-aware position ids (B, S): real tokens count on from the real tokens before them; pads get
        `padding_idx` (a zero embedding). Updates the cache's count."""
        pad = self.config.pad_token_id
        real = input_ids.ne(pad).long()  # (B, S)
        past = cache.seq_len if cache is not None else 0
        before = getattr(cache, "real_tokens", None)
        if before is None and past > 0:
            # A plain DecoderCache does not record padding: count it from the mask, else assume none.
            before = attention_mask[:, :past].sum(-1) if attention_mask is not None else torch.full_like(real[:, 0], past)
        if before is None:
            before = torch.zeros_like(real[:, 0])
        counts = before.unsqueeze(1) + torch.cumsum(real, dim=1)  # (B, S)
        if isinstance(cache, Speech2Text2Cache):
            cache.real_tokens = counts[:, -1]
        return counts * real + pad

    def embed(self, input_ids: torch.Tensor, past: int, cache: DecoderCache | None, attention_mask) -> torch.Tensor:
        positions = self.positions(input_ids, cache, attention_mask)  # (B, S)
        pos_emb = sinusoids(positions, self.config.d_model, self.config.pad_token_id)  # (B, S, D)
        return self.embed_tokens(input_ids) * self.embed_scale + pos_emb.to(self.embed_tokens.weight.dtype)
