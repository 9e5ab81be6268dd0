"""BART / mBART decoder parity against transformers' BartForCausalLM / MBartForCausalLM (tiny random models
written with save_pretrained), and the checkpoint layouts the converter reads."""

import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch import nn

from minispeechseq.files.checkpoint import load_state_dict
from minispeechseq.decoders.bart import BartForCausalLM, MBartConfig, MBartForCausalLM
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

VARIANTS = {
    "bart": (transformers.BartConfig, transformers.BartForCausalLM, transformers.BartForConditionalGeneration,
             BartForCausalLM),
    "mbart": (transformers.MBartConfig, transformers.MBartForCausalLM, transformers.MBartForConditionalGeneration,
              MBartForCausalLM),
}
IMPLS = ("eager", "sdpa")
D, V, T, PAD = 32, 99, 11, 1


def hf_config(variant: str, **overrides):
    # encoder_layers = decoder_layers: transformers 5.x sizes the decoder's DynamicCache from the config's
    # num_hidden_layers, which BartConfig maps to *encoder*_layers.
    kw = {"vocab_size": V, "d_model": D, "decoder_layers": 2, "decoder_attention_heads": 4, "decoder_ffn_dim": 37,
              "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 37, "max_position_embeddings": 64,
              "is_decoder": True, "add_cross_attention": True, "scale_embedding": True, "dropout": 0.0, "init_std": 0.2,
              "pad_token_id": PAD, "activation_function": "gelu" if variant == "bart" else "relu"}
    return VARIANTS[variant][0](**{**kw, **overrides})


def inputs(enc_width: int = D):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, V, (2, 7), generator=g)
    ids[1, 5:] = PAD  # right padding
    enc = torch.randn(2, T, enc_width, generator=g)
    enc_mask = torch.ones(2, T, dtype=torch.long)
    enc_mask[0, 8:] = 0  # padded frames
    return ids, ids.ne(PAD).long(), enc, enc_mask


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    """(variant, transformers model, its folder) for each variant, built once."""
    variant = request.param
    torch.manual_seed(0)
    hf = VARIANTS[variant][1](hf_config(variant)).eval()
    hf.set_attn_implementation("eager")
    folder = tmp_path_factory.mktemp(variant)
    hf.save_pretrained(folder)
    return variant, hf, folder


def ours(variant, folder, impl="eager"):
    return VARIANTS[variant][3].from_pretrained(folder, attn_implementation=impl)


def hf_cached_steps(hf, prefix: int = 3) -> torch.Tensor:
    """transformers' own cached decoding of inputs(): `prefix` tokens at once, then one per call -> (B, S, V)."""
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        out = hf(input_ids=ids[:, :prefix], attention_mask=mask[:, :prefix], encoder_hidden_states=enc,
                 encoder_attention_mask=enc_mask, use_cache=True)
        steps, past = [out.logits], out.past_key_values
        for t in range(prefix, ids.shape[1]):
            out = hf(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], encoder_hidden_states=enc,
                     encoder_attention_mask=enc_mask, past_key_values=past, use_cache=True)
            steps.append(out.logits)
            past = out.past_key_values
    return torch.cat(steps, dim=1)


@pytest.fixture(scope="module")
def case(pair):
    variant, hf, folder = pair
    ids, mask, enc, enc_mask = inputs()

    def reference(impl, encoder=True, **kw):  # transformers' eager (set in `pair`), whatever backend ours runs
        with torch.no_grad():
            return hf(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc if encoder else None,
                      encoder_attention_mask=enc_mask if encoder else None, **kw)

    return DecoderCase(name=variant, load=lambda impl: ours(variant, folder, impl), inputs=inputs, layers=2,
                       reference=reference, reference_steps=lambda impl: hf_cached_steps(hf))


