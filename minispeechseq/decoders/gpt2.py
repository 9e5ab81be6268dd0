"""GPT-2 as a text decoder with cross-attention: transformers' `GPT2LMHeadModel` with `add_cross_attention=True`.

GPT-2 is already a causal language model; to listen to a speech encoder, each block gets an extra
cross-attention sub-block (with its own LayerNorm, `ln_cross_attn`) between self-attention and the MLP.
Blocks are pre-LN (GPT-2 paper, section 2.3: the norm moved to the *input* of each sub-block, plus a final norm):

    x = x + SelfAttention(norm(x), causal)
    x = x + CrossAttention(norm(x), encoder_states)
    x = x + fc2(act(fc1(norm(x))))
    ...
    logits = lm_head(final_norm(x))                 # lm_head is the token embedding matrix (tied)

Checkpoints store GPT-2's linear layers as `Conv1D` (weights transposed, (in, out)) with q/k/v fused into one
`c_attn`; weights_convert/gpt2.py transposes and splits them, so inside we use plain nn.Linear and the shared
Attention module.

Shape legend: B batch, S tokens (this call), P past tokens (cached), T encoder frames, D width, V vocabulary.
"""

from __future__ import annotations

import math
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
class GPT2Config(ConfigMixin):
    """transformers' GPT2Config fields (config.json names); the defaults are gpt2's (124M) shape.

    The GPT2DoubleHeadsModel `summary_*` keys are not modelled: they live in `extra` and survive a round trip.
    """

    model_type: ClassVar[str] = "gpt2"
    attribute_map: ClassVar[dict[str, str]] = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                                               "num_attention_heads": "n_head", "max_position_embeddings": "n_positions"}

    vocab_size: int = 50257
    n_positions: int = 1024  # the longest sequence (learned position embeddings)
    n_embd: int = 768  # width D
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # MLP width; None = 4 * n_embd
    activation_function: str = "gelu_new"  # the tanh approximation of GELU, as in OpenAI's TF code
    resid_pdrop: float = 0.1  # dropout on each residual branch
    embd_pdrop: float = 0.1  # dropout on the embeddings
    attn_pdrop: float = 0.1  # dropout on attention weights
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True  # divide q·k by sqrt(head size); False = no scaling at all
    scale_attn_by_inverse_layer_idx: bool = False  # also divide q·k by (layer index + 1) (Mistral/Stanford CRFM)
    reorder_and_upcast_attn: bool = False  # fp32 q·k and softmax in mixed precision; our softmax always is fp32
    use_cache: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    is_decoder: bool = False  # GPT-2 is causal either way; kept for config.json
    add_cross_attention: bool = False  # True: a cross-attention sub-block per layer
    cross_attention_hidden_size: int | None = None  # width of the encoder states; None = n_embd
    tie_word_embeddings: bool = True  # lm_head is the token embedding matrix
    extra: dict = extra_field()

    # What each field accepts beyond its annotated type (config.py: validate).
    _rules: ClassVar = rules({
        SIZE: ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"),
        optional(SIZE): ("n_inner", "cross_attention_hidden_size"),
        PROBABILITY: ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
        POSITIVE: ("layer_norm_epsilon",),
        NON_NEGATIVE: ("initializer_range",),
    })

    def _relations(self) -> list[tuple[bool, str]]:
        return [divides(self, "n_head", "n_embd")]

    def approx_num_parameters(self) -> int:
        return decoder_parameters(self.vocab_size, self.n_embd, self.n_layer, self.n_inner or 4 * self.n_embd,
                                  self.n_positions, self.cross_attention_hidden_size, self.add_cross_attention)


