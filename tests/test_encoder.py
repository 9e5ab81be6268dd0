"""Parity of Wav2Vec2Model / HubertModel with transformers, stage by stage, on tiny random checkpoints.

Each variant is a tiny random transformers model written with its own `save_pretrained` and read back with
ours. Inputs are a padded batch of two waveforms with an attention mask. Tolerances come from tests/utils.py.

hidden_states policy (documented in Wav2Vec2Model.forward): ours = the input of each layer, then the
encoder's final output. transformers 5.x returns the same, except that for pre-LN ("stable layer norm")
models its last entry is taken *before* the final LayerNorm; there we compare our last entry with its
last_hidden_state (before the adapter) instead.
"""

import dataclasses
import json
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from minispeechseq.wav2vec2 import (
    HubertModel,
    Wav2Vec2Model,
    sample_span_starts,
    spans_to_mask,
)
from minispeechseq.wav2vec2_config import HubertConfig, Wav2Vec2Config
from tests.utils import ATOL_BACKENDS, ATOL_FP32, assert_close

TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
    "conv_dim": (16, 16, 24), "conv_kernel": (10, 3, 3), "conv_stride": (5, 2, 2),
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.0, "feat_proj_dropout": 0.0, "layerdrop": 0.0,
}
LARGE = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True, "num_conv_pos_embeddings": 15}
VARIANTS = {
    "wav2vec2_base": ("wav2vec2", {}),
    "wav2vec2_large": ("wav2vec2", LARGE),
    "hubert_base": ("hubert", {}),
    "hubert_large": ("hubert", LARGE),
    "hubert_pos_batchnorm": ("hubert", {"conv_pos_batch_norm": True, "feat_proj_layer_norm": False}),
    "wav2vec2_adapter": ("wav2vec2", dict(LARGE, add_adapter=True, output_hidden_size=24, num_adapter_layers=2)),
}
HF = {
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, Wav2Vec2Model),
    "hubert": (transformers.HubertConfig, transformers.HubertModel, HubertModel),
}


