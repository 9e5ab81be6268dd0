"""Wav2Vec2ForPreTraining (issue 29, item 1) against transformers' own, on tiny random models that transformers writes
with save_pretrained: the quantizer, the two projections, the contrastive and diversity losses, their gradients, the
checkpoint loaded whole and our save read back by transformers, the mask and negative helpers, and clear errors.

Both models get the same `mask_time_indices` and `sampled_negative_indices` (ours, from our helpers: the loss is a
function of them, so drawing them once and handing them to both is what makes the comparison exact).

Training mode draws Gumbel noise. Seeding torch is not enough to make both sides draw the same noise (the two
models make other random draws, in other orders, before it), so both are handed one fixed noise tensor instead:
transformers calls `torch.nn.functional.gumbel_softmax`, which the test replaces with `gumbel_softmax_with` (torch's
own formula, written out, with the noise given instead of drawn: `test_the_noise_patch_is_torchs_formula` checks it
against the real function on the same random state); ours draws its noise in `GumbelVectorQuantizer.gumbel_noise`,
which the test replaces to return the same tensor. Everything else (dropouts, LayerDrop) is set to 0, so the noise
is the only randomness left, and everything after it is each side's own code.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers.models.wav2vec2 import modeling_wav2vec2 as hf_modeling

from minispeechseq import Wav2Vec2Config, Wav2Vec2ForPreTraining, compute_mask_indices, sample_negative_indices
from minispeechseq.tools.cli import main
from tests.utils import ATOL_FP32, assert_close

# Tolerances, in one place. States and the perplexity: absolute, fp32 (ATOL_FP32 = 1e-5). The losses are sums over
# every masked frame (hundreds here): fp32 cannot hold them to 1e-5 absolute (a unit in the last place of 300 is
# 3e-5), so they are held to 1e-5 *relative* to their size. Gradients: 1e-4 of each tensor's largest magnitude.
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4
K = 5  # negatives per masked frame
L = 2400  # samples per utterance: 2400 -> 118 frames with the tiny conv stack below

TINY = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, conv_dim=(8, 8),
    conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
    hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, layerdrop=0.0,
    feat_quantizer_dropout=0.0, mask_time_prob=0.05,
    # A small codebook (2 groups of 4 codewords: 16 combinations) makes a negative equal to its positive common,
    # so the -inf branch of the loss is exercised too.
    num_codevector_groups=2, num_codevectors_per_group=4, codevector_dim=8, proj_codevector_dim=6, num_negatives=K,
)
VARIANTS = {"base": {}, "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    torch.manual_seed(0)
    hf = transformers.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**TINY, **VARIANTS[request.param])).eval()
    folder = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(folder)
    ours = Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    return request.param, hf, ours, folder


def batch(ours, seed: int = 0, padded: bool = True):
    """Audio (3, L), its sample mask, and a frame mask and negatives drawn by our helpers."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, L, generator=g)
    attention_mask = torch.ones(3, L, dtype=torch.long)
    if padded:
        attention_mask[1, 1600:] = 0
        attention_mask[2, 900:] = 0
        x[attention_mask == 0] = 0.0
    T = int(ours.encoder.output_lengths(torch.tensor(L)))
    frames = ours.encoder.frame_attention_mask(T, attention_mask)
    mask = compute_mask_indices((3, T), 0.5, 4, attention_mask=frames, min_masks=2, generator=g)
    negatives = sample_negative_indices((3, T), K, mask, generator=g)
    return x, attention_mask, mask, negatives


def compare_outputs(got, ref, what: str) -> dict[str, float]:
    diffs = {}
    for name in ("projected_states", "projected_quantized_states", "codevector_perplexity"):
        diffs[name] = assert_close(getattr(got, name), getattr(ref, name), ATOL_FP32, f"{what} {name}")
    for name in ("loss", "contrastive_loss", "diversity_loss"):
        a, b = getattr(got, name), getattr(ref, name)
        diffs[name] = assert_close(a, b, LOSS_RTOL * max(1.0, b.abs().item()), f"{what} {name} ({b.item():.3f})")
    return diffs


