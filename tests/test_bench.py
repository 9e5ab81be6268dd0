"""The benchmark runs end to end at a tiny size, so it never breaks. No timing is asserted: speed is what
the benchmark reports, not what a test decides."""

import json
import shutil

import pytest
import torch

from minispeechseq.tools.bench import main
from tests.utils import requires_cuda


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--size", "tiny", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [r["workload"] for r in report["results"]]
    for expected in ("encoder 1 s, batch 1", "encoder 1 s, padded batch 4", "greedy 32 tokens",
                     "batched greedy, batch 2 x 32 tokens", "beam 4 x 32 tokens", "top-p sampling 32 tokens",
                     "training step", "wav2vec2-large-lv60 shape", "peak memory"):
        assert any(expected in n for n in names), f"{expected!r} missing from {names}"
    for r in report["results"]:
        assert r["ours_min"] >= 0 and r.get("theirs_min", 0) >= 0, r
        assert "ratio" in r, f"{r['workload']}: transformers was not measured"
        if "ours_all" in r:  # timed rows: the paired ratio is the median of back-to-back ours / transformers
            pairs = sorted(o / t for o, t in zip(r["ours_all"], r["theirs_all"]))
            assert len(pairs) == 1 and r["paired_ratio"] == pairs[0], r
            assert r["ratio"] == min(r["ours_all"]) / min(r["theirs_all"]), r
    assert report["matmul_flops"] > 0 and report["bandwidth_bytes_per_s"] > 0
    # The bounds are the best of the measurements at the start, after each of the two pairs, and at the end.
    samples = report["bound_samples"]
    assert len(samples) == 4, samples
    assert report["bandwidth_bytes_per_s"] == max(b["bandwidth_bytes_per_s"] for b in samples)
    assert report["matmul_flops"] == max(b["matmul_flops"] for b in samples)
    assert report["device"] == "cpu" and report["attention"] == {"minispeechseq": "sdpa", "transformers": "sdpa"}
    # The throughput rows: batch x 32 tokens, and the real (unpadded) audio of the padded encoder batch.
    batched = [r for r in report["results"] if "batched greedy" in r["workload"]]
    assert len(batched) == 2 and all(r["work"] == 2 * 32 and r["work_unit"] == "tokens" for r in batched), batched
    encoder = next(r for r in report["results"] if "padded batch 4" in r["workload"])
    assert 3 < encoder["work"] < 4 and encoder["work_unit"] == "s of audio", encoder  # 4 rows of 1 s, 3 cut short
    for r in batched + [encoder]:
        assert r["ours_per_s"] == r["work"] / r["ours_min"] and r["theirs_per_s"] > 0, r
    printed = capsys.readouterr().out
    assert "ms/token" in printed and "tokens/s" in printed and "s of audio/s" in printed
    assert "memory copy" in printed and "cache share" in printed and "everything else" in printed

    # The int8 rows (CPU, fp32): each variant against transformers fp32, end to end and per token.
    for pair in ("tiny+bert", "tiny+gpt2"):
        for expected in ("greedy 32 tokens, ours int8 / tf fp32", "greedy 32 tokens, ours int8 / tf int8",
                         "greedy 32 tokens, ours int8-all / tf fp32", "greedy 32 tokens, tf int8 / tf fp32",
                         "per-token latency, ours int8", "per-token latency, transformers int8"):
            assert f"{pair}: {expected}" in names, f"{pair}: {expected!r} missing from {names}"
    tiny_gpt2 = next(r for r in report["results"] if r["workload"] == "tiny+gpt2: per-token latency, ours int8")
    # transformers' tiny GPT-2 decoder: 2 layers x 7 Conv1D (attention c_attn, c_proj; cross-attention q_attn,
    # c_attn, c_proj; MLP c_fc, c_proj) + the LM head; only the head is an nn.Linear, so 1 of 15 is quantized.
    assert tiny_gpt2["transformers_int8_matrices"] == "1 of 15", tiny_gpt2
    assert tiny_gpt2["tokens_per_s"] == 1 / tiny_gpt2["per_token_s"] and tiny_gpt2["ratio"] > 0, tiny_gpt2

    # The honest bounds: what a step reads, its achieved bandwidth against the copy bandwidth, and the shares.
    budgets = [r for r in report["results"] if "budget" in r]
    assert len(budgets) == 6, [r["workload"] for r in budgets]  # ours fp32, int8, int8-all for each pair
    for r in budgets:
        b = r["budget"]
        shares = [at["self_cache"] / sum(at.values()) for at in b["bytes_at_token"].values()]
        assert list(b["bytes_at_token"]) == ["1", "32", "128"] and shares == sorted(shares) and shares[0] < shares[-1]
        assert b["copy_bytes_per_s"] == report["bandwidth_bytes_per_s"], b
        assert b["achieved_bytes_per_s"] == b["bytes_per_step"] / b["per_token_s"], b
        assert b["weight_stream_fraction"] + b["other_fraction"] == pytest.approx(1.0), b
        weights = b["bytes_at_token"]["1"]["weights"]
        assert b["weight_stream_fraction"] == pytest.approx(weights / report["bandwidth_bytes_per_s"] / b["per_token_s"])
    fp32, int8 = (next(r["budget"] for r in budgets if r["workload"] == w)
                  for w in ("tiny+bert: per-token latency, ours fp32", "tiny+bert: per-token latency, ours int8"))
    assert int8["bytes_at_token"]["1"]["weights"] < fp32["bytes_at_token"]["1"]["weights"] / 2


