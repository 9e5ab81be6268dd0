"""BART / mBART decoder checkpoints <-> minispeechseq's BartForCausalLM / MBartForCausalLM.

Layouts read (transformers names; "model." is stripped first where present):
    BartForCausalLM / MBartForCausalLM           model.decoder.* + lm_head.weight
    BartForConditionalGeneration / MBart...       model.shared.weight, model.encoder.* (skipped), model.decoder.*,
                                                  final_logits_bias, lm_head.weight (tied, usually not stored)
    BartModel / MBartModel                        shared.weight, encoder.* (skipped), decoder.*
    SpeechEncoderDecoderModel's `decoder.` part    the ...ForCausalLM names above
Written (`to_checkpoint`): transformers' ...ForCausalLM names, so `BartForCausalLM.from_pretrained` loads them.
"""

from __future__ import annotations

import torch

from .core import (
    ConversionReport, KeyTable, StateDict, is_cross_attention, rename_keys, strip_prefix, tie_lm_head, without_tied_head,
)

# The decoder layer, shared with Speech2Text2 (its layers are BART's post-LN layer).
# Modules: checkpoint name (after "model.") -> ours; `{}` is the layer index. Each carries `.weight` and `.bias`.
LAYER_MODULES = {
    "decoder.layers.{}.self_attn.q_proj": "layers.{}.self_attn.q_proj",
    "decoder.layers.{}.self_attn.k_proj": "layers.{}.self_attn.k_proj",
    "decoder.layers.{}.self_attn.v_proj": "layers.{}.self_attn.v_proj",
    "decoder.layers.{}.self_attn.out_proj": "layers.{}.self_attn.out_proj",
    "decoder.layers.{}.self_attn_layer_norm": "layers.{}.self_attn_norm",
    "decoder.layers.{}.encoder_attn.q_proj": "layers.{}.cross_attn.q_proj",
    "decoder.layers.{}.encoder_attn.k_proj": "layers.{}.cross_attn.k_proj",
    "decoder.layers.{}.encoder_attn.v_proj": "layers.{}.cross_attn.v_proj",
    "decoder.layers.{}.encoder_attn.out_proj": "layers.{}.cross_attn.out_proj",
    "decoder.layers.{}.encoder_attn_layer_norm": "layers.{}.cross_attn_norm",
    "decoder.layers.{}.fc1": "layers.{}.fc1",
    "decoder.layers.{}.fc2": "layers.{}.fc2",
    "decoder.layers.{}.final_layer_norm": "layers.{}.ffn_norm",  # the layer's last norm, not the decoder's
}
MODULES = {
    "decoder.layernorm_embedding": "embed_norm",
    **LAYER_MODULES,
    "decoder.layer_norm": "final_norm",  # mBART only: the final LayerNorm of a pre-LN stack
}
TABLE = KeyTable(
    {
        "decoder.embed_tokens.weight": "embed_tokens.weight",
        "decoder.embed_positions.weight": "embed_positions.weight",
        **{f"{theirs}.{p}": f"{ours}.{p}" for theirs, ours in MODULES.items() for p in ("weight", "bias")},
        "lm_head.weight": "lm_head.weight",
        # Dropped on purpose:
        "encoder.*": None,  # the text encoder of a seq2seq checkpoint; the speech encoder replaces it
        "decoder.version": None,  # fairseq bookkeeping, listed in transformers' _keys_to_ignore_on_load_unexpected
        "classification_head.*": None,  # BartForSequenceClassification's head
        "qa_outputs.*": None,  # BartForQuestionAnswering's head
    }
)

may_initialize = is_cross_attention  # a decoder trained without cross-attention, warm-started


def to_ours(hf_state: StateDict, config) -> tuple[StateDict, ConversionReport]:
    report = ConversionReport()
    state = strip_prefix(hf_state, ("model.",), report)
    shared = state.pop("shared.weight", None)
    logits_bias = state.pop("final_logits_bias", None)
    ours = rename_keys(state, TABLE, report)

    if shared is not None:
        if "embed_tokens.weight" in ours:
            report.skipped.append("shared.weight")
        else:
            # A seq2seq checkpoint written by transformers 5.x stores only `model.shared.weight`: the decoder's
            # embed_tokens (and a tied lm_head) are tied duplicates it drops on save. transformers 5.x's
            # BartForCausalLM does not look there and leaves them random; we take the shared matrix.
            ours["embed_tokens.weight"] = shared
            report.loaded.append(("shared.weight", "embed_tokens.weight"))
            report.notes.append("token embeddings taken from the shared encoder/decoder matrix (shared.weight)")
    tie_lm_head(ours, config, report)

    if logits_bias is not None:
        ours["logits_bias"] = logits_bias.reshape(-1)  # (1, V) -> (V,)
        report.loaded.append(("final_logits_bias", "logits_bias"))
    else:
        # Only ...ForConditionalGeneration has this buffer; without it the bias is zero, as in ...ForCausalLM.
        ours["logits_bias"] = torch.zeros(config.vocab_size)
    return ours, report


def to_checkpoint(our_state: StateDict, config) -> StateDict:
    """Our weights under transformers' BartForCausalLM / MBartForCausalLM names."""
    out: StateDict = {}
    for key, tensor in without_tied_head(our_state, config).items():
        if key == "logits_bias":
            # transformers' ...ForCausalLM has no such buffer: write it only when it carries information (a
            # ...ForConditionalGeneration origin with a nonzero bias); transformers then ignores it with a warning.
            if bool(tensor.any()):
                out["final_logits_bias"] = tensor.reshape(1, -1)  # (V,) -> (1, V)
            continue
        name = TABLE.to_checkpoint(key)
        out[name if name == "lm_head.weight" else "model." + name] = tensor
    return out
