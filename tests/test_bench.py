"""The benchmark runs end to end at a tiny size, so it never breaks. No timing is asserted: speed is what
the benchmark reports, not what a test decides."""

import json

from minispeechseq.bench import main


def test_bench_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--size", "tiny", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    names = [r["workload"] for r in report["results"]]
    for expected in ("encoder 1 s, batch 1", "encoder 1 s, padded batch 4", "greedy 32 tokens", "beam 4 x 32 tokens",
                     "top-p sampling 32 tokens", "training step", "wav2vec2-large-lv60 shape", "peak memory"):
        assert any(expected in n for n in names), f"{expected!r} missing from {names}"
    for r in report["results"]:
        assert r["ours_min"] >= 0 and r.get("theirs_min", 0) >= 0, r
        assert "ratio" in r, f"{r['workload']}: transformers was not measured"
    assert report["matmul_flops"] > 0 and report["bandwidth_bytes_per_s"] > 0
    assert "ms/token" in capsys.readouterr().out
