"""The int8 mode measured: its speed against transformers, the kernels it was chosen from, and its quality.

    python -m minispeechseq.tools.bench                  # the full table holds int8 rows (CPU, float32 runs)
    python -m minispeechseq.tools.bench --int8-kernels   # the candidate int8 kernels, per shape and per greedy step
    python -m minispeechseq.tools.bench --int8-quality   # WER and token agreement of the bundled model, fp32 vs int8

Speed rows (`int8_rows`): greedy decoding of our model in fp32, "int8" and "int8-all" and of transformers in fp32
and with torch's `quantize_dynamic` on its decoder (the same fbgemm kernel as ours, reached through torch's
deprecated API). transformers' GPT-2 computes with `Conv1D` modules, which quantize_dynamic does not touch: its
GPT-2 gets an int8 LM head only, and the row says how many of the decoder's weight matrices were quantized.

Per-token latency is (time of 32 tokens - time of 1 token) / 31, both timed back to back: the encoder and the
first step cancel. End to end is the 32-token call: the encoder on 10 s of audio, then 32 greedy steps.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.ao.quantization import quantize_dynamic

from .bench_bounds import step_reads
from .bench_timing import Row, _time, alternate, exactly, step_seconds
from .cli import bundled_model_dir
from ..processor import Processor
from ..recognition.quantize import Int8Linear, quantize, quantize_rows, replace_linears
from ..recognition.recognizer import decode, generate_batch
from ..speech_encoder_decoder import SpeechEncoderDecoderModel

# One row through the Linear shapes of a base-size decoder and the two LM heads: (out, in).
KERNEL_SHAPES = ((768, 768), (3072, 768), (768, 3072), (30522, 768), (50257, 768))


# ------------------------------------------------------------------------------------ greedy decoding rows
def transformers_dynamic_int8(theirs: nn.Module) -> tuple[nn.Module, int, int]:
    """A copy of a transformers pair with torch's quantize_dynamic on its decoder's nn.Linear layers; also how many
    of the decoder's weight matrices that quantized (GPT-2's Conv1D layers are not nn.Linear) and how many there are."""
    model = copy.deepcopy(theirs)
    matrices = sum(1 for m in model.decoder.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)
                   and m.weight.dim() == 2 and not isinstance(m, nn.Embedding))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.ao.quantization is deprecated": said once, in the module docstring
        quantize_dynamic(model.decoder, {nn.Linear}, dtype=torch.qint8, inplace=True)
    linear = sum(1 for m in model.decoder.modules() if isinstance(m, DynamicQuantizedLinear))
    return model, linear, matrices


def greedy_timings(models: dict[str, nn.Module], x: torch.Tensor, repeats: int, new_tokens: int,
                   pair: str) -> tuple[dict, dict]:
    """name -> (times of `new_tokens`-token calls, times of 1-token calls), and name -> seconds per decoding step
    (bench_timing.step_seconds); every model's calls alternate within each repeat, so a drifting machine load
    touches them all alike."""
    many = exactly(new_tokens)
    one = exactly(1)
    times = {name: ([], []) for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model.generate(x, **one)
        for _ in range(repeats):
            for name, model in models.items():
                times[name][0].append(_time(lambda: model.generate(x, **many)))
                times[name][1].append(_time(lambda: model.generate(x, **one)))
        per_token = {name: step_seconds(*times[name], new_tokens - 1, lambda m=model: m.generate(x, **many),
                                        lambda m=model: m.generate(x, **one), f"{pair}: per-token latency, {name}")
                     for name, model in models.items()}
    return times, per_token


def int8_rows(pair: str, ours: nn.Module, theirs: nn.Module | None, x: torch.Tensor, repeats: int,
              new_tokens: int, encoder: bool = False) -> list[dict]:
    """Greedy rows for our int8 and int8-all models (and transformers quantized alike), against transformers fp32:
    end to end (`new_tokens` tokens on `x`) and per token, with the bytes a step reads (bench_bounds); with
    `encoder`, also the int8-all encoder against transformers' fp32 one."""
    models = {"ours fp32": ours, "ours int8": quantize(copy.deepcopy(ours), "int8"),
              "ours int8-all": quantize(copy.deepcopy(ours), "int8-all")}
    note = {}
    if theirs is not None:
        models["transformers fp32"] = theirs
        models["transformers int8"], linear, matrices = transformers_dynamic_int8(theirs)
        note = {"transformers_int8_matrices": f"{linear} of {matrices}"}
    times, per_token = greedy_timings(models, x, repeats, new_tokens, pair)
    frames = int(ours.encoder.output_lengths(torch.tensor([x.shape[-1]]))[0])
    rows = []
    for name in ("ours int8", "ours int8-all", "transformers int8"):
        if name not in models:
            continue
        for reference in ("transformers fp32", "transformers int8") if name == "ours int8" else ("transformers fp32",):
            if reference not in models:
                continue
            short = f"{name} / {reference}".replace("transformers", "tf")  # fits the table's column
            row = Row(f"{pair}: greedy {new_tokens} tokens, {short}", ours=times[name][0],
                      theirs=times[reference][0])
            rows.append({**row.summary(), "pair": pair, **note})
    for name, model in models.items():
        r = {"workload": f"{pair}: per-token latency, {name}", "unit": "s", "ours_min": per_token[name],
             "per_token_s": per_token[name], "tokens_per_s": 1 / per_token[name], "pair": pair,
             "end_to_end_s": min(times[name][0]), **note}
        if name.startswith("ours"):  # what a step reads, counted on our modules (bench_bounds)
            r["reads"] = step_reads(model, frames, last=new_tokens)
        if "transformers fp32" in models:
            r.update(theirs_min=per_token["transformers fp32"], ratio=per_token[name] / per_token["transformers fp32"],
                     end_to_end_ratio=min(times[name][0]) / min(times["transformers fp32"][0]))
        rows.append(r)
    if encoder:
        with torch.no_grad():
            row = alternate(f"{pair.split('+')[0]}: encoder, ours int8-all vs transformers fp32",
                            lambda: models["ours int8-all"].encoder(x),
                            (lambda: theirs.encoder(x)) if theirs is not None else None, repeats)
        rows.append(row.summary())
    return rows


