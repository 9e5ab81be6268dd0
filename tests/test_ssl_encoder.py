"""The bundled self-supervised encoder (minispeechseq/bundled/ssl_encoder, made by `minispeechseq pretrain`): a
Wav2Vec2Model folder that transformers loads to the same outputs, small enough to ship, whose card quotes its own
pretraining record and credits its data.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch

import minispeechseq
from minispeechseq import Wav2Vec2FeatureExtractor, Wav2Vec2Model, load_audio

FOLDER = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled", "ssl_encoder")
SAMPLES = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled", "samples")


def card() -> str:
    with open(os.path.join(FOLDER, "MODEL_CARD.md"), encoding="utf-8") as f:
        return f.read()


def pretraining_record() -> list[dict]:
    with open(os.path.join(FOLDER, "pretraining_metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def test_it_is_small_and_complete():
    names = set(os.listdir(FOLDER))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "MODEL_CARD.md",
            "pretraining_metrics.jsonl"} <= names, names
    size = sum(os.path.getsize(os.path.join(FOLDER, n)) for n in names)
    assert size <= 10 * 2**20, f"the bundled encoder takes {size / 2**20:.1f} MB; the issue allows 10 MB"


def test_transformers_loads_it_to_the_same_outputs():
    transformers = pytest.importorskip("transformers")
    ours = Wav2Vec2Model.from_pretrained(FOLDER).eval()
    assert ours.load_report.initialized == [] and ours.load_report.skipped == []
    theirs = transformers.Wav2Vec2Model.from_pretrained(FOLDER).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(FOLDER)
    audio = load_audio(os.path.join(SAMPLES, "fsdd_theo.wav"))
    audio = audio + 0.003 * np.random.default_rng(0).standard_normal(len(audio)).astype(np.float32)  # a room's noise
    inputs = extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        a = ours(inputs.input_values).last_hidden_state
        b = theirs(inputs.input_values).last_hidden_state
    diff = (a - b).abs().max().item()
    assert diff < 1e-4, f"transformers' Wav2Vec2Model differs from ours on the shipped weights by {diff} (tolerance 1e-4)"


def test_the_card_quotes_its_record_and_credits_its_data():
    text, record = card(), pretraining_record()
    assert "Free Spoken Digit Dataset (FSDD), Zohar Jackson et al." in text and "CC BY-SA 4.0" in text
    steps = record[-1]["step"]
    assert f"{steps:,} steps" in text, f"the card should state the {steps:,} steps of the shipped record"
    first = np.mean([r["loss"] for r in record[:5]])
    last = np.mean([r["loss"] for r in record[-5:]])
    quoted = re.search(r"loss on the hidden frames ([0-9.]+) -> ([0-9.]+)", text)
    assert quoted, "the card quotes the pretraining loss as 'loss on the hidden frames A -> B'"
    assert (float(quoted.group(1)), float(quoted.group(2))) == (round(first, 2), round(last, 2)), (quoted.groups(), first, last)


def test_the_card_shows_the_shipped_warm_start_records():
    """The card's table of what pretraining buys is tutorials/results/warmstart/table.py's rendering of the
    committed grid.jsonl, so no figure was typed by hand."""
    import runpy

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    table = runpy.run_path(os.path.join(repo, "tutorials", "results", "warmstart", "table.py"))["markdown"]()
    assert table in card(), "MODEL_CARD.md's warm-start table is not table.py's output for grid.jsonl"
