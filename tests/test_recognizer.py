"""Batched transcription (`minispeechseq.recognition.recognizer`), on the bundled digits model and its shipped samples.

Batching pads the shorter waveforms of a batch; with the attention mask the feature extractor asks for, that
padding must change no transcript. The references are the recipe's transcripts (transcripts.tsv).
"""

from __future__ import annotations

import csv
import dataclasses
import os

import pytest
import torch

from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.tools.cli import bundled_model_dir
from minispeechseq.generation.settings import generation_prompt
from minispeechseq.recognition import recognizer
from minispeechseq.recognition.recognizer import decode, generate_batch, transcribe_batch
from minispeechseq.recognition.timestamps import word_timestamps

MODEL = bundled_model_dir()
SAMPLES = os.path.join(os.path.dirname(MODEL), "samples")


@pytest.fixture(scope="module")
def samples() -> list[tuple[object, str]]:
    with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as f:
        return [(load_audio(os.path.join(SAMPLES, name)), text) for name, text in csv.reader(f, delimiter="\t")]


@pytest.fixture(scope="module")
def model():
    return SpeechEncoderDecoderModel.from_pretrained(MODEL).eval()


@pytest.fixture
def processor():
    return Processor.from_pretrained(MODEL)  # per test: one of them changes the feature extractor


def test_batches_of_mixed_lengths_give_every_reference(model, processor, samples):
    waves, references = zip(*samples)
    lengths = sorted(len(w) for w in waves)
    assert lengths[0] * 1.5 < lengths[-1], f"the samples should differ in length to test padding: {lengths}"
    # 8 samples in batches of 3: two full batches and a last one of 2; given as a generator.
    texts = transcribe_batch(model, processor, (w for w in waves), batch_size=3)
    assert texts == list(references)


def test_one_text_per_waveform_with_several_returned_sequences(model, processor, samples):
    waves, references = zip(*samples[:3])
    ids = generate_batch(model, processor, waves, num_beams=3, num_return_sequences=3)
    assert ids.shape[0] == 3, f"{ids.shape[0]} rows for 3 waveforms; expected one (the best beam) per waveform"
    # The row kept is each waveform's best beam: the one plain beam search returns.
    best = generate_batch(model, processor, waves, num_beams=3)
    assert torch.equal(ids[:, : best.shape[1]], best)
    assert decode(processor, ids) == list(references)


@pytest.mark.parametrize("with_mask", [True, False])
def test_the_feature_extractor_decides_the_mask(model, processor, samples, monkeypatch, with_mask):
    """Layer-norm encoders get a mask; group-norm checkpoints were trained on zero padding without one."""
    waves = [w for w, _ in samples[:2]]
    processor.feature_extractor.return_attention_mask = with_mask
    seen = {}

    def spy(input_values, attention_mask=None, **kwargs):
        seen.update(input_values=input_values, attention_mask=attention_mask)
        return torch.ones(input_values.shape[0], 1, dtype=torch.long)

    monkeypatch.setattr(model, "generate", spy)
    generate_batch(model, processor, waves)
    expected = processor.feature_extractor(waves, padding=True, return_attention_mask=with_mask, return_tensors="pt")
    assert torch.equal(seen["input_values"], expected.input_values)
    if with_mask:
        assert torch.equal(seen["attention_mask"], expected.attention_mask)
        assert seen["attention_mask"].sum(1).tolist() == [len(w) for w in waves]
    else:
        assert seen["attention_mask"] is None


def test_a_bfloat16_model_gets_bfloat16_audio(processor, samples):
    bf16 = SpeechEncoderDecoderModel.from_pretrained(MODEL, dtype=torch.bfloat16).eval()
    waves, references = zip(*samples[:2])
    assert transcribe_batch(bf16, processor, waves, batch_size=2) == list(references)


def test_batch_size_must_be_positive(model, processor, samples):
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        transcribe_batch(model, processor, [samples[0][0]], batch_size=0)


# ------------------------------------------------------------------------------------------------ the prompt
# generate() starts every sequence with a prompt (the start token, else bos_token_id as transformers falls back
# to, then any decoder_input_ids) and returns it in front of the text; the word timestamps must skip exactly that
# prompt. The bundled model's start token is <s> = 1; 3 (<unk>) stands for another bos; 11 is "seven", the first
# word of the first sample, forced as a one-token prompt.
PROMPT_CASES = {
    "decoder_start_token_id only": ({"decoder_start_token_id": 1, "bos_token_id": None}, {}, [1]),
    "bos_token_id only": ({"decoder_start_token_id": None, "bos_token_id": 1}, {}, [1]),
    "both": ({"decoder_start_token_id": 1, "bos_token_id": 3}, {}, [1]),
    "decoder_input_ids, bos_token_id only": ({"decoder_start_token_id": None, "bos_token_id": 1},
                                             {"decoder_input_ids": [11]}, [1, 11]),
    "decoder_input_ids with the start token, both": ({"decoder_start_token_id": 1, "bos_token_id": 3},
                                                     {"decoder_input_ids": [1, 11]}, [1, 11]),
    "decoder_start_token_id passed to the call": ({"decoder_start_token_id": None, "bos_token_id": 3},
                                                  {"decoder_start_token_id": 1}, [1]),
    "the call's start token, then decoder_input_ids": ({"decoder_start_token_id": 3, "bos_token_id": None},
                                                       {"decoder_start_token_id": 1, "decoder_input_ids": [1, 11]},
                                                       [1, 11]),
}


@pytest.mark.parametrize("case", list(PROMPT_CASES))
def test_the_word_timestamps_skip_the_prompt_generate_used(model, processor, samples, monkeypatch, case):
    fields, kwargs, prompt = PROMPT_CASES[case]
    monkeypatch.setattr(model, "generation_config", dataclasses.replace(model.generation_config, **fields))
    seen = []

    def spy(*args, prompt_length, **kw):  # the prompt length the recognizer works out
        seen.append(prompt_length)
        return word_timestamps(*args, prompt_length=prompt_length, **kw)

    monkeypatch.setattr(recognizer, "word_timestamps", spy)
    wave, text = samples[0]
    assert text.startswith("seven "), f"the cases force 'seven' (11), the first sample's first word: {text!r}"
    ids = generate_batch(model, processor, [wave], **kwargs)
    assert ids[0, : len(prompt)].tolist() == prompt, f"{case}: generate started with {ids[0].tolist()}"
    assert generation_prompt(model, 1, ids.device, **kwargs).tolist() == [prompt]
    texts, words = recognizer.timed_batch(model, processor, [wave], **kwargs)
    assert seen == [len(prompt)], f"{case}: the recognizer skipped {seen} tokens; generate's prompt is {prompt}"
    assert texts == [text]
    # The words are what was generated after the prompt: a forced "seven" is prompt, not heard.
    heard = text.split()[len(prompt) - 1 :]
    assert [w.word for w in words[0]] == heard, f"{case}: words {[w.word for w in words[0]]}, expected {heard}"
