"""What every text decoder shares: the loop over layers, the final norm, the head, the outputs, and the checks.

A decoder is a causal language model whose layers also attend to the speech encoder:

    x = dropout(embed(input_ids))                       # token + position embeddings   (each architecture's own)
    for layer in layers:                                # self-attention, cross-attention, feed-forward
        x = layer(x, ..., encoder_hidden_states, ...)   #                                (each architecture's own)
    x = final_norm(x)                                   # pre-LN models only (GPT-2, mBART)
    logits = head(x)                                    # LM head, usually tied to the embeddings

`CausalLMDecoder.forward` below is that loop, written once. Each decoder file (bert.py, gpt2.py, bart.py,
speech2text2.py) shows only what differs between architectures: its config, its `embed`, its layer, its
`head`, and which loss convention transformers gives it (`shift_labels`).

Every layer has the same signature:
    layer(x, attention_mask, causal, encoder_hidden_states, encoder_attention_mask, self_cache, cross_cache,
          output_attentions) -> (x, self-attention weights or None, cross-attention weights or None)

Shape legend: B batch (decoder rows), S new tokens, P past (cached) tokens, B_src encoder rows, T encoder frames,
D width, V vocabulary.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..cache import DecoderCache
from ..layers import causal_lm_loss, check_positions, check_vocabulary
from ..modeling import DecoderOutput, PreTrainedModel


class CausalLMDecoder(PreTrainedModel):
    """Base of the decoders. A subclass's __init__ sets `embed_tokens`, `dropout` (on the embeddings), `layers`,
    `final_norm` (None for post-LN models) and whatever its `embed` and `head` use, then calls `post_init()`."""

    # transformers' loss convention: True = position t predicts label t+1 (BERT, GPT-2: labels may be the input
    # ids); False = logits[:, t] is compared with labels[:, t] (BART, mBART, Speech2Text2).
    shift_labels: ClassVar[bool]

    embed_tokens: nn.Embedding
    dropout: nn.Dropout
    layers: nn.ModuleList
    final_norm: nn.LayerNorm | None

    # ------------------------------------------------------------------------------ what a subclass defines
    def embed(
        self, input_ids: torch.Tensor, past: int, cache: DecoderCache | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """input_ids (B, S), after `past` cached tokens -> embeddings (B, S, D), before dropout."""
        raise NotImplementedError

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> logits (B, S, V)."""
        return self.lm_head(x)

    @property
    def max_positions(self) -> int:
        """How many tokens the decoder has positions for."""
        return self.config.max_position_embeddings

    @property
    def causal(self) -> bool:
        """Whether self-attention looks only at earlier tokens (BERT decides it by is_decoder)."""
        return True

    # ------------------------------------------------------------------------------------------- shared
    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def has_cross_attention(self) -> bool:
        return all(layer.cross_attn is not None for layer in self.layers)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.layers))

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
        """input_ids (B, S); attention_mask (B, P + S), 1 = real token; encoder_hidden_states (B_src, T, D_enc),
        one row per utterance (B_src divides B: adjacent decoder rows, e.g. beams, may share one);
        encoder_attention_mask (B_src, T), 1 = real frame. With a cache, positions continue after the cached
        tokens. Returns logits (B, S, V), or only the last `logits_to_keep` positions."""
        past = check_inputs(self, input_ids, attention_mask, encoder_hidden_states, encoder_attention_mask, cache)
        x = self.dropout(self.embed(input_ids, past, cache, attention_mask))  # (B, S, D)

        hidden_states, self_attns, cross_attns = [], [], []
        layerdrop = getattr(self.config, "decoder_layerdrop", 0.0)
        for i, layer in enumerate(self.layers):
            hidden_states.append(x)  # each layer's input (transformers' convention, also for skipped layers)
            if self.training and layerdrop > 0 and torch.rand(()) < layerdrop:
                continue  # LayerDrop (Fan et al., 2019): skip the whole layer during training
            x, self_w, cross_w = layer(
                x, attention_mask, self.causal, encoder_hidden_states, encoder_attention_mask,
                cache.self_attn[i] if cache is not None else None,
                cache.cross_attn[i] if cache is not None else None,
                output_attentions,
            )
            self_attns.append(self_w)
            cross_attns.append(cross_w)
        if self.final_norm is not None:
            x = self.final_norm(x)
        hidden_states.append(x)  # the last entry is the final output, normalised where the model has a final norm

        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]  # (B, n, D): generation only needs the last position
        logits = self.head(x)  # (B, S, V)
        return DecoderOutput(
            logits=logits,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(self_attns) if output_attentions else None,
            cross_attentions=tuple(cross_attns) if output_attentions and encoder_hidden_states is not None else None,
            cache=cache,
            loss=causal_lm_loss(logits, labels, shift=self.shift_labels) if labels is not None else None,
        )

    def post_init(self) -> None:
        super().post_init()
        if self.config.tie_word_embeddings:  # the default of all four: the LM head *is* the embedding matrix
            self.lm_head.weight = self.embed_tokens.weight


# ------------------------------------------------------------------------------------------- input checks
def check_inputs(decoder: CausalLMDecoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 encoder_hidden_states: torch.Tensor | None, encoder_attention_mask: torch.Tensor | None,
                 cache: DecoderCache | None) -> int:
    """Clear errors for the mistakes a caller can make with the decoder interface; returns the number of cached
    (past) tokens. (The vocabulary check costs one host sync; it runs once per call, not per layer.)"""
    past = cache.seq_len if cache is not None else 0
    name = type(decoder).__name__
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, tokens), got shape {tuple(input_ids.shape)}.")
    B, S = input_ids.shape
    check_vocabulary(input_ids, decoder.config.vocab_size, "input_ids",
                     "is the tokenizer the one this model was trained with?")
    check_positions(past + S, decoder.max_positions, f"{past} cached + {S} new tokens", "generate fewer tokens")
    if attention_mask is not None and tuple(attention_mask.shape) != (B, past + S):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected ({B}, {past + S}): "
            "one entry per token, cached tokens included."
        )
    # Each encoder row may serve several adjacent decoder rows (the beams of one utterance): see attention.py.
    if encoder_hidden_states is not None and (
        encoder_hidden_states.shape[0] == 0 or B % encoder_hidden_states.shape[0] != 0
    ):
        raise ValueError(
            f"encoder_hidden_states has batch {encoder_hidden_states.shape[0]} but input_ids has {B}; give one "
            "encoder row per decoder row, or one per group of adjacent rows (the beams of an utterance)."
        )
    if (
        encoder_attention_mask is not None
        and encoder_hidden_states is not None
        and tuple(encoder_attention_mask.shape) != tuple(encoder_hidden_states.shape[:2])
    ):
        raise ValueError(
            f"encoder_attention_mask has shape {tuple(encoder_attention_mask.shape)}; expected "
            f"{tuple(encoder_hidden_states.shape[:2])} (batch, frames) like encoder_hidden_states."
        )
    if cache is not None and len(cache.self_attn) != len(decoder.layers):
        raise ValueError(f"The cache has {len(cache.self_attn)} layers but this {name} has {len(decoder.layers)}; "
                         "make it with model.new_cache().")
    if cache is not None and not decoder.causal:
        raise ValueError(f"This {name} attends in both directions (is_decoder=False), so it cannot decode token "
                         "by token with a cache; set is_decoder=True in its config.")
    if encoder_hidden_states is not None and not decoder.has_cross_attention:
        raise ValueError(f"encoder_hidden_states were given but this {name} has no cross-attention; build it "
                         "with add_cross_attention=True (and is_decoder=True) in its config.")
    return past
