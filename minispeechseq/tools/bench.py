"""`minispeechseq bench`: minispeechseq against transformers on the same weights, in the same process.

For each encoder-decoder pair a model of real size is built with random weights (speed does not depend on the
values), saved once in transformers' layout, and loaded by both libraries. Every workload then runs on both,
alternating, several times; the table gives the best call of each and the ratio ours / transformers (of times,
or of memory: below 1, ours is faster or smaller), and the "paired" ratio: the median, over the repeats, of
ours / transformers for the two calls that ran back to back, which a drifting machine moves least. The JSON also
holds every call's time and the medians.

Next to the ratios stand the machine's own bounds, measured in the same run (at the start, after each pair and at
the end; the best of those measurements is the bound, so a slow moment of a shared machine cannot loosen it):
- encoder: the FLOPs of the forward (counted by torch) / the measured matmul FLOP/s;
- greedy decoding: each new token must stream every decoder weight from memory once, so
  per-token latency >= decoder weight bytes / the memory-copy bandwidth (a plain tensor copy, bench_bounds.py);
  after the table, each step's reads (weights, cross-attention K/V, self-attention cache at tokens 1, 32, 128),
  the bandwidth it achieves, and the share of weight streaming in it.
On the CPU in float32 the table also holds the int8 mode (bench_int8.py): greedy decoding of our "int8" and
"int8-all" models against transformers in fp32 and with torch's quantize_dynamic, and a tokens/s table.
Two rows are throughputs as well as times: the padded encoder batch (seconds of real, unpadded audio encoded per
second) and batched greedy decoding (tokens per second, batch x 32 / time). Their batch is 16 on a GPU; on a
CPU a batch of 16 x 10 s would take minutes a call, so there the encoder keeps its batch of 4 and greedy
decoding gets a batch of 2.

--device cuda moves both models and every input to the GPU; the clock is read only after
torch.cuda.synchronize(), and peak memory is the CUDA allocator's peak. transformers always runs its SDPA
attention. Ours runs SDPA too, except on a GPU in bfloat16, where it runs its flash path (FlashAttention kernels
take only fp16/bf16): `--device cuda --dtype bfloat16` is the flash-vs-SDPA comparison. The table header says
which backend each side ran.

    python -m minispeechseq.tools.bench                 # the full table (several minutes on a 2-core CPU)
    python -m minispeechseq.tools.bench --size tiny     # a seconds-long smoke run
    python -m minispeechseq.tools.bench --dtype bfloat16  # both libraries with bf16 weights and inputs (CPU: fast only
                                                    # where the CPU has bf16 dot products, AVX512_BF16 / AMX)
    python -m minispeechseq.tools.bench --device cuda --dtype bfloat16  # on a GPU: our flash path vs transformers' SDPA
    python -m minispeechseq.tools.bench --int8-kernels  # the int8 kernels the int8 mode was chosen from (bench_int8.py)
    python -m minispeechseq.tools.bench --int8-quality  # the bundled model's WER and token agreement, fp32 vs int8
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..common.arguments import Parser, UsageError, run_command, split_debug
from .bench_bounds import copy_bandwidth, decoder_stream_bytes, format_budget, step_budget, step_reads
from .bench_int8 import (
    KERNEL_SHAPES,
    encoder_share,
    format_kernel_table,
    format_quality,
    format_tokens_table,
    int8_quality,
    int8_rows,
    kernel_rows,
    step_rows,
)
from .bench_timing import Row, _time, alternate, exactly, step_seconds
from ..decoders.bert import BertConfig
from ..decoders.gpt2 import GPT2Config
from ..speech_encoder_decoder import SpeechEncoderDecoderConfig, SpeechEncoderDecoderModel
from ..wav2vec2 import Wav2Vec2Model
from ..wav2vec2_config import Wav2Vec2Config

SAMPLE_RATE = 16000
NEW_TOKENS = 32


def throughput_batches(device: torch.device) -> tuple[int, int]:
    """(encoder batch, greedy batch) of the throughput rows: 16 on a GPU. On a CPU the encoder keeps the padded
    batch of 4 it always had and greedy decoding gets 2, so the full CPU run grows by one batch-2 row per pair."""
    return (16, 16) if device.type == "cuda" else (4, 2)


def our_attention(device: torch.device, dtype: torch.dtype) -> str:
    """Our backend: flash where its kernels run (a GPU, fp16/bf16), else SDPA. transformers runs SDPA throughout."""
    return "flash" if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) else "sdpa"


# ------------------------------------------------------------------------------------------- the models
def encoder_config(kind: str, size: str):
    if size == "tiny":
        return Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                              conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2),
                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    if kind == "large":  # wav2vec2-large-lv60: pre-LN, layer-norm feature encoder, conv bias
        return Wav2Vec2Config(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                              feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    return Wav2Vec2Config()  # wav2vec2-base


def decoder_config(kind: str, size: str):
    if kind == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          vocab_size=1000) if size == "tiny" else BertConfig()
    return GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=1000) if size == "tiny" else GPT2Config()


def build_checkpoint(decoder_kind: str, size: str, folder: str) -> None:
    torch.manual_seed(0)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        encoder_config("base", size), decoder_config(decoder_kind, size)
    )
    vocab = config.decoder.vocab_size
    # Ids no random model will emit as a first choice often; min_new_tokens forces the length anyway.
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, vocab - 1
    SpeechEncoderDecoderModel(config=config).save_pretrained(folder)


def audio(seconds: float, batch: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) noise-like speech stand-in and its (B, L) mask; row b of a batch is shorter by b/(4B) of the length
    (a padded batch). Drawn on the CPU, so every device sees the same numbers."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    x = torch.randn(batch, n, generator=g) * 0.1
    mask = torch.ones(batch, n, dtype=torch.long)
    for b in range(1, batch):
        cut = n - b * n // (4 * batch)
        x[b, cut:] = 0.0
        mask[b, cut:] = 0
    return x.to(device, dtype), mask.to(device)


# ---------------------------------------------------------------------------------------------- timing


def matmul_flops(n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> float:
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    best = min(_time(lambda: a @ b, device) for _ in range(repeats + 1))  # the first call warms up
    return 2 * n**3 / best


def count_flops(fn: Callable[[], object]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


# ------------------------------------------------------------------------------------------ workloads
def bench_pair(decoder_kind: str, size: str, repeats: int, with_transformers: bool, folder: str,
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> list[dict]:
    device = torch.device(device)
    build_checkpoint(decoder_kind, size, folder)
    ours = SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation=our_attention(device, dtype),
                                                     dtype=dtype, device=device).eval()
    theirs = None
    if with_transformers:
        import transformers  # optional: the reference, a test-only dependency

        transformers.logging.set_verbosity_error()
        theirs = transformers.SpeechEncoderDecoderModel.from_pretrained(
            folder, attn_implementation="sdpa", dtype=dtype
        ).to(device).eval()
    seconds = 1.0 if size == "tiny" else 10.0
    enc_batch, greedy_batch = throughput_batches(device)
    x1, _ = audio(seconds, dtype=dtype, device=device)
    xe, me = audio(seconds, batch=enc_batch, dtype=dtype, device=device)
    xg, mg = audio(seconds, batch=greedy_batch, dtype=dtype, device=device)
    gen = exactly(NEW_TOKENS)
    pair = f"wav2vec2-base+{decoder_kind}" if size != "tiny" else f"tiny+{decoder_kind}"
    rows: list[Row] = []

    def both(name, fn_ours, fn_theirs, work: float = 0.0, work_unit: str = "") -> Row:
        with torch.no_grad():
            row = alternate(f"{pair}: {name}", fn_ours, fn_theirs if theirs is not None else None, repeats, device)
        row.work, row.work_unit = work, work_unit
        rows.append(row)
        return row

    if decoder_kind == "bert":  # the encoder is the same in both pairs: time it once
        enc = both(f"encoder {seconds:g} s, batch 1", lambda: ours.encoder(x1), lambda: theirs.encoder(x1))
        enc.extra["encoder_gflops"] = count_flops(lambda: ours.encoder(x1)) / 1e9
        # Throughput counts the real audio only: padding is work a batch costs, not audio it transcribes.
        both(f"encoder {seconds:g} s, padded batch {enc_batch}", lambda: ours.encoder(xe, attention_mask=me),
             lambda: theirs.encoder(xe, attention_mask=me), work=me.sum().item() / SAMPLE_RATE, work_unit="s of audio")
    greedy = both(f"greedy {NEW_TOKENS} tokens", lambda: ours.generate(x1, **gen), lambda: theirs.generate(x1, **gen))
    # Per-token latency: 32 tokens minus 1 token (the encoder and the first step), timed back to back, so the
    # difference is decoding steps alone, whatever the machine's load was earlier.
    one = exactly(1)
    with torch.no_grad():
        call_many, call_one = lambda: ours.generate(x1, **gen), lambda: ours.generate(x1, **one)
        per_token = alternate("per-token", call_many, call_one, repeats, device)
        per_token_s = step_seconds(per_token.ours, per_token.theirs, NEW_TOKENS - 1, call_many, call_one,
                                   f"{decoder_kind}: per-token latency", device)
    greedy.extra.update(decoder_stream_bytes=decoder_stream_bytes(ours), per_token_s=per_token_s)
    int8_results = []
    if device.type == "cpu" and dtype == torch.float32:  # fbgemm's int8 kernels: CPU, fp32 activations
        int8_results = int8_rows(pair, ours, theirs, x1, repeats, NEW_TOKENS)  # their fp32 row holds the reads
    else:
        frames = int(ours.encoder.output_lengths(torch.tensor([x1.shape[-1]]))[0])
        greedy.extra["reads"] = step_reads(ours, frames, last=NEW_TOKENS)
    # Batched greedy: min_new_tokens holds every row to exactly NEW_TOKENS, so batch x NEW_TOKENS tokens a call.
    both(f"batched greedy, batch {greedy_batch} x {NEW_TOKENS} tokens", lambda: ours.generate(xg, attention_mask=mg, **gen),
         lambda: theirs.generate(xg, attention_mask=mg, **gen), work=greedy_batch * NEW_TOKENS, work_unit="tokens")
    both(f"beam 4 x {NEW_TOKENS} tokens", lambda: ours.generate(x1, num_beams=4, **gen),
         lambda: theirs.generate(x1, num_beams=4, **gen))
    both(f"top-p sampling {NEW_TOKENS} tokens", lambda: ours.generate(x1, do_sample=True, top_p=0.9, top_k=0, **gen),
         lambda: theirs.generate(x1, do_sample=True, top_p=0.9, top_k=0, **gen))

    labels = torch.randint(2, ours.config.decoder.vocab_size - 1, (1, NEW_TOKENS),
                           generator=torch.Generator().manual_seed(0)).to(device)

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
                          (lambda: train_step(theirs)) if theirs is not None else None, repeats, device))
    return [{**r.summary(), "pair": pair} for r in rows] + int8_results


def bench_large_encoder(size: str, repeats: int, with_transformers: bool, folder: str,
                        dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> list[dict]:
    device = torch.device(device)
    torch.manual_seed(0)
    Wav2Vec2Model(encoder_config("large", size)).save_pretrained(folder)
    ours = Wav2Vec2Model.from_pretrained(folder, attn_implementation=our_attention(device, dtype), dtype=dtype,
                                         device=device).eval()
    theirs = None
    if with_transformers:
        import transformers  # optional: the reference, a test-only dependency

        theirs = transformers.Wav2Vec2Model.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype).to(device).eval()
    seconds = 1.0 if size == "tiny" else 10.0
    x, _ = audio(seconds, dtype=dtype, device=device)
    with torch.no_grad():
        row = alternate(f"wav2vec2-large-lv60 shape: encoder {seconds:g} s", lambda: ours(x),
                        (lambda: theirs(x)) if theirs is not None else None, repeats, device)
    row.extra["encoder_gflops"] = count_flops(lambda: ours(x)) / 1e9
    return [row.summary()]


PEAK_MEMORY_SCRIPT = r"""
import sys, torch
lib, folder, seconds, threads, dtype, device, attn = sys.argv[1:8]
torch.set_num_threads(int(threads))
dtype = getattr(torch, dtype)
if lib == "ours":
    from minispeechseq import SpeechEncoderDecoderModel as M
