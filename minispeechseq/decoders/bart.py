"""The BART and mBART decoders as causal language models that cross-attend to a speech encoder.

BART (Lewis et al., 2019) and mBART (Liu et al., 2020) share one decoder; they differ only in where the
LayerNorms sit:

    BART  (post-LN, as in "Attention Is All You Need"):  x = norm(x + sublayer(x))
    mBART (pre-LN, as in GPT-2):                          x = x + sublayer(norm(x)),  and one final `norm` at the end

Everything else is common: token embeddings (× √D when `scale_embedding`), *learned* positions stored with an
offset of 2 (rows 0 and 1 of fairseq's table were reserved for padding, so position p reads row p + 2), a
LayerNorm on the embeddings (`layernorm_embedding`), then layers of

    causal self-attention  ->  cross-attention to the encoder  ->  feed-forward (fc1, activation, fc2)

and an LM head tied to the token embeddings. A plain BART/mBART decoder already has cross-attention
(`encoder_attn` in its checkpoints), unlike BERT or GPT-2, which grow one when warm-started.

Shape legend: B batch, S new tokens, P past (cached) tokens, T encoder frames, D model width (d_model),
D_enc encoder width, H heads, F feed-forward width, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..attention import Attention
from ..cache import CrossAttentionCache, DecoderCache, SelfAttentionCache
from ..config import NON_NEGATIVE, PROBABILITY, SIZE, ConfigMixin, divides, decoder_parameters, extra_field, \
    optional, rules
from ..layers import activation
from .base import CausalLMDecoder

# ------------------------------------------------------------------------------------------------- config
class FairseqDecoderSizes:
    """What the fairseq-style decoder configs (BART, mBART, Speech2Text2) share: transformers' generic size names
    for their d_model / decoder_layers / decoder_attention_heads, their field rules and their size estimate."""

    # transformers maps num_hidden_layers (and, for BART, num_attention_heads) to the *encoder's* fields; used as a
    # decoder, the decoder's depth and heads are what count.
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "d_model", "num_hidden_layers": "decoder_layers",
                                               "num_attention_heads": "decoder_attention_heads"}

    # What each field accepts beyond its annotated type (config.py: validate); names a config lacks are skipped.
    _rules = rules({
        SIZE: ("vocab_size", "max_position_embeddings", "max_target_positions", "d_model", "decoder_layers",
               "decoder_attention_heads", "decoder_ffn_dim", "encoder_layers", "encoder_attention_heads",
               "encoder_ffn_dim"),
        optional(SIZE): ("cross_attention_hidden_size",),
        PROBABILITY: ("encoder_layerdrop", "decoder_layerdrop", "dropout", "attention_dropout", "activation_dropout",
                      "classifier_dropout"),
        NON_NEGATIVE: ("init_std",),
    })

    def _relations(self) -> list[tuple[bool, str]]:
        return [divides(self, "decoder_attention_heads", "d_model")]

    def approx_num_parameters(self) -> int:
        positions = getattr(self, "max_position_embeddings", 0)  # Speech2Text2's sinusoids are computed, not stored
        return decoder_parameters(self.vocab_size, self.d_model, self.decoder_layers, self.decoder_ffn_dim, positions,
                                  self.cross_attention_hidden_size)


@dataclass
class BartConfig(FairseqDecoderSizes, ConfigMixin):
    """transformers' BartConfig (config.json keys and defaults). The encoder fields are kept because they are
    config.json keys, but only the decoder is built here."""

    model_type = "bart"

    vocab_size: int = 50265
    max_position_embeddings: int = 1024  # learned position table has this many rows + 2 (the fairseq offset)
    d_model: int = 1024
    decoder_layers: int = 12
    decoder_attention_heads: int = 16
    decoder_ffn_dim: int = 4096
    encoder_layers: int = 12  # unused by the decoder
    encoder_attention_heads: int = 16  # unused by the decoder
    encoder_ffn_dim: int = 4096  # unused by the decoder
    encoder_layerdrop: float = 0.0  # unused by the decoder
    decoder_layerdrop: float = 0.0  # probability of skipping a whole layer in training (LayerDrop)
    activation_function: str = "gelu"
    dropout: float = 0.1  # on embeddings and on each sublayer's output
    attention_dropout: float = 0.0  # on the attention weights
    activation_dropout: float = 0.0  # between fc1's activation and fc2
    init_std: float = 0.02
    classifier_dropout: float = 0.0  # unused (sequence-classification head)
    scale_embedding: bool = False  # multiply token embeddings by sqrt(d_model)
    use_cache: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 2
    forced_eos_token_id: int | list[int] | None = 2
    is_encoder_decoder: bool = True
    is_decoder: bool = False
    add_cross_attention: bool = False  # BART's decoder layers always have cross-attention; kept for the round trip
    # Width of the encoder states the cross-attention reads (k_proj/v_proj input). None = d_model.
    cross_attention_hidden_size: int | None = None
    tie_word_embeddings: bool = True  # the LM head reuses the token embedding matrix
    extra: dict = extra_field()


@dataclass
class MBartConfig(BartConfig):
    """transformers' MBartConfig: BART's keys; the model is pre-LN with a final LayerNorm."""

    model_type = "mbart"
    decoder_start_token_id: int | None = None


# ------------------------------------------------------------------------------------------------- layers
class BartDecoderLayer(nn.Module):
    """Self-attention, cross-attention, feed-forward; each with a residual and a LayerNorm, post- or pre-LN.

    Speech2Text2's decoder layer is this same post-LN layer, so speech2text2.py reuses it.
    """

    def __init__(self, config: BartConfig, pre_norm: bool):
        super().__init__()
        D, H = config.d_model, config.decoder_attention_heads
        self.pre_norm = pre_norm
        self.self_attn = Attention(D, H, dropout=config.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(D)
        # transformers' BartAttention builds k_proj/v_proj as D -> D whatever cross_attention_hidden_size says
        # (only BERT/GPT-2-style decoders read it there). We honour it, so an encoder of another width can be
        # attended to directly; with the default (None) the weights have transformers' shapes.
        self.cross_attn = Attention(D, H, kv_dim=config.cross_attention_hidden_size, dropout=config.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, config.decoder_ffn_dim)
        self.act = activation(config.activation_function)
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, D)
        self.ffn_norm = nn.LayerNorm(D)  # transformers' `final_layer_norm` (of the layer, not of the decoder)
        self.dropout = nn.Dropout(config.dropout)

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable) -> tuple[torch.Tensor, object]:
        """x + sublayer(...) with the LayerNorm before (mBART) or after (BART) the residual sum."""
        out, weights = sublayer(norm(x) if self.pre_norm else x)
        x = x + self.dropout(out)
        return (x if self.pre_norm else norm(x)), weights

    def _mlp(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        h = self.activation_dropout(self.act(self.fc1(x)))  # (B, S, F)
        return self.fc2(h), None  # (B, S, D)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        causal: bool,
        encoder_hidden_states: torch.Tensor | None,
        encoder_attention_mask: torch.Tensor | None,
        self_cache: SelfAttentionCache | None,
        cross_cache: CrossAttentionCache | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, S, D) -> (B, S, D), self-attention weights (B, H, S, P+S), cross weights (B, H, S, T)."""
        x, self_weights = self._residual(
            x,
            self.self_attn_norm,
            lambda h: self.self_attn(
                h, key_padding_mask=attention_mask, causal=causal, cache=self_cache, output_attentions=output_attentions
            ),
        )
        cross_weights = None
        if encoder_hidden_states is not None:  # no encoder: a plain language model, the cross block is skipped
            x, cross_weights = self._residual(
                x,
                self.cross_attn_norm,
                lambda h: self.cross_attn(
                    h, encoder_hidden_states,
                    key_padding_mask=encoder_attention_mask, cache=cross_cache, output_attentions=output_attentions,
                ),
            )
        x, _ = self._residual(x, self.ffn_norm, self._mlp)
        return x, self_weights, cross_weights


