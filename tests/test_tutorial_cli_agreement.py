"""The command line agrees with the library: checks that parse a command's printed output belong here, not in the
tutorials (a tutorial shows the command and what it prints; reading numbers back out of that text is a test's job).

Tutorial 08 computes the bundled model's WER with the library (`generate`, then `word_error_rate`) and shows
`minispeechseq evaluate` on the same utterances; here the two are compared, on the shipped samples (the 8 synthetic
ones and the 3 real voices, which give the model something to get wrong), so no espeak-ng is needed.
"""

import contextlib
import csv
import io
import os
import re

import torch

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.tools import cli
from minispeechseq.training.metrics import word_error_rate

BUNDLED = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled")
SAMPLES = os.path.join(BUNDLED, "samples")
MODEL = os.path.join(BUNDLED, "digits")


def test_evaluate_prints_the_wer_the_library_computes(tmp_path):
    with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))  # file name, transcript
    manifest = tmp_path / "samples.tsv"
    manifest.write_text("".join(f"{os.path.join(SAMPLES, name)}\t{text}\n" for name, text in rows), encoding="utf-8")

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(["evaluate", MODEL, "--manifest", str(manifest), "--num-beams", "1", "--show-errors", "0"])
    assert status == 0
    summary = printed.getvalue().strip().splitlines()[0]
    found = re.search(r"(\d+) utterances, num_beams=1: WER ([0-9.]+)%", summary)
    assert found, f"unexpected summary line: {summary!r}"
    cli_wer = float(found.group(2)) / 100

    model = SpeechEncoderDecoderModel.from_pretrained(MODEL)
    processor = Processor.from_pretrained(MODEL)
    references, hypotheses = [text for _, text in rows], []
    with torch.no_grad():
        for name, _ in rows:  # one at a time: no padding, so nothing but the batching can differ
            inputs = processor(load_audio(os.path.join(SAMPLES, name)), sampling_rate=16000, return_tensors="pt")
            ids = model.generate(inputs.input_values, num_beams=1)
            hypotheses.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    library_wer = word_error_rate(references, hypotheses)
    words = sum(len(r.split()) for r in references)
    assert int(found.group(1)) == len(rows)
    # evaluate pads its batch (with the attention mask: layer-norm encoder, so padding changes nothing beyond
    # rounding); the printed figure has 2 decimals of a percent. Agreement to within one word of the total.
    assert abs(cli_wer - library_wer) <= 1 / words + 5e-5, (summary, library_wer, hypotheses)
