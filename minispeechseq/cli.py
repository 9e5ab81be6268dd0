"""The `minispeechseq` command line: transcribe, train, data, evaluate, inspect, convert, bench.

Every error reaches the user as one line on stderr and a non-zero exit code; commands over many files report
the failing file and go on with the others.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Iterator, Sequence

import torch

from .audio import load_audio
from .ctc import HubertForCTC, Wav2Vec2ForCTC
from .processor import Processor
from .quantize import QUANTIZATIONS
from .recognizer import generate_batch, subtitles, transcribe
from .resolve import MODEL_FILES, PREPROCESSING_FILES, resolve_folder
from .speech_encoder_decoder import (
    DECODERS,
    ENCODERS,
    SpeechEncoderDecoderModel,
    decoder_classes,
    encoder_classes,
    read_config_json,
)

# Subcommands that are programs of their own (they parse their own options): the module whose main(argv) runs.
SUBPROGRAMS = {
    "train": "minispeechseq.training.train",
    "data": "minispeechseq.training.digits",
    "evaluate": "minispeechseq.training.evaluate",
    "bench": "minispeechseq.bench",
}

# Hub ids are looked up in huggingface_hub's cache (HF_HOME, HF_HUB_CACHE; HF_HUB_OFFLINE=1 never downloads).
REVISION_HELP = "for a hub id: the branch, tag or commit to load (default: main)"

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64", ".opus")


def bundled_model_dir() -> str:
    """The small spoken-digits model that ships inside the package (see its MODEL_CARD.md)."""
    return os.path.join(os.path.dirname(__file__), "bundled", "digits")


class CLIError(Exception):
    """An error to print as one line, without a traceback."""


def _fail(message: str) -> None:
    print(f"minispeechseq: error: {message}", file=sys.stderr)


# -------------------------------------------------------------------------------------------- transcribe
def expand_inputs(paths: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """(path, error) for every input: a folder expands to its audio files, sorted."""
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            if not found:
                yield path, f"{path}: the folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
            for f in found:
                yield f, None
        elif not os.path.exists(path):
            yield path, f"{path}: no such file"
        else:
            yield path, None


def load_recognizer(model_dir: str, device: str, dtype: str | None, attn: str, revision: str | None = None,
                    quantization: str | None = None):
    """The model and its processor, from one folder (a local one, or a hub id's snapshot in huggingface_hub's
    cache): both or neither, so a model whose tokenizer or feature extractor is missing is an error naming it."""
    if device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for, but torch sees no CUDA GPU on this machine.")
    try:
        folder = resolve_folder(model_dir, patterns=MODEL_FILES + PREPROCESSING_FILES, revision=revision)
        model = SpeechEncoderDecoderModel.from_pretrained(folder, attn_implementation=attn, dtype=dtype, device=device,
                                                          quantization=quantization)
    except (OSError, ValueError) as e:
        raise CLIError(f"cannot load the model {model_dir}: {e}") from None
    try:
        processor = Processor.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise CLIError(f"{model_dir} holds a model but not its processor (feature extractor + tokenizer): {e}") from None
    return model, processor


def generation_kwargs(args: argparse.Namespace) -> dict:
    kwargs = {"num_beams": args.num_beams}
    if args.max_new_tokens is not None:
        kwargs["max_new_tokens"] = args.max_new_tokens
    if args.do_sample:
        kwargs.update(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    return kwargs


def plot_attention(model, processor, features, ids, text: str, png: str) -> None:
    """Cross-attention (decoder tokens x audio frames), averaged over layers and heads, as a picture."""
    try:
        import matplotlib  # optional: the plot extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional: the plot extra
    except ImportError:
        raise CLIError("--plot-attention needs matplotlib: pip install 'minispeechseq[plot]'") from None
    previous = model.attn_implementation
    model.set_attn_implementation("eager")  # the only path that returns attention weights
    try:
        with torch.no_grad():
            out = model(features.input_values, attention_mask=features.get("attention_mask"),
                        decoder_input_ids=ids[None, :-1], output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    weights = torch.stack(out.cross_attentions).float().mean(dim=(0, 2))[0]  # (layers, 1, H, S, T) -> (S, T)
    tokens = processor.tokenizer.convert_ids_to_tokens(ids[1:].tolist())
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(tokens) + 1.5))
    ax.imshow(weights.numpy(), aspect="auto", origin="upper", cmap="viridis")
    ax.set_yticks(range(len(tokens)), tokens)
    ax.set_xlabel("encoder frame")
    ax.set_title(f"cross-attention: {text}")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def cmd_transcribe(args: argparse.Namespace) -> int:
    model_dir = args.model or bundled_model_dir()
    model, processor = load_recognizer(model_dir, args.device, args.dtype, args.attn, args.revision, args.quantize)
    fe = processor.feature_extractor
    failures = 0
    items = list(expand_inputs(args.audio))
    good: list[tuple[str, object]] = []
    for path, error in items:
        if error is not None:
            _fail(error)
            failures += 1
            continue
        try:
            samples = load_audio(path, sampling_rate=fe.sampling_rate)
        except (OSError, ValueError, RuntimeError) as e:
            _fail(f"{path}: {e}")
            failures += 1
            continue
        if len(samples) < model.encoder.receptive_field:  # checked per file, so one short clip spoils no batch
            _fail(f"{path}: {len(samples)} samples is shorter than the model's receptive field "
                  f"({model.encoder.receptive_field} samples, {model.encoder.receptive_field / fe.sampling_rate * 1e3:.0f} ms)")
            failures += 1
            continue
        good.append((path, samples))
    fmt = "json" if args.json else args.format
    if fmt in ("srt", "vtt") and len(good) > 1 and not args.output_dir:
        raise CLIError(f"--format {fmt} writes one subtitle file per input: with {len(good)} inputs, give "
                       "--output-dir DIR.")
    timestamps = args.timestamps or fmt in ("srt", "vtt")
    kwargs = generation_kwargs(args)
    num_beams = kwargs.pop("num_beams")
    # One batch of files at a time: each line is printed as soon as its batch is done. transcribe() cuts a file
    # longer than the model's chunk length into chunks and stitches them (longform.py).
    for start in range(0, len(good), args.batch_size):
        chunk = good[start : start + args.batch_size]
        long_input = max(len(audio) for _, audio in chunk) / fe.sampling_rate > 60

        def progress(done: int, total: int, paths=[p for p, _ in chunk]) -> None:
            if long_input:  # a long recording: say how far it is, on stderr (stdout holds the results)
                print(f"minispeechseq: {', '.join(paths)}: {done}/{total} chunks", file=sys.stderr, flush=True)

        try:
            results = transcribe(model, [audio for _, audio in chunk], processor=processor, num_beams=num_beams,
                                 timestamps=timestamps, chunk_length_s=args.chunk_length, batch_size=args.batch_size,
                                 progress=progress, **kwargs)
        except ValueError as e:
            raise CLIError(str(e)) from None
        for i, ((path, samples), result) in enumerate(zip(chunk, results)):
            if fmt == "json":
                print(json.dumps({"path": path, **result}, ensure_ascii=False), flush=True)
            elif fmt in ("srt", "vtt"):
                write_subtitles(path, subtitles(result["words"], fmt), fmt, args.output_dir)
            else:
                print(f"{path}\t{result['text']}", flush=True)
            if args.plot_attention:
                png = args.plot_attention
                if len(good) > 1:
                    root, ext = os.path.splitext(png)
                    png = f"{root}-{start + i}{ext or '.png'}"
                single = fe(samples, sampling_rate=fe.sampling_rate, return_tensors="pt").to(model.device)
                ids = generate_batch(model, processor, [samples], num_beams=num_beams, **kwargs)[0]
                keep = ids != (model.generation_config.pad_token_id if model.generation_config.pad_token_id is not None else -1)
                keep[0] = True
                plot_attention(model, processor, single, ids[keep], result["text"], png)
    return 1 if failures else 0


def write_subtitles(path: str, text: str, fmt: str, output_dir: str | None) -> None:
    """Subtitles to stdout (one input), or to OUTPUT_DIR/<name>.<fmt>."""
    if output_dir is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    os.makedirs(output_dir, exist_ok=True)
    name = os.path.splitext(os.path.basename(path))[0] + "." + fmt
    with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"{path}\t{os.path.join(output_dir, name)}", flush=True)


# ------------------------------------------------------------------------------------ inspect / convert
# Task models whose config.json shares its model_type with the bare encoder: `architectures` tells them apart.
CTC_MODELS = {"Wav2Vec2ForCTC": Wav2Vec2ForCTC, "HubertForCTC": HubertForCTC}


def _model_class(folder: str):
    config = read_config_json(folder)
    model_type = config.get("model_type")
    if model_type == "speech-encoder-decoder":
        return SpeechEncoderDecoderModel
    ctc = [CTC_MODELS[a] for a in config.get("architectures") or [] if a in CTC_MODELS]
    if model_type in ENCODERS and ctc:
        return ctc[0]
    if model_type in ENCODERS:
        return encoder_classes(model_type)[1]
    if model_type in DECODERS:
        return decoder_classes(model_type)[1]
    raise CLIError(
        f"{folder}: model_type={model_type!r} is not one minispeechseq reads "
        f"(speech-encoder-decoder, {', '.join([*ENCODERS, *DECODERS])})."
    )


def _load(name_or_path: str, revision: str | None = None):
    try:
        folder = resolve_folder(name_or_path, patterns=MODEL_FILES, revision=revision)
        return _model_class(folder).from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise CLIError(str(e)) from None


def cmd_inspect(args: argparse.Namespace) -> int:
    model = _load(args.checkpoint, args.revision)
    report = model.load_report
    state = model.state_dict()
    print(f"{type(model).__name__}: {model.num_parameters():,} parameters")
    config = model.config.to_dict()
    for key in ("model_type", "decoder_start_token_id", "pad_token_id", "eos_token_id"):
        if config.get(key) is not None:
            print(f"  {key}: {config[key]}")
    for half in ("encoder", "decoder"):
        if isinstance(config.get(half), dict):
            sub = config[half]
            fields = ["model_type", "hidden_size", "n_embd", "d_model", "num_hidden_layers", "n_layer", "decoder_layers",
                      "vocab_size", "add_adapter", "do_stable_layer_norm", "feat_extract_norm"]
            print(f"  {half}: " + ", ".join(f"{k}={sub[k]}" for k in fields if k in sub))
    print(f"\nkey mapping ({len(report.loaded)} tensors): checkpoint name -> ours [shape]")
    for theirs, ours in report.loaded:
        shape = tuple(state[ours].shape) if ours in state else "?"
        print(f"  {theirs} -> {ours} {list(shape)}")
    print(f"\nskipped ({len(report.skipped)}): " + (", ".join(report.skipped) or "none"))
    print(f"newly initialised ({len(report.initialized)}): " + (", ".join(report.initialized) or "none"))
    for note in report.notes:
        print(f"note: {note}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    model = _load(args.src, args.revision)
    try:
        model.save_pretrained(args.dst)
    except OSError as e:
        raise CLIError(f"cannot write {args.dst}: {e}") from None
    report = model.load_report
    print(f"wrote {args.dst}: {len(report.loaded)} tensors as model.safetensors "
          f"({len(report.skipped)} skipped, {len(report.notes)} legacy layouts rewritten)")
    return 0


# ------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minispeechseq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="audio files or folders -> text, one line per file")
    t.add_argument("audio", nargs="+", help="audio files (any format soundfile reads) or folders")
    t.add_argument("--model", help="a SpeechEncoderDecoderModel folder or hub id (default: the bundled digits model)")
    t.add_argument("--revision", help=REVISION_HELP)
    t.add_argument("--num-beams", type=int, default=1)
    t.add_argument("--do-sample", action="store_true")
    t.add_argument("--top-k", type=int, default=50)
    t.add_argument("--top-p", type=float, default=1.0)
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--max-new-tokens", type=int)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    t.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash"])
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--quantize", choices=QUANTIZATIONS,
                   help="int8 weights for CPU inference: int8 = the decoder, int8-all = the encoder's Linear layers too")
    t.add_argument("--json", action="store_true", help="one JSON object per line: {path, text} (= --format json)")
    t.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"],
                   help="text: path<TAB>text lines; json: one object per line; srt / vtt: subtitles (word timestamps)")
    t.add_argument("--timestamps", action="store_true", help="word start and end times (seconds) in the JSON lines")
    t.add_argument("--chunk-length", type=float, metavar="SECONDS",
                   help="cut longer audio into chunks of at most this long (default: the model's, else 30 s)")
    t.add_argument("--output-dir", metavar="DIR", help="with --format srt|vtt: write DIR/<name>.srt|.vtt per input")
    t.add_argument("--plot-attention", metavar="PNG", help="draw the cross-attention map (needs matplotlib)")
    t.set_defaults(func=cmd_transcribe)

    i = sub.add_parser("inspect", help="the key mapping and config summary of a checkpoint")
    i.add_argument("checkpoint", help="a checkpoint folder or hub id")
    i.add_argument("--revision", help=REVISION_HELP)
    i.set_defaults(func=cmd_inspect)

    c = sub.add_parser("convert", help="rewrite a checkpoint (.bin, legacy names) as clean safetensors")
    c.add_argument("src", help="a checkpoint folder or hub id")
    c.add_argument("dst")
    c.add_argument("--revision", help=REVISION_HELP)
    c.set_defaults(func=cmd_convert)

    tr = sub.add_parser("train", help="train a recognizer (see minispeechseq train --help)", add_help=False)
    tr.set_defaults(func=None)
    d = sub.add_parser("data", help="make the spoken-digits corpus with espeak-ng (see minispeechseq data --help)",
                       add_help=False)
    d.set_defaults(func=None)
    e = sub.add_parser("evaluate", help="WER/CER of a model on a manifest (see minispeechseq evaluate --help)",
                       add_help=False)
    e.set_defaults(func=None)
    b = sub.add_parser("bench", help="benchmark against transformers (see minispeechseq bench --help)", add_help=False)
    b.set_defaults(func=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBPROGRAMS:  # these parse their own options
        try:
            module = importlib.import_module(SUBPROGRAMS[argv[0]])
        except ImportError as e:
            _fail(f"`{argv[0]}` is not available: {e}")
            return 2
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        _fail("--batch-size must be at least 1")
        return 2
    try:
        return args.func(args)
    except CLIError as e:
        _fail(str(e))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
