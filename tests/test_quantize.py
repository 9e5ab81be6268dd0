"""The int8 mode (minispeechseq/recognition/quantize.py): close to fp32, the same transcripts, its three API forms, its errors,
and what saving a quantized model does. References are computed here by hand (the dequantized weights, torch's
F.linear, the fp32 model), never by the code under test.

Tolerances, in one place, as shares of the largest |value| of the fp32 output:
- one Int8Linear against F.linear with the fp32 weight: int8 weights (error <= scale / 2 per weight) and 7-bit
  activations (reduce_range, see quantize.py); measured 0.016-0.019 on a 256 -> 384 layer (0.12-0.20 with 8-bit
  activations on this AVX2 CPU: the test would catch reduce_range=False);
- the logits of a whole model, where those errors pass through every layer: measured 0.014-0.025 (random tiny
  models) and 0.008 (the bundled model).
"""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import minispeechseq
from minispeechseq import SpeechEncoderDecoderModel, Wav2Vec2Model
from minispeechseq.tools.bench import build_checkpoint
from minispeechseq.tools.cli import bundled_model_dir
from minispeechseq.tools.cli import main as cli_main
from minispeechseq.recognition.quantize import Int8Linear, quantize_rows

LAYER_TOL = 0.04  # one layer, share of max |y|
MODEL_TOL = 0.06  # a whole model's logits, share of max |logits|
SAMPLES = os.path.join(os.path.dirname(bundled_model_dir()), "samples")


def share(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| as a share of max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory):
    folders = {}
    for kind in ("bert", "gpt2"):
        folders[kind] = str(tmp_path_factory.mktemp(kind))
        build_checkpoint(kind, "tiny", folders[kind])
    return folders


# ----------------------------------------------------------------------------------------------- one layer
def test_quantize_rows_rounds_each_row_to_127_steps():
    torch.manual_seed(0)
    w = torch.randn(40, 24) * torch.logspace(-3, 0, 40)[:, None]  # rows of very different sizes
    w[7] = 0.0
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (40,)
    err = (q.float() * scale[:, None] - w).abs()
    assert bool((err <= scale[:, None] / 2 + 1e-7).all()), f"worst error / scale = {(err / scale[:, None]).max():.3f}"
    live = torch.arange(40) != 7
    assert bool((q[live].abs().amax(dim=1) == 127).all()), "each row's largest weight should map to 127"
    assert bool((q[7] == 0).all()) and scale[7] == 1.0, "a zero row stays zero with a harmless scale"


@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_close_to_fp32(bias):
    torch.manual_seed(0)
    linear = nn.Linear(256, 384, bias=bias)
    x = torch.randn(3, 5, 256)  # any leading shape, like nn.Linear
    ours = Int8Linear(linear)
    y = ours(x)
    ref = F.linear(x, linear.weight, linear.bias)
    assert y.shape == ref.shape == (3, 5, 384) and y.dtype == torch.float32
    assert share(y, ref) < LAYER_TOL, f"int8 vs fp32: {share(y, ref):.4f} of max |y| (tolerance {LAYER_TOL})"
    # Against the int8 weights as they multiply (dequantized), what is left is the activations' 7-bit rounding.
    w_dq, b = ours.weight_and_bias()
    assert (b is None) == (not bias) and w_dq.shape == (384, 256)
    d = share(y, F.linear(x, w_dq, b))
    assert d < LAYER_TOL, f"int8 vs its own dequantized weights: {d:.4f} of max |y| (tolerance {LAYER_TOL})"
    assert ours.nbytes() == 256 * 384 + 4 * 384 * (2 if bias else 1)


def test_int8_linear_refuses_other_dtypes():
    layer = Int8Linear(nn.Linear(8, 4))
    with pytest.raises(ValueError, match="runs on the CPU in float32"):
        layer(torch.randn(2, 8, dtype=torch.bfloat16))


# ------------------------------------------------------------------------------------------ whole models
@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_quantized_logits_close_to_fp32(tiny_pairs, kind):
    fp32 = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs[kind])
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    ids = torch.randint(2, 900, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = fp32(x, decoder_input_ids=ids).logits
        for mode in ("int8", "int8-all"):
            model = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs[kind], quantization=mode)
            d = share(model(x, decoder_input_ids=ids).logits, ref)
            assert d < MODEL_TOL, f"{kind} {mode}: logits differ by {d:.4f} of max |logits| (tolerance {MODEL_TOL})"


def test_api_forms_and_scope(tiny_pairs):
    folder = tiny_pairs["gpt2"]
    fp32 = SpeechEncoderDecoderModel.from_pretrained(folder)
    linears = lambda m: [n for n, c in m.named_modules() if type(c) is nn.Linear]  # noqa: E731
    int8s = lambda m: [n for n, c in m.named_modules() if isinstance(c, Int8Linear)]  # noqa: E731
    decoder_linears, encoder_linears = linears(fp32.decoder), linears(fp32.encoder)
    assert decoder_linears and encoder_linears

    loaded = SpeechEncoderDecoderModel.from_pretrained(folder, quantization="int8")
    assert linears(loaded.decoder) == [] and sorted(int8s(loaded.decoder)) == sorted(decoder_linears)
    assert "lm_head" in int8s(loaded.decoder)
    assert linears(loaded.encoder) == encoder_linears, "int8 leaves the encoder in fp32"
    assert loaded.quantization == "int8"

    model = SpeechEncoderDecoderModel.from_pretrained(folder)
    assert minispeechseq.quantize(model, "int8-all") is model  # in place, and returned
    assert linears(model) == [] and model.quantization == "int8-all"
    # The conv feature encoder and positional convolution stay fp32 (torch has no dynamic int8 convolution).
    assert any(isinstance(m, nn.Conv1d) for m in model.encoder.modules())
    assert minispeechseq.quantize(model, "int8").quantization == "int8-all", "a later 'int8' narrows nothing"


