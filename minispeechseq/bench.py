"""`minispeechseq bench`: minispeechseq against transformers on the same weights, in the same process.

For each encoder-decoder pair a model of real size is built with random weights (speed does not depend on the
values), saved once in transformers' layout, and loaded by both libraries. Every workload then runs on both,
alternating, several times; the table gives the min and median of each and the ratio ours / transformers.

Next to the ratios stand the machine's own bounds, measured in the same run:
- encoder: the FLOPs of the forward (counted by torch) / the measured fp32 matmul FLOP/s;
- greedy decoding: each new token must stream every decoder weight from memory once, so
  per-token latency >= decoder weight bytes / the measured memory bandwidth.

    python -m minispeechseq.bench                 # the full table (several minutes on a 2-core CPU)
    python -m minispeechseq.bench --size tiny     # a seconds-long smoke run
    python -m minispeechseq.bench --dtype bfloat16  # both libraries with bf16 weights and inputs (CPU: fast only
                                                    # where the CPU has bf16 dot products, AVX512_BF16 / AMX)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

SAMPLE_RATE = 16000
NEW_TOKENS = 32


# ------------------------------------------------------------------------------------------- the models
def encoder_config(kind: str, size: str):
    from .wav2vec2_config import Wav2Vec2Config

    if size == "tiny":
        return Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2),
                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    if kind == "large":  # wav2vec2-large-lv60: pre-LN, layer-norm feature encoder, conv bias
        return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    return Wav2Vec2Config()  # wav2vec2-base


def decoder_config(kind: str, size: str):
    from .decoders.bert import BertConfig
    from .decoders.gpt2 import GPT2Config

    if kind == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          vocab_size=1000) if size == "tiny" else BertConfig()
    return GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=1000) if size == "tiny" else GPT2Config()


def build_checkpoint(decoder_kind: str, size: str, folder: str) -> None:
    from .speech_encoder_decoder import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel

    torch.manual_seed(0)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder_config("base", size), decoder_config(decoder_kind, size)
    )
    vocab = config.decoder.vocab_size
    # Ids no random model will emit as a first choice often; min_new_tokens forces the length anyway.
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, vocab - 1
    SpeechEncoderDecoderModel(config=config).save_pretrained(folder)


def audio(seconds: float, batch: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) noise-like speech stand-in; row b of a batch is shorter by b/4 of the length (a padded batch)."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    x = torch.randn(batch, n, generator=g) * 0.1
    mask = torch.ones(batch, n, dtype=torch.long)
    for b in range(1, batch):
        cut = n - b * n // (4 * batch)
        x[b, cut:] = 0.0
        mask[b, cut:] = 0
    return x.to(dtype), mask


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Row:
    name: str
    ours: list[float] = field(default_factory=list)
    theirs: list[float] = field(default_factory=list)
    unit: str = "s"

    def summary(self) -> dict:
        out = {"workload": self.name, "unit": self.unit, "ours_min": min(self.ours), "ours_median": statistics.median(self.ours)}
        if self.theirs:
            out.update(theirs_min=min(self.theirs), theirs_median=statistics.median(self.theirs),
                       ratio=min(self.ours) / min(self.theirs))
        return out


def alternate(name: str, ours: Callable[[], object], theirs: Callable[[], object] | None, repeats: int) -> Row:
    """Warm up both once, then time them alternately, so drifting machine load hits both alike."""
    row = Row(name)
    ours()
    if theirs is not None:
        theirs()
    for _ in range(repeats):
        for fn, times in ((ours, row.ours), (theirs, row.theirs)):
            if fn is None:
                continue
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return row


def matmul_flops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def memory_bandwidth(mbytes: int = 256, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Bytes/s of a matrix-vector product over a matrix far larger than the caches: the access pattern of
    one decoding step, which reads every weight once."""
    size = torch.empty((), dtype=dtype).element_size()
    rows = mbytes * 2**20 // size // 4096
    w, v = torch.randn(rows, 4096, dtype=dtype), torch.randn(4096, dtype=dtype)
    w @ v
    best = min(_time(lambda: w @ v) for _ in range(repeats))
    return w.numel() * size / best


def _time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def decoder_stream_bytes(model) -> int:
    """Bytes one greedy step must read: every decoder weight, except the embedding tables of which a step reads
    one row (the token embedding counts once anyway when it is the tied LM head)."""
    dec = model.decoder
    skip = {id(dec.get_input_embeddings().weight)}
    positions = getattr(dec, "embed_positions", None)
    if isinstance(positions, torch.nn.Embedding):
        skip.add(id(positions.weight))
    total = sum(p.numel() * p.element_size() for p in dec.parameters() if id(p) not in skip)
    lm_head = getattr(dec, "lm_head", None)
    if lm_head is not None:
        total += lm_head.weight.numel() * lm_head.weight.element_size() * (id(lm_head.weight) in skip)
    return total