# ------------------------------------------------------------------------------------------------- model
class BartForCausalLM(CausalLMDecoder):
    """The BART decoder with its LM head: input_ids (B, S) + encoder states (B, T, D_enc) -> logits (B, S, V)."""

    config_class = BartConfig
    shift_labels = False  # transformers' BartForCausalLM: "the labels are not shifted inside the model"
    pre_norm = False  # BART is post-LN
    POSITION_OFFSET = 2  # fairseq reserved rows 0 and 1 of the learned position table; position p is row p + 2

    def __init__(self, config: BartConfig):
        super().__init__(config)
        D, V = config.d_model, config.vocab_size
        self.embed_tokens = nn.Embedding(V, D, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(D) if config.scale_embedding else 1.0
        self.embed_positions = nn.Embedding(config.max_position_embeddings + self.POSITION_OFFSET, D)
        self.embed_norm = nn.LayerNorm(D)  # transformers' `layernorm_embedding`
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(BartDecoderLayer(config, self.pre_norm) for _ in range(config.decoder_layers))
        # Pre-LN leaves the residual stream un-normalised: mBART ends with one more LayerNorm.
        self.final_norm = nn.LayerNorm(D) if self.pre_norm else None
        self.lm_head = nn.Linear(D, V, bias=False)  # tied to embed_tokens
        # BartForConditionalGeneration / MBartForConditionalGeneration add a (1, V) `final_logits_bias` buffer to
        # the logits; the converter fills it from such a checkpoint and with zeros otherwise.
        self.register_buffer("logits_bias", torch.zeros(V))
        self.post_init()

    def embed(self, input_ids: torch.Tensor, past: int, cache: DecoderCache | None, attention_mask) -> torch.Tensor:
        """Token embeddings (× √D if scale_embedding) plus positions past .. past + S - 1 -> (B, S, D)."""
        S = input_ids.shape[1]
        # Positions ignore padding (transformers' BartLearnedPositionalEmbedding counts from the cache length).
        positions = torch.arange(past, past + S, device=input_ids.device) + self.POSITION_OFFSET  # (S,)
        x = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)  # (B, S, D)
        return self.embed_norm(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(x) + self.logits_bias  # (B, S, V)


class MBartForCausalLM(BartForCausalLM):
    """The mBART decoder: BART's, pre-LN, with a final LayerNorm (`model.decoder.layer_norm` in checkpoints)."""

    config_class = MBartConfig
    pre_norm = True