def hf_model(arch: str, overrides: dict, seed: int = 0):
    hf_config_cls, hf_cls, _ = HF[arch]
    torch.manual_seed(seed)
    model = hf_cls(hf_config_cls(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # non-trivial norms and batch-norm statistics, so a swapped weight/bias shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                b.normal_(0.0, 0.1)
    return model


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 1200, generator=g)
    mask = torch.ones(2, 1200, dtype=torch.long)
    mask[1, 850:] = 0
    x[1, 850:] = 0.0  # padding as the feature extractor writes it
    return x, mask


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    arch, overrides = VARIANTS[request.param]
    hf = hf_model(arch, overrides)
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    ours = HF[arch][2].from_pretrained(folder, attn_implementation="eager")
    return request.param, hf, ours, folder


# --------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_full_forward_matches_transformers(pair, impl):
    name, hf, ours, _ = pair
    hf.set_attn_implementation(impl)
    ours.set_attn_implementation(impl)
    x, mask = batch()
    with torch.no_grad():
        ref = hf(x, attention_mask=mask, output_hidden_states=True, output_attentions=impl == "eager")
        out = ours(x, attention_mask=mask, output_hidden_states=True, output_attentions=impl == "eager")
    assert_close(out.last_hidden_state, ref.last_hidden_state, ATOL_FP32, f"{name}/{impl} last_hidden_state")
    if isinstance(hf, transformers.Wav2Vec2Model):
        assert_close(out.extract_features, ref.extract_features, ATOL_FP32, f"{name}/{impl} extract_features")
    n = len(ref.hidden_states)
    assert len(out.hidden_states) == n == hf.config.num_hidden_layers + 1
    for i in range(n - 1):
        assert_close(out.hidden_states[i], ref.hidden_states[i], ATOL_FP32, f"{name}/{impl} input of layer {i}")
    if hf.config.do_stable_layer_norm:
        encoder_out = hf.encoder.layer_norm(ref.hidden_states[-1])  # transformers' last entry is pre-norm
        assert_close(out.hidden_states[-1], encoder_out, ATOL_FP32, f"{name}/{impl} final encoder output")
    else:
        assert_close(out.hidden_states[-1], ref.hidden_states[-1], ATOL_FP32, f"{name}/{impl} final encoder output")
    if impl == "eager":
        assert len(out.attentions) == len(ref.attentions) == hf.config.num_hidden_layers
        for i, (a, b) in enumerate(zip(out.attentions, ref.attentions)):
            assert_close(a, b, ATOL_FP32, f"{name} attention weights of layer {i}")


def test_stage_by_stage(pair):
    """Feature encoder, projection, positional conv and each layer, fed the same input, so a mismatch
    points at one module."""
    name, hf, ours, _ = pair
    x, _ = batch()
    with torch.no_grad():
        feats_ref = hf.feature_extractor(x).transpose(1, 2)  # (B, T, C)
        assert_close(ours.feature_encoder(x), feats_ref, ATOL_FP32, f"{name} feature encoder")
        proj_ref = hf.feature_projection(feats_ref)
        proj_ref = proj_ref[0] if isinstance(proj_ref, tuple) else proj_ref
        assert_close(ours.feature_projection(feats_ref)[0], proj_ref, ATOL_FP32, f"{name} feature projection")
        assert_close(ours.pos_conv(proj_ref), hf.encoder.pos_conv_embed(proj_ref), ATOL_FP32, f"{name} positional conv")
        for i, (ref_layer, our_layer) in enumerate(zip(hf.encoder.layers, ours.layers)):
            ref_out = ref_layer(proj_ref, attention_mask=None)
            ref_out = ref_out[0] if isinstance(ref_out, tuple) else ref_out
            assert_close(our_layer(proj_ref, None)[0], ref_out, ATOL_FP32, f"{name} layer {i}")
        if ours.adapter is not None:
            assert_close(ours.adapter(proj_ref), hf.adapter(proj_ref), ATOL_FP32, f"{name} adapter")


def test_positional_conv_weight_equals_checkpoint(pair):
    """The effective weight-normed kernel after loading is the checkpoint's, not a fresh random one."""
    name, hf, ours, _ = pair
    ref = hf.encoder.pos_conv_embed.conv.weight  # the parametrisation's computed weight
    assert_close(ours.pos_conv.kernel_weight(), ref, ATOL_FP32, f"{name} positional conv effective weight")


def test_frame_mask_and_lengths_match_transformers(pair):
    _name, hf, ours, _ = pair
    lengths = torch.tensor([400, 401, 999, 1200, 16000])
    add = getattr(hf.config, "add_adapter", False)
    ref = hf._get_feat_extract_output_lengths(lengths, add_adapter=add) if add else hf._get_feat_extract_output_lengths(lengths)
    assert ours.output_lengths(lengths).tolist() == ref.tolist()
    _, mask = batch()
    T = int(ours.output_lengths(torch.tensor(1200)))
    ref_mask = hf._get_feature_vector_attention_mask(T, mask) if not add else hf._get_feature_vector_attention_mask(T, mask, add_adapter=True)
    ours_mask = ours.frame_attention_mask(T, mask)
    assert ours_mask.dtype == torch.long and ours_mask.tolist() == ref_mask.long().tolist()
    assert ours.output_size == (hf.config.output_hidden_size if add else hf.config.hidden_size)


def test_save_with_ours_load_with_transformers(pair, tmp_path):
    name, hf, ours, _ = pair
    ours.save_pretrained(tmp_path)
    keys = set(load_file(os.path.join(tmp_path, "model.safetensors")))
    assert keys == set(hf.state_dict()), f"{name}: names written differ from transformers': {keys ^ set(hf.state_dict())}"
    arch = "hubert" if isinstance(hf, transformers.HubertModel) else "wav2vec2"
    back = HF[arch][1].from_pretrained(tmp_path).eval()
    x, mask = batch(seed=3)
    with torch.no_grad():
        assert_close(back(x, attention_mask=mask).last_hidden_state, ours(x, attention_mask=mask).last_hidden_state,
                     ATOL_FP32, f"{name} saved by ours, run by transformers")


def test_backends_agree(pair):
    name, _, ours, _ = pair
    x, mask = batch(seed=4)
    with torch.no_grad():
        ours.set_attn_implementation("eager")
        a = ours(x, attention_mask=mask).last_hidden_state
        ours.set_attn_implementation("sdpa")
        b = ours(x, attention_mask=mask).last_hidden_state
    assert_close(a, b, ATOL_BACKENDS, f"{name} eager vs sdpa")


# ----------------------------------------------------------------------------------------------- padding
def test_padding_never_reaches_valid_frames(tmp_path):
    """Layer-norm feature encoder: the valid frames of a padded waveform equal those of the waveform alone."""
    hf = hf_model("wav2vec2", LARGE)
    hf.save_pretrained(tmp_path)
    ours = Wav2Vec2Model.from_pretrained(tmp_path)
    x, mask = batch()
    x[1, 850:] = 5.0 * torch.randn(350)  # garbage in the padding must not matter
    with torch.no_grad():
        padded = ours(x, attention_mask=mask).last_hidden_state
        alone = ours(x[1:, :850]).last_hidden_state
    n = alone.shape[1]
    assert int(ours.frame_attention_mask(padded.shape[1], mask)[1].sum()) == n
    assert_close(padded[1, :n], alone[0], ATOL_FP32, "valid frames, padded vs alone")


# ------------------------------------------------------------------------------------ checkpoint layouts
def test_legacy_key_names(tmp_path):
    """A ...ForCTC checkpoint with every old name: wav2vec2. prefix, lm_head, weight_g/weight_v, gamma/beta,
    mask_time_emb_vector."""
    hf = hf_model("wav2vec2", {"mask_time_prob": 0.05})
    legacy = {}
    for k, v in hf.state_dict().items():
        k = k.replace("conv.parametrizations.weight.original0", "conv.weight_g")
        k = k.replace("conv.parametrizations.weight.original1", "conv.weight_v")
        if "layer_norm." in k:
            k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
        k = k.replace("masked_spec_embed", "mask_time_emb_vector")
        legacy["wav2vec2." + k] = v.clone().contiguous()
    legacy["lm_head.weight"] = torch.randn(5, 32)
    legacy["lm_head.bias"] = torch.randn(5)
    assert any(k.endswith(".gamma") for k in legacy) and any(k.endswith("weight_g") for k in legacy)
    hf.config.save_pretrained(tmp_path)
    save_file(legacy, os.path.join(tmp_path, "model.safetensors"))
    ours = Wav2Vec2Model.from_pretrained(tmp_path)
    assert sorted(ours.load_report.skipped) == ["lm_head.bias", "lm_head.weight"]
    assert_close(ours.masked_spec_embed, hf.masked_spec_embed, 0.0, "masked_spec_embed from mask_time_emb_vector")
    assert_close(ours.pos_conv.kernel_weight(), hf.encoder.pos_conv_embed.conv.weight, ATOL_FP32, "legacy weight norm")
    x, mask = batch()
    with torch.no_grad():
        assert_close(ours(x, attention_mask=mask).last_hidden_state, hf(x, attention_mask=mask).last_hidden_state,
                     ATOL_FP32, "legacy checkpoint")


@pytest.mark.parametrize("task", ["Wav2Vec2ForPreTraining", "HubertForCTC"])
def test_task_model_checkpoints(task, tmp_path):
    arch = "hubert" if task.startswith("Hubert") else "wav2vec2"
    torch.manual_seed(0)
    hf = getattr(transformers, task)(HF[arch][0](**TINY, codevector_dim=8, proj_codevector_dim=8,
                                                   num_codevectors_per_group=4)
                                     if arch == "wav2vec2" else HF[arch][0](**TINY)).eval()
    hf.save_pretrained(tmp_path)
    ours = HF[arch][2].from_pretrained(tmp_path)
    heads = {"Wav2Vec2ForPreTraining": ("quantizer.", "project_hid.", "project_q."), "HubertForCTC": ("lm_head.",)}[task]
    assert ours.load_report.skipped and all(k.startswith(heads) for k in ours.load_report.skipped)
    base = getattr(hf, arch)
    x, mask = batch()
    with torch.no_grad():
        assert_close(ours(x, attention_mask=mask).last_hidden_state, base(x, attention_mask=mask).last_hidden_state,
                     ATOL_FP32, task)


def test_unknown_and_missing_tensors_are_named(tmp_path):
    hf = hf_model("wav2vec2", {})
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    hf.config.save_pretrained(tmp_path)
    save_file({**state, "encoder.layers.0.mystery.weight": torch.zeros(1)}, os.path.join(tmp_path, "model.safetensors"))
    with pytest.raises(ValueError, match="mystery"):
        Wav2Vec2Model.from_pretrained(tmp_path)
    del state["encoder.layers.1.final_layer_norm.bias"]
    save_file(state, os.path.join(tmp_path, "model.safetensors"))
    with pytest.raises(ValueError, match=r"layers\.1\.ffn_norm\.bias"):
        Wav2Vec2Model.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("ours_cls, ref_cls", [(Wav2Vec2Config, transformers.Wav2Vec2Config),
                                                 (HubertConfig, transformers.HubertConfig)])
def test_config_defaults_and_round_trip(ours_cls, ref_cls, tmp_path):
    ref = ref_cls()
    for f in dataclasses.fields(ours_cls):
        if f.name == "extra":
            continue
        ours_default, ref_default = getattr(ours_cls(), f.name), getattr(ref, f.name)
        if f.name == "output_hidden_size":  # transformers fills None with hidden_size at construction
            ref_default = None
        if isinstance(ref_default, list):
            ref_default = tuple(ref_default)
        assert ours_default == ref_default, f"{f.name}: ours {ours_default!r}, transformers {ref_default!r}"
    ref_cls(**TINY, vocab_size=7).save_pretrained(tmp_path)
    with open(os.path.join(tmp_path, "config.json")) as f:
        written = json.load(f)
    config = ours_cls.from_pretrained(tmp_path)
    assert config.hidden_size == 32 and config.conv_kernel == (10, 3, 3) and config.num_feat_extract_layers == 3
    again = config.to_dict()
    for k, v in written.items():
        assert again[k] == v, f"round trip changed {k}: {v!r} -> {again[k]!r}"
    assert ours_cls.from_dict(again) == config


# --------------------------------------------------------------------------------------------- training
def test_spec_augment_statistics():
    g = torch.Generator().manual_seed(0)
    n, size, p, span = 97, 120, 0.3, 5
    counts = []
    for _ in range(2000):
        (starts,) = sample_span_starts([n], size, p, span, 2, generator=g)
        counts.append(len(starts))
        assert len(set(starts.tolist())) == len(starts), "span starts must be distinct"
        assert starts.min() >= 0 and starts.max() + span <= n, "every span lies inside the valid frames"
    expected = p * n / span  # probabilistic rounding: int(a + u), u ~ U(0, 1), has mean a
    assert set(counts) <= {int(expected), int(expected) + 1}
    mean = sum(counts) / len(counts)
    assert abs(mean - expected) < 0.05, f"mean span count {mean:.3f}, expected {expected:.3f}"
    # min_masks wins when the probability asks for fewer spans
    (starts,) = sample_span_starts([n], size, 0.0, span, 3, generator=g)
    assert len(starts) == 3
    # never more spans than fit
    (starts,) = sample_span_starts([7], size, 1.0, 5, 10, generator=g)
    assert len(starts) == 3
    mask = spans_to_mask([torch.tensor([0, 10])], 5, 20)
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_spec_augment_in_the_model():
    config = Wav2Vec2Config(**TINY, mask_time_prob=0.5, mask_time_length=2, mask_feature_prob=0.3,
                            mask_feature_length=4, mask_feature_min_masks=1)
    model = Wav2Vec2Model(config).train()
    x = torch.randn(2, 30, 32)
    torch.manual_seed(0)
    out = model.spec_augment(x, [30, 20])
    zero_channels = (out == 0).all(dim=1)  # (B, D): channels zeroed in every frame
    assert zero_channels.any(dim=1).all(), "every utterance gets at least mask_feature_min_masks channel spans"
    kept = ~zero_channels[:, None, :].expand_as(out)
    is_embed = (out == model.masked_spec_embed).logical_or(~kept).all(-1)  # (B, T): frame replaced by the vector
    unchanged = (out == x).logical_or(~kept).all(-1)
    assert (is_embed | unchanged).all(), "a frame is either untouched or masked_spec_embed"
    assert is_embed[0].any() and is_embed[1].any()
    assert not is_embed[1, 20:].any(), "time spans stay inside the valid frames"
    model.eval()
    assert torch.equal(model.spec_augment(x, [30, 20]), x), "no masking in eval mode"


def test_freeze_feature_encoder():
    model = Wav2Vec2Model(Wav2Vec2Config(**TINY, mask_time_prob=0.0))
    model.freeze_feature_encoder()
    model.train()
    model(torch.randn(1, 600)).last_hidden_state.sum().backward()
    assert all(p.grad is None for p in model.feature_encoder.parameters())
    assert all(p.grad is not None for p in model.layers.parameters())


def test_gradient_checkpointing_gives_the_same_grads():
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config(**TINY, mask_time_prob=0.0)).train()
    x, mask = batch()
    x, mask = x[:, :900], mask[:, :900]
    grads = []
    for on in (False, True):
        model.zero_grad()
        if on:
            model.gradient_checkpointing_enable()
        model(x, attention_mask=mask).last_hidden_state.pow(2).sum().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        assert_close(grads[1][k], grads[0][k], ATOL_FP32, f"grad of {k} with gradient checkpointing")


