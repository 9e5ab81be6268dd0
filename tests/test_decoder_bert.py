"""BERT as a decoder: parity with transformers' BertLMHeadModel, built tiny and random, saved, loaded by ours."""

import json
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minispeechseq.decoders.bert import BertConfig, BertForCausalLM, BertLMHeadModel
from tests.decoder_parity import (
    DecoderCase,
    check_attentions,
    check_backends_agree,
    check_cached_steps,
    check_hidden_states,
    check_logits,
    check_loss,
)
from tests.utils import ATOL_FP32, assert_close

TINY = {
    "vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
    "max_position_embeddings": 64, "hidden_act": "gelu", "is_decoder": True, "add_cross_attention": True,
}
B, S, T, ENC = 2, 7, 9, 32


def hf_model(folder, **overrides):
    torch.manual_seed(0)
    model = transformers.BertLMHeadModel(transformers.BertConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(folder)
    return model


def inputs(enc_width=ENC):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, TINY["vocab_size"], (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in the second row
    ids[1, 5:] = 0
    enc = torch.randn(B, T, enc_width, generator=g)
    enc_mask = torch.ones(B, T, dtype=torch.long)
    enc_mask[1, 6:] = 0  # three padded frames
    return ids, mask, enc, enc_mask


def ref_forward(ref, impl, ids, mask, enc=None, enc_mask=None, **kw):
    ref.set_attn_implementation(impl)
    with torch.no_grad():
        return ref(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc, encoder_attention_mask=enc_mask,
                   use_cache=False, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("bert"))
    return hf_model(folder), folder


@pytest.fixture(scope="module")
def case(tiny):
    ref, folder = tiny
    enc = inputs()[2:]
    return DecoderCase(
        name="bert", load=lambda impl: BertForCausalLM.from_pretrained(folder, attn_implementation=impl),
        inputs=inputs, layers=TINY["num_hidden_layers"],
        reference=lambda impl, encoder=True, **kw: ref_forward(ref, impl, *inputs()[:2], *(enc if encoder else ()), **kw),
    )


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_and_hidden_states_match_transformers(case, impl):
    check_logits(case, impl)
    check_hidden_states(case, impl)


def test_plain_lm_without_encoder_states(case):
    check_logits(case, "sdpa", encoder=False)


def test_eager_and_sdpa_agree(case):
    check_backends_agree(case)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_cached_steps_match_full_forward(case, impl):
    check_cached_steps(case, impl)


def test_attentions_match_transformers(case):
    check_attentions(case)


def test_loss_matches_transformers(case):
    ids, mask, _, _ = inputs()
    check_loss(case, ids.masked_fill(mask == 0, -100))


def test_cross_attention_hidden_size(tiny):
    """Encoder states 48 wide, decoder 32 wide. transformers' BERT cannot do this (its cross-attention key/value
    always read hidden_size), so the reference is transformers fed x @ P (P: 48 -> 32), and ours reads x with
    key/value weights W @ P: the same function, computed both ways."""
    ref, folder = tiny
    ours32 = BertForCausalLM.from_pretrained(folder)
    config = BertConfig.from_pretrained(folder)
    config.cross_attention_hidden_size = 48
    ours48 = BertForCausalLM(config).eval()
    P = torch.randn(32, 48, generator=torch.Generator().manual_seed(2)) / 48**0.5
    state = ours32.state_dict()
    for key in list(state):
        if ".cross_attn.k_proj.weight" in key or ".cross_attn.v_proj.weight" in key:
            state[key] = state[key] @ P  # (32, 32) @ (32, 48) -> (32, 48)
    ours48.load_state_dict(state)
    ids, mask, _, enc_mask = inputs()
    enc48 = torch.randn(B, T, 48, generator=torch.Generator().manual_seed(3))
    want = ref_forward(ref, "sdpa", ids, mask, enc48 @ P.T, enc_mask).logits
    with torch.no_grad():
        got = ours48(ids, mask, enc48, enc_mask).logits
    assert_close(got, want, ATOL_FP32, "logits with cross_attention_hidden_size=48")


def _rename_legacy(state):
    """Make a TF-era BertForPreTraining file: LayerNorm gamma/beta and the position_ids buffer."""
    out = {}
    for k, v in state.items():
        if ".LayerNorm." in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        out[k] = v
    out["bert.embeddings.position_ids"] = torch.arange(TINY["max_position_embeddings"])[None]
    return out


def test_bert_for_pretraining_legacy_layout(tmp_path):
    """bert-base-uncased's layout: BertForPreTraining without cross-attention, gamma/beta, a pooler, an NSP head."""
    torch.manual_seed(0)
    plain = {**TINY, "is_decoder": False, "add_cross_attention": False}
    pretraining = transformers.BertForPreTraining(transformers.BertConfig(**plain)).eval()
    pretraining.save_pretrained(tmp_path / "clean")
    state = {k: v.clone() for k, v in pretraining.state_dict().items()}
    assert "cls.seq_relationship.weight" in state and "bert.pooler.dense.weight" in state
    legacy = tmp_path / "legacy"
    os.makedirs(legacy)
    torch.save(_rename_legacy(state), legacy / "pytorch_model.bin")
    with open(legacy / "config.json", "w") as f:
        json.dump({**plain, "model_type": "bert", "architectures": ["BertForPreTraining"]}, f)

    ours = BertForCausalLM.from_pretrained(legacy, is_decoder=True, add_cross_attention=True)
    init = ours.load_report.initialized
    assert init and all(".cross_attn" in k for k in init), init  # only cross-attention is new
    assert any("pooler" in k for k in ours.load_report.skipped)
    ref = transformers.BertLMHeadModel.from_pretrained(tmp_path / "clean", is_decoder=True).eval()
    ids, mask, _, _ = inputs()
    with torch.no_grad():
        got = ours(ids, mask).logits
    assert_close(got, ref_forward(ref, "sdpa", ids, mask).logits, ATOL_FP32, "BertForPreTraining logits")


def test_bert_model_layout_initialises_the_head(tmp_path):
    """A BertModel has no LM head: like transformers, the head is initialised and reported; the body matches."""
    torch.manual_seed(0)
    body = transformers.BertModel(transformers.BertConfig(**TINY)).eval()
    body.save_pretrained(tmp_path)
    assert not any(k.startswith(("bert.", "cls.")) for k in load_file(tmp_path / "model.safetensors"))
    ours = BertForCausalLM.from_pretrained(tmp_path)
    assert {"head_dense.weight", "head_norm.weight", "lm_head.bias"} <= set(ours.load_report.initialized)
    assert ours.lm_head.weight is ours.embed_tokens.weight
    ids, mask, enc, enc_mask = inputs()
    want = ref_forward(body, "sdpa", ids, mask, enc, enc_mask).last_hidden_state
    with torch.no_grad():
        got = ours(ids, mask, enc, enc_mask, output_hidden_states=True).hidden_states[-1]
    assert_close(got, want, ATOL_FP32, "BertModel last hidden state")


def test_transformers_loads_our_save(tiny, tmp_path):
    folder = tiny[1]
    ours = BertForCausalLM.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    back = transformers.BertLMHeadModel.from_pretrained(tmp_path).eval()
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        got = ours(ids, mask, enc, enc_mask).logits
    assert_close(ref_forward(back, "sdpa", ids, mask, enc, enc_mask).logits, got, ATOL_FP32,
                 "transformers on our save vs ours")
    again = BertForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert_close(again(ids, mask, enc, enc_mask).logits, got, 0.0, "ours reloaded")


def test_unknown_and_missing_keys_are_named(tiny, tmp_path):
    folder = tiny[1]
    state = load_file(os.path.join(folder, "model.safetensors"))
    state["bert.encoder.layer.0.mystery.weight"] = torch.zeros(1)
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with open(os.path.join(folder, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    with pytest.raises(ValueError, match=r"mystery.*layers\.1\.fc2\.weight|layers\.1\.fc2\.weight.*mystery") as e:
        BertForCausalLM.from_pretrained(tmp_path)
    assert "encoder.layer.0.mystery.weight" in str(e.value)


def test_init_and_config():
    config = BertConfig(**TINY)
    model = BertForCausalLM(config)
    assert BertLMHeadModel is BertForCausalLM
    assert model.hidden_size == 32 and model.get_input_embeddings() is model.embed_tokens
    assert model.lm_head.weight is model.embed_tokens.weight
    assert model.embed_tokens.weight[config.pad_token_id].abs().sum() == 0  # padding row starts at zero
    assert model.lm_head.bias.abs().sum() == 0 and model.layers[0].fc1.bias.abs().sum() == 0
    std = model.layers[0].fc1.weight.std().item()
    assert 0.015 < std < 0.025, f"fc1 init std {std:.4f}, transformers uses initializer_range=0.02"
    default = BertConfig()
    assert (default.hidden_size, default.num_hidden_layers, default.vocab_size) == (768, 12, 30522)
    with pytest.raises(ValueError, match="is_decoder"):
        BertForCausalLM(BertConfig(**{**TINY, "is_decoder": False}))
    with pytest.raises(ValueError, match="not supported"):
        BertForCausalLM(BertConfig(**{**TINY, "hidden_act": "mish"}))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4))


def test_checkpoint_of_other_cross_width_is_refused_with_a_reason(tiny):
    folder = tiny[1]
    with pytest.raises(ValueError, match="ignores cross_attention_hidden_size"):
        BertForCausalLM.from_pretrained(folder, cross_attention_hidden_size=48)
