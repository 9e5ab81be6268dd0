"""One arm of the real-voices experiments: fine-tune, then measure word error rates on the given test sets.

    python tutorials/results/voices/run_arm.py NAME OUT_ROOT RESULTS.jsonl --test name=manifest ... -- TRAIN_ARGS...

Runs `minispeechseq train TRAIN_ARGS --out OUT_ROOT/NAME` (resumable: an existing run is continued with --resume),
then greedy WER / CER of `OUT_ROOT/NAME/final` on each test manifest, and appends one JSON record to RESULTS.jsonl:
{"arm", "train_args", "train_s", "wer": {test: WER}, "cer": {...}, "errors": {test: [[file, reference,
transcript], ...]}} (the first 60 wrong transcripts of each test set, file names without their folder). The records behind the model card and
tutorial 12 were made with this script (ablation.sh, folds.sh).
"""

import json
import os
import sys
import time

from minispeechseq import Processor, SpeechEncoderDecoderModel
from minispeechseq.tools import train
from minispeechseq.training.data import ManifestDataset
from minispeechseq.training.evaluate import transcribe_dataset
from minispeechseq.training.metrics import character_error_rate, word_error_rate


def main() -> int:
    name, root, results = sys.argv[1:4]
    split = sys.argv.index("--")
    tests = dict(item.split("=", 1) for item in sys.argv[4:split] if item != "--test")
    train_args = sys.argv[split + 1:]
    out = os.path.join(root, name)
    start = time.time()
    resume = ["--resume"] if os.path.isdir(out) else []
    if not os.path.isdir(os.path.join(out, "final")) and train.main([*train_args, "--out", out, *resume]) != 0:
        return 1
    train_s = time.time() - start
    model = SpeechEncoderDecoderModel.from_pretrained(os.path.join(out, "final"))
    processor = Processor.from_pretrained(os.path.join(out, "final"))
    record = {"arm": name, "train_args": train_args, "train_s": round(train_s), "wer": {}, "cer": {}, "errors": {}}
    for test, manifest in tests.items():
        dataset = ManifestDataset(manifest)
        hyps = transcribe_dataset(model, processor, dataset, batch_size=32)
        record["wer"][test] = word_error_rate(dataset.texts, hyps)
        record["cer"][test] = character_error_rate(dataset.texts, hyps)
        record["errors"][test] = [[os.path.basename(p), ref, hyp] for p, ref, hyp
                                  in zip(dataset.paths, dataset.texts, hyps) if ref != hyp][:60]
        print(f"{name} {test}: WER {record['wer'][test]:.2%}", flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
