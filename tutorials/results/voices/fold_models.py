"""Ship the leave-one-speaker-out models (folds.sh) that measure word timestamps on voices never heard.

    python tutorials/results/voices/fold_models.py RUNS CORPUS OUT

For each RUNS/fold_SPEAKER/final (trained without SPEAKER): its alignment heads chosen as the model card chose the
bundled model's (alignment_heads.py: the first 60 strings of CORPUS/valid.tsv, the synthetic validation split, so
nothing of the held-out speaker), then the model written to OUT/SPEAKER with its weights stored as float16 (half the
bytes; from_pretrained loads them back as float32), beside its processor files; then the written model's WER on
its held-out speaker (CORPUS/folds/SPEAKER/{isolated,joined}.tsv), to set beside folds.jsonl's float32 figures.
Every figure measured with these models is measured on the files written here, not on the float32 run.
"""

import os
import sys

from alignment_heads import mean_head_scores

from minispeechseq import Processor, SpeechEncoderDecoderModel
from minispeechseq.recognition.timestamps import choose_alignment_heads
from minispeechseq.training.data import ManifestDataset
from minispeechseq.training.evaluate import transcribe_dataset
from minispeechseq.training.metrics import word_error_rate


def main() -> int:
    runs, corpus, out = sys.argv[1:4]
    folds = sorted(name for name in os.listdir(runs) if name.startswith("fold_")
                   and os.path.isdir(os.path.join(runs, name, "final")))
    if not folds:
        print(f"{runs}: no fold_SPEAKER/final folders (run folds.sh first)", file=sys.stderr)
        return 1
    for name in folds:
        final = os.path.join(runs, name, "final")
        model = SpeechEncoderDecoderModel.from_pretrained(final)
        processor = Processor.from_pretrained(final)
        heads = choose_alignment_heads(mean_head_scores(model, processor, os.path.join(corpus, "valid.tsv")))
        model.generation_config.alignment_heads = heads
        target = os.path.join(out, name.removeprefix("fold_"))
        model.half().save_pretrained(target)
        processor.save_pretrained(target)
        shipped = SpeechEncoderDecoderModel.from_pretrained(target)  # what the tests and the bench load
        speaker = name.removeprefix("fold_")
        wers = {}
        for test in ("isolated", "joined"):
            dataset = ManifestDataset(os.path.join(corpus, "folds", speaker, f"{test}.tsv"))
            wers[test] = word_error_rate(dataset.texts, transcribe_dataset(shipped, processor, dataset, batch_size=32))
        print(f"{target}: alignment_heads {heads}; WER on {speaker}, never heard, with the float16 weights: "
              f"isolated {wers['isolated']:.1%}, joined {wers['joined']:.1%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
