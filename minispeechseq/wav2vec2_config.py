"""Configs of the speech encoders: `Wav2Vec2Config` and `HubertConfig`.

Field names and defaults are the keys and defaults of transformers' `config.json` for these models, i.e. the
*base* model (12 layers, width 768, a group-norm feature encoder and post-LN transformer). A real config.json
therefore reads straight in with `from_pretrained(folder)`; keys not modelled here (task heads, labels,
`architectures`...) are kept in `extra` and written back unchanged.

Both models share one architecture, so their common fields live in one base dataclass; each config adds what
only it has (wav2vec2: the quantizer of pre-training and the adapter; HuBERT: two switches of its variants).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .config import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY, SIZE, SIZES, ConfigMixin, divides, extra_field, \
    one_of, optional, rules

_CONV_TUPLES = ("conv_dim", "conv_stride", "conv_kernel", "tdnn_dim", "tdnn_kernel", "tdnn_dilation")


@dataclass
class _SpeechEncoderConfig(ConfigMixin):
    # ---------------------------------------------------------------------- the transformer
    vocab_size: int | None = 32  # only the CTC head (which we do not load) uses it
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072  # width of each layer's feed-forward block
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1  # after the positional conv, after attention and after the feed-forward block
    activation_dropout: float = 0.1  # inside the feed-forward block, after the activation
    attention_dropout: float = 0.1  # on the attention weights
    feat_proj_dropout: float = 0.0  # after the projection of the conv features to hidden_size
    final_dropout: float = 0.1  # before the CTC head (unused here)
    layerdrop: float = 0.1  # probability of skipping a whole layer in training (arXiv:1909.11556)
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    # "group": GroupNorm on the first conv layer only (wav2vec2-base); "layer": LayerNorm on every conv layer
    # (large, XLS-R). Group norm normalises over the whole waveform, padding included: see Wav2Vec2Model.
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"  # activation of the conv layers and of the positional conv
    # The conv feature encoder: out channels, kernel and stride of each layer. The default stack turns
    # 16 kHz samples into one frame every 320 samples (20 ms) with a receptive field of 400 samples (25 ms).
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False  # the conv layers have biases (True in large / XLS-R checkpoints)
    num_conv_pos_embeddings: int = 128  # kernel size of the convolutional positional embedding
    num_conv_pos_embedding_groups: int = 16  # its number of channel groups
    do_stable_layer_norm: bool = False  # True: pre-LN layers + a final LayerNorm (large, XLS-R); False: post-LN
    # ---------------------------------------------------------------------- SpecAugment (training only)
    apply_spec_augment: bool = True
    mask_time_prob: float = 0.05  # about this fraction of frames is replaced by `masked_spec_embed`
    mask_time_length: int = 10  # frames per masked span
    mask_time_min_masks: int = 2  # at least this many spans per utterance
    mask_feature_prob: float = 0.0  # about this fraction of channels is zeroed, in all frames
    mask_feature_length: int = 10
    mask_feature_min_masks: int = 0
    # ---------------------------------------------------------------------- heads we do not build
    ctc_loss_reduction: str = "sum"
    ctc_zero_infinity: bool = False
    use_weighted_layer_sum: bool = False
    classifier_proj_size: int = 256
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2

    # What each field accepts beyond its annotated type (config.py: validate).
    _rules: ClassVar = rules({
        SIZE: ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "mask_time_length", "mask_feature_length",
               "classifier_proj_size", "adapter_kernel_size", "adapter_stride", "num_adapter_layers",
               "num_codevectors_per_group", "num_codevector_groups", "codevector_dim", "proj_codevector_dim",
               "num_negatives", "xvector_output_dim"),
        optional(SIZE): ("vocab_size", "output_hidden_size"),
        COUNT: ("mask_time_min_masks", "mask_feature_min_masks"),
        PROBABILITY: ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",
                      "final_dropout", "layerdrop", "mask_time_prob", "mask_feature_prob", "feat_quantizer_dropout"),
        POSITIVE: ("layer_norm_eps", "contrastive_logits_temperature"),
        NON_NEGATIVE: ("initializer_range",),
        SIZES: ("conv_dim", "conv_stride", "conv_kernel"),
        one_of("group", "layer"): ("feat_extract_norm",),
        one_of("sum", "mean"): ("ctc_loss_reduction",),
    })

    def __post_init__(self) -> None:
        for name in _CONV_TUPLES:  # JSON gives lists; tuples keep the dataclass comparable and hashable
            value = getattr(self, name, None)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        super().__post_init__()

    def _relations(self) -> list[tuple[bool, str]]:
        lengths = len(self.conv_dim), len(self.conv_kernel), len(self.conv_stride)
        return [
            (len(set(lengths)) == 1, "conv_dim, conv_kernel and conv_stride must have the same, non-zero length (one "
                                     f"entry per conv layer); got {', '.join(map(str, lengths))}."),
            divides(self, "num_attention_heads", "hidden_size"),
            divides(self, "num_conv_pos_embedding_groups", "hidden_size"),  # a grouped conv splits the channels
        ]

    def approx_num_parameters(self) -> int:
        """The weights' count without biases and norms (a lower bound, for the memory check before building)."""
        D, I, L = self.hidden_size, self.intermediate_size, self.num_hidden_layers
        channels = (1, *self.conv_dim)
        conv = sum(c_in * c_out * k for c_in, c_out, k in zip(channels, channels[1:], self.conv_kernel))
        positional = D * (D // self.num_conv_pos_embedding_groups) * self.num_conv_pos_embeddings
        out = getattr(self, "output_hidden_size", None) or D
        adapter = 0
        if getattr(self, "add_adapter", False):  # each adapter layer: a conv to 2 x out channels (a GLU halves them)
            adapter = self.num_adapter_layers * D * 2 * out * self.adapter_kernel_size
        return conv + self.conv_dim[-1] * D + positional + L * (4 * D * D + 2 * D * I) + adapter

    @property
    def num_feat_extract_layers(self) -> int:
        # transformers writes it (= len(conv_dim)) into config.json; we compute it, so from_dict does not store it.
        return len(self.conv_dim)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["num_feat_extract_layers"] = self.num_feat_extract_layers  # as transformers writes it
        return d


@dataclass
class Wav2Vec2Config(_SpeechEncoderConfig):
    """wav2vec 2.0 (arXiv:2006.11477), XLS-R, MMS. Defaults: facebook/wav2vec2-base."""

    model_type: ClassVar[str] = "wav2vec2"

    # The quantizer and the losses of pre-training (Wav2Vec2ForPreTraining, wav2vec2_pretraining.py).
    feat_quantizer_dropout: float = 0.0  # on the conv features before they are quantized
    num_codevectors_per_group: int = 320  # V: codewords to choose from in each group
    num_codevector_groups: int = 2  # G: one codeword per group, concatenated (V^G possible targets)
    contrastive_logits_temperature: float = 0.1  # kappa: cosine similarities are divided by it
    num_negatives: int = 100  # K: distractors per masked frame, from masked frames of the same utterance
    codevector_dim: int = 256  # d: width of a quantized vector (G slices of d / G)
    proj_codevector_dim: int = 256  # P: the space where context and quantized vectors are compared
    diversity_loss_weight: float = 0.1  # alpha in loss = contrastive + alpha * diversity
    # The x-vector speaker head (Wav2Vec2ForXVector; not built here).
    tdnn_dim: tuple[int, ...] = (512, 512, 512, 512, 1500)
    tdnn_kernel: tuple[int, ...] = (5, 3, 3, 1, 1)
    tdnn_dilation: tuple[int, ...] = (1, 2, 3, 1, 1)
    xvector_output_dim: int = 512
    # The adapter: strided convs after the transformer that shorten the sequence (and can change its width)
    # before a text decoder cross-attends to it; XLS-R speech-translation checkpoints use it.
    add_adapter: bool = False
    adapter_kernel_size: int = 3
    adapter_stride: int = 2
    num_adapter_layers: int = 3
    output_hidden_size: int | None = None  # the adapter's width; None means hidden_size (transformers fills it in)
    adapter_attn_dim: int | None = None  # MMS per-language attention adapters: not supported (an error if set)
    extra: dict = extra_field()  # noqa: RUF009 (a dataclasses.field factory, evaluated once by design)


@dataclass
class HubertConfig(_SpeechEncoderConfig):
    """HuBERT (arXiv:2106.07447). Defaults: facebook/hubert-base-ls960."""

    model_type: ClassVar[str] = "hubert"

    feat_proj_layer_norm: bool = True  # LayerNorm the conv features before projecting them (False in some ports)
    conv_pos_batch_norm: bool = False  # BatchNorm before the positional conv, which then has no weight norm
    extra: dict = extra_field()  # noqa: RUF009 (a dataclasses.field factory, evaluated once by design)
