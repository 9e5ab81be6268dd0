"""BERT checkpoints <-> minispeechseq's BertForCausalLM.

Layouts read (all are transformers names, optionally behind the `bert.` prefix):
- BertLMHeadModel / BertForMaskedLM: `bert.` + `cls.predictions.*` (the LM head);
- BertForPreTraining (bert-base-uncased): the same plus `cls.seq_relationship.*` (next-sentence head) and
  `bert.pooler.*`, both unused by a decoder and skipped; old TF-ported files also carry LayerNorm `gamma`/`beta`
  and the `bert.embeddings.position_ids` buffer;
- BertModel: no prefix and no LM head. transformers' BertLMHeadModel.from_pretrained initialises the missing head
  (dense + LayerNorm + bias; the projection is tied to the word embeddings) and warns; we do the same, and list
  the head in the report's `initialized`.
Cross-attention may be absent (a plain BERT): the model initialises it (`may_initialize`).
`to_checkpoint` writes BertLMHeadModel names, without the tied copy of the embeddings, as transformers 5 saves.
"""

from __future__ import annotations

from typing import Any

import torch

from .core import (
    ConversionReport,
    KeyTable,
    StateDict,
    is_cross_attention,
    rename_keys,
    rename_legacy_layernorm,
    strip_prefix,
    tie_lm_head,
    without_tied_head,
)

# Checkpoint module -> our module; each has a weight and a bias unless listed in WEIGHT_ONLY.
MODULES = {
    "embeddings.word_embeddings": "embed_tokens",
    "embeddings.position_embeddings": "embed_positions",
    "embeddings.token_type_embeddings": "embed_token_types",
    "embeddings.LayerNorm": "embed_norm",
    "encoder.layer.{}.attention.self.query": "layers.{}.self_attn.q_proj",
    "encoder.layer.{}.attention.self.key": "layers.{}.self_attn.k_proj",
    "encoder.layer.{}.attention.self.value": "layers.{}.self_attn.v_proj",
    "encoder.layer.{}.attention.output.dense": "layers.{}.self_attn.out_proj",
    "encoder.layer.{}.attention.output.LayerNorm": "layers.{}.self_attn_norm",
    "encoder.layer.{}.crossattention.self.query": "layers.{}.cross_attn.q_proj",
    "encoder.layer.{}.crossattention.self.key": "layers.{}.cross_attn.k_proj",
    "encoder.layer.{}.crossattention.self.value": "layers.{}.cross_attn.v_proj",
    "encoder.layer.{}.crossattention.output.dense": "layers.{}.cross_attn.out_proj",
    "encoder.layer.{}.crossattention.output.LayerNorm": "layers.{}.cross_attn_norm",
    "encoder.layer.{}.intermediate.dense": "layers.{}.fc1",
    "encoder.layer.{}.output.dense": "layers.{}.fc2",
    "encoder.layer.{}.output.LayerNorm": "layers.{}.ffn_norm",
    "cls.predictions.transform.dense": "head_dense",
    "cls.predictions.transform.LayerNorm": "head_norm",
}
WEIGHT_ONLY = {"embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"}

TABLE = KeyTable({
    **{
        f"{theirs}.{param}": f"{ours}.{param}"
        for theirs, ours in MODULES.items()
        for param in (("weight",) if theirs in WEIGHT_ONLY else ("weight", "bias"))
    },
    "cls.predictions.decoder.weight": "lm_head.weight",  # tied to the word embeddings (see to_ours)
    "cls.predictions.bias": "lm_head.bias",
    "cls.predictions.decoder.bias": None,  # transformers ties it to cls.predictions.bias: a duplicate
    "embeddings.position_ids": None,  # a buffer (0, 1, 2...) saved by older transformers
    "embeddings.token_type_ids": None,  # a buffer of zeros, likewise
    "pooler.*": None,  # the [CLS] pooler of BertModel / BertForPreTraining: not used by a decoder
    "cls.seq_relationship.*": None,  # BertForPreTraining's next-sentence head
})

HEAD = ("head_dense.weight", "head_dense.bias", "head_norm.weight", "head_norm.bias", "lm_head.bias")


may_initialize = is_cross_attention  # warm-starting a decoder from a plain BERT adds cross-attention


def _initialized_head(config: Any) -> StateDict:
    """The LM head as transformers initialises it when a BertModel checkpoint has none."""
    D, std = config.hidden_size, config.initializer_range
    head = {
        "head_dense.weight": torch.randn(D, D) * std,
        "head_dense.bias": torch.zeros(D),
        "head_norm.weight": torch.ones(D),
        "head_norm.bias": torch.zeros(D),
        "lm_head.bias": torch.zeros(config.vocab_size),
    }
    if not config.tie_word_embeddings:
        head["lm_head.weight"] = torch.randn(config.vocab_size, D) * std
    return head


def to_ours(hf_state: StateDict, config: Any) -> tuple[StateDict, ConversionReport]:
    report = ConversionReport()
    state = strip_prefix(hf_state, ("bert.",), report)
    state = rename_legacy_layernorm(state, ("LayerNorm",), report)
    ours = rename_keys(state, TABLE, report)

    if "embed_tokens.weight" in ours and not any(k.startswith("cls.predictions.") for k in state):
        # BertModel layout: no LM head at all. Follow transformers: initialise it and say so.
        head = _initialized_head(config)
        ours.update(head)
        report.initialized += list(head)
        report.notes.append("no LM head in the checkpoint (a BertModel): the head was newly initialised")

    tie_lm_head(ours, config, report)

    cross_k = ours.get("layers.0.cross_attn.k_proj.weight")
    kv_dim = config.cross_attention_hidden_size or config.hidden_size
    if cross_k is not None and cross_k.shape[1] != kv_dim:
        raise ValueError(
            f"The checkpoint's cross-attention reads {cross_k.shape[1]}-wide encoder states but the config says "
            f"{kv_dim} (cross_attention_hidden_size={config.cross_attention_hidden_size}). transformers' BERT "
            "ignores cross_attention_hidden_size, so its checkpoints always read hidden_size: remove that setting "
            "from config.json, or use weights made for this width."
        )
    return ours, report


def to_checkpoint(our_state: StateDict, config: Any) -> StateDict:
    """Our weights under transformers' BertLMHeadModel names."""
    out: StateDict = {}
    for key, tensor in without_tied_head(our_state, config).items():
        theirs = TABLE.to_checkpoint(key)
        out[theirs if theirs.startswith("cls.") else "bert." + theirs] = tensor
    return out
