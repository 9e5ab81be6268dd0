"""The data-collator half of transformers' fine-tuning recipe (issue 16, item 1): `Wav2Vec2FeatureExtractor.pad`,
`Tokenizer.pad` and `Processor.pad`, each against transformers' own on the same inputs, and the extractor's
transformers defaults (no padding, no tensors) that the recipe's `map` step relies on.

Ported from transformers' tests/test_sequence_feature_extraction_common.py (padding, truncation, pad_to_multiple_of,
tensors in), tests/models/wav2vec2/test_feature_extraction_wav2vec2.py (per-example normalization without padding,
double precision in pad) and test_processor_wav2vec2.py (pad routed to both halves); written here against
transformers' behaviour rather than copied.
"""

import numpy as np
import pytest
import torch
import transformers

from minispeechseq import Processor, Tokenizer, Wav2Vec2FeatureExtractor
from tests.test_audio import ATOL_FEATURES
from tests.test_tokenizer import write_bert_vocab, write_bpe_files

RNG = np.random.default_rng(3)
# Three examples of increasing length, as a dataset `map` leaves them: one float32 array each.
WAVES = [RNG.standard_normal(n).astype(np.float32) * 0.2 for n in (400, 523, 777)]


def rows(x) -> list[np.ndarray]:
    """A padded batch (array, tensor) or a ragged one (list, transformers' object array) as a list of row arrays."""
    if isinstance(x, torch.Tensor):
        x = x.numpy()
    return [np.asarray(r.numpy() if isinstance(r, torch.Tensor) else r) for r in x]


def assert_same_batch(ours, ref, what: str, atol: float = 0.0) -> None:
    """Same keys; per key the same kind (tensor / array / list of rows), dtype and values."""
    assert sorted(ours) == sorted(ref), f"{what}: keys {sorted(ours)} vs transformers' {sorted(ref)}"
    for key in ref:
        got, expected = ours[key], ref[key]
        ragged = isinstance(expected, np.ndarray) and expected.dtype == object
        if ragged or isinstance(expected, list):  # ragged, transformers: a numpy array of objects; ours: a list
            assert isinstance(got, list), f"{what}/{key}: rows should be a list, got {type(got).__name__}"
        else:
            assert type(got) is type(expected), f"{what}/{key}: {type(got).__name__} vs {type(expected).__name__}"
            if hasattr(expected, "dtype"):
                assert got.dtype == expected.dtype, f"{what}/{key}: dtype {got.dtype} vs {expected.dtype}"
        got_rows, expected_rows = rows(got), rows(expected)
        assert [r.shape for r in got_rows] == [r.shape for r in expected_rows], f"{what}/{key}: shapes"
        for i, (a, b) in enumerate(zip(got_rows, expected_rows)):
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
            assert diff <= atol, f"{what}/{key}[{i}]: max abs difference {diff:.2e} > {atol:.0e}"


# ============================================================================ __call__: transformers' defaults
@pytest.mark.parametrize("with_mask", [False, True])
def test_call_defaults_are_transformers(with_mask):
    """No padding and no tensors by default: one normalized float32 array per waveform, each over its own samples
    (transformers' test_zero_mean_unit_variance_normalization, "do_not_pad")."""
    ours = Wav2Vec2FeatureExtractor(return_attention_mask=with_mask)
    ref = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=with_mask)
    for padding in ({}, {"padding": False}, {"padding": "do_not_pad"}):
        got = ours(WAVES, sampling_rate=16000, **padding)
        assert isinstance(got.input_values, list) and [len(v) for v in got.input_values] == [400, 523, 777]
        assert_same_batch(got, ref(WAVES, sampling_rate=16000, **padding), f"call {padding}", ATOL_FEATURES)
        for row in got.input_values:
            assert row.dtype == np.float32
            assert abs(row.mean()) < 1e-3 and abs(row.var() - 1) < 1e-3
    one = ours(WAVES[1], sampling_rate=16000)  # one waveform: a batch of one, still a list
    assert_same_batch(one, ref(WAVES[1], sampling_rate=16000), "one waveform", ATOL_FEATURES)


