"""`minispeechseq evaluate MODEL`: word and character error rates of a model on a manifest split,
or on the spoken-digits test strings said by voices of your choice (e.g. voices the model never heard).

    minispeechseq evaluate minispeechseq/bundled/digits --manifest DIGITS/test.tsv
    minispeechseq evaluate minispeechseq/bundled/digits --unseen-voices de,fr,es,it,pl,hi

(also `python -m minispeechseq.training.evaluate ...`)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from ..processor import Processor
from ..speech_encoder_decoder import SpeechEncoderDecoderModel
from ..recognizer import transcribe_batch
from .data import ManifestDataset
from .digits import DigitsRecipe, _render_group, plan_digits_corpus
from .metrics import character_error_rate, word_error_rate


def transcribe_dataset(model: SpeechEncoderDecoderModel, processor: Processor, dataset: ManifestDataset,
                       batch_size: int = 32, **generate_kwargs: Any) -> list[str]:
    """One transcript per utterance of `dataset`, in order (its audio read one batch at a time)."""
    waveforms = (dataset[i]["audio"] for i in range(len(dataset)))
    return transcribe_batch(model, processor, waveforms, batch_size=batch_size, **generate_kwargs)


def unseen_voice_manifest(folder: str, voices: Sequence[str], seed: int = 0, num_utterances: int = 4000) -> str:
    """The recipe's test strings (the same ones as the test split: strings and splits are drawn before voices)
    rendered with `voices` instead of the English ones. Returns the manifest path."""
    plan = [u for u in plan_digits_corpus(DigitsRecipe(num_utterances=num_utterances, seed=seed), voices)
            if u.split == "test"]
    os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
    for i in range(0, len(plan), 8):
        _render_group(folder, plan[i : i + 8])
    path = os.path.join(folder, "unseen.tsv")
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{u.audio_path}\t{u.text}\n" for u in plan)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minispeechseq evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a SpeechEncoderDecoderModel folder with its tokenizer and feature extractor")
    parser.add_argument("--manifest", help="a TSV of audio_path<TAB>transcript")
    parser.add_argument("--unseen-voices", help="comma-separated espeak-ng voices to say the digits test strings")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--show-errors", type=int, default=5, help="print this many wrong transcripts")
    args = parser.parse_args(argv)
    if bool(args.manifest) == bool(args.unseen_voices):
        print("minispeechseq evaluate: give exactly one of --manifest or --unseen-voices.", file=sys.stderr)
        return 2
    model = SpeechEncoderDecoderModel.from_pretrained(args.model)
    processor = Processor.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or unseen_voice_manifest(tmp, args.unseen_voices.split(","))
        dataset = ManifestDataset(manifest)
        start = time.time()
        hyps = transcribe_dataset(model, processor, dataset, num_beams=args.num_beams)
    refs = dataset.texts
    wer, cer = word_error_rate(refs, hyps), character_error_rate(refs, hyps)
    print(f"{len(refs)} utterances, num_beams={args.num_beams}: WER {wer:.2%}, CER {cer:.2%} "
          f"({time.time() - start:.1f} s)")
    for ref, hyp in [(r, h) for r, h in zip(refs, hyps) if r != h][: args.show_errors]:
        print(f"  {ref!r} -> {hyp!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
