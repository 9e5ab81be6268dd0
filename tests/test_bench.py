"""The benchmark runs end to end at a tiny size, so it never breaks. No timing is asserted: speed is what
the benchmark reports, not what a test decides."""

import json

import torch

from minispeechseq.bench import main
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
    from minispeechseq.bench import decoder_config, decoder_stream_bytes, encoder_config
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
    from minispeechseq.bench import Row

    summary = Row("w", ours=[3.0, 2.0, 4.0], theirs=[6.0, 2.0, 2.0]).summary()
    assert summary["ratio"] == 1.0 and summary["paired_ratio"] == 1.0, summary
    assert summary["ours_median"] == 3.0 and summary["theirs_median"] == 2.0, summary
    lonely = Row("w", ours=[1.0]).summary()  # --no-transformers: no ratios at all
    assert "ratio" not in lonely and "paired_ratio" not in lonely
