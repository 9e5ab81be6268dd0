"""`minispeechseq train`: the command line of the training loop (training/train.py), its options and their checks.

    minispeechseq train --preset tiny --data DIGITS --out runs/tiny
    python -m minispeechseq.tools.train ...          (the same; torchrun --nproc_per_node 4 -m minispeechseq.tools.train)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..common.arguments import DEBUG_FLAG, DEBUG_HELP, Parser, run_command, split_debug
from ..training.augment import NOISE_TYPES
from ..training.train import PRESETS, train


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="minispeechseq train",
        description="Train a speech encoder-decoder on a manifest corpus (e.g. the spoken-digits recipe: "
                    "minispeechseq data DIR).",
    )
    model = p.add_argument_group("model (one of)")
    model.add_argument("--preset", choices=sorted(PRESETS), help="a fresh model of this shape (tiny: the bundled one)")
    model.add_argument("--encoder", help="warm start: a wav2vec2 / HuBERT checkpoint folder (with --decoder)")
    model.add_argument("--decoder", help="warm start: a BERT / GPT-2 / BART / mBART / Speech2Text2 checkpoint folder")
    model.add_argument("--init", help="fine-tune: a whole SpeechEncoderDecoderModel folder (fresh optimizer)")
    model.add_argument("--encoder-init", help="with --preset: start its encoder from this pretrained Wav2Vec2Model "
                                              "folder (e.g. minispeechseq pretrain's OUT/encoder)")
    model.add_argument("--tokenizer", help="tokenizer folder (default: DATA/tokenizer, else the --decoder folder)")
    data = p.add_argument_group("data")
    data.add_argument("--data", help="corpus folder with train.tsv, valid.tsv and tokenizer/")
    data.add_argument("--train-manifest", help="TSV of audio_path<TAB>transcript (default: DATA/train.tsv)")
    data.add_argument("--valid-manifest", help="(default: DATA/valid.tsv)")
    data.add_argument("--no-augment", action="store_true", help="no silence / gain / noise augmentation")
    aug = p.add_argument_group("voice augmentation (any of these: training/augment.py's VoiceAugmentation)")
    for name, what in (("speed", "speed perturbation (0.85-1.15)"), ("formant", "formant warp (VTLP, 0.87-1.15)"),
                       ("reverb", "a simulated room"), ("band", "a random band limit"), ("eq", "a random EQ")):
        aug.add_argument(f"--{name}-p", type=float, default=None, help=f"probability of {what}")
    aug.add_argument("--snr-db", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                     help="noise SNR range in dB (default 15 40)")
    aug.add_argument("--noise-types", default=None, help=f"comma-separated, of {', '.join(NOISE_TYPES)} (default white)")
    data.add_argument("--no-shortest-first", action="store_true",
                      help="bucketed random order from the first epoch (default: epoch 0 goes shortest first)")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: load in the main one)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=3000, help="optimizer steps")
    opt.add_argument("--batch-size", type=int, default=16, help="utterances per micro-batch, over all processes")
    opt.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    opt.add_argument("--lr", type=float, default=2e-3)
    opt.add_argument("--warmup-steps", type=int, default=None, help="(default: 10%% of --steps)")
    opt.add_argument("--min-lr-ratio", type=float, default=0.0, help="the cosine ends at lr * this")
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--max-grad-norm", type=float, default=1.0)
    opt.add_argument("--dropout", type=float, default=None, help="override every dropout probability of the model")
    opt.add_argument("--no-spec-augment", action="store_true")
    opt.add_argument("--mask-time-prob", type=float, default=None, help="SpecAugment: share of frames masked")
    opt.add_argument("--mask-time-length", type=int, default=None, help="SpecAugment: frames per time mask")
    opt.add_argument("--mask-feature-prob", type=float, default=None, help="SpecAugment: share of channels masked")
    opt.add_argument("--mask-feature-length", type=int, default=None, help="SpecAugment: channels per mask")
    opt.add_argument("--freeze-feature-encoder", action="store_true", help="no gradients into the conv front end")
    opt.add_argument("--freeze-encoder", action="store_true", help="no gradients into the whole speech encoder")
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="folder for checkpoints, metrics.jsonl and final/")
    run.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--no-bf16", action="store_true", help="fp32 on CUDA too")
    run.add_argument("--log-every", type=int, default=10)
    run.add_argument("--eval-every", type=int, default=500)
    run.add_argument("--save-every", type=int, default=500)
    run.add_argument("--keep-checkpoints", type=int, default=2)
    run.add_argument("--max-new-tokens", type=int, default=16, help="greedy transcripts at evaluation")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return p


def _in_range(low: float, *, above: bool = False, high: float | None = None):
    """A test of a finite number >= low (> low with `above`) and <= high."""
    return lambda v: math.isfinite(v) and (v > low if above else v >= low) and (high is None or v <= high)


# The numeric options and what they accept, checked before anything is built or read: `--lr inf` trained on NaN
# losses and `--max-grad-norm -1` (a negative clipping norm) made the loss climb, both exiting 0.
OPTION_RANGES: list[tuple[tuple[str, ...], Any, str]] = [
    (("steps", "batch_size", "grad_accum", "log_every", "eval_every", "save_every", "keep_checkpoints",
      "max_new_tokens"), _in_range(1), "at least 1"),
    (("workers", "warmup_steps"), _in_range(0), "an integer >= 0"),
    (("lr",), _in_range(0, above=True), "a finite number > 0"),
    # Clipping is always on (transformers' Trainer default: 1.0); a huge value makes it a no-op.
    (("max_grad_norm",), _in_range(0, above=True), "a finite number > 0 (the gradient norm clipped to)"),
    (("weight_decay",), _in_range(0), "a finite number >= 0"),
    (("min_lr_ratio", "dropout", "speed_p", "formant_p", "reverb_p", "band_p", "eq_p", "mask_time_prob",
      "mask_feature_prob"), _in_range(0, high=1), "a number in [0, 1]"),
    (("mask_time_length", "mask_feature_length"), _in_range(1), "at least 1"),
]


def check_args(args: argparse.Namespace) -> None:
    warm = args.encoder is not None or args.decoder is not None
    choices = (args.preset is not None) + warm + (args.init is not None)
    if not args.resume and choices != 1:
        raise ValueError("Choose the model with one of --preset NAME, --encoder DIR --decoder DIR, or --init DIR.")
    if args.init is not None and args.dropout is not None:
        raise ValueError("--dropout applies when a model is built (--preset, --encoder/--decoder), not to --init.")
    if args.snr_db is not None and not (all(math.isfinite(v) for v in args.snr_db) and args.snr_db[0] <= args.snr_db[1]):
        raise ValueError(f"--snr-db must be two finite numbers LOW <= HIGH, got {args.snr_db[0]} {args.snr_db[1]}.")
    if args.noise_types is not None:
        kinds = [t.strip() for t in args.noise_types.split(",") if t.strip()]
        if not kinds or set(kinds) - set(NOISE_TYPES):
            raise ValueError(f"--noise-types {args.noise_types!r}: expected a comma-separated list of "
                             f"{', '.join(NOISE_TYPES)}.")
    if args.encoder_init is not None and args.preset is None:
        raise ValueError("--encoder-init starts a preset's encoder; use it with --preset NAME.")
    if warm and (args.encoder is None or args.decoder is None):
        raise ValueError("A warm start needs both --encoder DIR and --decoder DIR.")
    for names, ok, expected in OPTION_RANGES:
        for name in names:
            value = getattr(args, name)
            if value is not None and not ok(value):
                raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {value}.")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file; it must be a folder (new, or one to --resume from).")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 on success; any error is one line on stderr (common/arguments.run_command), --debug for the traceback."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args = build_parser().parse_args(argv)
        check_args(args)
        train(args)
        return 0

    return run_command("minispeechseq train", body, debug)


if __name__ == "__main__":
    sys.exit(main())