# ============================================================================== Wav2Vec2FeatureExtractor.pad
def as_form(form: str, values: list[np.ndarray]):
    """The unpadded features in each shape a collator may receive them."""
    if form == "dict of arrays":
        return {"input_values": list(values)}
    if form == "list of dicts":
        return [{"input_values": v} for v in values]
    if form == "list of dicts of floats":  # what a `datasets` map stores: Python lists
        return [{"input_values": v.tolist()} for v in values]
    if form == "list of dicts of tensors":
        return [{"input_values": torch.from_numpy(v.copy())} for v in values]
    raise ValueError(form)


FORMS = ["dict of arrays", "list of dicts", "list of dicts of floats", "list of dicts of tensors"]
PADS = {
    "default": {},
    "longest": dict(padding="longest"),
    "max_length": dict(padding="max_length", max_length=800),
    "multiple": dict(pad_to_multiple_of=100),
    "max_length+multiple": dict(padding="max_length", max_length=801, pad_to_multiple_of=10),
    "truncate": dict(padding="max_length", max_length=450, truncation=True),
    "truncate+multiple": dict(padding="max_length", max_length=450, truncation=True, pad_to_multiple_of=12),
    "truncate longest": dict(padding="longest", max_length=500, truncation=True),
    "below longest": dict(padding="max_length", max_length=450),  # no truncation: rows stay ragged
    "do_not_pad": dict(padding=False),
    "mask": dict(return_attention_mask=True),
    "no mask": dict(return_attention_mask=False),
}


@pytest.mark.parametrize("return_tensors", [None, "np", "pt"])
@pytest.mark.parametrize("pad", list(PADS))
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("config_mask", [False, True])
def test_feature_extractor_pad_matches_transformers(config_mask, form, pad, return_tensors):
    ours = Wav2Vec2FeatureExtractor(return_attention_mask=config_mask)
    ref = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=config_mask)
    kwargs = dict(PADS[pad], return_tensors=return_tensors)
    try:
        expected = ref.pad(as_form(form, WAVES), **kwargs)
    except ValueError:  # transformers refuses ragged rows as a tensor; so must we, with a sentence
        with pytest.raises(ValueError, match="different lengths"):
            ours.pad(as_form(form, WAVES), **kwargs)
        return
    got = ours.pad(as_form(form, WAVES), **kwargs)
    assert_same_batch(got, expected, f"{form}/{pad}/{return_tensors}")


def test_map_then_pad_equals_the_padded_call():
    """The recipe's two steps give what one padded call gives, for an extractor with a mask (layer-norm
    checkpoints): normalization is per example over its real samples in both, and padding is zeros."""
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    mapped = [{"input_values": fe(w, sampling_rate=16000).input_values[0]} for w in WAVES]  # the map step
    collated = fe.pad(mapped, return_tensors="pt")  # the collator
    direct = fe(WAVES, sampling_rate=16000, padding=True, return_tensors="pt")
    assert torch.equal(collated.attention_mask, direct.attention_mask)
    assert float((collated.input_values - direct.input_values).abs().max()) <= ATOL_FEATURES
    assert collated.input_values.dtype == torch.float32 and collated.attention_mask.dtype == torch.int32


def test_pad_casts_double_precision_to_float32():
    """transformers' test_double_precision_pad: float64 in (a numpy array or Python floats), float32 out."""
    fe = Wav2Vec2FeatureExtractor()
    wave = np.random.default_rng(0).random(100)  # float64
    for inputs in (wave, wave.tolist()):
        assert fe.pad([{"input_values": inputs}], return_tensors="np").input_values.dtype == np.float32
        assert fe.pad([{"input_values": inputs}], return_tensors="pt").input_values.dtype == torch.float32


def test_pad_left_side_given_mask_and_other_keys():
    ours = Wav2Vec2FeatureExtractor(padding_side="left", padding_value=-1.0)
    ref = transformers.Wav2Vec2FeatureExtractor(padding_side="left", padding_value=-1.0)
    batch = [{"input_values": w, "attention_mask": np.ones(len(w), dtype=np.int32), "speaker": i}
             for i, w in enumerate(WAVES)]
    got = ours.pad(batch, return_attention_mask=True, return_tensors="pt")
    expected = ref.pad([dict(b) for b in batch], return_attention_mask=True, return_tensors="pt")
    assert_same_batch(got, expected, "left, given mask, extra key")
    assert got.attention_mask[0].tolist() == [0] * 377 + [1] * 400 and bool((got.input_values[0, :377] == -1).all())
    assert got.speaker.tolist() == [0, 1, 2]  # a key that is not padded passes through, stacked like the rest
    # A given mask is padded even where the extractor makes none (return_attention_mask=False, its default here).
    # transformers leaves it unpadded then, rows of different lengths that no tensor can hold (it raises).
    assert torch.equal(ours.pad(batch, return_tensors="pt").attention_mask, got.attention_mask)
    with pytest.raises(ValueError, match="attention_mask"):
        ref.pad([dict(b) for b in batch], return_tensors="pt")