# ------------------------------------------------------------------------------------------ workloads
def bench_pair(decoder_kind: str, size: str, repeats: int, with_transformers: bool, folder: str,
               dtype: torch.dtype = torch.float32) -> list[dict]:
    from .speech_encoder_decoder import SpeechEncoderDecoderModel

    build_checkpoint(decoder_kind, size, folder)
    ours = SpeechEncoderDecoderModel.from_pretrained(folder, dtype=dtype).eval()
    theirs = None
    if with_transformers:
        import transformers

        transformers.logging.set_verbosity_error()
        theirs = transformers.SpeechEncoderDecoderModel.from_pretrained(
            folder, attn_implementation="sdpa", dtype=dtype
        ).eval()
    seconds = 1.0 if size == "tiny" else 10.0
    x1, _ = audio(seconds, dtype=dtype)
    x4, m4 = audio(seconds, batch=4, dtype=dtype)
    gen = {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS}
    pair = f"wav2vec2-base+{decoder_kind}" if size != "tiny" else f"tiny+{decoder_kind}"
    rows: list[Row] = []

    def both(name, fn_ours, fn_theirs):
        with torch.no_grad():
            rows.append(alternate(f"{pair}: {name}", fn_ours, fn_theirs if theirs is not None else None, repeats))

    if decoder_kind == "bert":  # the encoder is the same in both pairs: time it once
        both(f"encoder {seconds:g} s, batch 1", lambda: ours.encoder(x1), lambda: theirs.encoder(x1))
        both(f"encoder {seconds:g} s, padded batch 4", lambda: ours.encoder(x4, attention_mask=m4),
             lambda: theirs.encoder(x4, attention_mask=m4))
    both(f"greedy {NEW_TOKENS} tokens", lambda: ours.generate(x1, **gen), lambda: theirs.generate(x1, **gen))
    # Per-token latency: 32 tokens minus 1 token (the encoder and the first step), timed back to back, so the
    # difference is decoding steps alone, whatever the machine's load was earlier.
    one = {"max_new_tokens": 1, "min_new_tokens": 1}
    per_token = alternate("per-token", lambda: ours.generate(x1, **gen), lambda: ours.generate(x1, **one), repeats)
    per_token_s = (min(per_token.ours) - min(per_token.theirs)) / (NEW_TOKENS - 1)
    both(f"beam 4 x {NEW_TOKENS} tokens", lambda: ours.generate(x1, num_beams=4, **gen),
         lambda: theirs.generate(x1, num_beams=4, **gen))
    both(f"top-p sampling {NEW_TOKENS} tokens", lambda: ours.generate(x1, do_sample=True, top_p=0.9, top_k=0, **gen),
         lambda: theirs.generate(x1, do_sample=True, top_p=0.9, top_k=0, **gen))

    labels = torch.randint(2, ours.config.decoder.vocab_size - 1, (1, NEW_TOKENS), generator=torch.Generator().manual_seed(0))

    # LayerDrop skips whole encoder layers at random (p = 0.1 by default), and the two libraries draw differently:
    # with it on, a training step's work differs from run to run and between libraries. Off on both sides, they
    # do the same work; dropout and SpecAugment stay on.
    ours.config.encoder.layerdrop = 0.0
    if theirs is not None:
        theirs.config.encoder.layerdrop = 0.0

    def train_step(model):
        model.train()
        model.zero_grad(set_to_none=True)
        out = model(input_values=x1, labels=labels)
        out.loss.backward()
        model.eval()

    rows.append(alternate(f"{pair}: training step ({seconds:g} s, {NEW_TOKENS} labels)", lambda: train_step(ours),
                          (lambda: train_step(theirs)) if theirs is not None else None, repeats))
    results = [r.summary() for r in rows]

    # Distance to the machine's bounds, for our model.
    enc_flops = count_flops(lambda: ours.encoder(x1))
    per_token_bytes = decoder_stream_bytes(ours)
    for r in results:
        r["pair"] = pair
        if r["workload"].endswith("encoder 10 s, batch 1") or r["workload"].endswith(f"encoder {seconds:g} s, batch 1"):
            r["encoder_gflops"] = enc_flops / 1e9
        if "greedy" in r["workload"]:
            r["decoder_stream_bytes"] = per_token_bytes
            r["per_token_s"] = per_token_s
    return results


def bench_large_encoder(size: str, repeats: int, with_transformers: bool, folder: str,
                        dtype: torch.dtype = torch.float32) -> list[dict]:
    from .wav2vec2 import Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(encoder_config("large", size)).save_pretrained(folder)
    ours = Wav2Vec2Model.from_pretrained(folder, dtype=dtype).eval()
    theirs = None
    if with_transformers:
        import transformers

        theirs = transformers.Wav2Vec2Model.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype).eval()
    seconds = 1.0 if size == "tiny" else 10.0
    x, _ = audio(seconds, dtype=dtype)
    with torch.no_grad():
        row = alternate(f"wav2vec2-large-lv60 shape: encoder {seconds:g} s", lambda: ours(x),
                        (lambda: theirs(x)) if theirs is not None else None, repeats)
    r = row.summary()
    r["encoder_gflops"] = count_flops(lambda: ours(x)) / 1e9
    return [r]


