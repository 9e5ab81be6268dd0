"""`minispeechseq data`: the spoken-digits corpus (espeak-ng) and, with --fsdd, its real-voice part.

The library pieces are training/digits.py (the synthetic corpus) and training/fsdd.py (real recordings, joined
strings, the mixed and leave-one-speaker-out manifests); this module is only their command line.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from ..common.arguments import DEBUG_FLAG, DEBUG_HELP, POSITIVE_INT, Parser, run_command, split_debug
from ..training.data import ManifestDataset
from ..training.digits import DigitsRecipe, make_digits_corpus
from ..training.fsdd import RealCorpusRecipe, write_mixed_manifests, write_real_corpus


def main(argv: Sequence[str] | None = None) -> int:
    """`minispeechseq data DIR [--utterances 4000] [--seed 0] [--fsdd PATH]`: make the spoken-digits corpus
    (with --fsdd, also its real-voice part from a Free Spoken Digit Dataset folder, and the mixed manifests)."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    return run_command("minispeechseq data", lambda: _make_corpus(argv), debug)


def _make_corpus(argv: list[str]) -> int:
    parser = Parser(prog="minispeechseq data", description=main.__doc__)
    parser.add_argument("folder", help="where to write wavs/, train.tsv, valid.tsv, test.tsv and tokenizer/")
    parser.add_argument("--utterances", type=POSITIVE_INT, default=DigitsRecipe.num_utterances)
    parser.add_argument("--seed", type=int, default=DigitsRecipe.seed)
    parser.add_argument("--workers", type=POSITIVE_INT, default=None,
                        help="concurrent espeak-ng processes (default: CPUs)")
    parser.add_argument("--fsdd", help="a Free Spoken Digit Dataset folder (its recordings/ or the clone's root): "
                                       "adds real/, mixed/train.tsv and folds/SPEAKER/ (leave-one-speaker-out)")
    parser.add_argument("--joined-per-speaker", type=POSITIVE_INT, default=RealCorpusRecipe.joined_per_speaker,
                        help="joined digit strings made from each real speaker's recordings")
    parser.add_argument("--real-weight", type=POSITIVE_INT, default=1,
                        help="how many times each real row is listed in the training manifests")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if os.path.exists(args.folder) and not os.path.isdir(args.folder):
        raise ValueError(f"{args.folder} is a file; the corpus needs a folder (new, or one made with the same recipe).")
    start = time.time()
    manifests = make_digits_corpus(args.folder, DigitsRecipe(num_utterances=args.utterances, seed=args.seed),
                                   workers=args.workers)
    if args.fsdd:
        write_real_corpus(args.fsdd, args.folder, RealCorpusRecipe(seed=args.seed,
                                                                   joined_per_speaker=args.joined_per_speaker))
        manifests.update(write_mixed_manifests(args.folder, real_weight=args.real_weight))
    counts = {split: len(ManifestDataset(path)) for split, path in manifests.items()}
    print(f"{args.folder}: {counts} utterances in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())