@pytest.mark.parametrize("impl", IMPLS)
def test_logits_match_transformers(case, impl):
    check_logits(case, impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_cached_steps(case, impl):
    check_cached_steps(case, impl)


def test_eager_and_sdpa_agree(case):
    check_backends_agree(case)


def test_attentions_hidden_states_and_loss(case):
    check_attentions(case)
    check_hidden_states(case, "eager")
    ids, _, _, _ = inputs()
    check_loss(case, ids.masked_fill(ids == PAD, -100), "eager")


def test_without_encoder_states(case):
    check_logits(case, "eager", encoder=False)


def test_transformers_loads_our_save(pair, tmp_path):
    variant, hf, folder = pair
    ours(variant, folder).save_pretrained(tmp_path)
    again = VARIANTS[variant][1].from_pretrained(tmp_path).eval()
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc, encoder_attention_mask=enc_mask).logits
        got = again(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc,
                    encoder_attention_mask=enc_mask).logits
    assert_close(got, ref, ATOL_FP32, f"{variant}: transformers reading our save")


@pytest.mark.parametrize("impl", IMPLS)
def test_cross_attention_hidden_size(pair, impl, tmp_path):
    """An encoder 24 wide: our cross-attention k/v read 24 features. transformers' BART ignores the key (its
    k/v are always d_model wide), so the reference is its model with those two projections replaced."""
    variant, _, _ = pair
    torch.manual_seed(1)
    hf = VARIANTS[variant][1](hf_config(variant, cross_attention_hidden_size=24)).eval()
    for layer in hf.model.decoder.layers:
        hf_k, hf_v = nn.Linear(24, D), nn.Linear(24, D)
        nn.init.normal_(hf_k.weight, std=0.2)
        nn.init.normal_(hf_v.weight, std=0.2)
        layer.encoder_attn.k_proj, layer.encoder_attn.v_proj = hf_k, hf_v
    hf.save_pretrained(tmp_path)
    model = ours(variant, tmp_path, impl)
    assert model.layers[0].cross_attn.k_proj.in_features == 24
    ids, mask, enc, enc_mask = inputs(enc_width=24)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc, encoder_attention_mask=enc_mask).logits
        got = model(ids, mask, enc, enc_mask).logits
    assert_close(got, ref, ATOL_FP32, f"{variant} logits with a 24-wide encoder ({impl})")


# ------------------------------------------------------------------------------------ checkpoint layouts
@pytest.fixture(scope="module", params=list(VARIANTS))
def seq2seq(request, tmp_path_factory):
    """A ...ForConditionalGeneration written by transformers 5.x (stores only model.shared.weight for the
    embeddings) with a nonzero final_logits_bias, and its decoder's reference logits."""
    variant = request.param
    torch.manual_seed(2)
    config = hf_config(variant, is_decoder=False, add_cross_attention=False)
    hf = VARIANTS[variant][2](config).eval()
    hf.final_logits_bias.normal_(0, 0.5)
    folder = tmp_path_factory.mktemp(variant + "_seq2seq")
    hf.save_pretrained(folder)
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        h = hf.model.decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=enc,
                             encoder_attention_mask=enc_mask).last_hidden_state
        ref = hf.lm_head(h) + hf.final_logits_bias
    return variant, folder, ref, hf.final_logits_bias.clone()


def test_seq2seq_checkpoint_uses_shared_embeddings_and_logits_bias(seq2seq):
    variant, folder, ref, _ = seq2seq
    state = load_state_dict(folder)
    assert "model.shared.weight" in state and "model.decoder.embed_tokens.weight" not in state
    model = ours(variant, folder)
    # transformers 5.x's ...ForCausalLM leaves embed_tokens and the tied lm_head random for this layout;
    # ours takes them from model.shared.weight, so the logits are the seq2seq model's decoder logits.
    ids, mask, enc, enc_mask = inputs()
    with torch.no_grad():
        got = model(ids, mask, enc, enc_mask).logits
    assert_close(got, ref, ATOL_FP32, f"{variant} logits from a ...ForConditionalGeneration checkpoint")
    assert any(k.startswith("encoder.") for k in model.load_report.skipped), "the text encoder is skipped, and said"