def test_tied_head_keeps_the_embedding_exact(tiny_pairs):
    """GPT-2's LM head is the token embedding: the head gets an int8 copy, the embedding keeps its fp32 matrix."""
    fp32 = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["gpt2"])
    assert fp32.decoder.lm_head.weight is fp32.decoder.embed_tokens.weight
    model = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["gpt2"], quantization="int8")
    emb = model.decoder.embed_tokens.weight
    assert isinstance(emb, nn.Parameter) and torch.equal(emb, fp32.decoder.embed_tokens.weight)
    head, _ = model.decoder.lm_head.weight_and_bias()
    scale = emb.abs().amax(dim=1, keepdim=True) / 127
    assert bool(((head - emb).abs() <= scale / 2 + 1e-7).all()), "the head is the embedding, rounded per row"


def test_bundled_model_transcribes_the_same_in_int8():
    folder = bundled_model_dir()
    fp32 = SpeechEncoderDecoderModel.from_pretrained(folder)
    processor = minispeechseq.Processor.from_pretrained(folder)
    audio = [minispeechseq.load_audio(os.path.join(SAMPLES, f)) for f in sorted(os.listdir(SAMPLES)) if f.endswith(".wav")]
    texts = {}
    for mode in (None, "int8", "int8-all"):
        model = SpeechEncoderDecoderModel.from_pretrained(folder, quantization=mode)
        texts[mode] = [r["text"] for r in minispeechseq.transcribe(model, audio, processor=processor)]
    assert texts["int8"] == texts[None] and texts["int8-all"] == texts[None], texts
    x = torch.randn(1, 24000, generator=torch.Generator().manual_seed(0)) * 0.1
    ids = torch.tensor([[fp32.config.decoder_start_token_id, 5, 6, 7, 8]])
    with torch.no_grad():
        ref = fp32(x, decoder_input_ids=ids).logits
        got = model(x, decoder_input_ids=ids).logits  # int8-all
    assert share(got, ref) < MODEL_TOL, f"bundled model int8-all: {share(got, ref):.4f} of max |logits|"


def test_cli_quantize_flag(capsys):
    wav = os.path.join(SAMPLES, sorted(f for f in os.listdir(SAMPLES) if f.endswith(".wav"))[0])
    assert cli_main(["transcribe", wav]) == 0
    fp32 = capsys.readouterr().out
    for mode in ("int8", "int8-all"):
        assert cli_main(["transcribe", wav, "--quantize", mode]) == 0
        assert capsys.readouterr().out == fp32
    assert cli_main(["transcribe", wav, "--quantize", "int4"]) == 2  # a usage error (common/arguments.run_command)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice: 'int4'" in err, err
    assert cli_main(["transcribe", wav, "--quantize", "int8", "--dtype", "bfloat16"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "float32 model on the CPU" in err, err


# ------------------------------------------------------------------------------------------------ errors
def test_wrong_names_are_one_line_errors(tiny_pairs, tmp_path):
    with pytest.raises(ValueError, match=r"quantization must be one of 'int8', 'int8-all'") as e:
        SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["bert"], quantization="int4")
    assert "\n" not in str(e.value)
    model = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["bert"])
    with pytest.raises(ValueError, match="quantization must be one of"):
        minispeechseq.quantize(model, "INT8")
    with pytest.raises(ValueError, match="quantization must be one of"):
        minispeechseq.quantize(model, None)
    with pytest.raises(ValueError, match="float32 model on the CPU"):
        minispeechseq.quantize(model.to(torch.bfloat16), "int8")
    encoder = Wav2Vec2Model(model.config.encoder)
    with pytest.raises(ValueError, match="has none; use 'int8-all'"):
        minispeechseq.quantize(encoder, "int8")
    assert minispeechseq.quantize(encoder, "int8-all") is encoder


# --------------------------------------------------------------------------------------------- save, load
def test_a_quantized_model_refuses_to_be_saved(tiny_pairs, tmp_path):
    """int8 weights are no checkpoint format transformers reads: save_pretrained (and state_dict) refuse in one
    line and write nothing; the fp32 folder loads and quantizes again."""
    model = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["bert"], quantization="int8")
    target = tmp_path / "saved"
    with pytest.raises(RuntimeError, match="quantized to int8 .* cannot be saved") as e:
        model.save_pretrained(str(target))
    assert "\n" not in str(e.value) and not target.exists()
    with pytest.raises(RuntimeError, match="cannot be saved"):
        model.state_dict()
    again = SpeechEncoderDecoderModel.from_pretrained(tiny_pairs["bert"])
    again.save_pretrained(str(target))  # the fp32 model saves as always
    assert SpeechEncoderDecoderModel.from_pretrained(str(target), quantization="int8").quantization == "int8"


def test_importing_the_library_imports_nothing_optional():
    code = ("import sys, minispeechseq; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torchao', 'transformers', 'jiwer', 'matplotlib'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
