"""The `minispeechseq` command line: transcribe, train, pretrain, data, evaluate, inspect, convert, bench.

Every error reaches the user as one line on stderr and a non-zero exit code; commands over many files report
the failing file and go on with the others.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence

import torch

from ..audio import load_audio
from ..common.arguments import DEBUG_FLAG, DEBUG_HELP, POSITIVE, POSITIVE_INT, CLIError, Parser, run_command, split_debug
from ..ctc import HubertForCTC, Wav2Vec2ForCTC
from ..wav2vec2_pretraining import Wav2Vec2ForPreTraining
from ..processor import Processor
from ..generation.settings import check_settings
from ..recognition.quantize import QUANTIZATIONS
from ..recognition.recognizer import chunk_settings, generate_batch, measure_inputs, model_inputs, named, subtitles, transcribe_inputs
from .progress import ProgressLine
from ..files.resolve import MODEL_FILES, PREPROCESSING_FILES, resolve_folder
from ..speech_encoder_decoder import (
    DECODERS,
    ENCODERS,
    SpeechEncoderDecoderModel,
    decoder_classes,
    encoder_classes,
    read_config_json,
)

# Subcommands that are programs of their own (they parse their own options): the module whose main(argv) runs.
SUBPROGRAMS = {
    "train": "minispeechseq.tools.train",
    "pretrain": "minispeechseq.tools.pretrain",
    "data": "minispeechseq.tools.data",
    "evaluate": "minispeechseq.tools.evaluate",
    "bench": "minispeechseq.tools.bench",
}

# Hub ids are looked up in huggingface_hub's cache (HF_HOME, HF_HUB_CACHE; HF_HUB_OFFLINE=1 never downloads).
REVISION_HELP = "for a hub id: the branch, tag or commit to load (default: main)"

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64", ".opus")


def bundled_model_dir() -> str:
    """The small spoken-digits model that ships inside the package (see its MODEL_CARD.md)."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "bundled", "digits")


def _fail(message: str) -> None:
    print(f"minispeechseq: error: {message}", file=sys.stderr)


