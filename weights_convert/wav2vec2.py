"""wav2vec2 / HuBERT checkpoints (transformers layout) <-> minispeechseq's Wav2Vec2Model / HubertModel.

One table serves both architectures: HuBERT's modules carry the same names as wav2vec2's in transformers.
A few things a table cannot say are handled in `to_ours`, each in a few plain lines:
- the `wav2vec2.` / `hubert.` prefix of ...ForCTC / ...ForPreTraining checkpoints (stripped);
- legacy LayerNorm `gamma` / `beta` names (renamed, only on LayerNorm modules);
- the positional conv's weight norm, stored as `weight_g` / `weight_v` by old checkpoints and as
  `parametrizations.weight.original0` / `original1` by torch's newer parametrisation: both read, the newer
  written (transformers 5.x writes and reads those);
- `masked_spec_embed` (old name `mask_time_emb_vector`) exists in the model only when the config masks; a
  checkpoint that has it for a config that does not mask gets it skipped, with a note.
"""

from __future__ import annotations

from typing import Any

from .core import (
    ConversionReport,
    KeyTable,
    StateDict,
    rename_keys,
    rename_legacy_layernorm,
    strip_prefix,
)

POS = "encoder.pos_conv_embed"

WB = ("weight", "bias")
BATCH_NORM = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _module(theirs: str, ours: str, params: tuple[str, ...] = WB) -> dict[str, str]:
    """Table rows for the parameters of one module: theirs.weight -> ours.weight, theirs.bias -> ours.bias."""
    return {f"{theirs}.{p}": f"{ours}.{p}" for p in params}


TABLE = KeyTable(
    {
        # ---- 1. conv feature encoder (norm: GroupNorm on layer 0, or LayerNorm on every layer)
        **_module("feature_extractor.conv_layers.{}.conv", "feature_encoder.layers.{}.conv"),
        **_module("feature_extractor.conv_layers.{}.layer_norm", "feature_encoder.layers.{}.norm"),
        # ---- 2. projection to the model width, and SpecAugment's learned mask vector
        **_module("feature_projection.layer_norm", "feature_projection.norm"),
        **_module("feature_projection.projection", "feature_projection.proj"),
        "masked_spec_embed": "masked_spec_embed",
        "mask_time_emb_vector": "masked_spec_embed",  # the name in early transformers checkpoints
        # ---- 3. positional conv: weight norm g (per tap) and v. Listed first = the name we write.
        f"{POS}.conv.parametrizations.weight.original0": "pos_conv.weight_g",
        f"{POS}.conv.parametrizations.weight.original1": "pos_conv.weight_v",
        f"{POS}.conv.weight_g": "pos_conv.weight_g",  # torch.nn.utils.weight_norm (before torch 2.1)
        f"{POS}.conv.weight_v": "pos_conv.weight_v",
        f"{POS}.conv.weight": "pos_conv.weight",  # HuBERT with conv_pos_batch_norm: no weight norm
        f"{POS}.conv.bias": "pos_conv.bias",
        **_module(f"{POS}.batch_norm", "pos_conv.batch_norm", BATCH_NORM),
        **_module("encoder.layer_norm", "norm"),
        # ---- 4. transformer layers
        **_module("encoder.layers.{}.attention.q_proj", "layers.{}.self_attn.q_proj"),
        **_module("encoder.layers.{}.attention.k_proj", "layers.{}.self_attn.k_proj"),
        **_module("encoder.layers.{}.attention.v_proj", "layers.{}.self_attn.v_proj"),
        **_module("encoder.layers.{}.attention.out_proj", "layers.{}.self_attn.out_proj"),
        **_module("encoder.layers.{}.layer_norm", "layers.{}.self_attn_norm"),
        **_module("encoder.layers.{}.feed_forward.intermediate_dense", "layers.{}.fc1"),
        **_module("encoder.layers.{}.feed_forward.output_dense", "layers.{}.fc2"),
        **_module("encoder.layers.{}.final_layer_norm", "layers.{}.ffn_norm"),
        # ---- 5. adapter (XLS-R speech translation)
        **_module("adapter.proj", "adapter.proj"),
        **_module("adapter.proj_layer_norm", "adapter.proj_norm"),
        **_module("adapter.layers.{}.conv", "adapter.layers.{}"),
        # ---- heads of task models that an encoder does not use: skipped and logged
        "lm_head.*": None,  # ...ForCTC
        "quantizer.*": None,  # ...ForPreTraining
        "project_hid.*": None,
        "project_q.*": None,
        "projector.*": None,  # ...ForSequenceClassification / ForAudioFrameClassification
        "classifier.*": None,
        "layer_weights": None,
    }
)

PREFIXES = ("wav2vec2.", "hubert.")
LAYER_NORM_NAMES = ("layer_norm", "final_layer_norm", "proj_layer_norm")
MASK_EMBED = "masked_spec_embed"


def _masks(config: Any) -> bool:
    return config.mask_time_prob > 0 or config.mask_feature_prob > 0


def to_ours(state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
    """Checkpoint tensors (any layout above) -> our names. Unknown keys land in report.unexpected (an error)."""
    report = ConversionReport()
    state = strip_prefix(state, PREFIXES, report)
    state = rename_legacy_layernorm(state, LAYER_NORM_NAMES, report)
    if any(k.endswith(".conv.weight_g") for k in state):
        report.notes.append("read the positional conv's legacy weight_g / weight_v tensors")
    ours = rename_keys(state, TABLE, report)
    if MASK_EMBED in ours and not _masks(config):
        # transformers builds masked_spec_embed only when the config masks; neither do we.
        del ours[MASK_EMBED]
        report.loaded = [(t, o) for t, o in report.loaded if o != MASK_EMBED]
        report.skipped.append(MASK_EMBED)
        report.notes.append("masked_spec_embed skipped: this config does not mask (mask_time_prob = mask_feature_prob = 0)")
    return ours, report


def to_checkpoint(state: StateDict, config: Any) -> StateDict:
    """Our tensors -> transformers 5.x names of a bare Wav2Vec2Model / HubertModel."""
    return {TABLE.to_checkpoint(k): v for k, v in state.items()}


def may_initialize(our_key: str) -> bool:
    # Fine-tuned checkpoints (and transformers' own saves with masking off) may lack the SpecAugment vector; it
    # only matters when training, and transformers initialises it fresh too.
    return our_key == MASK_EMBED