def test_pad_errors_are_sentences():
    fe = Wav2Vec2FeatureExtractor()
    with pytest.raises(ValueError, match="one example .* wrap it in a list"):
        fe.pad({"input_values": WAVES[0]})
    with pytest.raises(ValueError, match=r"needs 'input_values' .* \['input_features'\]"):
        fe.pad([{"input_features": w} for w in WAVES])
    with pytest.raises(ValueError, match="example 1 has keys"):
        fe.pad([{"input_values": WAVES[0]}, {"input_values": WAVES[1], "labels": [1]}])
    with pytest.raises(ValueError, match="different numbers of examples"):
        fe.pad({"input_values": WAVES, "labels": [[1], [2]]})
    with pytest.raises(ValueError, match="'labels' has rows of different lengths .* processor.pad"):
        fe.pad([{"input_values": w, "labels": [1] * (i + 1)} for i, w in enumerate(WAVES)], return_tensors="pt")
    with pytest.raises(ValueError, match="max_length"):
        fe.pad(as_form("list of dicts", WAVES), padding="max_length")
    with pytest.raises(ValueError, match="max_length"):
        fe.pad(as_form("list of dicts", WAVES), truncation=True)  # transformers: truncation needs max_length too
    with pytest.raises(ValueError, match="return_tensors='tf'"):
        fe.pad(as_form("list of dicts", WAVES), return_tensors="tf")
    with pytest.raises(ValueError, match=r"input_values\[1\] has shape \(2, 3\)"):
        fe.pad([{"input_values": WAVES[0]}, {"input_values": np.zeros((2, 3), np.float32)}])
    assert fe.pad([]) == {"input_values": []}  # an empty batch comes back empty, as in transformers


# ========================================================================================== Tokenizer.pad
@pytest.fixture(scope="module")
def tokenizer_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pad-tokenizers")
    bert = write_bert_vocab(root / "bert")
    bart = write_bpe_files(root / "bart", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], {"tokenizer_class": "BartTokenizer"})
    left = write_bert_vocab(root / "bert-left")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "padding_side": "left"}
    (left / "tokenizer_config.json").write_text(__import__("json").dumps(config))
    return {"bert": (bert, transformers.BertTokenizer), "bart": (bart, transformers.BartTokenizer),
            "bert-left": (left, transformers.BertTokenizer)}


LABELS = [[5, 9, 12, 7], [8], [30, 31, 32, 33, 34, 35, 36]]


def label_form(form: str):
    if form == "list of dicts":
        return [{"input_ids": list(x)} for x in LABELS]
    if form == "dict of lists":
        return {"input_ids": [list(x) for x in LABELS]}
    if form == "list of dicts of tensors":
        return [{"input_ids": torch.tensor(x)} for x in LABELS]
    if form == "list of dicts of arrays":
        return [{"input_ids": np.array(x)} for x in LABELS]
    if form == "with mask and token types":
        return [{"input_ids": list(x), "attention_mask": [1] * len(x), "token_type_ids": [0] * len(x)} for x in LABELS]
    raise ValueError(form)


TOKEN_PADS = {
    "default": {},
    "max_length": dict(padding="max_length", max_length=9),
    "multiple": dict(pad_to_multiple_of=4),
    "left": dict(padding_side="left"),
    "no mask": dict(return_attention_mask=False),
    "do_not_pad": dict(padding=False),
}


@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
@pytest.mark.parametrize("pad", list(TOKEN_PADS))
@pytest.mark.parametrize("form", ["list of dicts", "dict of lists", "list of dicts of tensors",
                                  "list of dicts of arrays", "with mask and token types"])