else:
    import transformers; transformers.logging.set_verbosity_error()
    from transformers import SpeechEncoderDecoderModel as M
model = M.from_pretrained(folder, dtype=dtype, attn_implementation=attn).to(device).eval()
x = (torch.randn(1, int(float(seconds) * 16000)) * 0.1).to(device, dtype)

def status(key):  # kB figures of /proc/self/status
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

if device == "cuda":  # GPU memory is the CUDA allocator's: its own peak counter, reset here
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
else:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident size
    before = status("VmRSS")
with torch.no_grad():
    model.generate(x, max_new_tokens=8)
if device == "cuda":
    torch.cuda.synchronize()
    print(torch.cuda.max_memory_allocated() - before)
else:
    print(status("VmHWM") - before)
"""


def peak_memory(folder: str, seconds: float, with_transformers: bool, threads: int, dtype: str = "float32",
                device: str = "cpu") -> dict:
    """Extra memory (bytes) at the peak of transcribing `seconds` of audio, over the memory with the model loaded;
    each library in a fresh process. CPU: resident memory (Linux: the peak is reset through clear_refs);
    CUDA: the allocator's torch.cuda.max_memory_allocated, after reset_peak_memory_stats."""
    attn = {"ours": our_attention(torch.device(device), getattr(torch, dtype)), "transformers": "sdpa"}

    def run(lib: str) -> int:
        done = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, lib, folder, str(seconds), str(threads), dtype,
                               device, attn[lib]], capture_output=True, text=True, check=True)
        return int(done.stdout.strip().splitlines()[-1])

    what = "peak GPU memory" if device == "cuda" else "peak memory"
    r = {"workload": f"{what}, transcribing {seconds:g} s", "unit": "bytes", "ours_min": run("ours")}
    if with_transformers:
        r["theirs_min"] = run("transformers")
        r["ratio"] = r["ours_min"] / max(r["theirs_min"], 1)
    return r