def format_tokens_table(results: list[dict]) -> str:
    """Greedy decoding tokens/s and end-to-end time of every variant, against transformers fp32."""
    lines = [f"{'greedy decoding, batch 1':44s} {'ms/token':>9s} {'tokens/s':>9s} {'vs tf fp32':>11s} "
             f"{'32 tokens':>10s} {'vs tf fp32':>11s}"]
    for r in results:
        if "tokens_per_s" not in r:
            continue
        vs = f"{r['ratio']:.2f}" if "ratio" in r else "-"
        e2e = f"{r['end_to_end_ratio']:.2f}" if "end_to_end_ratio" in r else "-"
        lines.append(f"{r['workload'].replace(': per-token latency,', ':'):44s} {r['per_token_s'] * 1e3:9.1f} "
                     f"{r['tokens_per_s']:9.1f} {vs:>11s} {r['end_to_end_s']:9.2f}s {e2e:>11s}")
    notes = {r["pair"]: r["transformers_int8_matrices"] for r in results if "transformers_int8_matrices" in r}
    for pair, count in notes.items():
        lines.append(f"{pair}: transformers int8 = torch quantize_dynamic on its decoder's nn.Linear: {count} weight "
                     "matrices (GPT-2's Conv1D layers are not nn.Linear and stay fp32)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the candidate kernels
class Int8PackMM(nn.Module):
    """Candidate: int8 weights, per-row scales, fp32 activations, through torch._weight_int8pack_mm."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.qweight, self.scale = quantize_rows(linear.weight)  # (out, in), (out,)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.qweight, self.scale)  # (N, out)
        y = y.reshape(*x.shape[:-1], -1)
        return y + self.bias if self.bias is not None else y


class DequantizeLinear(Int8PackMM):
    """Candidate: the same int8 weights turned back into fp32 at every call, then F.linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qweight.to(x.dtype) * self.scale[:, None], self.bias)


def torchao_candidates() -> dict[str, Callable[[nn.Module], None]]:
    """torchao's int8 configurations as in-place transforms of a module, or {} where torchao is not installed."""
    try:
        from torchao.quantization import (  # optional: a candidate only, never the library's path
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )
    except ImportError:
        return {}
    return {"torchao int8 weight-only": lambda m: quantize_(m, Int8WeightOnlyConfig()),
            "torchao int8 dynamic": lambda m: quantize_(m, Int8DynamicActivationInt8WeightConfig())}


def candidates() -> dict[str, Callable[[nn.Module], None]]:
    """name -> an in-place transform of a module's nn.Linear layers."""
    swap = {"fp32 (nn.Linear)": lambda m: None,
            "fbgemm dynamic int8 (ours)": lambda m: replace_linears(m, Int8Linear),
            "_weight_int8pack_mm": lambda m: replace_linears(m, Int8PackMM),
            "dequantize on the fly": lambda m: replace_linears(m, DequantizeLinear)}
    return {**swap, **torchao_candidates()}


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    with torch.no_grad():
        fn()
        return min(_time(fn) for _ in range(repeats))


def kernel_rows(repeats: int, shapes=KERNEL_SHAPES) -> list[dict]:
    """Each candidate on one row (1, in) through each (out, in) shape: seconds, and speed-up over fp32."""
    rows = []
    for out_f, in_f in shapes:
        torch.manual_seed(0)
        x = torch.randn(1, in_f)
        for name, transform in candidates().items():
            holder = nn.Sequential(nn.Linear(in_f, out_f))
            transform(holder)
            rows.append({"shape": f"{out_f} x {in_f}", "kernel": name, "s": best_seconds(lambda: holder(x), repeats)})
    fp32 = {r["shape"]: r["s"] for r in rows if r["kernel"].startswith("fp32")}
    return [{**r, "speedup": fp32[r["shape"]] / r["s"]} for r in rows]