PEAK_MEMORY_SCRIPT = r"""
import sys, torch
lib, folder, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
dtype = getattr(torch, sys.argv[5])
if lib == "ours":
    from minispeechseq import SpeechEncoderDecoderModel as M
else:
    import transformers; transformers.logging.set_verbosity_error()
    from transformers import SpeechEncoderDecoderModel as M
model = M.from_pretrained(folder, dtype=dtype).eval()
x = (torch.randn(1, int(seconds * 16000)) * 0.1).to(dtype)

def status(key):  # kB figures of /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
with torch.no_grad():
    model.generate(x, max_new_tokens=8)
print(status("VmHWM") - before)
"""


def peak_memory(folder: str, seconds: float, with_transformers: bool, threads: int, dtype: str = "float32") -> dict:
    """Extra resident memory (bytes) at the peak of transcribing `seconds` of audio, over the resident size
    with the model loaded; each library in a fresh process (Linux: the peak is reset through clear_refs)."""
    def run(lib: str) -> int:
        done = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, lib, folder, str(seconds), str(threads), dtype],
                              capture_output=True, text=True, check=True)
        return int(done.stdout.strip().splitlines()[-1])

    r = {"workload": f"peak memory, transcribing {seconds:g} s", "unit": "bytes", "ours_min": run("ours")}
    if with_transformers:
        r["theirs_min"] = run("transformers")
        r["ratio"] = r["ours_min"] / max(r["theirs_min"], 1)
    return r


# ------------------------------------------------------------------------------------------------ main
def format_table(results: list[dict], flops: float, bandwidth: float) -> str:
    lines = [f"{'workload':58s} {'ours':>10s} {'transformers':>13s} {'ratio':>7s}  bound"]
    for r in results:
        fmt = (lambda v: f"{v / 2**20:8.1f}MB") if r["unit"] == "bytes" else (lambda v: f"{v:9.3f}s")
        bound = ""
        if "encoder_gflops" in r:
            ideal = r["encoder_gflops"] * 1e9 / flops
            bound = f"{r['encoder_gflops']:.0f} GFLOP -> {ideal:.3f}s at peak ({r['ours_min'] / ideal:.2f}x)"
        if "decoder_stream_bytes" in r:
            ideal = r["decoder_stream_bytes"] / bandwidth
            bound = f"weights {r['decoder_stream_bytes'] / 2**20:.0f} MB -> {ideal * 1e3:.1f} ms/token bound"
        theirs = fmt(r["theirs_min"]) if "theirs_min" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        lines.append(f"{r['workload']:58s} {fmt(r['ours_min']):>10s} {theirs:>13s} {ratio:>7s}  {bound}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minispeechseq bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and inputs of both libraries (default float32)")
    parser.add_argument("--no-transformers", action="store_true", help="time minispeechseq alone")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.device == "cuda":
        print("minispeechseq bench: --device cuda is not implemented yet; run on cpu.", file=sys.stderr)
        return 2
    if args.repeats < 1 or args.threads < 1:
        print("minispeechseq bench: --repeats and --threads must be at least 1.", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    with_transformers = not args.no_transformers
    if with_transformers:
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("transformers is not installed: timing minispeechseq alone.", file=sys.stderr)
            with_transformers = False

    dtype = getattr(torch, args.dtype)
    flops, bandwidth = matmul_flops(dtype=dtype), memory_bandwidth(dtype=dtype)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.dtype}; matmul {flops / 1e9:.0f} GFLOP/s, "
          f"matrix-vector streaming {bandwidth / 1e9:.1f} GB/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bert", "gpt2"):
            folder = os.path.join(tmp, kind)
            results += bench_pair(kind, args.size, args.repeats, with_transformers, folder, dtype)
            print(format_table(results[-5:], flops, bandwidth), flush=True)
        results += bench_large_encoder(args.size, args.repeats, with_transformers, os.path.join(tmp, "large"), dtype)
        results.append(peak_memory(os.path.join(tmp, "bert"), 6.0 if args.size == "tiny" else 60.0,
                                   with_transformers, args.threads, args.dtype))
    for r in results:
        if "per_token_s" in r:
            r["per_token_over_bound"] = r["per_token_s"] / (r["decoder_stream_bytes"] / bandwidth)
    print()
    print(format_table(results, flops, bandwidth))
    for r in results:
        if "per_token_over_bound" in r:
            print(f"{r['workload']}: {r['per_token_s'] * 1e3:.1f} ms/token = "
                  f"{r['per_token_over_bound']:.2f}x the bandwidth bound")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "dtype": args.dtype, "matmul_flops": flops,
                       "bandwidth_bytes_per_s": bandwidth, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
