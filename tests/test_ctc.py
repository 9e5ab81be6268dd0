"""The CTC head (issue 16, item 5): Wav2Vec2ForCTC / HubertForCTC against transformers' own, on tiny random models
that transformers writes with save_pretrained.

Checked: logits, the loss in every reduction transformers offers (sum, mean, zero_infinity), its gradients, our
save read back by transformers, warm-starting a CTC model from a bare encoder checkpoint, and clear errors.
"""

import pytest
import torch
import transformers

from minispeechseq import HubertForCTC, Wav2Vec2ForCTC, Wav2Vec2Model
from tests.utils import ATOL_FP32, assert_close

V = 12
PAIRS = {
    "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2ForCTC, Wav2Vec2ForCTC),
    "hubert": (transformers.HubertConfig, transformers.HubertForCTC, HubertForCTC),
}
# A loss summed over a batch of utterances: the fp32 log-softmax terms of ~100 frames add up.
LOSS_ATOL = 1e-4
# Gradients of a summed loss reach tens: compared relative to their largest magnitude (measured up to 1e-5).
GRAD_RTOL = 3e-5


def assert_grad_close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    scale = max(1.0, ref.abs().max().item())
    assert_close(got, ref, GRAD_RTOL * scale, f"{what} (largest {scale:.1f})")


def tiny_config(kind: str, **overrides):
    config_class = PAIRS[kind][0]
    return config_class(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, conv_dim=(8, 8),
        conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
        vocab_size=V, pad_token_id=0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        feat_proj_dropout=0.0, final_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0, **overrides,
    )


@pytest.fixture(scope="module", params=["wav2vec2", "hubert"])
def pair(request, tmp_path_factory):
    kind = request.param
    torch.manual_seed(0)
    hf = PAIRS[kind][1](tiny_config(kind, feat_extract_norm="layer", do_stable_layer_norm=kind == "wav2vec2")).eval()
    folder = tmp_path_factory.mktemp(kind)
    hf.save_pretrained(folder)
    ours = PAIRS[kind][2].from_pretrained(folder).eval()
    return kind, hf, ours, folder


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 2400, generator=g)
    mask = torch.ones(3, 2400, dtype=torch.long)
    mask[1, 1600:] = 0
    mask[2, 900:] = 0
    x[mask == 0] = 0.0
    labels = torch.tensor([[3, 4, 4, 5, 6], [7, 8, 3, -100, -100], [9, 9, -100, -100, -100]])
    return x, mask, labels


def test_logits_match_transformers(pair):
    kind, hf, ours, _ = pair
    x, mask, _ = batch()
    with torch.no_grad():
        got, ref = ours(x, attention_mask=mask).logits, hf(x, attention_mask=mask).logits
    diff = assert_close(got, ref, ATOL_FP32, f"{kind} CTC logits")
    print(f"\n{kind} CTC logits: max diff {diff:.2e}")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("zero_infinity", [False, True])
def test_loss_and_gradients_match_transformers(pair, reduction, zero_infinity):
    kind, hf, ours, _ = pair
    x, mask, labels = batch(1)
    for model in (hf, ours):
        model.config.ctc_loss_reduction, model.config.ctc_zero_infinity = reduction, zero_infinity
    ours.zero_grad(), hf.zero_grad()
    got, ref = ours(x, attention_mask=mask, labels=labels), hf(x, attention_mask=mask, labels=labels)
    assert abs(got.loss.item() - ref.loss.item()) <= LOSS_ATOL, f"{kind} {reduction} loss {got.loss.item()} vs {ref.loss.item()}"
    got.loss.backward(), ref.loss.backward()
    assert_grad_close(ours.lm_head.weight.grad, hf.lm_head.weight.grad, f"{kind} lm_head gradient")
    ours_q = ours.encoder.layers[0].self_attn.q_proj.weight.grad
    hf_q = getattr(hf, kind).encoder.layers[0].attention.q_proj.weight.grad
    assert_grad_close(ours_q, hf_q, f"{kind} first-layer q_proj gradient")


