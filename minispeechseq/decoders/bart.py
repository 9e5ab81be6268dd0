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

import torch
from torch import nn

import weights_convert.bart

from ..attention import Attention
from ..cache import CrossAttentionCache, DecoderCache, SelfAttentionCache
from ..config import ConfigMixin, extra_field
from ..layers import Linear, activation, causal_lm_loss, check_decoder_inputs, dropout
from ..modeling import DecoderOutput, PreTrainedModel

# ------------------------------------------------------------------------------------------------- config
class FairseqDecoderSizes:
    """transformers' generic size names, for the fairseq-style configs that call them d_model / decoder_layers /
    decoder_attention_heads (BART, mBART, Speech2Text2)."""

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        # transformers maps this name to encoder_layers; used as a decoder, the decoder's depth is what counts.
        return self.decoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.decoder_attention_heads


@dataclass
class BartConfig(FairseqDecoderSizes, ConfigMixin):
    """transformers' BartConfig (config.json keys and defaults). The encoder fields are kept because they are
    config.json keys, but only the decoder is built here."""

    model_type = "bart"
    _derived_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads")

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
        self.dropout, self.activation_dropout = config.dropout, config.activation_dropout
        self.self_attn = Attention(D, H, dropout=config.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(D)
        # transformers' BartAttention builds k_proj/v_proj as D -> D whatever cross_attention_hidden_size says
        # (only BERT/GPT-2-style decoders read it there). We honour it, so an encoder of another width can be
        # attended to directly; with the default (None) the weights have transformers' shapes.
        self.cross_attn = Attention(D, H, kv_dim=config.cross_attention_hidden_size, dropout=config.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(D)
        self.fc1 = Linear(D, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, D)
        self.ffn_norm = nn.LayerNorm(D)  # transformers' `final_layer_norm` (of the layer, not of the decoder)
        self.act = activation(config.activation_function)

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable) -> tuple[torch.Tensor, object]:
        """x + sublayer(...) with the LayerNorm before (mBART) or after (BART) the residual sum."""
        out, extra = sublayer(norm(x) if self.pre_norm else x)
        x = x + dropout(out, self.dropout, self.training)
        return (x if self.pre_norm else norm(x)), extra

    def _mlp(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        h = self.act(self.fc1(x))  # (B, S, F)
        h = dropout(h, self.activation_dropout, self.training)
        return self.fc2(h), None  # (B, S, D)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
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
                h, key_padding_mask=attention_mask, causal=True, cache=self_cache, output_attentions=output_attentions
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
class BartForCausalLM(PreTrainedModel):
    """The BART decoder with its LM head: input_ids (B, S) + encoder states (B, T, D_enc) -> logits (B, S, V)."""

    config_class = BartConfig
    converter = weights_convert.bart
    pre_norm = False  # BART is post-LN
    POSITION_OFFSET = 2  # fairseq reserved rows 0 and 1 of the learned position table; position p is row p + 2

    def __init__(self, config: BartConfig):
        super().__init__(config)
        D, V = config.d_model, config.vocab_size
        self.embed_tokens = nn.Embedding(V, D, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(D) if config.scale_embedding else 1.0
        self.embed_positions = nn.Embedding(config.max_position_embeddings + self.POSITION_OFFSET, D)
        self.embed_norm = nn.LayerNorm(D)  # transformers' `layernorm_embedding`
        self.layers = nn.ModuleList(BartDecoderLayer(config, self.pre_norm) for _ in range(config.decoder_layers))
        # Pre-LN leaves the residual stream un-normalised: mBART ends with one more LayerNorm.
        self.norm = nn.LayerNorm(D) if self.pre_norm else None
        self.lm_head = Linear(D, V, bias=False)
        # BartForConditionalGeneration / MBartForConditionalGeneration add a (1, V) `final_logits_bias` buffer to
        # the logits; the converter fills it from such a checkpoint and with zeros otherwise.
        self.register_buffer("logits_bias", torch.zeros(V))
        self.post_init()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @property
    def hidden_size(self) -> int:
        return self.config.d_model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.layers))

    def embed(self, input_ids: torch.Tensor, past: int) -> torch.Tensor:
        """Token embeddings (× √D if scale_embedding) plus positions past .. past + S - 1 -> (B, S, D)."""
        S = input_ids.shape[1]
        # Positions ignore padding (transformers' BartLearnedPositionalEmbedding counts from the cache length).
        positions = torch.arange(past, past + S, device=input_ids.device) + self.POSITION_OFFSET  # (S,)
        x = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions(positions)  # (B, S, D)
        return self.embed_norm(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: DecoderCache | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        logits_to_keep: int = 0,
        labels: torch.Tensor | None = None,
    ) -> DecoderOutput:
        """input_ids (B, S); attention_mask (B, P + S), 1 = real token; encoder_hidden_states (B, T, D_enc);
        encoder_attention_mask (B, T), 1 = real frame. With `cache`, positions continue from its length."""
        past = cache.seq_len if cache is not None else 0
        check_decoder_inputs(input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, past,
                             self.config.max_position_embeddings, self.config.vocab_size)
        x = self.embed(input_ids, past)
        x = dropout(x, self.config.dropout, self.training)

        hidden_states, self_attns, cross_attns = [], [], []
        for i, layer in enumerate(self.layers):
            if self.training and self.config.decoder_layerdrop > 0 and torch.rand(()) < self.config.decoder_layerdrop:
                continue  # LayerDrop (Fan et al., 2019): skip the whole layer during training
            hidden_states.append(x)
            x, sa, ca = layer(
                x, attention_mask, encoder_hidden_states, encoder_attention_mask,
                cache.self_attn[i] if cache is not None else None,
                cache.cross_attn[i] if cache is not None else None,
                output_attentions,
            )
            self_attns.append(sa)
            cross_attns.append(ca)
        if self.norm is not None:
            x = self.norm(x)
        hidden_states.append(x)  # as transformers: the last entry is the final (normalised) output

        h = x[:, -logits_to_keep:] if logits_to_keep > 0 else x  # (B, S or logits_to_keep, D)
        logits = self.lm_head(h) + self.logits_bias  # (B, S, V)
        return DecoderOutput(
            logits=logits,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(self_attns) if output_attentions else None,
            cross_attentions=tuple(cross_attns) if output_attentions and encoder_hidden_states is not None else None,
            cache=cache,
            loss=causal_lm_loss(logits, labels, shift=False) if labels is not None else None,
        )


class MBartForCausalLM(BartForCausalLM):
    """The mBART decoder: BART's, pre-LN, with a final LayerNorm (`model.decoder.layer_norm` in checkpoints)."""

    config_class = MBartConfig
    pre_norm = True
