"""BERT as a text decoder: transformers' `BertLMHeadModel`, warm-started from a BERT checkpoint.

BERT was trained as a bidirectional encoder. "Leveraging Pre-trained Checkpoints for Sequence Generation Tasks"
(Rothe et al., 2020) turned it into a decoder by (1) making its self-attention causal (`is_decoder=True`) and
(2) inserting a freshly initialised cross-attention block into every layer (`add_cross_attention=True`).
SpeechEncoderDecoderModel does the same with a speech encoder in front.

One layer is post-LN (the original Transformer's order, norm *after* each residual add):

    x = norm(x + SelfAttention(x, causal))          # attends to earlier tokens only
    x = norm(x + CrossAttention(x, encoder_states))  # attends to the speech frames
    x = norm(x + fc2(act(fc1(x))))                   # feed-forward

Embeddings are word + token type (always type 0 here) + learned absolute position, then LayerNorm + dropout.
The LM head is dense -> activation -> LayerNorm -> a projection tied to the word embeddings, plus a bias.

Shape legend: B batch, S tokens (this call), P past tokens (cached), T encoder frames, D width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..attention import Attention
from ..cache import DecoderCache
from ..config import NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE, ConfigMixin, decoder_parameters, divides, \
    extra_field, optional, rules
from ..layers import activation
from .base import CausalLMDecoder


@dataclass
class BertConfig(ConfigMixin):
    """transformers' BertConfig fields; the defaults are bert-base-uncased's shape."""

    model_type: ClassVar[str] = "bert"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # width of the feed-forward block
    hidden_act: str = "gelu"  # feed-forward and LM-head activation
    hidden_dropout_prob: float = 0.1  # on embeddings and every residual branch
    attention_probs_dropout_prob: float = 0.1  # on attention weights
    max_position_embeddings: int = 512  # the longest sequence: positions are learned, one row each
    type_vocab_size: int = 2  # segment A/B embeddings; a decoder always uses segment 0
    initializer_range: float = 0.02  # std of the normal init
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0  # its embedding row starts at zero and gets no gradient
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    use_cache: bool = True
    classifier_dropout: float | None = None  # for classification heads; unused here, kept for config.json
    is_decoder: bool = False  # True: causal self-attention (required to decode)
    add_cross_attention: bool = False  # True: a cross-attention block per layer
    cross_attention_hidden_size: int | None = None  # width of the encoder states; None = hidden_size
    tie_word_embeddings: bool = True  # the LM head's projection is the word embedding matrix
    extra: dict = extra_field()

    # What each field accepts beyond its annotated type (config.py: validate).
    _rules: ClassVar = rules({
        SIZE: ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size"),
        optional(SIZE): ("cross_attention_hidden_size",),
        PROBABILITY: ("hidden_dropout_prob", "attention_probs_dropout_prob"),
        optional(PROBABILITY): ("classifier_dropout",),
        POSITIVE: ("layer_norm_eps",),
        NON_NEGATIVE: ("initializer_range",),
    })

    def _relations(self) -> list[tuple[bool, str]]:
        return [divides(self, "num_attention_heads", "hidden_size")]

    def approx_num_parameters(self) -> int:
        return decoder_parameters(self.vocab_size, self.hidden_size, self.num_hidden_layers, self.intermediate_size,
                                  self.max_position_embeddings, self.cross_attention_hidden_size,
                                  self.add_cross_attention)


class BertDecoderLayer(nn.Module):
    """Post-LN block: causal self-attention, cross-attention (optional), feed-forward; norm after each add."""

    def __init__(self, config: BertConfig):
        super().__init__()
        D, H = config.hidden_size, config.num_attention_heads
        self.self_attn = Attention(D, H, dropout=config.attention_probs_dropout_prob)
        self.self_attn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.cross_attn = self.cross_attn_norm = None
        if config.add_cross_attention:
            # kv_dim: we honour cross_attention_hidden_size. transformers' BERT ignores it (its key/value
            # projections always read hidden_size), so it crashes on wider encoder states; we don't.
            self.cross_attn = Attention(
                D, H, kv_dim=config.cross_attention_hidden_size, dropout=config.attention_probs_dropout_prob
            )
            self.cross_attn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(D, config.intermediate_size)
        self.act = activation(config.hidden_act)
        self.fc2 = nn.Linear(config.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, attention_mask, causal, encoder_hidden_states, encoder_attention_mask, self_cache, cross_cache,
                output_attentions):
        h, self_weights = self.self_attn(
            x, key_padding_mask=attention_mask, causal=causal, cache=self_cache, output_attentions=output_attentions
        )
        x = self.self_attn_norm(x + self.dropout(h))  # (B, S, D)
        cross_weights = None
        if encoder_hidden_states is not None:
            h, cross_weights = self.cross_attn(
                x, encoder_hidden_states, key_padding_mask=encoder_attention_mask, cache=cross_cache,
                output_attentions=output_attentions,
            )
            x = self.cross_attn_norm(x + self.dropout(h))
        h = self.fc2(self.act(self.fc1(x)))
        return self.ffn_norm(x + self.dropout(h)), self_weights, cross_weights


class BertForCausalLM(CausalLMDecoder):
    """BERT with a causal LM head and cross-attention: transformers' `BertLMHeadModel` (also exported as that)."""

    config_class = BertConfig
    shift_labels = True

    def __init__(self, config: BertConfig):
        super().__init__(config)
        if config.add_cross_attention and not config.is_decoder:
            raise ValueError(
                "add_cross_attention=True needs is_decoder=True: cross-attention only makes sense in a decoder "
                "(transformers refuses this config too)."
            )
        position_type = config.extra.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"position_embedding_type={position_type!r} is not supported; only 'absolute' positions are."
            )
        if config.pad_token_id is not None and not 0 <= config.pad_token_id < config.vocab_size:
            raise ValueError(f"pad_token_id={config.pad_token_id} is outside the vocabulary (0..{config.vocab_size - 1}).")
        D = config.hidden_size
        self.embed_tokens = nn.Embedding(config.vocab_size, D, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, D)
        self.embed_token_types = nn.Embedding(config.type_vocab_size, D)
        self.embed_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(BertDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = None  # post-LN: every layer ends normalised
        # The LM head: BERT's masked-LM head, reused unchanged for next-token prediction.
        self.head_dense = nn.Linear(D, D)
        self.head_act = activation(config.hidden_act)
        self.head_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.lm_head = nn.Linear(D, config.vocab_size)  # its own bias (cls.predictions.bias); weight tied
        self.post_init()

    @property
    def causal(self) -> bool:
        return self.config.is_decoder  # read at each call: warm-starting turns a BERT into a decoder

    def embed(self, input_ids: torch.Tensor, past: int, cache: DecoderCache | None, attention_mask) -> torch.Tensor:
        S = input_ids.shape[1]
        positions = torch.arange(past, past + S, device=input_ids.device)  # (S,): continue after the cache
        # Token type 0 for every token: a decoder input is one segment. Summed in transformers' order.
        x = self.embed_tokens(input_ids) + self.embed_token_types.weight[0]
        x = x + self.embed_positions(positions)  # (B, S, D)
        return self.embed_norm(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.head_norm(self.head_act(self.head_dense(x))))  # (B, S, V)


# transformers' name for the same model.
BertLMHeadModel = BertForCausalLM
