"""Processor against transformers' Wav2Vec2Processor on the same folder (tokenizer files built here, nothing downloaded)."""

import numpy as np
import pytest
import torch
import transformers

from minispeechseq.audio import AutoFeatureExtractor, Wav2Vec2FeatureExtractor
from minispeechseq.processor import Processor, Wav2Vec2Processor
from minispeechseq.tokenizer import AutoTokenizer, Tokenizer
from tests.test_audio import ATOL_FEATURES
from tests.test_tokenizer import write_bert_vocab, write_bpe_files
from tests.utils import assert_close

RNG = np.random.default_rng(1)
WAVES = [RNG.standard_normal(800).astype(np.float32) * 0.1, RNG.standard_normal(530).astype(np.float32) * 0.2]
TEXTS = ["hello the world!", "numbers 3.14, really?"]


@pytest.fixture(scope="module", params=["bert", "bart"])
def folder(request, tmp_path_factory):
    """A processor folder written by transformers: preprocessor_config.json + the tokenizer's files."""
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "bert":
        vocab = write_bert_vocab(root / "vocab")
        tok = transformers.BertTokenizer.from_pretrained(vocab)
    else:
        vocab = write_bpe_files(root / "vocab", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], {"tokenizer_class": "BartTokenizer"})
        tok = transformers.BartTokenizer.from_pretrained(vocab)
    fe = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    transformers.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(root / "processor")
    return root / "processor"


def test_processor_matches_transformers(folder):
    ours = Wav2Vec2Processor.from_pretrained(folder)
    ref = transformers.Wav2Vec2Processor.from_pretrained(folder)

    got = ours(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    expected = ref(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    assert_close(got.input_values, expected["input_values"], ATOL_FEATURES, "processor input_values")
    assert torch.equal(got.attention_mask, expected["attention_mask"])
    assert torch.equal(got.labels, expected["labels"]), (got.labels, expected["labels"])

    audio_only = ours(audio=WAVES[0], sampling_rate=16000, return_tensors="pt")
    ref_audio = ref(audio=WAVES[0], sampling_rate=16000, return_tensors="pt")
    assert_close(audio_only.input_values, ref_audio["input_values"], ATOL_FEATURES, "audio only")

    text_only = ours(text=TEXTS)
    assert text_only.input_ids == ref(text=TEXTS)["input_ids"]

    for skip in (False, True):
        assert ours.batch_decode(got.labels, skip_special_tokens=skip) == ref.batch_decode(expected["labels"], skip_special_tokens=skip)
        assert ours.decode(got.labels[0], skip_special_tokens=skip) == ref.decode(expected["labels"][0], skip_special_tokens=skip)


def test_auto_aliases_read_the_same_folder(folder):
    fe, tok = AutoFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert isinstance(fe, Wav2Vec2FeatureExtractor) and isinstance(tok, Tokenizer)
    assert fe.return_attention_mask is True
    assert tok(TEXTS[0])["input_ids"] == transformers.AutoTokenizer.from_pretrained(folder)(TEXTS[0])["input_ids"]


def test_save_pretrained_round_trip(folder, tmp_path):
    ours = Processor.from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    again = Processor.from_pretrained(tmp_path)
    first = ours(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    second = again(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(first.input_values, second.input_values) and torch.equal(first.labels, second.labels)
    # transformers reads what we wrote, too.
    ref = transformers.Wav2Vec2Processor.from_pretrained(tmp_path)
    assert ref(text=TEXTS[0])["input_ids"] == ours(text=TEXTS[0]).input_ids


def test_processor_errors(folder, tmp_path):
    ours = Processor.from_pretrained(folder)
    with pytest.raises(ValueError, match="neither"):
        ours()
    with pytest.raises(ValueError, match="Unknown processor argument"):
        ours(audio=WAVES[0], sampling_rat=16000)
    with pytest.raises(ValueError, match="8000 Hz"):
        ours(audio=WAVES[0], sampling_rate=8000)
    with pytest.raises(FileNotFoundError, match="No processor folder"):
        Processor.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="expected a minispeechseq Tokenizer"):
        Processor(ours.feature_extractor, object())
