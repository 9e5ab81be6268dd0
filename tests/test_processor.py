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


def test_model_input_names_as_transformers(folder):
    """transformers 5's Wav2Vec2Processor: the feature extractor's names plus "labels", whatever the mask setting
    (the recipe's collator reads `processor.model_input_names[0]` to find the audio key)."""
    for mask in (True, False):
        ours = Processor.from_pretrained(folder, return_attention_mask=mask)
        ref = transformers.Wav2Vec2Processor.from_pretrained(folder, return_attention_mask=mask)
        assert ours.model_input_names == ref.model_input_names == ["input_values", "attention_mask", "labels"]


def test_from_pretrained_overrides_as_transformers(folder):
    """Each keyword goes to the half that knows it, padding_side to both, as transformers hands kwargs to both."""
    overrides = dict(return_attention_mask=False, do_normalize=False, padding_value=0.5, padding_side="left")
    ours = Processor.from_pretrained(folder, **overrides)
    ref = transformers.Wav2Vec2Processor.from_pretrained(folder, **overrides)
    for name in ("return_attention_mask", "do_normalize", "padding_value", "padding_side"):
        assert getattr(ours.feature_extractor, name) == getattr(ref.feature_extractor, name), name
    assert ours.tokenizer.padding_side == ref.tokenizer.padding_side == "left"
    got = ours(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    expected = ref(audio=WAVES, sampling_rate=16000, text=TEXTS, padding=True, return_tensors="pt")
    assert sorted(got) == sorted(expected) == ["input_values", "labels"]
    assert_close(got.input_values, expected["input_values"], ATOL_FEATURES, "overridden extractor")
    assert torch.equal(got.labels, expected["labels"]), "labels padded on the left by both"
    unk = Processor.from_pretrained(folder, pad_token=ours.tokenizer.unk_token)
    assert unk.tokenizer.pad_token_id == ours.tokenizer.unk_token_id
    with pytest.raises(ValueError, match=r"Unknown processor option\(s\) \['return_attention_masks'\]"):
        Processor.from_pretrained(folder, return_attention_masks=True)
    # A pipeline option where tokenizer.json fixes the pipeline would change nothing: refused, not ignored.
    with pytest.raises(ValueError, match=r"\['do_lower_case'\] do not apply .* tokenizer.json"):
        Processor.from_pretrained(folder, do_lower_case=False)