def step_rows(pair: str, model: nn.Module, x: torch.Tensor, repeats: int, new_tokens: int) -> list[dict]:
    """Each candidate on the whole decoder of `model`: per-token greedy latency, (t(new_tokens) - t(1)) / (n - 1)."""
    many = exactly(new_tokens)
    one = exactly(1)
    rows = []
    for name, transform in candidates().items():
        variant = copy.deepcopy(model)
        transform(variant.decoder)
        call_many, call_one = lambda: variant.generate(x, **many), lambda: variant.generate(x, **one)
        with torch.no_grad():
            t_many, t_one = [best_seconds(call_many, repeats)], [best_seconds(call_one, repeats)]
            step = step_seconds(t_many, t_one, new_tokens - 1, call_many, call_one, f"{pair}: greedy step, {name}")
        rows.append({"shape": f"{pair}: greedy step", "kernel": name, "s": step})
    fp32 = rows[0]["s"]
    return [{**r, "speedup": fp32 / r["s"]} for r in rows]


def encoder_share(model: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Seconds of the conv feature encoder (fp32 in every mode) against the whole encoder, fp32 and int8-all."""
    quantized = quantize(copy.deepcopy(model), "int8-all")
    return {"feature_encoder_s": best_seconds(lambda: model.encoder.feature_encoder(x), repeats),
            "encoder_s": best_seconds(lambda: model.encoder(x), repeats),
            "encoder_int8_all_s": best_seconds(lambda: quantized.encoder(x), repeats)}


def format_kernel_table(rows: list[dict]) -> str:
    lines = [f"{'shape (one row)':34s} {'kernel':28s} {'time':>10s} {'vs fp32':>8s}"]
    lines += [f"{r['shape']:34s} {r['kernel']:28s} {r['s'] * 1e3:8.3f}ms {r['speedup']:7.2f}x" for r in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ quality
def token_agreement(reference: torch.Tensor, ids: torch.Tensor, pad_id: int) -> tuple[float, float]:
    """Greedy outputs (B, S) and (B, S') against reference ones: the share of the reference's tokens (up to its
    padding) that `ids` reproduces at the same position, and the share of rows identical throughout."""
    width = max(reference.shape[1], ids.shape[1])
    reference = F.pad(reference, (0, width - reference.shape[1]), value=pad_id)  # (B, W)
    ids = F.pad(ids, (0, width - ids.shape[1]), value=pad_id)  # (B, W)
    counted = reference != pad_id
    same = (reference == ids) & counted
    return same.sum().item() / counted.sum().item(), (reference == ids).all(dim=1).float().mean().item()


def int8_quality(count: int = 400, batch_size: int = 32) -> dict:
    """The bundled digits model on the first `count` utterances of its test split (rendered with espeak-ng as the
    corpus renders them): WER of fp32, int8 and int8-all, and their greedy token agreement with fp32."""
    from ..training.digits import recipe_utterances  # start-up: the corpus recipe (soundfile, soxr), this mode only
    from ..training.metrics import word_error_rate  # optional: needs jiwer (the train / test extras)

    started = time.perf_counter()
    waves, texts = recipe_utterances("test", count)
    folder = bundled_model_dir()
    processor = Processor.from_pretrained(folder)
    results: dict = {"utterances": len(texts), "render_s": time.perf_counter() - started}
    reference = None
    for mode in (None, "int8", "int8-all"):
        model = SpeechEncoderDecoderModel.from_pretrained(folder, quantization=mode)
        ids = [generate_batch(model, processor, waves[i : i + batch_size]) for i in range(0, len(waves), batch_size)]
        ids = [batch[:, 1:] for batch in ids]  # (B, S - 1): the decoder start token agrees by construction
        hyps = [t for batch in ids for t in decode(processor, batch)]
        name = mode or "fp32"
        results[name] = {"wer": word_error_rate(texts, hyps)}
        if reference is None:
            reference = ids
        else:
            pad = model.generation_config.pad_token_id
            pairs = [token_agreement(r, i, pad) for r, i in zip(reference, ids)]
            sizes = [(r != pad).sum().item() for r in reference]
            results[name]["token_agreement"] = sum(a * n for (a, _), n in zip(pairs, sizes)) / sum(sizes)
            results[name]["identical"] = sum(s * len(r) for (_, s), r in zip(pairs, reference)) / len(texts)
    return results


def format_quality(q: dict) -> str:
    lines = [f"bundled digits model, test split ({q['utterances']} utterances), greedy:",
             f"  {'mode':10s} {'WER':>7s} {'vs fp32':>8s} {'tokens as fp32':>15s} {'utterances as fp32':>19s}"]
    for mode in ("fp32", "int8", "int8-all"):
        r = q[mode]
        extra = (f"{r['wer'] - q['fp32']['wer']:+8.2%} {r['token_agreement']:15.2%} {r['identical']:19.2%}"
                 if "token_agreement" in r else f"{'':8s} {'':15s} {'':19s}")
        lines.append(f"  {mode:10s} {r['wer']:7.2%} {extra}")
    return "\n".join(lines)