# ------------------------------------------------------------------------------------------------- loading
def test_every_checkpoint_tensor_is_loaded(pair):
    _, hf, ours, _ = pair
    report = ours.load_report
    assert not report.skipped and not report.unexpected and not report.initialized, vars(report)
    assert sorted(t for t, _ in report.loaded) == sorted(hf.state_dict()), "some checkpoint tensor was not loaded"
    assert_close(ours.quantizer.codevectors.reshape(1, -1, 4), hf.quantizer.codevectors, 0.0, "codevectors")


def test_our_save_loads_in_transformers(pair, tmp_path):
    name, _, ours, _ = pair
    ours.save_pretrained(tmp_path)
    back, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    x, attention_mask, mask, negatives = batch(ours, 3)
    with torch.no_grad():
        got = ours(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives)
        ref = back.eval()(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives)
    compare_outputs(got, ref, f"{name}: our save run by transformers")


# ------------------------------------------------------------------------------------------------ eval mode
@pytest.mark.parametrize("padded", [False, True])
def test_eval_outputs_match_transformers(pair, padded):
    name, hf, ours, _ = pair
    x, attention_mask, mask, negatives = batch(ours, 1, padded)
    am = attention_mask if padded else None
    with torch.no_grad():
        got = ours(x, attention_mask=am, mask_time_indices=mask, sampled_negative_indices=negatives)
        ref = hf(x, attention_mask=am, mask_time_indices=mask, sampled_negative_indices=negatives)
    diffs = compare_outputs(got, ref, f"{name} eval")
    print(f"\n{name} eval (padded={padded}): " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))


def test_without_negatives_there_is_no_loss(pair):
    _, hf, ours, _ = pair
    x, _, mask, _ = batch(ours, 2)
    with torch.no_grad():
        got, ref = ours(x, mask_time_indices=mask), hf(x, mask_time_indices=mask)
        bare = ours(x)
    assert got.loss is None and got.contrastive_loss is None and got.diversity_loss is None
    assert_close(got.projected_states, ref.projected_states, ATOL_FP32, "projected_states without negatives")
    assert_close(got.codevector_perplexity, ref.codevector_perplexity, ATOL_FP32, "perplexity without negatives")
    assert bare.loss is None and bare.projected_states.shape == got.projected_states.shape


def test_a_negative_equal_to_its_positive_is_left_out(pair):
    """With 16 codeword combinations, some negatives share their positive's codewords: those logits are -inf."""
    _, _, ours, _ = pair
    x, _, mask, negatives = batch(ours, 1)
    with torch.no_grad():
        q = ours(x, mask_time_indices=mask).projected_quantized_states
    B, T, P = q.shape
    same = (q.reshape(B * T, P)[negatives.reshape(-1)].view(B, T, K, P) == q[:, :, None]).all(-1)
    assert same[mask].any(), "the test batch should contain a negative equal to its positive"


# -------------------------------------------------------------------------------------------- training mode
def gumbel_softmax_with(noise: torch.Tensor):
    """torch.nn.functional.gumbel_softmax (torch 2.x source, written out) with the Gumbel noise given, not drawn."""

    def gumbel_softmax(logits, tau=1.0, hard=False, eps=1e-10, dim=-1):
        y_soft = ((logits + noise.view_as(logits)) / tau).softmax(dim)
        if not hard:
            return y_soft
        index = y_soft.max(dim, keepdim=True)[1]
        y_hard = torch.zeros_like(logits).scatter_(dim, index, 1.0)
        return y_hard - y_soft.detach() + y_soft

    return gumbel_softmax


def test_the_noise_patch_is_torchs_formula():
    """On the same random state, torch's gumbel_softmax and the patch fed our quantizer's noise agree exactly."""
    logits = torch.randn(30, 4, requires_grad=True)
    quantizer = Wav2Vec2ForPreTraining(Wav2Vec2Config(**TINY)).quantizer
    torch.manual_seed(7)
    real = F.gumbel_softmax(logits, tau=0.7, hard=True)
    torch.manual_seed(7)
    noise = quantizer.gumbel_noise(logits.shape, logits.device)
    torch.manual_seed(7)
    assert torch.equal(noise, -torch.empty(30, 4).exponential_().log())
    assert torch.equal(gumbel_softmax_with(noise)(logits, tau=0.7, hard=True), real)


