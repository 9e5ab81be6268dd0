"""The speech encoders: wav2vec 2.0 (arXiv:2006.11477) and HuBERT (arXiv:2106.07447), read top to bottom.

A waveform becomes contextual features in six steps, in the order this file defines them:

    samples (B, L) --FeatureEncoder-->  conv frames (B, T, C)       7 strided convs: one frame per 20 ms
                   --FeatureProjection-> (B, T, D)                  LayerNorm + Linear to the model width
                   --SpecAugment-->      (B, T, D)                  training only: mask spans of frames
                   --PositionalConv-->   (B, T, D)                  a wide grouped conv adds relative position
                   --EncoderLayer x N--> (B, T, D)                  transformer layers (post-LN or pre-LN)
                   --Adapter-->          (B, T', D_out)             optional strided convs (XLS-R translation)

HuBERT is the same network trained with another objective, so both models are one class with two configs.

Padding. A batch of waveforms of different lengths comes with a sample-level `attention_mask` (B, L). It is
reduced to frames with the conv output-length formula (`frame_attention_mask`); padded frames are zeroed
before the positional conv and never attended to, so they cannot reach valid frames. Rows padded on the left
are first moved right (`padding_to_the_right`), since everything downstream counts a row's frames from its
start (as transformers does, which misreads left padding). Any other mask, 0s between 1s included, is read as
transformers reads it: the row's length is its count of ones, its real samples first. One exception is
inherited from the checkpoints themselves: "group" feature encoders (wav2vec2-base) normalise the first conv
layer over the whole waveform, padding included, so their padded outputs differ slightly from unpadded ones;
facebook recommends not padding them at all (transformers' Wav2Vec2FeatureExtractor docs). We match
transformers there rather than change what the weights were trained with.

Shape legend: B batch, L samples, T frames, T' frames after the adapter, C conv channels, D model width,
H heads, K kernel size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import Attention
from .batching import check_mask_values
from .layers import activation
from .modeling import EncoderOutput, PreTrainedModel
from .wav2vec2_config import HubertConfig, Wav2Vec2Config


# --------------------------------------------------------------------------------------- 1. conv features
def conv_output_length(length: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    # torch.nn.Conv1d without padding: floor((L - K) / stride) + 1.
    return torch.div(length - kernel, stride, rounding_mode="floor") + 1


class FeatureEncoder(nn.Module):
    """Raw samples -> one C-dim frame every prod(conv_stride) samples (320 = 20 ms at 16 kHz)."""

    def __init__(self, config: Wav2Vec2Config | HubertConfig):
        super().__init__()
        self.layers = nn.ModuleList()
        in_dim = 1
        for i, (dim, k, s) in enumerate(zip(config.conv_dim, config.conv_kernel, config.conv_stride)):
            layer = nn.Module()
            layer.conv = nn.Conv1d(in_dim, dim, k, stride=s, bias=config.conv_bias)
            if config.feat_extract_norm == "layer":
                layer.norm = nn.LayerNorm(dim)  # over channels, per frame (eps 1e-5 as in the checkpoints)
            elif i == 0:
                # One group per channel: each channel normalised over time, over the whole waveform.
                layer.norm = nn.GroupNorm(dim, dim)
            self.layers.append(layer)
            in_dim = dim
        self.act = activation(config.feat_extract_activation)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples[:, None, :]  # (B, L) -> (B, 1, L): one input channel
        for layer in self.layers:
            x = layer.conv(x)  # (B, C, T_i)
            norm = getattr(layer, "norm", None)
            if isinstance(norm, nn.LayerNorm):
                x = norm(x.transpose(1, 2)).transpose(1, 2)  # LayerNorm wants channels last: (B, T_i, C) and back
            elif norm is not None:
                x = norm(x)
            x = self.act(x)
        return x.transpose(1, 2)  # (B, C, T) -> (B, T, C)


# ---------------------------------------------------------------------------------------- 2. projection
class FeatureProjection(nn.Module):
    """(B, T, C) -> (B, T, D). Also returns the normalised conv features (wav2vec2's `extract_features`)."""

    def __init__(self, in_dim: int, dim: int, eps: float, dropout: float, use_norm: bool = True):
        super().__init__()
        # HuBERT checkpoints converted with feat_proj_layer_norm=False have no norm here.
        self.norm = nn.LayerNorm(in_dim, eps=eps) if use_norm else None
        self.proj = nn.Linear(in_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm(features) if self.norm is not None else features
        return self.dropout(self.proj(normed)), normed


# -------------------------------------------------------------------------------------- 3. SpecAugment
def sample_span_starts(
    lengths: list[int], size: int, mask_prob: float, span: int, min_spans: int,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Start indices of the masked spans of each sequence (SpecAugment, arXiv:1904.08779, as in wav2vec 2.0).

    A sequence of n valid positions (of `size`, padding included) gets int(mask_prob * n / span + u) spans,
    u ~ U(0, 1) drawn once per batch (probabilistic rounding, as fairseq), at least `min_spans`, at most
    size // span and at most n - span + 1 (the number of distinct starts that fit); starts are distinct and
    every span lies inside the n valid positions. Spans may overlap, so fewer than mask_prob * n may be masked.
    transformers draws with numpy's global RNG; we use torch's, so masks differ but their statistics agree.
    """
    u = torch.rand((), generator=generator).item()
    starts = []
    for n in lengths:
        count = min(max(int(mask_prob * n / span + u), min_spans), size // span)
        count = min(count, max(n - span + 1, 0))  # only n - span + 1 distinct starts keep the span inside
        perm = torch.randperm(max(n - span + 1, 0), generator=generator)
        starts.append(perm[:count])
    return starts


def spans_to_mask(starts: list[torch.Tensor], span: int, size: int) -> torch.Tensor:
    """(B, size) bool mask, True inside any span [start, start + span)."""
    mask = torch.zeros(len(starts), size, dtype=torch.bool)
    for b, s in enumerate(starts):
        for start in s.tolist():
            mask[b, start : start + span] = True
    return mask


# ----------------------------------------------------------------------------------- 4. positional conv
class PositionalConvEmbedding(nn.Module):
    """Relative position from a wide grouped convolution over time (wav2vec 2.0, section 2).

    The kernel is weight-normalised (Salimans & Kingma 2016) over dim 2: weight = g * v / ||v||, with one g per
    kernel tap and the norm taken over the other two dims. We keep g and v as our own two parameters (as the
    checkpoints store them) and compute the effective weight in `kernel_weight()`, so training sees the same
    parametrisation as fairseq and transformers, and loading needs no torch parametrisation machinery.
    HuBERT's `conv_pos_batch_norm` variant instead BatchNorms the input and has a plain `weight`.
    """

    def __init__(self, dim: int, kernel: int, groups: int, act_name: str, batch_norm: bool = False):
        super().__init__()
        if dim % groups != 0:
            raise ValueError(f"hidden_size ({dim}) must be divisible by num_conv_pos_embedding_groups ({groups}).")
        self.kernel, self.groups = kernel, groups
        shape = (dim, dim // groups, kernel)  # (D, D / groups, K)
        if batch_norm:
            self.batch_norm = nn.BatchNorm1d(dim)
            self.weight = nn.Parameter(torch.empty(shape))
        else:
            self.batch_norm = None
            self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))  # (1, 1, K): one scale per tap
            self.weight_v = nn.Parameter(torch.empty(shape))  # the direction
        self.bias = nn.Parameter(torch.zeros(dim))
        self.act = activation(act_name)

    def kernel_weight(self) -> torch.Tensor:
        if self.batch_norm is not None:
            return self.weight
        # Two CPU speed-ups with the same numbers: ||v|| as sqrt(sum of squares), since v.norm(dim=(0, 1)) reduces
        # over the leading dims several times slower; and g / ||v|| (K numbers) taken before the product, so the
        # full-size kernel goes through one product, not two.
        norm = self.weight_v.square().sum(dim=(0, 1), keepdim=True).sqrt()  # (1, 1, K)
        return self.weight_v * (self.weight_g / norm)  # (D, D / groups, K)

    @torch.no_grad()
    def reset_direction(self, v: torch.Tensor) -> None:
        """Set the effective weight to `v` (g = ||v|| per tap), as torch's weight_norm does on creation."""
        if self.batch_norm is not None:
            self.weight.copy_(v)
        else:
            self.weight_v.copy_(v)
            self.weight_g.copy_(v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, T, D) -> (B, D, T)
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x = F.conv1d(x, self.kernel_weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            # K//2 zeros on both sides give T + 1 outputs for an even kernel; fairseq drops the last one
            # (its SamePad module), so the output keeps T frames.
            x = x[:, :, :-1]
        return self.act(x).transpose(1, 2)  # (B, D, T) -> (B, T, D)


# ------------------------------------------------------------------------------------ 5. transformer
class EncoderLayer(nn.Module):
    """Self-attention + feed-forward. post-LN (base): norm after each residual add; pre-LN ("stable layer
    norm", large / XLS-R): norm before each block, and the model adds one final LayerNorm after the last layer."""

    def __init__(self, config: Wav2Vec2Config | HubertConfig):
        super().__init__()
        D = config.hidden_size
        self.pre_norm = config.do_stable_layer_norm
        self.self_attn = Attention(D, config.num_attention_heads, dropout=config.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(D, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, D)
        self.ffn_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.act = activation(config.hidden_act)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.act_dropout = nn.Dropout(config.activation_dropout)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act_dropout(self.act(self.fc1(x)))))

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            h, weights = self.self_attn(
                self.self_attn_norm(x), key_padding_mask=mask, output_attentions=output_attentions
            )
            x = x + self.dropout(h)
            x = x + self.feed_forward(self.ffn_norm(x))
        else:
            h, weights = self.self_attn(x, key_padding_mask=mask, output_attentions=output_attentions)
            x = self.self_attn_norm(x + self.dropout(h))
            x = self.ffn_norm(x + self.feed_forward(x))
        return x, weights


# ---------------------------------------------------------------------------------------- 6. adapter
class Adapter(nn.Module):
    """Strided conv + GLU layers after the transformer: each halves (adapter_stride) the number of frames, so
    a text decoder cross-attends to a shorter sequence. An optional Linear + LayerNorm first changes the width."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__()
        D, D_out = config.hidden_size, config.output_hidden_size or config.hidden_size
        self.proj = nn.Linear(D, D_out) if D_out != D else None
        self.proj_norm = nn.LayerNorm(D_out) if D_out != D else None  # eps 1e-5: transformers ignores layer_norm_eps here
        # padding=1 whatever the kernel, as transformers has it; the length formula below assumes kernel 3.
        self.layers = nn.ModuleList(
            nn.Conv1d(D_out, 2 * D_out, config.adapter_kernel_size, stride=config.adapter_stride, padding=1)
            for _ in range(config.num_adapter_layers)
        )
        self.layerdrop = config.layerdrop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is not None:
            x = self.proj_norm(self.proj(x))
        x = x.transpose(1, 2)  # (B, T, D_out) -> (B, D_out, T)
        for conv in self.layers:
            if self.training and torch.rand([]).item() < self.layerdrop:
                continue
            x = F.glu(conv(x), dim=1)  # (B, 2 D_out, T') -> (B, D_out, T'): half the channels gate the other half
        return x.transpose(1, 2)  # (B, T', D_out)


# ------------------------------------------------------------------------------------------ the model
class _SpeechEncoder(PreTrainedModel):
    """Everything wav2vec2 and HuBERT share; the two public classes below only differ in init and config."""

    def __init__(self, config: Wav2Vec2Config | HubertConfig):
        super().__init__(config)
        if getattr(config, "adapter_attn_dim", None) is not None:
            raise ValueError(
                "adapter_attn_dim is set (MMS per-language attention adapters), which minispeechseq does not "
                "implement; use a checkpoint without them."
            )
        D = config.hidden_size
        self.feature_encoder = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(
            config.conv_dim[-1], D, config.layer_norm_eps, config.feat_proj_dropout,
            use_norm=getattr(config, "feat_proj_layer_norm", True),
        )
        if config.mask_time_prob > 0 or config.mask_feature_prob > 0:
            # The learned vector that replaces masked frames. Only present when masking is configured, as in
            # transformers, so strict loading sees the same set of tensors.
            self.masked_spec_embed = nn.Parameter(torch.empty(D))
        self.pos_conv = PositionalConvEmbedding(
            D, config.num_conv_pos_embeddings, config.num_conv_pos_embedding_groups,
            config.feat_extract_activation, batch_norm=getattr(config, "conv_pos_batch_norm", False),
        )
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)  # after the pos conv (post-LN) or the last layer (pre-LN)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.adapter = Adapter(config) if getattr(config, "add_adapter", False) else None
        self.gradient_checkpointing = False
        self.post_init()

    # ------------------------------------------------------------------------------------------ forward
    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        mask_time_indices: torch.Tensor | None = None,
    ) -> EncoderOutput:
        """input_values (B, L) float samples (or (L,) for one waveform); attention_mask (B, L), 1 = real sample.
        Padding may be on either side; the output is right-padded (see `padding_to_the_right`).

        hidden_states (if asked): the input of each layer, then the encoder's final output *before the adapter*.
        For pre-LN models that final entry is after the final LayerNorm (as in transformers 4.x); transformers
        5.x returns the pre-norm state there instead, which no consumer of "the last layer's output" expects.
        mask_time_indices (B, T) bool: frames to replace by masked_spec_embed (pre-training), in any mode.
        """
        input_values, attention_mask = check_inputs(self, input_values, attention_mask)
        features = self.feature_encoder(input_values)  # (B, T, C)
        B, T, _ = features.shape
        mask = None if attention_mask is None else self.frame_attention_mask(T, attention_mask, with_adapter=False)
        x, extract_features = self.feature_projection(features)  # (B, T, D), (B, T, C)
        lengths = [T] * B if mask is None else mask.sum(-1).tolist()
        x = self.spec_augment(x, lengths, mask_time_indices)

        if mask is not None:
            x = x * mask[:, :, None].to(x.dtype)  # padded frames to 0, so the positional conv cannot carry them
        x = x + self.pos_conv(x)
        if not self.config.do_stable_layer_norm:
            x = self.norm(x)
        x = self.dropout(x)

        hidden_states, attentions = [], []
        for layer in self.layers:
            if output_hidden_states:
                hidden_states.append(x)
            if self.training and torch.rand([]).item() < self.config.layerdrop:
                continue  # LayerDrop (arXiv:1909.11556): skip the whole layer
            if self.gradient_checkpointing and self.training:
                x, weights = checkpoint(layer, x, mask, output_attentions, use_reentrant=False)
            else:
                x, weights = layer(x, mask, output_attentions)
            if output_attentions:
                attentions.append(weights)
        if self.config.do_stable_layer_norm:
            x = self.norm(x)
        if output_hidden_states:
            hidden_states.append(x)
        if self.adapter is not None:
            x = self.adapter(x)  # (B, T', D_out)
        return EncoderOutput(
            last_hidden_state=x,
            extract_features=extract_features,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


    # ------------------------------------------------------------------ what the encoder-decoder needs
    @property
    def output_size(self) -> int:
        """Width of last_hidden_state: the adapter's output width when there is one, else hidden_size."""
        if self.adapter is not None:
            return self.config.output_hidden_size or self.config.hidden_size
        return self.config.hidden_size

    @property
    def receptive_field(self) -> int:
        """The fewest samples that give one frame (400 at the default config: 25 ms at 16 kHz)."""
        n = 1
        for k, s in reversed(list(zip(self.config.conv_kernel, self.config.conv_stride))):
            n = (n - 1) * s + k
        return n

    @property
    def samples_per_frame(self) -> int:
        """The hop between output frames, in samples: the product of the conv strides (and the adapter's)."""
        hop = math.prod(self.config.conv_stride)
        if self.adapter is not None:
            hop *= self.config.adapter_stride ** self.config.num_adapter_layers
        return hop

    def output_lengths(self, sample_lengths: torch.Tensor, with_adapter: bool = True) -> torch.Tensor:
        """Frames produced from `sample_lengths` samples: the conv formula per layer, then the adapter's strides."""
        lengths = sample_lengths
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            lengths = conv_output_length(lengths, k, s)
        if with_adapter and self.adapter is not None:
            for _ in range(self.config.num_adapter_layers):
                # kernel 3 with padding 1 is, for the length, a kernel-1 conv: as transformers computes it.
                lengths = conv_output_length(lengths, 1, self.config.adapter_stride)
        return lengths

    def frame_attention_mask(
        self, num_frames: int, attention_mask: torch.Tensor, with_adapter: bool = True
    ) -> torch.LongTensor:
        """The sample-level mask (B, L) reduced to frames (B, num_frames): 1 for the first output_lengths frames.

        transformers' `_get_feature_vector_attention_mask`; like it, we count the mask's ones (right padding).
        """
        lengths = self.output_lengths(attention_mask.sum(-1), with_adapter=with_adapter)  # (B,)
        frames = torch.arange(num_frames, device=attention_mask.device)[None, :]  # (1, num_frames)
        return (frames < lengths[:, None]).long()  # (B, num_frames)

    # ---------------------------------------------------------------------------------- training helpers
    def freeze_feature_encoder(self) -> None:
        """Stop training the conv feature encoder (standard when fine-tuning wav2vec2)."""
        for p in self.feature_encoder.parameters():
            p.requires_grad = False

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each transformer layer in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    def spec_augment(
        self, x: torch.Tensor, frame_lengths: list[int], mask_time_indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """SpecAugment on the projected features (B, T, D): spans of frames become `masked_spec_embed`,
        spans of channels become 0. Only in training, or when `mask_time_indices` is given."""
        c = self.config
        if not c.apply_spec_augment:
            return x
        B, T, D = x.shape
        if mask_time_indices is None and self.training and c.mask_time_prob > 0:
            # Spans stay inside each utterance's valid frames. (transformers' HubertModel forgets to pass the
            # attention mask here and can mask padding instead of speech; we do it the wav2vec2 way for both.)
            starts = sample_span_starts(frame_lengths, T, c.mask_time_prob, c.mask_time_length, c.mask_time_min_masks)
            mask_time_indices = spans_to_mask(starts, c.mask_time_length, T).to(x.device)
        if mask_time_indices is not None:
            x = torch.where(mask_time_indices[:, :, None], self.masked_spec_embed.to(x.dtype), x)
        if self.training and c.mask_feature_prob > 0:
            starts = sample_span_starts([D] * B, D, c.mask_feature_prob, c.mask_feature_length, c.mask_feature_min_masks)
            channels = spans_to_mask(starts, c.mask_feature_length, D).to(x.device)  # (B, D)
            x = x.masked_fill(channels[:, None, :], 0.0)  # the same channels in every frame
        return x


class Wav2Vec2Model(_SpeechEncoder):
    """wav2vec 2.0 / XLS-R encoder. `Wav2Vec2Model.from_pretrained(folder)` reads transformers checkpoints of
    Wav2Vec2Model, Wav2Vec2ForCTC and Wav2Vec2ForPreTraining (their heads are skipped, and logged; the
    pre-training head loads in Wav2Vec2ForPreTraining, wav2vec2_pretraining.py)."""

    config_class = Wav2Vec2Config

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers' Wav2Vec2PreTrainedModel._init_weights, after fairseq's wav2vec2 init.
        if isinstance(module, PositionalConvEmbedding):
            # std = 2 / sqrt(K * D) with D the full input width (fairseq uses the same, groups ignored).
            # Deliberate difference: transformers 5 calls init.normal_ on the weight-normed conv's `weight`,
            # which under torch's weight_norm parametrization is computed from g and v, so the call changes
            # nothing and torch's default conv init stays. We give the fairseq init it means to give.
            D = module.bias.shape[0]
            w = torch.empty(D, D // module.groups, module.kernel)  # (D, D / groups, K)
            module.reset_direction(nn.init.normal_(w, 0.0, 2 * math.sqrt(1 / (module.kernel * D))))
            nn.init.zeros_(module.bias)
        elif isinstance(module, FeatureProjection):
            k = math.sqrt(1 / module.proj.in_features)  # torch's default Linear init
            nn.init.uniform_(module.proj.weight, -k, k)
            nn.init.uniform_(module.proj.bias, -k, k)
        elif isinstance(module, nn.Conv1d):  # the feature encoder's and the adapter's convs
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                k = math.sqrt(module.groups / (module.in_channels * module.kernel_size[0]))
                nn.init.uniform_(module.bias, -k, k)
        elif isinstance(module, _SpeechEncoder) and hasattr(module, "masked_spec_embed"):
            nn.init.uniform_(module.masked_spec_embed)
        else:
            super()._init_weights(module)


class HubertModel(_SpeechEncoder):
    """HuBERT encoder. `HubertModel.from_pretrained(folder)` reads HubertModel and HubertForCTC checkpoints.
    `extract_features` is the (normalised, if feat_proj_layer_norm) conv output, as for wav2vec2; transformers'
    HubertModel does not return it."""

    config_class = HubertConfig

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers' HubertPreTrainedModel._init_weights: kaiming for every conv (the positional one too),
        # zero conv biases, the default normal(0, initializer_range) for Linear layers.
        if isinstance(module, PositionalConvEmbedding):
            D = module.bias.shape[0]
            module.reset_direction(nn.init.kaiming_normal_(torch.empty(D, D // module.groups, module.kernel)))
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv1d):
            nn.init.kaiming_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, _SpeechEncoder) and hasattr(module, "masked_spec_embed"):
            nn.init.uniform_(module.masked_spec_embed)
        else:
            super()._init_weights(module)


# ------------------------------------------------------------------------------------- input checks
def check_inputs(
    encoder: _SpeechEncoder, input_values: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The encoder's input checked and made canonical: a (B, L) batch in the weights' dtype and, with a mask,
    0/1 values and right padding. Each refusal is one sentence."""
    if not isinstance(input_values, torch.Tensor):
        raise ValueError(  # noqa: TRY004 (the project's rule: bad user input is a ValueError)
            f"input_values must be a torch.Tensor of audio samples, got {type(input_values).__name__}; "
            "use torch.as_tensor(...) or Wav2Vec2FeatureExtractor(..., return_tensors='pt')."
        )
    if input_values.dim() == 1:  # one unbatched waveform: a batch of one (documented convenience)
        input_values = input_values[None]
        if attention_mask is not None and attention_mask.dim() == 1:
            attention_mask = attention_mask[None]
    if input_values.dim() != 2:
        raise ValueError(
            f"input_values has shape {tuple(input_values.shape)}; expected (batch, samples) or (samples,) "
            "of raw mono audio."
        )
    if not input_values.is_floating_point():
        raise ValueError(
            f"input_values has dtype {input_values.dtype}; expected float samples (normalised audio, e.g. from "
            "Wav2Vec2FeatureExtractor), not integers."
        )
    if input_values.numel() == 0:
        raise ValueError(f"input_values is empty (shape {tuple(input_values.shape)}); pass at least one waveform.")
    if not torch.isfinite(input_values).all():
        raise ValueError("input_values contains NaN or infinite samples; clean or clip the audio first.")
    # float64 / float16 audio into a float32 model (or float32 into a bf16 one): cast to the weights' dtype, as
    # transformers' ASR pipeline does with the feature extractor's output (`processed.to(dtype=self.dtype)`).
    # transformers' model itself fails there with torch's "expected scalar type" error.
    input_values = input_values.to(encoder.feature_encoder.layers[0].conv.weight.dtype)
    need = encoder.receptive_field
    if input_values.shape[1] < need:
        raise ValueError(
            f"The audio is {input_values.shape[1]} samples long, shorter than the feature encoder's receptive "
            f"field of {need} samples (one frame); pad or reject clips shorter than that."
        )
    if attention_mask is not None:
        if attention_mask.shape != input_values.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_values has "
                f"{tuple(input_values.shape)}; the mask needs one entry per sample (1 = real, 0 = padding)."
            )
        attention_mask = binary_mask(attention_mask)
        valid = attention_mask.sum(-1)
        if (valid < need).any():
            b = int((valid < need).nonzero()[0])
            raise ValueError(
                f"Waveform {b} of the batch has {int(valid[b])} valid samples according to attention_mask, "
                f"fewer than the receptive field of {need} samples; it would produce no frame."
            )
        input_values, attention_mask = padding_to_the_right(input_values, attention_mask)
    return input_values, attention_mask


def binary_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """The mask as 0/1 integers, other values refused (batching.check_mask_values: transformers does not check)."""
    check_mask_values(attention_mask)
    return attention_mask.long()


def padding_to_the_right(input_values: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the left (padding_side="left") moved so that their real samples come first.

    Everything after this reads a row's length as the count of its mask's ones, and its frames as the first
    ones (as transformers does, which therefore misreads left padding: the real frames at the end are masked
    and the padding attended to). Shifting the samples rather than the frame mask also keeps the conv frame grid
    where it is for the unpadded waveform, so a left-padded row gives the same frames as alone. Any other row,
    holes between its 1s included, is left as it is and read as transformers reads it. The encoder's output is
    right-padded either way.
    """
    B, L = attention_mask.shape
    first = attention_mask.argmax(-1)  # (B,) the first real sample (every row has some: checked before)
    count = attention_mask.sum(-1)  # (B,)
    positions = torch.arange(L, device=attention_mask.device)[None, :]  # (1, L)
    one_run = (attention_mask == ((positions >= first[:, None]) & (positions < (first + count)[:, None]))).all(-1)
    # The two readings: a row that opens with 0s and whose 1s are one unbroken run is padding around the audio
    # (left padding), moved here; every other row (opening with a 1, or with 0s between its 1s, as transformers'
    # random test masks have) keeps transformers' reading: count the 1s, real samples first, nothing moved.
    shift = torch.where(one_run, first, torch.zeros_like(first))  # (B,)
    if not shift.any():
        return input_values, attention_mask  # nothing padded on the left: no copy
    index = (positions + shift[:, None]) % L  # (B, L): row b starts reading at its first real sample
    return input_values.gather(1, index), attention_mask.gather(1, index)