def test_base_model_and_legacy_layouts(seq2seq, tmp_path):
    """BartModel (no "model." prefix, no head, no bias) and the 4.x layout that stores every tied copy."""
    variant, folder, ref, bias = seq2seq
    state = load_state_dict(folder)
    config_json = (folder / "config.json").read_text()
    ids, mask, enc, enc_mask = inputs()

    base = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    (tmp_path / "base").mkdir()
    save_file(base, str(tmp_path / "base" / "model.safetensors"))
    (tmp_path / "base" / "config.json").write_text(config_json)
    with torch.no_grad():
        got = ours(variant, tmp_path / "base")(ids, mask, enc, enc_mask).logits
    assert_close(got, ref - bias, ATOL_FP32, f"{variant} logits from a ...Model checkpoint (no logits bias)")

    legacy = dict(state)
    shared = state["model.shared.weight"]
    legacy.update({"model.decoder.embed_tokens.weight": shared.clone(), "model.encoder.embed_tokens.weight":
                   shared.clone(), "lm_head.weight": shared.clone(), "model.decoder.version": torch.tensor([3.0])})
    (tmp_path / "legacy").mkdir()
    save_file(legacy, str(tmp_path / "legacy" / "model.safetensors"))
    (tmp_path / "legacy" / "config.json").write_text(config_json)
    with torch.no_grad():
        got = ours(variant, tmp_path / "legacy")(ids, mask, enc, enc_mask).logits
    assert_close(got, ref, ATOL_FP32, f"{variant} logits from a 4.x-style checkpoint with all tied copies")


def test_missing_cross_attention_is_initialised_other_gaps_fail(pair, tmp_path):
    variant, _, folder = pair
    state = load_state_dict(folder)
    config_json = (folder / "config.json").read_text()
    (tmp_path / "no_cross").mkdir()
    save_file({k: v for k, v in state.items() if "encoder_attn" not in k}, str(tmp_path / "no_cross" / "model.safetensors"))
    (tmp_path / "no_cross" / "config.json").write_text(config_json)
    model = ours(variant, tmp_path / "no_cross")
    assert "layers.0.cross_attn.k_proj.weight" in model.load_report.initialized
    assert "layers.1.cross_attn_norm.weight" in model.load_report.initialized

    (tmp_path / "no_fc1").mkdir()
    save_file({k: v for k, v in state.items() if k != "model.decoder.layers.1.fc1.weight"},
              str(tmp_path / "no_fc1" / "model.safetensors"))
    (tmp_path / "no_fc1" / "config.json").write_text(config_json)
    with pytest.raises(ValueError, match=r"layers\.1\.fc1\.weight"):
        ours(variant, tmp_path / "no_fc1")


def test_mbart_final_norm_is_required_and_bart_refuses_it(pair, tmp_path):
    variant, _, folder = pair
    state = load_state_dict(folder)
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    if variant == "mbart":
        state = {k: v for k, v in state.items() if not k.startswith("model.decoder.layer_norm.")}
        expected = r"lacks.*norm\.weight"
    else:
        state["model.decoder.layer_norm.weight"] = torch.ones(D)
        expected = r"no place for.*norm\.weight"
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=expected):
        ours(variant, tmp_path)


def test_init_and_errors():
    config = MBartConfig(vocab_size=V, d_model=D, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=37,
                         max_position_embeddings=8, init_std=0.5)
    model = MBartForCausalLM(config)
    assert model.lm_head.weight is model.embed_tokens.weight, "the LM head is tied to the token embeddings"
    assert model.embed_tokens.weight[PAD].abs().max() == 0, "the padding row starts at zero, as in transformers"
    assert abs(model.layers[0].fc1.weight.std().item() - 0.5) < 0.1 and model.layers[0].fc1.bias.abs().max() == 0
    assert (model.final_norm.weight == 1).all()
    with pytest.raises(ValueError, match="9 tokens, beyond the decoder's 8 positions"):
        model(torch.ones(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="labels have shape"):
        model(torch.ones(1, 3, dtype=torch.long), labels=torch.ones(1, 2, dtype=torch.long))
