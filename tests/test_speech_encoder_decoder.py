"""SpeechEncoderDecoderModel against transformers, for every encoder x decoder pair transformers can build.

Each test builds a tiny random transformers SpeechEncoderDecoderModel, writes it with transformers'
`save_pretrained`, loads it with ours, and compares logits, loss and the gradients of every parameter
(matched by name through our converter's table). Dropout, SpecAugment and layerdrop are off so that training
mode is deterministic on both sides. Speech2Text2 is absent here: transformers 5 cannot build it (its parity
test uses fixtures made with transformers 4.50.3, in test_decoder_speech2text2.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from minispeechseq.weights_convert import converter_for
import transformers
from tests.utils import ATOL_FP32, assert_close

import minispeechseq
from minispeechseq.speech_encoder_decoder import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

transformers.logging.set_verbosity_error()

# Gradients accumulate through every layer of both halves: a slightly looser bar than outputs, stated here.
ATOL_GRAD = 2e-5


def hf_encoder_config(kind: str, **kw):
    common = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
        conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2),
        num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, mask_feature_prob=0.0,
    )
    common.update(kw)
    if kind == "wav2vec2":
        return transformers.Wav2Vec2Config(**common)
    if kind == "wav2vec2-large":  # pre-LN, layer-norm feature encoder, conv bias: the large/XLS-R layout
        return transformers.Wav2Vec2Config(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True, **common)
    if kind == "wav2vec2-adapter":
        return transformers.Wav2Vec2Config(add_adapter=True, num_adapter_layers=2, adapter_stride=2,
                                           adapter_kernel_size=3, output_hidden_size=40, **common)
    if kind == "hubert":
        return transformers.HubertConfig(**common)
    if kind == "hubert-large":
        return transformers.HubertConfig(do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True, **common)
    raise ValueError(kind)


def hf_decoder_config(kind: str, **kw):
    d = dict(vocab_size=61, is_decoder=True, add_cross_attention=True, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    d.update(kw)
    if kind == "bert":
        return transformers.BertConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                                       max_position_embeddings=64, hidden_dropout_prob=0.0,
                                       attention_probs_dropout_prob=0.0, **d)
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=24, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                                       attn_pdrop=0.0, **d)
    if kind in ("bart", "mbart"):
        cls = transformers.BartConfig if kind == "bart" else transformers.MBartConfig
        # encoder_layers = decoder_layers: transformers sizes BartForCausalLM's cache by encoder_layers.
        return cls(d_model=24, decoder_layers=2, encoder_layers=2, decoder_attention_heads=4, encoder_attention_heads=4,
                   decoder_ffn_dim=40, encoder_ffn_dim=40, max_position_embeddings=64, dropout=0.0,
                   attention_dropout=0.0, activation_dropout=0.0, decoder_layerdrop=0.0,
                   decoder_start_token_id=2, **d)
    raise ValueError(kind)


PAIRS = [(e, d) for e in ("wav2vec2", "hubert") for d in ("bert", "gpt2", "bart", "mbart")]
# The pre-LN, layer-norm encoder layout (large / XLS-R), once per encoder type.
LARGE_PAIRS = [("wav2vec2-large", "bart"), ("hubert-large", "gpt2")]


def build_hf(enc_kind: str, dec_kind: str, seed: int = 0, **dec_kw):
    torch.manual_seed(seed)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        hf_encoder_config(enc_kind), hf_decoder_config(dec_kind, **dec_kw)
    )
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 0, 1, 2
    return transformers.SpeechEncoderDecoderModel(config=config)


def batch(seed: int = 0, vocab: int = 61):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(2, 1600, generator=g)
    mask = torch.ones(2, 1600, dtype=torch.long)
    mask[1, 1100:] = 0
    audio[1, 1100:] = 0.0
    labels = torch.randint(3, vocab, (2, 7), generator=g)
    labels[1, 5:] = -100  # ignored positions
    return audio, mask, labels


def load_ours(hf_model, tmp_path, attn="eager") -> SpeechEncoderDecoderModel:
    hf_model.save_pretrained(tmp_path / "hf")
    return SpeechEncoderDecoderModel.from_pretrained(tmp_path / "hf", attn_implementation=attn)


@pytest.mark.parametrize("enc_kind,dec_kind", PAIRS + LARGE_PAIRS)
def test_loss_logits_and_gradients_match_transformers(enc_kind, dec_kind, tmp_path):
    hf = build_hf(enc_kind, dec_kind)
    ours = load_ours(hf, tmp_path)
    hf.train()
    ours.train()
    audio, mask, labels = batch()
    hf_out = hf(input_values=audio, attention_mask=mask, labels=labels)
    our_out = ours(audio, attention_mask=mask, labels=labels)
    assert_close(our_out.logits, hf_out.logits, ATOL_FP32, f"{enc_kind}+{dec_kind} logits")
    assert_close(our_out.encoder_last_hidden_state, hf_out.encoder_last_hidden_state, ATOL_FP32, "encoder output")
    assert_close(our_out.loss, hf_out.loss, ATOL_FP32, f"{enc_kind}+{dec_kind} loss")

    hf_out.loss.backward()
    our_out.loss.backward()
    our_grads = {k: p.grad for k, p in ours.named_parameters() if p.grad is not None}
    # Our gradients under transformers' names (the converter's table, run backwards; GPT-2's fused c_attn too).
    our_grads = converter_for(ours.config.model_type).to_checkpoint(our_grads, ours.config)
    hf_grads = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    compared = 0
    for name, g in our_grads.items():
        if name in hf_grads:
            assert_close(g, hf_grads[name], ATOL_GRAD, f"grad of {name}")
            compared += 1
    assert compared == len(hf_grads), f"only {compared} of {len(hf_grads)} gradients could be matched by name"


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_match_for_both_attention_paths(attn, tmp_path):
    hf = build_hf("wav2vec2", "bert").eval()
    ours = load_ours(hf, tmp_path, attn)
    audio, mask, labels = batch(1)
    dec_in = torch.randint(3, 61, (2, 6))
    dec_mask = torch.ones_like(dec_in)
    dec_mask[1, 4:] = 0
    with torch.no_grad():
        ref = hf(input_values=audio, attention_mask=mask, decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
        got = ours(audio, attention_mask=mask, decoder_input_ids=dec_in, decoder_attention_mask=dec_mask)
    # Padded decoder positions are not compared: transformers and we are free to differ there.
    keep = dec_mask.bool()
    assert_close(got.logits[keep], ref.logits[keep], ATOL_FP32, f"{attn} logits")


def test_cross_attention_hidden_size_replaces_the_projection(tmp_path):
    # transformers' BERT/GPT-2/BART decoders ignore cross_attention_hidden_size (their cross-attention always reads
    # the decoder width), so transformers cannot run this pair. Ours honours it. The reference is still
    # transformers: its model with a projection P computes k = W_k (P x + b_P) + b_k, which is exactly our model
    # without P and with k_proj folded to (W_k P, W_k b_P + b_k) reading the encoder width directly.
    hf = build_hf("wav2vec2", "bert").eval()
    with_proj = load_ours(hf, tmp_path)
    config = SpeechEncoderDecoderConfig.from_dict(with_proj.config.to_dict())
    config.decoder.cross_attention_hidden_size = 32
    folded = SpeechEncoderDecoderModel(config=config).eval()
    assert folded.enc_to_dec_proj is None
    state = {k: v for k, v in with_proj.state_dict().items() if not k.startswith("enc_to_dec_proj")}
    P, b_P = with_proj.enc_to_dec_proj.weight, with_proj.enc_to_dec_proj.bias
    for name in list(state):
        if ".cross_attn.k_proj.weight" in name or ".cross_attn.v_proj.weight" in name:
            W, bias_name = state[name], name[: -len("weight")] + "bias"
            state[name], state[bias_name] = W @ P, W @ b_P + state[bias_name]
    folded.load_state_dict(state)
    audio, mask, labels = batch(2)
    with torch.no_grad():
        got = folded(audio, mask, labels=labels).logits
        ref = hf(input_values=audio, attention_mask=mask, labels=labels).logits
    assert_close(got, ref, ATOL_FP32, "logits with cross_attention_hidden_size (folded projection)")


def test_adapter_projection_uses_the_encoder_output_size():
    # transformers sizes enc_to_dec_proj from the encoder's hidden_size (32) although the adapter outputs 40
    # features, and crashes in forward. Ours sizes it from the real output size.
    enc = minispeechseq.Wav2Vec2Config.from_dict(hf_encoder_config("wav2vec2-adapter").to_dict())
    dec = minispeechseq.BertConfig.from_dict(hf_decoder_config("bert").to_dict())
    model = SpeechEncoderDecoderModel(SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)).eval()
    assert model.enc_to_dec_proj.in_features == 40 and model.enc_to_dec_proj.out_features == 24
    audio, mask, labels = batch(3)
    model.config.decoder_start_token_id, model.config.pad_token_id = 0, 1
    out = model(audio, mask, labels=labels)
    assert out.logits.shape == (2, 7, 61) and torch.isfinite(out.loss)


@pytest.mark.parametrize("dec_kind", ["bert", "gpt2", "bart"])
def test_transformers_loads_what_we_save(dec_kind, tmp_path):
    hf = build_hf("hubert", dec_kind, seed=4).eval()
    ours = load_ours(hf, tmp_path)
    ours.save_pretrained(tmp_path / "ours")
    assert sorted(os.listdir(tmp_path / "ours")) == ["config.json", "generation_config.json", "model.safetensors"]
    back = transformers.SpeechEncoderDecoderModel.from_pretrained(tmp_path / "ours").eval()
    audio, mask, labels = batch(4)
    with torch.no_grad():
        assert_close(back(input_values=audio, attention_mask=mask, labels=labels).logits,
                     hf(input_values=audio, attention_mask=mask, labels=labels).logits, ATOL_FP32,
                     f"transformers reloading our {dec_kind} save")
    config = json.load(open(tmp_path / "ours" / "config.json"))
    assert config["model_type"] == "speech-encoder-decoder"
    assert config["encoder"]["model_type"] == "hubert" and config["decoder"]["model_type"] == dec_kind


def test_config_round_trips_both_ways(tmp_path):
    hf = build_hf("wav2vec2", "gpt2")
    hf.config.save_pretrained(tmp_path)
    ours = SpeechEncoderDecoderConfig.from_pretrained(tmp_path)
    assert ours.decoder.is_decoder and ours.decoder.add_cross_attention
    assert ours.decoder_start_token_id == 0 and ours.pad_token_id == 1
    ours.save_pretrained(tmp_path / "back")
    again = transformers.SpeechEncoderDecoderConfig.from_pretrained(tmp_path / "back")
    assert again.encoder.to_dict()["conv_dim"] == list(hf.config.encoder.conv_dim)
    assert again.decoder.n_embd == 24 and again.decoder.add_cross_attention
    # Keys we do not model survive our round trip, at every level.
    d = json.load(open(tmp_path / "config.json"))
    d["encoder"]["a_future_key"], d["decoder"]["another"], d["top_level_extra"] = [1, 2], {"x": 1}, "kept"
    back = SpeechEncoderDecoderConfig.from_dict(d).to_dict()
    assert back["encoder"]["a_future_key"] == [1, 2] and back["decoder"]["another"] == {"x": 1}
    assert back["top_level_extra"] == "kept"


def test_from_config_initialises_like_transformers():
    enc = minispeechseq.Wav2Vec2Config.from_dict(hf_encoder_config("wav2vec2").to_dict())
    dec = minispeechseq.BertConfig.from_dict(hf_decoder_config("bert", initializer_range=0.05).to_dict())
    model = SpeechEncoderDecoderModel(config=SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    w = model.enc_to_dec_proj.weight
    assert abs(w.std().item() - 0.05) < 0.01, f"enc_to_dec_proj std {w.std().item():.4f}, expected ~0.05"
    assert model.enc_to_dec_proj.bias.abs().max() == 0


def test_freeze_feature_encoder_works_for_hubert(tmp_path):
    ours = load_ours(build_hf("hubert", "bert"), tmp_path)
    ours.freeze_feature_encoder()
    ours.train()
    audio, mask, labels = batch()
    ours(audio, mask, labels=labels).loss.backward()
    conv = [p for n, p in ours.encoder.named_parameters() if p.grad is None]
    assert conv, "some encoder parameters (the conv feature encoder) must be frozen"
    assert all(not p.requires_grad for p in conv)


def test_warm_start_initialises_and_reports_cross_attention(tmp_path, caplog):
    torch.manual_seed(0)
    transformers.HubertModel(hf_encoder_config("hubert-large")).save_pretrained(tmp_path / "enc")
    lm_config = hf_decoder_config("bert", is_decoder=False, add_cross_attention=False)
    transformers.BertForMaskedLM(lm_config).save_pretrained(tmp_path / "dec")
    with caplog.at_level("WARNING", logger="minispeechseq"):
        model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec")
    assert "crossattention" in caplog.text or "cross_attn" in caplog.text, caplog.text
    assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
    new = set(model.load_report.initialized)
    assert {"enc_to_dec_proj.weight", "enc_to_dec_proj.bias"} <= new
    assert all(k.startswith("enc_to_dec_proj.") or ".cross_attn" in k for k in new), sorted(new)
    assert any(".cross_attn" in k for k in new)
    ref = transformers.SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec")
    # The pretrained halves are the checkpoint's; only cross-attention and the projection are new.
    audio, mask, _ = batch()
    with torch.no_grad():
        ours_enc = model.encoder(audio, attention_mask=mask).last_hidden_state
        ref_enc = ref.encoder(audio, attention_mask=mask).last_hidden_state
    assert_close(ours_enc, ref_enc, ATOL_FP32, "warm-started encoder")


def test_warm_start_kwargs_override_sub_configs(tmp_path):
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(hf_encoder_config("wav2vec2")).save_pretrained(tmp_path / "enc")
    transformers.GPT2LMHeadModel(hf_decoder_config("gpt2", is_decoder=False, add_cross_attention=False)).save_pretrained(
        tmp_path / "dec"
    )
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        tmp_path / "enc", tmp_path / "dec", encoder_layerdrop=0.3, decoder_resid_pdrop=0.2, decoder_start_token_id=5
    )
    assert model.config.encoder.layerdrop == 0.3 and model.config.decoder.resid_pdrop == 0.2
    assert model.config.decoder_start_token_id == 5
    with pytest.raises(ValueError, match="no field"):
        SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(tmp_path / "enc", tmp_path / "dec", encoder_nonsense=1)


def test_hub_id_resolves_through_an_offline_cache(tmp_path):
    hf = build_hf("wav2vec2", "bert")
    snapshot = tmp_path / "hub" / "models--someorg--tiny-asr" / "snapshots" / "0123456789abcdef"
    hf.save_pretrained(snapshot)
    (tmp_path / "hub" / "models--someorg--tiny-asr" / "refs").mkdir()
    (tmp_path / "hub" / "models--someorg--tiny-asr" / "refs" / "main").write_text("0123456789abcdef")
    code = (
        "import minispeechseq, sys\n"
        "m = minispeechseq.SpeechEncoderDecoderModel.from_pretrained('someorg/tiny-asr')\n"
        "print(type(m).__name__, m.config.decoder.model_type)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SpeechEncoderDecoderModel bert" in done.stdout


# ------------------------------------------------------------------------------------------ bad input
def test_labels_without_start_or_pad_id_fail_before_computing(tmp_path):
    ours = load_ours(build_hf("wav2vec2", "bert"), tmp_path)
    ours.config.decoder_start_token_id = None
    audio, mask, labels = batch()
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        ours(audio, mask, labels=labels)
    ours.config.decoder_start_token_id, ours.config.pad_token_id = 0, None
    with pytest.raises(ValueError, match="pad_token_id"):
        ours(audio, mask, labels=labels)


def test_pad_equal_to_eos_warns(tmp_path):
    ours = load_ours(build_hf("wav2vec2", "bert"), tmp_path)
    ours.config.pad_token_id = ours.config.eos_token_id = 2
    audio, mask, labels = batch()
    with pytest.warns(UserWarning, match="never learn to stop"):
        ours(audio, mask, labels=labels)


def test_bad_shapes_and_pairs_are_clear_errors(tmp_path):
    ours = load_ours(build_hf("wav2vec2", "bert"), tmp_path)
    audio, mask, labels = batch()
    with pytest.raises(ValueError, match="batch size"):
        ours(audio, mask, labels=labels[:1])
    with pytest.raises(ValueError, match="positions"):
        ours(audio, mask, labels=torch.randint(3, 61, (2, 65)))
    with pytest.raises(ValueError, match="supported decoders"):
        SpeechEncoderDecoderConfig.from_dict({"encoder": {"model_type": "wav2vec2"}, "decoder": {"model_type": "t5"}})
    with pytest.raises(ValueError, match="supported encoders"):
        SpeechEncoderDecoderConfig.from_dict({"encoder": {"model_type": "whisper"}, "decoder": {"model_type": "bert"}})
    torch.manual_seed(0)
    transformers.BertModel(hf_decoder_config("bert")).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="model_type='bert'"):
        SpeechEncoderDecoderModel.from_pretrained(tmp_path / "bert")