@pytest.mark.parametrize("training", [False, True])
def test_the_quantizer_alone_matches_transformers(pair, monkeypatch, training):
    """Stage by stage: the quantizer on the same conv features, hard (eval) and with the same noise (training)."""
    name, hf, ours, _ = pair
    g = torch.Generator().manual_seed(6)
    features = torch.randn(2, 30, TINY["conv_dim"][-1], generator=g)
    mask = torch.rand(2, 30, generator=g) < 0.5
    noise = -torch.empty(2 * 30 * 2, 4).exponential_(generator=g).log()
    monkeypatch.setattr(hf_modeling.nn.functional, "gumbel_softmax", gumbel_softmax_with(noise))
    monkeypatch.setattr(ours.quantizer, "gumbel_noise", lambda shape, device: noise.view(shape))
    try:
        hf.quantizer.train(training), ours.quantizer.train(training)
        with torch.no_grad():
            for m in (None, mask):
                got, ref = ours.quantizer(features, m), hf.quantizer(features, m)
                assert_close(got[0], ref[0], ATOL_FP32, f"{name} quantized vectors (training={training})")
                assert_close(got[1], ref[1], ATOL_FP32, f"{name} perplexity (training={training}, mask={m is not None})")
    finally:
        hf.quantizer.eval(), ours.quantizer.eval()


def test_training_gradients_match_transformers(pair, monkeypatch):
    name, hf, ours, _ = pair
    x, attention_mask, mask, negatives = batch(ours, 4)
    B, T = mask.shape
    G, V = TINY["num_codevector_groups"], TINY["num_codevectors_per_group"]
    noise = -torch.empty(B * T * G, V).exponential_(generator=torch.Generator().manual_seed(5)).log()
    monkeypatch.setattr(hf_modeling.nn.functional, "gumbel_softmax", gumbel_softmax_with(noise))
    monkeypatch.setattr(ours.quantizer, "gumbel_noise", lambda shape, device: noise.view(shape))
    for model in (hf, ours):
        model.train()
        model.set_gumbel_temperature(1.5)
        model.zero_grad()
    try:
        got = ours(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives)
        ref = hf(x, attention_mask=attention_mask, mask_time_indices=mask, sampled_negative_indices=negatives)
        diffs = compare_outputs(got, ref, f"{name} training")
        got.loss.backward()
        ref.loss.backward()
    finally:
        for model in (hf, ours):
            model.eval()
            model.set_gumbel_temperature(2)
    ours_grads = {k: p.grad for k, p in ours.named_parameters()}
    theirs = ours.checkpoint_converter(ours.config).to_checkpoint(ours_grads, ours.config)
    # Each tensor against its own largest gradient, floored at 1e-6 of the model's largest: the keys' biases have a
    # gradient of exactly 0 in exact arithmetic (a softmax ignores a shift shared by every key), so both sides
    # hold only rounding noise there (~1e-9), which no relative comparison can match.
    floor = 1e-6 * max(p.grad.abs().max().item() for p in hf.parameters() if p.grad is not None)
    worst = 0.0
    for key, p in hf.named_parameters():
        assert (p.grad is None) == (theirs[key] is None), f"{name}: {key} has a gradient on one side only"
        if p.grad is None:
            continue
        scale = max(p.grad.abs().max().item(), floor)
        diff = assert_close(theirs[key], p.grad, GRAD_RTOL * scale, f"{name} gradient of {key} (max {scale:.2e})")
        worst = max(worst, diff / scale)
    assert hf.quantizer.weight_proj.weight.grad.abs().max() > 0, "the straight-through gradient reaches the quantizer"
    print(f"\n{name} training: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items())
          + f"; worst gradient difference / magnitude {worst:.1e}")


# ---------------------------------------------------------------------------------------------- the helpers
def test_negatives_are_other_masked_frames_of_the_same_utterance():
    g = torch.Generator().manual_seed(0)
    T = 40
    mask = compute_mask_indices((4, T), 0.4, 3, attention_mask=torch.tensor([[1] * T] * 3 + [[1] * 25 + [0] * 15]),
                                min_masks=2, generator=g)
    assert not mask[3, 25:].any(), "spans stay inside the real frames"
    negatives = sample_negative_indices((4, T), 30, mask, generator=g)
    assert negatives.shape == (4, T, 30) and negatives.dtype == torch.long
    for b in range(4):
        rows = negatives[b] - b * T
        assert (rows[~mask[b]] == 0).all(), "unmasked frames point at their utterance's first frame, as transformers"
        for t in mask[b].nonzero().flatten().tolist():
            drawn = rows[t]
            assert mask[b, drawn].all() and (drawn != t).all(), f"utterance {b}, frame {t}: {drawn.tolist()}"
    # Uniform over the others: frame 0 of a 4-frame masked utterance draws 1, 2 and 3 about equally often.
    counts = torch.bincount(sample_negative_indices((1, 4), 3000, generator=g)[0, 0], minlength=4)
    assert counts[0] == 0 and (counts[1:] - 1000).abs().max() < 150, counts.tolist()


