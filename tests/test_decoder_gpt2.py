"""GPT-2 with cross-attention: parity with transformers' GPT2LMHeadModel, built tiny and random, saved, loaded by ours."""

import json
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minispeechseq.decoders.gpt2 import GPT2Config, GPT2LMHeadModel
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
    "vocab_size": 99, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64, "bos_token_id": 1,
    "eos_token_id": 2, "is_decoder": True, "add_cross_attention": True,
}
B, S, T, ENC = 2, 7, 9, 32


def hf_model(folder, **overrides):
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**TINY, **overrides})).eval()
    model.save_pretrained(folder)
    return model


def inputs(enc_width=ENC):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, TINY["vocab_size"], (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in the second row
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
    folder = str(tmp_path_factory.mktemp("gpt2"))
    return hf_model(folder), folder


@pytest.fixture(scope="module")
def case(tiny):
    ref, folder = tiny
    enc = inputs()[2:]
    return DecoderCase(
        name="gpt2", load=lambda impl: GPT2LMHeadModel.from_pretrained(folder, attn_implementation=impl),
        inputs=inputs, layers=TINY["n_layer"],
        reference=lambda impl, encoder=True, **kw: ref_forward(ref, impl, *inputs()[:2], *(enc if encoder else ()), **kw),
    )


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logits_and_hidden_states_match_transformers(case, impl):
    check_logits(case, impl)
    check_hidden_states(case, impl)


@pytest.mark.parametrize("variant", [
    {"scale_attn_by_inverse_layer_idx": True, "activation_function": "relu", "n_inner": 40},
    {"scale_attn_weights": False, "activation_function": "gelu", "layer_norm_epsilon": 1e-3},
])
def test_config_variants_match_transformers(tmp_path, variant):
    ref = hf_model(tmp_path, **variant)
    ours = GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        got = ours(ids, mask, enc, enc_mask).logits
    assert_close(got, ref_forward(ref, "eager", ids, mask, enc, enc_mask).logits, ATOL_FP32, f"logits {variant}")


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
    """Encoder states 48 wide, decoder 32 wide. transformers' GPT-2 cannot do this (its fused cross k/v always reads
    n_embd), so the reference is transformers fed x @ P (P: 48 -> 32), and ours reads x with key/value weights
    W @ P: the same function, computed both ways."""
    ref, folder = tiny
    ours32 = GPT2LMHeadModel.from_pretrained(folder)
    config = GPT2Config.from_pretrained(folder)
    config.cross_attention_hidden_size = 48
    ours48 = GPT2LMHeadModel(config).eval()
    assert ours48.layers[0].cross_attn.k_proj.weight.shape == (32, 48)
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


def test_openai_original_layout(tmp_path):
    """OpenAI's gpt2 files: no `transformer.` prefix, no lm_head, causal-mask buffers, no cross-attention."""
    plain = {**TINY, "add_cross_attention": False}
    ref = hf_model(tmp_path / "clean", **plain)
    state = {k.removeprefix("transformer."): v.clone() for k, v in ref.state_dict().items() if k != "lm_head.weight"}
    for i in range(TINY["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.uint8))[None, None]
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    original = tmp_path / "original"
    os.makedirs(original)
    torch.save(state, original / "pytorch_model.bin")
    with open(original / "config.json", "w") as f:
        json.dump({**plain, "model_type": "gpt2"}, f)

    ours = GPT2LMHeadModel.from_pretrained(original, add_cross_attention=True)
    init = ours.load_report.initialized
    assert init and all(".cross_attn" in k for k in init), init  # only cross-attention is new
    assert "h.0.attn.bias" in ours.load_report.skipped
    ids, mask, _, _ = inputs()
    with torch.no_grad():
        got = ours(ids, mask).logits
    assert_close(got, ref_forward(ref, "sdpa", ids, mask).logits, ATOL_FP32, "original GPT-2 layout logits")


def test_lm_head_layout_with_explicit_lm_head(tiny, tmp_path):
    """GPT2LMHeadModel files written by transformers 4 carry `lm_head.weight` (a copy of wte)."""
    ref, folder = tiny
    state = load_file(os.path.join(folder, "model.safetensors"))
    assert "lm_head.weight" not in state  # transformers 5 drops the tied copy
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    save_file(state, tmp_path / "model.safetensors")
    with open(os.path.join(folder, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    ours = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert ours.load_report.initialized == []
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        got = ours(ids, mask, enc, enc_mask).logits
    assert_close(got, ref_forward(ref, "sdpa", ids, mask, enc, enc_mask).logits, ATOL_FP32, "logits")


def test_transformers_loads_our_save(tiny, tmp_path):
    folder = tiny[1]
    ours = GPT2LMHeadModel.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    original = load_file(os.path.join(folder, "model.safetensors"))
    assert saved.keys() == original.keys()
    for k in original:  # the fused, transposed Conv1D layout is rebuilt exactly
        assert_close(saved[k], original[k], 0.0, k)
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        got = ours(ids, mask, enc, enc_mask).logits
    assert_close(ref_forward(back, "sdpa", ids, mask, enc, enc_mask).logits, got, ATOL_FP32,
                 "transformers on our save vs ours")


def test_unknown_and_missing_keys_are_named(tiny, tmp_path):
    folder = tiny[1]
    state = load_file(os.path.join(folder, "model.safetensors"))
    state["transformer.h.0.mystery.weight"] = torch.zeros(1)
    del state["transformer.h.1.mlp.c_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with open(os.path.join(folder, "config.json")) as f, open(tmp_path / "config.json", "w") as g:
        g.write(f.read())
    with pytest.raises(ValueError, match=r"layers\.1\.fc2\.weight") as e:
        GPT2LMHeadModel.from_pretrained(tmp_path)
    assert "h.0.mystery.weight" in str(e.value)


def test_init_and_config():
    config = GPT2Config(**TINY)
    model = GPT2LMHeadModel(config)
    assert model.hidden_size == 32 and model.get_input_embeddings() is model.embed_tokens
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 2, 4)
    assert model.lm_head.weight is model.embed_tokens.weight
    torch.manual_seed(0)
    big = GPT2LMHeadModel(GPT2Config(**{**TINY, "n_embd": 256, "n_layer": 8, "add_cross_attention": False}))
    plain_std, scaled_std = big.layers[0].fc1.weight.std().item(), big.layers[0].fc2.weight.std().item()
    assert abs(plain_std - 0.02) < 0.001, f"fc1 std {plain_std:.4f}, transformers uses 0.02"
    assert abs(scaled_std - 0.02 / 4) < 0.0005, f"fc2 std {scaled_std:.4f}, transformers uses 0.02/sqrt(2*8)"
    out_std = big.layers[0].self_attn.out_proj.weight.std().item()
    assert abs(out_std - 0.02 / 4) < 0.0005, f"attention out_proj std {out_std:.4f}, expected 0.02/sqrt(2*8)"
    default = GPT2Config()
    assert (default.n_embd, default.n_layer, default.vocab_size, default.n_positions) == (768, 12, 50257, 1024)
    d = GPT2Config.from_dict({**TINY, "summary_type": "cls_index", "model_type": "gpt2"}).to_dict()
    assert d["summary_type"] == "cls_index" and "hidden_size" not in d
    with pytest.raises(ValueError, match="positions"):
        model(torch.ones(1, 65, dtype=torch.long))