@pytest.mark.parametrize("name", ["bert", "bart", "bert-left"])
def test_tokenizer_pad_matches_transformers(tokenizer_folders, name, form, pad, return_tensors):
    folder, ref_class = tokenizer_folders[name]
    ours, ref = Tokenizer.from_pretrained(folder), ref_class.from_pretrained(folder)
    kwargs = dict(TOKEN_PADS[pad], return_tensors=return_tensors)
    ref_kwargs = dict(kwargs)
    if pad == "no mask" and form == "with mask and token types":
        # A given mask is padded whatever return_attention_mask says; transformers leaves it unpadded then (and
        # fails to make tensors of it). Our padded rows are checked against transformers' own padded mask.
        ref_kwargs["return_attention_mask"] = True
    try:
        expected = ref.pad(label_form(form), **ref_kwargs)
    except ValueError:
        with pytest.raises(ValueError, match="different lengths"):
            ours.pad(label_form(form), **kwargs)
        return
    assert_same_batch(ours.pad(label_form(form), **kwargs), expected, f"{name}/{form}/{pad}/{return_tensors}")


def test_tokenizer_pad_errors(tokenizer_folders, tmp_path):
    bert = Tokenizer.from_pretrained(tokenizer_folders["bert"][0])
    with pytest.raises(ValueError, match="one example"):
        bert.pad({"input_ids": [1, 2, 3]})
    with pytest.raises(ValueError, match="needs 'input_ids'"):
        bert.pad([{"labels": [1, 2]}])
    with pytest.raises(ValueError, match="padding_side='middle'"):
        bert.pad(label_form("list of dicts"), padding_side="middle")
    with pytest.raises(ValueError, match="max_length"):
        bert.pad(label_form("list of dicts"), padding="max_length")
    gpt2 = Tokenizer.from_pretrained(write_bpe_files(tmp_path / "gpt2", ["<|endoftext|>"], {"tokenizer_class": "GPT2Tokenizer"}))
    with pytest.raises(ValueError, match="no pad token"):
        gpt2.pad(label_form("list of dicts"))
    assert gpt2.pad(label_form("list of dicts"), padding=False).input_ids == LABELS  # nothing to pad: no pad needed


# ========================================================================================== Processor.pad
@pytest.fixture(scope="module")
def processors(tmp_path_factory, tokenizer_folders):
    folder = tmp_path_factory.mktemp("pad-processor")
    tok = transformers.BertTokenizer.from_pretrained(tokenizer_folders["bert"][0])
    fe = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    transformers.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(folder)
    return Processor.from_pretrained(folder), transformers.Wav2Vec2Processor.from_pretrained(folder)


def test_processor_pad_matches_transformers(processors):
    """Wav2Vec2Processor.pad: features (first argument or input_features=) through the extractor, labels= through
    the tokenizer, both -> the features with `labels` = the padded ids (still the pad id, not -100)."""
    ours, ref = processors
    features = [{"input_values": w} for w in WAVES]
    labels = label_form("list of dicts")
    calls = [
        ((features,), dict(return_tensors="pt")),
        ((), dict(input_features=features, padding="max_length", max_length=800, return_tensors="np")),
        ((), dict(labels=labels, return_tensors="pt")),
        ((), dict(labels=labels, pad_to_multiple_of=4)),
        ((features,), dict(labels=labels, return_tensors="pt")),
    ]
    for args, kwargs in calls:
        got = ours.pad(*[list(a) for a in args], **kwargs)
        expected = ref.pad(*[list(a) for a in args], **kwargs)
        what = f"processor.pad({'features, ' if args else ''}{sorted(kwargs)})"
        if "input_values" in expected:
            assert_same_batch({k: v for k, v in got.items() if k != "labels"},
                              {k: v for k, v in expected.items() if k != "labels"}, what)
        if "labels" in expected or "input_ids" in expected:
            key = "labels" if "labels" in expected else "input_ids"
            assert torch.as_tensor(np.asarray(got[key])).tolist() == torch.as_tensor(np.asarray(expected[key])).tolist(), what
    assert ours.pad(features, labels=labels, return_tensors="pt").labels[1].tolist() == [8] + [0] * 6
    with pytest.raises(ValueError, match="needs audio features"):
        ours.pad()
    with pytest.raises(ValueError, match=r"Unknown pad argument\(s\) \['paddin'\]"):
        ours.pad(features, paddin=True)