def test_impossible_alignment_is_inf_or_zero(pair):
    """A transcript longer than the frames cannot be aligned: inf, or 0 with ctc_zero_infinity, as transformers."""
    kind, hf, ours, _ = pair
    x = torch.randn(1, 250)  # 11 frames
    labels = torch.arange(20)[None] % (V - 1) + 1  # 20 labels
    for zero in (False, True):
        for model in (hf, ours):
            model.config.ctc_zero_infinity = zero
        with torch.no_grad():
            got, ref = ours(x, labels=labels).loss, hf(x, labels=labels).loss
        assert (torch.isinf(got) and torch.isinf(ref)) or (got.item() == ref.item() == 0.0), f"{got} vs {ref}"
    for model in (hf, ours):
        model.config.ctc_zero_infinity = False


def test_save_is_read_by_transformers(pair, tmp_path):
    kind, hf, ours, _ = pair
    ours.save_pretrained(tmp_path)
    back = PAIRS[kind][1].from_pretrained(tmp_path).eval()
    x, mask, _ = batch(2)
    with torch.no_grad():
        assert_close(back(x, attention_mask=mask).logits, ours(x, attention_mask=mask).logits, ATOL_FP32,
                     f"{kind}: transformers reading our save")


def test_greedy_ctc_ids_are_argmax_per_frame(pair):
    _, hf, ours, _ = pair
    x, mask, _ = batch(3)
    with torch.no_grad():
        got = ours(x, attention_mask=mask).logits.argmax(-1)
        ref = hf(x, attention_mask=mask).logits.argmax(-1)
    assert torch.equal(got, ref)


def test_warm_start_from_a_bare_encoder_initialises_the_head(tmp_path, caplog):
    torch.manual_seed(1)
    encoder = Wav2Vec2Model(Wav2Vec2Model.config_class.from_dict(tiny_config("wav2vec2").to_dict()))
    encoder.save_pretrained(tmp_path)
    ctc = Wav2Vec2ForCTC.from_pretrained(tmp_path)
    assert sorted(ctc.load_report.initialized) == ["lm_head.bias", "lm_head.weight"]
    assert torch.equal(ctc.encoder.layers[0].fc1.weight, encoder.layers[0].fc1.weight)
    std = ctc.lm_head.weight.std().item()
    assert abs(std - ctc.config.initializer_range) < 0.01, f"head init std {std}"


def test_bare_encoder_reads_a_ctc_checkpoint_and_skips_the_head(pair):
    kind, _, ours, folder = pair
    encoder = ours.encoder_class.from_pretrained(folder)
    assert {"lm_head.weight", "lm_head.bias"} <= set(encoder.load_report.skipped)
    assert torch.equal(encoder.layers[1].fc2.weight, ours.encoder.layers[1].fc2.weight)


def test_errors_are_sentences(pair):
    _, _, ours, _ = pair
    x, mask, labels = batch()
    with pytest.raises(ValueError, match="labels contain ids >= vocab_size"):
        ours(x, attention_mask=mask, labels=labels + V)
    ours.config.ctc_loss_reduction = "median"
    try:
        with pytest.raises(ValueError, match="ctc_loss_reduction must be 'sum' or 'mean'"):
            ours(x, attention_mask=mask, labels=labels)
    finally:
        ours.config.ctc_loss_reduction = "sum"
    config = ours.config_class.from_dict({**ours.config.to_dict(), "vocab_size": None})
    with pytest.raises(ValueError, match="needs the size of its alphabet"):
        type(ours)(config)


def test_cli_inspect_reads_a_ctc_checkpoint(pair, capsys):
    """`architectures` in config.json tells a CTC checkpoint from a bare encoder of the same model_type."""
    from minispeechseq.tools.cli import main

    kind, _, ours, folder = pair
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{type(ours).__name__}:"), out[:200]
    assert "lm_head.weight -> lm_head.weight" in out, out[-2000:]