def int8_kernel_report(size: str, repeats: int) -> dict:
    """The int8 candidates (bench_int8.py) on one-row products of the decoders' shapes and on whole greedy steps of
    both pairs, and the conv feature encoder's share of the encoder (which int8-all leaves in fp32)."""
    shapes = ((64, 32), (32, 64), (1000, 32)) if size == "tiny" else KERNEL_SHAPES
    rows = kernel_rows(repeats, shapes)
    seconds = 1.0 if size == "tiny" else 10.0
    x, _ = audio(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bert", "gpt2"):
            build_checkpoint(kind, size, os.path.join(tmp, kind))
            model = SpeechEncoderDecoderModel.from_pretrained(os.path.join(tmp, kind))
            pair = f"wav2vec2-base+{kind}" if size != "tiny" else f"tiny+{kind}"
            rows += step_rows(pair, model, x, repeats, NEW_TOKENS)
    return {"kernels": rows, "encoder": encoder_share(model, x, repeats), "audio_s": seconds}


def int8_speed(size: str, repeats: int, with_transformers: bool) -> list[dict]:
    """The int8 rows of both pairs (bench_int8.int8_rows), without the rest of the table."""
    results = []
    x, _ = audio(1.0 if size == "tiny" else 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bert", "gpt2"):
            folder = os.path.join(tmp, kind)
            build_checkpoint(kind, size, folder)
            ours = SpeechEncoderDecoderModel.from_pretrained(folder)
            theirs = None
            if with_transformers:
                import transformers  # optional: the reference, a test-only dependency

                transformers.logging.set_verbosity_error()
                theirs = transformers.SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation="sdpa").eval()
            pair = f"wav2vec2-base+{kind}" if size != "tiny" else f"tiny+{kind}"
            results += int8_rows(pair, ours, theirs, x, repeats, NEW_TOKENS, encoder=kind == "bert")
    return results


def format_int8_kernel_report(report: dict) -> str:
    e = report["encoder"]
    return (format_kernel_table(report["kernels"]) + f"\nencoder, {report['audio_s']:g} s of audio: "
            f"{e['encoder_s']:.3f} s fp32, of which the conv feature encoder {e['feature_encoder_s']:.3f} s "
            f"({e['feature_encoder_s'] / e['encoder_s']:.0%}); int8-all {e['encoder_int8_all_s']:.3f} s")


# ------------------------------------------------------------------------------------------------ main
def format_table(results: list[dict], flops: float, bandwidth: float, attn: tuple[str, str] = ("sdpa", "sdpa")) -> str:
    """One line per workload: best time (or memory) of each library, the ratio ours / transformers, and in the last
    column our distance to the machine's bound or, for the throughput rows, both throughputs."""
    ours_head, theirs_head = f"ours ({attn[0]})", f"transformers ({attn[1]})"
    lines = [f"{'workload':58s} {ours_head:>12s} {theirs_head:>19s} {'ratio':>7s} {'paired':>7s}  bound, throughput"]
    for r in results:
        fmt = (lambda v: f"{v / 2**20:8.1f}MB") if r["unit"] == "bytes" else (lambda v: f"{v:9.3f}s")
        bound = ""
        if "encoder_gflops" in r:
            ideal = r["encoder_gflops"] * 1e9 / flops
            bound = f"{r['encoder_gflops']:.0f} GFLOP -> {ideal:.3f}s at peak ({r['ours_min'] / ideal:.2f}x)"
        if "decoder_stream_bytes" in r:
            ideal = r["decoder_stream_bytes"] / bandwidth
            bound = f"weights {r['decoder_stream_bytes'] / 2**20:.0f} MB -> {ideal * 1e3:.1f} ms/token bound"
        if "ours_per_s" in r:  # higher is better here
            theirs_rate = f" vs {r['theirs_per_s']:.1f}" if "theirs_per_s" in r else ""
            bound = f"{r['ours_per_s']:.1f}{theirs_rate} {r['work_unit']}/s"
        theirs = fmt(r["theirs_min"]) if "theirs_min" in r else "-"
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        paired = f"{r['paired_ratio']:.2f}" if "paired_ratio" in r else "-"
        lines.append(f"{r['workload']:58s} {fmt(r['ours_min']):>12s} {theirs:>19s} {ratio:>7s} {paired:>7s}  {bound}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 on success; any error is one line on stderr (cli_args.run_command), --debug for the traceback."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    return run_command("minispeechseq bench", lambda: _bench(argv), debug)


def _bench(argv: list[str]) -> int:
    parser = Parser(prog="minispeechseq bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where both libraries run (cuda: add --dtype bfloat16 for our flash attention path)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and inputs of both libraries (default float32)")
    parser.add_argument("--no-transformers", action="store_true", help="time minispeechseq alone")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--int8-speed", action="store_true",
                        help="instead of the table: greedy decoding in fp32, int8 and int8-all against transformers, "
                             "with the step bounds (the int8 rows of the full table, alone)")
    parser.add_argument("--int8-kernels", action="store_true",
                        help="instead of the table: the candidate int8 kernels per shape and per greedy step")
    parser.add_argument("--int8-quality", action="store_true",
                        help="instead of the table: the bundled model's WER and token agreement, fp32 vs int8 "
                             "(renders its test split with espeak-ng)")
    parser.add_argument("--utterances", type=int, default=400, help="with --int8-quality: how many test utterances")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        raise UsageError("--repeats and --threads must be at least 1.")
    if args.device == "cuda" and not torch.cuda.is_available():  # an option this machine cannot honour: status 2
        raise UsageError(f"--device cuda was asked for, but torch {torch.__version__} sees no CUDA GPU on this machine "
                         "(no GPU, no driver, or a CPU-only build of torch); run with --device cpu.")
    torch.set_num_threads(args.threads)
    if args.int8_kernels or args.int8_quality:
        report = int8_kernel_report(args.size, args.repeats) if args.int8_kernels else int8_quality(args.utterances)
        print(f"torch {torch.__version__}, {args.threads} threads")
        print(format_int8_kernel_report(report) if args.int8_kernels else format_quality(report))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"torch": torch.__version__, "threads": args.threads, **report}, f, indent=2)
        return 0
    with_transformers = not args.no_transformers
    if args.int8_speed:
        with_transformers = with_transformers and importlib.util.find_spec("transformers") is not None
    if with_transformers:
        try:
            import transformers  # optional: the reference, a test-only dependency
        except ImportError:
            print("transformers is not installed: timing minispeechseq alone.", file=sys.stderr)
            with_transformers = False
        else:
            transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bars would break the table

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    attn = (our_attention(device, dtype), "sdpa")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    where = f"{device_name}, CUDA {torch.version.cuda}" if device.type == "cuda" else f"{args.threads} threads"

    # The machine's bounds are measured at the start, after each pair and at the end, and the best of those is
    # the bound: a shared machine's speed drifts over a run, and one slow moment must not make the bound lenient.
    samples: list[tuple[float, float]] = []

    def measure_bounds() -> tuple[float, float]:
        if device.type == "cuda":  # GPU-sized matrices: the CPU's 2048² matmul would time the launch, not the math
            samples.append((matmul_flops(n=8192, dtype=dtype, device=device),
                            copy_bandwidth(mbytes=1024, device=device)))
        else:
            samples.append((matmul_flops(dtype=dtype), copy_bandwidth()))
        return max(f for f, _ in samples), max(b for _, b in samples)

    flops, bandwidth = measure_bounds()
    print(f"torch {torch.__version__}, {where}, {args.dtype}; matmul {flops / 1e9:.0f} GFLOP/s, "
          f"memory copy {bandwidth / 1e9:.1f} GB/s (read + write)", flush=True)
    if attn[0] == "flash":
        kernel = "the flash_attn package" if importlib.util.find_spec("flash_attn") else "torch SDPA's flash kernel"
        print(f"attention: minispeechseq flash ({kernel}), transformers sdpa", flush=True)
    elif device.type == "cuda":
        print("attention: both sdpa (our flash path needs fp16/bf16: add --dtype bfloat16 to time it)", flush=True)
    results = []
    if args.int8_speed:
        results = int8_speed(args.size, args.repeats, with_transformers)
        flops, bandwidth = measure_bounds()
        for r in results:
            if "reads" in r:
                r["budget"] = step_budget(r.pop("reads"), r["per_token_s"], bandwidth)
        print(format_table(results, flops, bandwidth, attn))
        print(f"memory copy: the best of {len(samples)} measurements, {bandwidth / 1e9:.1f} GB/s")
        print(format_tokens_table(results) + "\n")
        print("\n".join(format_budget(r["workload"], r["budget"]) for r in results if "budget" in r))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"torch": torch.__version__, "threads": args.threads, "bandwidth_bytes_per_s": bandwidth,
                           "results": results}, f, indent=2)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("bert", "gpt2"):
            pair = bench_pair(kind, args.size, args.repeats, with_transformers, os.path.join(tmp, kind), dtype, device)
            results += pair
            flops, bandwidth = measure_bounds()
            print(format_table(pair, flops, bandwidth, attn), flush=True)
        results += bench_large_encoder(args.size, args.repeats, with_transformers, os.path.join(tmp, "large"), dtype,
                                       device)
        results.append(peak_memory(os.path.join(tmp, "bert"), 6.0 if args.size == "tiny" else 60.0,
                                   with_transformers, args.threads, args.dtype, args.device))
    flops, bandwidth = measure_bounds()
    for r in results:
        if "reads" in r:
            r["budget"] = step_budget(r.pop("reads"), r["per_token_s"], bandwidth)
    print()
    print(f"bounds: the best of {len(samples)} measurements over the run: matmul {flops / 1e9:.0f} GFLOP/s "
          f"(measured {min(f for f, _ in samples) / 1e9:.0f}-{flops / 1e9:.0f}), memory copy "
          f"{bandwidth / 1e9:.1f} GB/s (measured {min(b for _, b in samples) / 1e9:.1f}-{bandwidth / 1e9:.1f})")
    print(format_table(results, flops, bandwidth, attn))
    print("ratio = ours / transformers, of times or memory (best call of each): below 1, ours is faster or smaller. "
          "paired = the median over repeats of ours / transformers for calls run back to back. "
          "Throughputs (last column) are ours vs transformers: higher is faster.")
    if any("tokens_per_s" in r for r in results):
        print()
        print(format_tokens_table(results))
    print()
    for r in results:
        if "budget" in r:
            print(format_budget(r["workload"], r["budget"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": args.device, "device_name": device_name, "threads": args.threads,
                       "dtype": args.dtype, "attention": {"minispeechseq": attn[0], "transformers": attn[1]},
                       "matmul_flops": flops, "bandwidth_bytes_per_s": bandwidth,
                       "bound_samples": [{"matmul_flops": f, "bandwidth_bytes_per_s": b} for f, b in samples],
                       "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
