"""`minispeechseq evaluate MODEL`: word and character error rates of a model on a manifest split,
or on the spoken-digits test strings said by voices of your choice (e.g. voices the model never heard).

    minispeechseq evaluate minispeechseq/bundled/digits --manifest DIGITS/test.tsv
    minispeechseq evaluate minispeechseq/bundled/digits --unseen-voices de,fr,es,it,pl,hi

(also `python -m minispeechseq.tools.evaluate ...`)
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from ..common.arguments import (
    COUNT,
    DEBUG_FLAG,
    DEBUG_HELP,
    POSITIVE_INT,
    Parser,
    UsageError,
    run_command,
    split_debug,
)
from ..processor import Processor
from ..speech_encoder_decoder import SpeechEncoderDecoderModel
from ..training.data import ManifestDataset
from ..training.evaluate import noisy_manifest, transcribe_dataset, unseen_voice_manifest
from ..training.metrics import character_error_rate, word_error_rate


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 on success; any error is one line on stderr (common/arguments.run_command), --debug for the traceback."""
    argv, debug = split_debug(sys.argv[1:] if argv is None else argv)
    return run_command("minispeechseq evaluate", lambda: _evaluate(argv), debug)


def _evaluate(argv: list[str]) -> int:
    parser = Parser(prog="minispeechseq evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a SpeechEncoderDecoderModel folder with its tokenizer and feature extractor")
    parser.add_argument("--manifest", help="a TSV of audio_path<TAB>transcript")
    parser.add_argument("--unseen-voices", help="comma-separated espeak-ng voices to say the digits test strings")
    parser.add_argument("--noise", choices=("white", "pink", "brown", "babble"),
                        help="add this noise to every utterance first (with --snr-db)")
    parser.add_argument("--snr-db", type=float, default=10.0, help="the noise's SNR (default 10 dB)")
    parser.add_argument("--num-beams", type=POSITIVE_INT, help="beam search (default: the model's generation config)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32)
    parser.add_argument("--show-errors", type=COUNT, default=5, help="print this many wrong transcripts")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if bool(args.manifest) == bool(args.unseen_voices):
        raise UsageError("give exactly one of --manifest or --unseen-voices.")
    voices = [v.strip() for v in (args.unseen_voices or "").split(",") if v.strip()]
    if args.unseen_voices and not voices:
        raise UsageError(f"--unseen-voices {args.unseen_voices!r} names no voice; e.g. --unseen-voices de,fr.")
    dataset = ManifestDataset(args.manifest) if args.manifest else None  # a bad manifest fails before the model loads
    model = SpeechEncoderDecoderModel.from_pretrained(args.model)
    processor = Processor.from_pretrained(args.model)
    generate_kwargs = {} if args.num_beams is None else {"num_beams": args.num_beams}
    with tempfile.TemporaryDirectory() as tmp:
        if dataset is None:
            dataset = ManifestDataset(unseen_voice_manifest(tmp, voices))
        if args.noise:
            if not np.isfinite(args.snr_db):
                raise UsageError(f"--snr-db must be a finite number, got {args.snr_db}.")
            dataset = ManifestDataset(noisy_manifest(dataset, tmp, args.noise, args.snr_db))
        start = time.time()
        hyps = transcribe_dataset(model, processor, dataset, batch_size=args.batch_size, **generate_kwargs)
    refs = dataset.texts
    wer, cer = word_error_rate(refs, hyps), character_error_rate(refs, hyps)
    beams = args.num_beams or model.generation_config.num_beams
    print(f"{len(refs)} utterances, num_beams={beams}: WER {wer:.2%}, CER {cer:.2%} ({time.time() - start:.1f} s)")
    for ref, hyp in [(r, h) for r, h in zip(refs, hyps) if r != h][: args.show_errors]:
        print(f"  {ref!r} -> {hyp!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