def attention_scale(config: GPT2Config, layer_idx: int) -> float:
    """The factor on q·k in layer `layer_idx` (0-based), self- and cross-attention alike (transformers' GPT2Attention)."""
    scale = (config.n_embd // config.n_head) ** -0.5 if config.scale_attn_weights else 1.0
    if config.scale_attn_by_inverse_layer_idx:
        scale /= layer_idx + 1
    return scale


class GPT2DecoderLayer(nn.Module):
    """Pre-LN block: causal self-attention, cross-attention (optional), MLP; each sub-block adds to the residual."""

    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        D, H, eps = config.n_embd, config.n_head, config.layer_norm_epsilon
        scale = attention_scale(config, layer_idx)
        self.self_attn_norm = nn.LayerNorm(D, eps=eps)
        self.self_attn = Attention(D, H, dropout=config.attn_pdrop, scale=scale)
        self.cross_attn = self.cross_attn_norm = None
        if config.add_cross_attention:
            self.cross_attn_norm = nn.LayerNorm(D, eps=eps)
            # kv_dim: we honour cross_attention_hidden_size. transformers' GPT-2 ignores it (its fused k/v
            # projection always reads n_embd), so it crashes on wider encoder states; we don't.
            self.cross_attn = Attention(
                D, H, kv_dim=config.cross_attention_hidden_size, dropout=config.attn_pdrop, scale=scale
            )
        self.ffn_norm = nn.LayerNorm(D, eps=eps)
        inner = config.n_inner if config.n_inner is not None else 4 * D
        self.fc1 = nn.Linear(D, inner)
        self.act = activation(config.activation_function)
        self.fc2 = nn.Linear(inner, D)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, attention_mask, causal, encoder_hidden_states, encoder_attention_mask, self_cache, cross_cache,
                output_attentions):
        h, self_weights = self.self_attn(
            self.self_attn_norm(x), key_padding_mask=attention_mask, causal=causal, cache=self_cache,
            output_attentions=output_attentions,
        )
        x = x + self.dropout(h)  # (B, S, D)
        cross_weights = None
        if encoder_hidden_states is not None:
            h, cross_weights = self.cross_attn(
                self.cross_attn_norm(x), encoder_hidden_states, key_padding_mask=encoder_attention_mask,
                cache=cross_cache, output_attentions=output_attentions,
            )
            x = x + self.dropout(h)
        x = x + self.dropout(self.fc2(self.act(self.fc1(self.ffn_norm(x)))))
        return x, self_weights, cross_weights


class GPT2LMHeadModel(CausalLMDecoder):
    """GPT-2 with its (tied) LM head, and cross-attention when the config asks for it."""

    config_class = GPT2Config
    shift_labels = True

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        D = config.n_embd
        self.embed_tokens = nn.Embedding(config.vocab_size, D)
        self.embed_positions = nn.Embedding(config.n_positions, D)
        self.dropout = nn.Dropout(config.embd_pdrop)
        self.layers = nn.ModuleList(GPT2DecoderLayer(config, i) for i in range(config.n_layer))
        self.final_norm = nn.LayerNorm(D, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(D, config.vocab_size, bias=False)  # tied to embed_tokens
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # GPT-2 paper, section 2.3: "scale the weights of residual layers at initialization by 1/sqrt(N)", N the
        # number of residual branches (2 per block); transformers does it to every c_proj (attention out, MLP out).
        # `apply` visits children first, so this overrides the plain init just given to those Linears.
        residual_std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        if isinstance(module, Attention):
            module.out_proj.weight.normal_(0.0, residual_std)
        elif isinstance(module, GPT2DecoderLayer):
            module.fc2.weight.normal_(0.0, residual_std)

    def embed(self, input_ids: torch.Tensor, past: int, cache: DecoderCache | None, attention_mask) -> torch.Tensor:
        S = input_ids.shape[1]
        # Positions continue after the cache and ignore padding, as in transformers (right padding is harmless).
        positions = torch.arange(past, past + S, device=input_ids.device)  # (S,)
        return self.embed_tokens(input_ids) + self.embed_positions(positions)  # (B, S, D)
