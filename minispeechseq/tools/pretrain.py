"""`minispeechseq pretrain`: the command line of training/pretrain.py, its options and their checks.

    minispeechseq pretrain --corpus UNLABELLED --make-corpus --fsdd FSDD --objective hubert --out runs/ssl
    python -m minispeechseq.tools.pretrain ...       (the same)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence

from ..common.arguments import DEBUG_FLAG, DEBUG_HELP, Parser, run_command, split_debug
from ..training.pretrain import OBJECTIVES, pretrain


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="minispeechseq pretrain",
               description="Pretrain the tiny preset's speech encoder on unlabelled audio (wav2vec 2.0's contrastive "
                           "objective, or HuBERT-style masked prediction of k-means clusters of log-mel frames).")
    data = p.add_argument_group("unlabelled audio")
    data.add_argument("--corpus", required=True, help="folder of the unlabelled corpus (made with --make-corpus)")
    data.add_argument("--make-corpus", action="store_true", help="make it first (needs espeak-ng and --words)")
    data.add_argument("--words", default="/usr/share/dict/words",
                      help="a word list or any English text: espeak-ng reads random words of it (digit names left out)")
    data.add_argument("--sentences", type=int, default=2000, help="espeak-ng strings of 3-10 words")
    data.add_argument("--fsdd", default=None, help="a Free Spoken Digit Dataset folder, used without its labels")
    data.add_argument("--workers", type=int, default=2, help="concurrent espeak-ng processes")
    obj = p.add_argument_group("objective")
    obj.add_argument("--objective", choices=OBJECTIVES, default="hubert")
    obj.add_argument("--mask-prob", type=float, default=0.5, help="share of frames that start a hidden span")
    obj.add_argument("--mask-length", type=int, default=5, help="frames per hidden span (5 x 40 ms)")
    obj.add_argument("--negatives", type=int, default=20, help="wav2vec2: distractors per hidden frame")
    obj.add_argument("--codevectors", type=int, default=64, help="wav2vec2: codewords per group (2 groups)")
    obj.add_argument("--clusters", type=int, default=100, help="hubert: k-means clusters")
    obj.add_argument("--kmeans-batches", type=int, default=60, help="hubert: batches of crops the clusters are fit on")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=6000)
    opt.add_argument("--batch-size", type=int, default=16)
    opt.add_argument("--max-samples", type=int, default=48000, help="crop length in samples (3 s)")
    opt.add_argument("--lr", type=float, default=1e-3)
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--max-grad-norm", type=float, default=5.0)
    run = p.add_argument_group("run")
    run.add_argument("--out", required=True, help="folder for checkpoints, metrics.jsonl and encoder/")
    run.add_argument("--resume", action="store_true")
    run.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this long")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--log-every", type=int, default=50)
    run.add_argument("--save-every", type=int, default=500)
    run.add_argument("--quiet", action="store_true")
    run.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    return p


def check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch_size", "sentences", "log_every", "save_every", "negatives", "clusters",
                 "kmeans_batches", "mask_length", "workers"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.batch_size < 2 and args.objective == "hubert":
        raise ValueError("--batch-size must be at least 2.")
    if args.codevectors < 2:
        raise ValueError(f"--codevectors must be at least 2, got {args.codevectors}.")
    if not 0 < args.mask_prob <= 1:
        raise ValueError(f"--mask-prob must be in (0, 1], got {args.mask_prob}.")
    for name in ("lr", "max_grad_norm"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number > 0, got {getattr(args, name)}.")
    if args.max_samples < 16000:
        raise ValueError(f"--max-samples {args.max_samples}: crops under 1 s leave too few frames to hide; use >= 16000.")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be > 0, got {args.max_minutes}.")
    if args.make_corpus and not os.path.exists(args.words):
        raise FileNotFoundError(f"--words {args.words} does not exist; pass a word list or an English text file.")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out} is a file; it must be a folder.")


def main(argv: Sequence[str] | None = None) -> int:
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        args = build_parser().parse_args(argv)
        check_args(args)
        pretrain(args)
        return 0

    return run_command("minispeechseq pretrain", body, debug)


if __name__ == "__main__":
    sys.exit(main())