def test_bench_cuda_without_a_gpu_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--size", "tiny", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA GPU" in err and "--device cpu" in err, err


@requires_cuda
def test_bench_cuda_bfloat16_flash(tmp_path, capsys):
    """On a GPU in bf16 ours runs its flash path against transformers' SDPA, with batch-16 throughput rows."""
    out = tmp_path / "bench.json"
    assert main(["--size", "tiny", "--device", "cuda", "--dtype", "bfloat16", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cuda" and report["attention"] == {"minispeechseq": "flash", "transformers": "sdpa"}
    names = [r["workload"] for r in report["results"]]
    for expected in ("encoder 1 s, padded batch 16", "batched greedy, batch 16 x 32 tokens", "peak GPU memory"):
        assert any(expected in n for n in names), f"{expected!r} missing from {names}"
    assert all("ratio" in r for r in report["results"]), [r["workload"] for r in report["results"] if "ratio" not in r]
    assert "ours (flash)" in capsys.readouterr().out


def test_decoder_stream_bytes_counts_what_a_step_reads():
    """By parameter name: all decoder weights but the embedding tables and the cross-attention k/v projections
    (cached after the first step), plus the LM head (GPT-2's is the tied token embedding)."""
    from minispeechseq.tools.bench import decoder_config, decoder_stream_bytes, encoder_config
    from minispeechseq.speech_encoder_decoder import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

    for kind in ("bert", "gpt2"):
        config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder_config("base", "tiny"),
                                                                         decoder_config(kind, "tiny"))
        model = SpeechEncoderDecoderModel(config=config)
        expected = 0
        for name, p in model.decoder.named_parameters(remove_duplicate=False):
            tables = ("embed_tokens.", "embed_positions.", "embed_token_types.")  # not embed_norm: read every step
            if name.startswith(tables) or ".cross_attn.k_proj." in name or ".cross_attn.v_proj." in name:
                continue
            expected += p.numel() * 4
        assert decoder_stream_bytes(model) == expected, kind


def test_row_ratios_best_call_and_paired_median():
    """The ratio compares each library's best call; the paired ratio is the median of ours / theirs over calls run
    back to back: here 3/6, 2/2 and 4/2, whose median is 1.0, while the best calls give 2/2 = 1.0 and the medians
    3/2. A slow moment (ours' 4 against theirs' 2) moves neither."""
    from minispeechseq.tools.bench import Row

    summary = Row("w", ours=[3.0, 2.0, 4.0], theirs=[6.0, 2.0, 2.0]).summary()
    assert summary["ratio"] == 1.0 and summary["paired_ratio"] == 1.0, summary
    assert summary["ours_median"] == 3.0 and summary["theirs_median"] == 2.0, summary
    lonely = Row("w", ours=[1.0]).summary()  # --no-transformers: no ratios at all
    assert "ratio" not in lonely and "paired_ratio" not in lonely


def _tiny_model(kind: str):
    from minispeechseq.tools.bench import decoder_config, encoder_config
    from minispeechseq.speech_encoder_decoder import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder_config("base", "tiny"),
                                                                     decoder_config(kind, "tiny"))
    return SpeechEncoderDecoderModel(config=config).eval()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_step_bytes_match_a_real_cache(kind):
    """The counted cross-attention K/V and self-attention cache bytes equal those of the cache a decoder really
    fills: run token by token, then sum the bytes of the tensors it holds."""
    from minispeechseq.tools.bench_bounds import step_bytes

    model = _tiny_model(kind)
    frames = 37
    memory = torch.randn(1, frames, model.config.encoder.hidden_size)
    cache = model.decoder.new_cache()
    tokens = 5
    with torch.no_grad():
        for t in range(tokens):
            model.decoder(torch.tensor([[3 + t]]), encoder_hidden_states=memory, cache=cache)
    held_self = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in cache.self_attn)
    held_cross = sum(c.k.numel() * c.k.element_size() + c.v.numel() * c.v.element_size() for c in cache.cross_attn)
    counted = step_bytes(model, frames, tokens)
    assert counted["self_cache"] == held_self and counted["cross_kv"] == held_cross, (counted, held_self, held_cross)