def test_negatives_follow_transformers_layout():
    """The same frames are candidates as in transformers' numpy sampler (offsets included), and both accept numpy."""
    mask = np.zeros((2, 8), dtype=bool)
    mask[0, 1:5] = True
    mask[1, [0, 6, 7]] = True
    ref = hf_modeling._sample_negative_indices((2, 8), 50, mask)
    ours = sample_negative_indices((2, 8), 50, mask)
    for b in range(2):
        assert set(ref[b][mask[b]].flatten().tolist()) == set(ours[b][torch.from_numpy(mask[b])].flatten().tolist())
        assert set(ref[b][~mask[b]].flatten().tolist()) == set(ours[b][~torch.from_numpy(mask[b])].flatten().tolist())


# --------------------------------------------------------------------------------------------------- errors
def test_impossible_arguments_are_sentences(pair):
    _, _, ours, _ = pair
    x, _, mask, negatives = batch(ours, 0, padded=False)
    with pytest.raises(ValueError, match="must be divisible by num_codevector_groups"):
        Wav2Vec2ForPreTraining(Wav2Vec2Config(**{**TINY, "codevector_dim": 9}))
    one = torch.zeros(2, 10, dtype=torch.bool)
    one[0, 3:6] = True
    one[1, 4] = True
    with pytest.raises(ValueError, match="Utterance 1 of the batch has one masked frame"):
        sample_negative_indices((2, 10), 3, one)
    with pytest.raises(ValueError, match="num_negatives must be a whole number, at least 1"):
        sample_negative_indices((2, 10), 0, one)
    with pytest.raises(ValueError, match="mask_length .* is longer than the sequence"):
        compute_mask_indices((2, 10), 0.5, 11)
    with pytest.raises(ValueError, match="without mask_time_indices"):
        ours(x, sampled_negative_indices=negatives)
    with pytest.raises(ValueError, match="the audio gives 3 x 118 frames"):
        ours(x, mask_time_indices=mask[:, :-1])
    with pytest.raises(ValueError, match="hides no frame"):
        ours(x, mask_time_indices=torch.zeros_like(mask))
    with pytest.raises(ValueError, match="must lie in 0..353"):
        ours(x, mask_time_indices=mask, sampled_negative_indices=negatives + 3 * 118)
    with pytest.raises(ValueError, match="expected .batch, frames, num_negatives."):
        ours(x, mask_time_indices=mask, sampled_negative_indices=negatives[:2])
    with pytest.raises(ValueError, match="expected integer row indices"):
        ours(x, mask_time_indices=mask, sampled_negative_indices=negatives.float())
    try:
        ours.config.apply_spec_augment = False
        with pytest.raises(ValueError, match="apply_spec_augment is False"):
            ours(x, mask_time_indices=mask)
    finally:
        ours.config.apply_spec_augment = True
    unmasked = Wav2Vec2ForPreTraining(Wav2Vec2Config(**{**TINY, "mask_time_prob": 0.0}))
    with pytest.raises(ValueError, match="no masked_spec_embed"):
        unmasked(x, mask_time_indices=mask)


def test_inspect_and_convert_keep_the_head(pair, tmp_path, capsys):
    """`minispeechseq inspect` reads a pre-training checkpoint as Wav2Vec2ForPreTraining (its `architectures`), so
    nothing is skipped; `convert` writes it whole."""
    name, hf, _, folder = pair
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Wav2Vec2ForPreTraining") and "skipped (0): none" in out, out[-500:]
    assert "quantizer.codevectors -> quantizer.codevectors [2, 4, 4]" in out
    assert main(["convert", str(folder), str(tmp_path / "out")]) == 0
    back, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert torch.equal(back.quantizer.codevectors, hf.quantizer.codevectors)