# -------------------------------------------------------------------------------------------- transcribe
def expand_inputs(paths: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """(path, error) for every input: a folder expands to its audio files, sorted; a subfolder that cannot be
    read is an error (its files would otherwise be skipped without a word)."""
    for path in paths:
        if os.path.isdir(path):
            unreadable: list[OSError] = []
            found = sorted(
                os.path.join(root, name)
                for root, _, names in os.walk(path, onerror=unreadable.append)
                for name in names
                if name.lower().endswith(AUDIO_EXTENSIONS)
            )
            for error in unreadable:
                yield error.filename, f"{error.filename}: cannot read this folder ({error.strerror}); its files are skipped"
            if not found and not unreadable:
                yield path, f"{path}: the folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})"
            for f in found:
                yield f, None
        elif not os.path.exists(path):
            yield path, f"{path}: no such file"
        else:
            yield path, None


def escape(text: str) -> str:
    """A path (or message) kept on one line of plain output: backslash, tab, newline and carriage return become
    \\\\, \\t, \\n, \\r, and the bytes of a name that are not UTF-8 (kept by Python as surrogate escapes) \\xNN, as
    Python writes them in a bytes literal; a name without these characters is printed as it is."""
    text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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


# The generation flags: each overrides the model's generation_config.json only when given (they default to None,
# so a checkpoint's own num_beams or temperature is used otherwise).
GENERATION_FLAGS = ("num_beams", "max_new_tokens", "do_sample", "temperature", "top_k", "top_p")


def generation_kwargs(args: argparse.Namespace) -> dict:
    """The generate() settings the user gave. num_beams is always there (None: the model's), for the callers
    that pass it on by name; generate() reads num_beams=None as "not given"."""
    given = {name: getattr(args, name) for name in GENERATION_FLAGS if getattr(args, name) is not None}
    return {"num_beams": None, **given}


def plot_libraries():
    """matplotlib's pyplot, drawing to files (no display needed), or a one-line error saying how to install it."""
    try:
        import matplotlib  # optional: the plot extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # optional: the plot extra
    except ImportError:
        raise CLIError("--plot-attention needs matplotlib: pip install 'minispeechseq[plot]'") from None
    return plt


def plot_path(target: str, name: str, index: int, many: bool) -> str:
    """Where an input's attention picture goes: into TARGET/<input name>.png when TARGET is a folder; else TARGET,
    numbered TARGET-<n>.png when there are several inputs."""
    if os.path.isdir(target):
        return os.path.join(target, os.path.splitext(os.path.basename(name))[0] + ".png")
    if many:
        root, ext = os.path.splitext(target)
        return f"{root}-{index}{ext or '.png'}"
    return target


def plot_attention(model, processor, input_values, mask, ids, text: str, png: str) -> None:
    """Cross-attention (decoder tokens x audio frames), averaged over layers and heads, as a picture."""
    plt = plot_libraries()
    previous = model.attn_implementation
    model.set_attn_implementation("eager")  # the only path that returns attention weights
    try:
        with torch.no_grad():
            out = model(input_values, attention_mask=mask, decoder_input_ids=ids[None, :-1], output_attentions=True)
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
    try:
        fig.savefig(png, dpi=120)
    except OSError as e:
        raise CLIError(f"cannot write the attention plot {png}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


def plot_one(model, processor, path: str, text: str, png: str, generate_kwargs: dict) -> None:
    """Transcribe one file again, alone (no padding), keeping its ids, and draw its cross-attention."""
    samples = load_audio(path, sampling_rate=processor.feature_extractor.sampling_rate)
    input_values, mask = model_inputs(model, processor, [samples])
    ids = generate_batch(model, processor, [samples], **generate_kwargs)[0]
    pad = model.generation_config.pad_token_id
    keep = ids != (pad if pad is not None else -1)
    keep[0] = True
    plot_attention(model, processor, input_values, mask, ids[keep], text, png)


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.plot_attention:
        plot_libraries()  # a missing matplotlib is said before any work
    model_dir = args.model or bundled_model_dir()
    model, processor = load_recognizer(model_dir, args.device, args.dtype, args.attn, args.revision, args.quantize)
    rate = processor.feature_extractor.sampling_rate
    items = list(expand_inputs(args.audio))
    where = [k for k, (_, error) in enumerate(items) if error is None]  # input j is items[where[j]]
    fmt = "json" if args.json else args.format
    if fmt in ("srt", "vtt") and len(where) > 1 and not args.output_dir:
        raise CLIError(f"--format {fmt} writes one subtitle file per input: with {len(where)} inputs, give "
                       "--output-dir DIR.")
    kwargs = generation_kwargs(args)
    check_settings(model, **{k: v for k, v in kwargs.items() if v is not None})  # one line, not one per input
    # Lengths from the headers, so the inputs are batched shortest with shortest and each batch's audio is read
    # when its turn comes; the results are printed in the order given, each as soon as those before it are.
    inputs, errors = measure_inputs([items[k][0] for k in where], rate)
    outcomes: dict[int, object] = {k: error for k, (_, error) in enumerate(items) if error is not None}
    outcomes.update({where[j]: e for j, e in errors.items()})
    seconds = {item.index: item.samples / rate for item in inputs}

    line = ProgressLine(sys.stderr)  # one updating line on a terminal, a line every 30 s in a log

    def progress(j: int, done: int, total: int) -> None:
        if seconds[j] > 60:  # a long recording: say how far it is, on stderr (stdout holds the results)
            line.update(f"minispeechseq: {escape(items[where[j]][0])}: {done}/{total} chunks")
            if done == total:
                line.close()

    failures, printed = 0, 0
    chunk_s, max_pause_s = chunk_settings(model, args.chunk_length, None)
    done = transcribe_inputs(model, processor, inputs, chunk_length_s=chunk_s, max_pause_s=max_pause_s,
                             batch_size=args.batch_size, timestamps=args.timestamps or fmt in ("srt", "vtt"),
                             progress=progress, **kwargs)
    for j, outcome in itertools.chain(done, [(None, None)]):
        if j is not None:
            outcomes[where[j]] = outcome
        while printed in outcomes:
            path, outcome = items[printed][0], outcomes.pop(printed)
            try:
                if isinstance(outcome, str):
                    raise CLIError(outcome)
                if isinstance(outcome, Exception):
                    raise outcome
                print_result(path, outcome, fmt, args.output_dir)
                if args.plot_attention:
                    png = plot_path(args.plot_attention, path, where.index(printed), len(where) > 1)
                    plot_one(model, processor, path, outcome["text"], png, kwargs)
            except (CLIError, OSError, ValueError, RuntimeError) as e:  # this input's failure, and only its
                _fail(escape(named(path, e)))
                failures += 1
            printed += 1
    return 1 if failures else 0


def print_result(path: str, result: dict, fmt: str, output_dir: str | None) -> None:
    if fmt == "json":
        # Lone surrogates (a name that is not UTF-8) as JSON's \udcXX escapes, which json.loads reads back.
        line = json.dumps({"path": path, **result}, ensure_ascii=False)
        print(line.encode("utf-8", "backslashreplace").decode("utf-8"), flush=True)
    elif fmt in ("srt", "vtt"):
        write_subtitles(path, subtitles(result["words"], fmt), fmt, output_dir)
    else:
        print(f"{escape(path)}\t{result['text']}", flush=True)


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
    print(f"{escape(path)}\t{escape(os.path.join(output_dir, name))}", flush=True)


# ------------------------------------------------------------------------------------ inspect / convert
# Task models whose config.json shares its model_type with the bare encoder: `architectures` tells them apart.
TASK_MODELS = {"Wav2Vec2ForCTC": Wav2Vec2ForCTC, "HubertForCTC": HubertForCTC,
               "Wav2Vec2ForPreTraining": Wav2Vec2ForPreTraining}


def _model_class(folder: str):
    config = read_config_json(folder)
    model_type = config.get("model_type")
    if model_type == "speech-encoder-decoder":
        return SpeechEncoderDecoderModel
    task = [TASK_MODELS[a] for a in config.get("architectures") or [] if a in TASK_MODELS]
    if model_type in ENCODERS and task:
        return task[0]
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
    parser = Parser(prog="minispeechseq", description=__doc__.splitlines()[0])
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("transcribe", help="audio files or folders -> text, one line per file")
    t.add_argument("audio", nargs="+", help="audio files (any format soundfile reads) or folders")
    t.add_argument("--model", help="a SpeechEncoderDecoderModel folder or hub id (default: the bundled digits model)")
    t.add_argument("--revision", help=REVISION_HELP)
    # Generation: unset flags leave the model's generation_config.json in charge (generation_kwargs). Their values
    # are checked by generate(), whose errors name the setting as the Python API does (num_beams, top_p...).
    t.add_argument("--num-beams", type=int, help="beam search with this many beams (default: the model's)")
    t.add_argument("--do-sample", action="store_true", default=None, help="sample instead of greedy / beam search")
    t.add_argument("--top-k", type=int, help="with --do-sample: keep the k most likely tokens (0: off)")
    t.add_argument("--top-p", type=float, help="with --do-sample: nucleus sampling mass, in (0, 1]")
    t.add_argument("--temperature", type=float, help="with --do-sample: divide the logits by this (> 0)")
    t.add_argument("--max-new-tokens", type=int)
    t.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    t.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    t.add_argument("--attn", default="sdpa", choices=["eager", "sdpa", "flash"])
    t.add_argument("--batch-size", type=POSITIVE_INT, default=8)
    t.add_argument("--quantize", choices=QUANTIZATIONS,
                   help="int8 weights for CPU inference: int8 = the decoder, int8-all = the encoder's Linear layers too")
    t.add_argument("--json", action="store_true", help="one JSON object per line: {path, text} (= --format json)")
    t.add_argument("--format", default="text", choices=["text", "json", "srt", "vtt"],
                   help="text: path<TAB>text lines; json: one object per line; srt / vtt: subtitles (word timestamps)")
    t.add_argument("--timestamps", action="store_true", help="word start and end times (seconds) in the JSON lines")
    t.add_argument("--chunk-length", type=POSITIVE, metavar="SECONDS",
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
    pt = sub.add_parser("pretrain", help="pretrain a speech encoder on unlabelled audio (see minispeechseq pretrain --help)",
                        add_help=False)
    pt.set_defaults(func=None)
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
    """Run one command; any failure is one line on stderr and a non-zero status (`--debug`: the traceback too)."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBPROGRAMS:  # these parse their own options, under the same error policy
        try:
            module = importlib.import_module(SUBPROGRAMS[argv[0]])
        except ImportError as e:  # an extra is missing (e.g. jiwer for train / evaluate)
            message = f"`{argv[0]}` is not available: {e}"

            def unavailable() -> int:
                raise CLIError(message)

            return run_command("minispeechseq", unavailable, debug)
        return module.main(argv[1:] + [DEBUG_FLAG] * debug)

    def body() -> int:
        args = build_parser().parse_args(argv)
        return args.func(args)

    return run_command("minispeechseq", body, debug)


if __name__ == "__main__":
    sys.exit(main())