def test_layerdrop_skips_layers_in_training_only():
    model = Wav2Vec2Model(Wav2Vec2Config(**dict(TINY, layerdrop=1.0), mask_time_prob=0.0))
    x = torch.randn(1, 1200)
    model.train()
    out = model(x, output_hidden_states=True)
    assert torch.equal(out.last_hidden_state, out.hidden_states[0]), "layerdrop=1 skips every layer"
    model.eval()
    out = model(x, output_hidden_states=True)
    assert not torch.allclose(out.last_hidden_state, out.hidden_states[0])


def test_init_follows_transformers_scheme():
    torch.manual_seed(0)
    D, K = 64, 32
    config = Wav2Vec2Config(**dict(TINY, hidden_size=D, num_conv_pos_embeddings=K))
    model = Wav2Vec2Model(config)
    std = model.pos_conv.kernel_weight().std().item()
    expected = (4 / (K * D)) ** 0.5
    assert abs(std - expected) / expected < 0.1, f"positional conv std {std:.4f}, expected {expected:.4f}"
    k = (1 / config.conv_dim[-1]) ** 0.5
    assert model.feature_projection.proj.weight.abs().max() <= k
    assert 0 <= model.masked_spec_embed.min() and model.masked_spec_embed.max() <= 1
    conv = model.feature_encoder.layers[1].conv.weight  # kaiming normal: std sqrt(2 / fan_in)
    fan_in = conv.shape[1] * conv.shape[2]
    assert abs(conv.std().item() - (2 / fan_in) ** 0.5) / (2 / fan_in) ** 0.5 < 0.15