def test_decoder_stream_bytes_of_an_int8_decoder():
    """int8 layers count one byte per weight plus their fp32 scales and bias; the rest (norms) stays fp32."""
    from minispeechseq.tools.bench import decoder_stream_bytes
    from minispeechseq.recognition.quantize import Int8Linear, quantize

    model = quantize(_tiny_model("gpt2"), "int8")
    expected = 0
    for name, m in model.decoder.named_modules():
        if ".cross_attn.k_proj" in name or ".cross_attn.v_proj" in name:
            continue
        if isinstance(m, Int8Linear):
            expected += m.in_features * m.out_features + 4 * m.out_features * (1 + m.has_bias)
        elif not isinstance(m, torch.nn.Embedding):
            expected += sum(p.numel() * 4 for p in m.parameters(recurse=False))
    assert decoder_stream_bytes(model) == expected


def test_token_agreement_counts_reference_tokens():
    from minispeechseq.tools.bench_int8 import token_agreement

    pad = 0
    reference = torch.tensor([[5, 6, 7, 2], [5, 9, 2, 0]])  # 4 + 3 real tokens
    ids = torch.tensor([[5, 6, 8, 2, 0], [5, 9, 2, 0, 0]])  # one substitution in row 0; wider, padded
    tokens, rows = token_agreement(reference, ids, pad)
    assert tokens == 6 / 7 and rows == 0.5, (tokens, rows)


def test_bench_int8_kernels_tiny(tmp_path, capsys):
    out = tmp_path / "kernels.json"
    assert main(["--int8-kernels", "--size", "tiny", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    kernels = {r["kernel"] for r in report["kernels"]}
    assert {"fp32 (nn.Linear)", "fbgemm dynamic int8 (ours)", "_weight_int8pack_mm", "dequantize on the fly"} <= kernels
    shapes = {r["shape"] for r in report["kernels"]}
    assert {"64 x 32", "1000 x 32", "tiny+bert: greedy step", "tiny+gpt2: greedy step"} <= shapes, shapes
    for r in report["kernels"]:
        assert r["s"] > 0 and (r["speedup"] == 1.0 or not r["kernel"].startswith("fp32")), r
    e = report["encoder"]
    assert 0 < e["feature_encoder_s"] and 0 < e["encoder_s"] and 0 < e["encoder_int8_all_s"], e
    assert "conv feature encoder" in capsys.readouterr().out


def test_bench_int8_speed_tiny(tmp_path, capsys):
    """The int8 rows alone: both pairs, the int8-all encoder row, a budget per variant of ours."""
    out = tmp_path / "speed.json"
    assert main(["--int8-speed", "--size", "tiny", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [r["workload"] for r in report["results"]]
    assert "tiny: encoder, ours int8-all vs transformers fp32" in names, names
    assert sum("budget" in r for r in report["results"]) == 6 and report["bandwidth_bytes_per_s"] > 0
    printed = capsys.readouterr().out
    assert "tokens/s" in printed and "memory copy" in printed


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (apt-get install espeak-ng) to "
                    "render the digits test split")
def test_bench_int8_quality_small(tmp_path, capsys):
    out = tmp_path / "quality.json"
    assert main(["--int8-quality", "--utterances", "8", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["utterances"] == 8
    for mode in ("fp32", "int8", "int8-all"):
        assert 0.0 <= report[mode]["wer"] <= 1.0, report
    for mode in ("int8", "int8-all"):
        assert 0.0 <= report[mode]["identical"] <= report[mode]["token_agreement"] <= 1.0, report
    assert "tokens as fp32" in capsys.readouterr().out


def test_step_seconds_retimes_a_difference_that_noise_made_negative():
    """A per-step time is a difference of two timings; a loaded moment can make the 1-token call the slower one.
    step_seconds then times more pairs until the difference is the work, and never returns a negative latency."""
    import time

    from minispeechseq.tools.bench_timing import RETIME_LIMIT, step_seconds

    calls = []

    def slow():  # the 32-token call: 5 ms
        calls.append("many")
        time.sleep(0.005)

    step = step_seconds([0.010], [0.012], 31, slow, lambda: None, "test")  # the 1-token call met a slow moment
    assert calls == ["many"], calls  # one more pair was enough
    assert 0.004 / 31 < step < 0.010 / 31, step  # (about 5 ms - about 0) / 31
    calls.clear()
    with pytest.raises(RuntimeError, match="too loaded"):  # a 32-token call never slower: an error, not a latency
        step_seconds([0.0], [0.001], 31, lambda: calls.append("many"), lambda: None, "test")
    assert len(calls) == RETIME_LIMIT, calls
