"""Wav2Vec2CTCTokenizer folders (issue 16, item 4): vocab.json + tokenizer_config.json (+ special_tokens_map.json),
the format of every wav2vec2 CTC checkpoint, read by our Tokenizer / AutoTokenizer / Processor and checked against
transformers' Wav2Vec2CTCTokenizer: token-exact encoding of random strings, decoding of random CTC id sequences
(repeats, blanks, delimiters, out-of-range ids), and a CTC model's greedy transcript end to end.

The fixed cases are ported from transformers' tests/models/wav2vec2/test_tokenization_wav2vec2.py (decode,
decode_special, special characters in the vocabulary) on the vocabulary of facebook/wav2vec2-base-960h, written here.
"""

import json
import pickle
import random

import numpy as np
import pytest
import torch
import transformers

from minispeechseq import AutoTokenizer, Processor, Tokenizer, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC
from tests.test_ctc import tiny_config
from tests.utils import ATOL_FP32, assert_close

# facebook/wav2vec2-base-960h's vocab.json, in order: the blank (<pad>) is 0, the word delimiter 4.
BASE_960H = "<pad> <s> </s> <unk> | E T A O N I H S R D L U M W C F G Y P B V K ' X J Q Z".split(" ")
# That checkpoint's tokenizer_config.json and special_tokens_map.json: written by an old transformers, they name
# no tokenizer class (the model's config.json does) and carry the feature extractor's keys too.
OLD_CONFIG = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
              "do_lower_case": False, "return_attention_mask": False, "do_normalize": True}
OLD_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def write_vocab(folder, tokens, config=None, specials=None):
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if specials is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """name -> (folder, transformers' tokenizer of that folder)."""
    root = tmp_path_factory.mktemp("ctc-tok")
    out = {}
    # As a hub checkpoint ships it (old files, no class named).
    old = write_vocab(root / "base-960h", BASE_960H, OLD_CONFIG, OLD_SPECIALS)
    out["base-960h"] = (old, transformers.Wav2Vec2CTCTokenizer.from_pretrained(old))
    # As transformers 5 writes it (added_tokens_decoder, tokenizer_class, no special_tokens_map.json).
    for lower in (False, True):
        ref = transformers.Wav2Vec2CTCTokenizer(str(old / "vocab.json"), do_lower_case=lower)
        ref.save_pretrained(root / f"saved-lower-{lower}")
        out[f"saved-lower-{lower}"] = (root / f"saved-lower-{lower}", ref)
    # A fine-tuning vocabulary built from a dataset: no <s> / </s> in it, so the tokenizer adds them after it.
    built = write_vocab(root / "built", ["<pad>", "<unk>", "|", *"abcdeé'"], {"tokenizer_class": "Wav2Vec2CTCTokenizer"})
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(built)
    ref.save_pretrained(root / "built-saved")
    out["built"] = (built, ref)
    out["built-saved"] = (root / "built-saved", transformers.Wav2Vec2CTCTokenizer.from_pretrained(root / "built-saved"))
    return out


NAMES = ["base-960h", "saved-lower-False", "saved-lower-True", "built", "built-saved"]


def random_strings(vocab: list[str], n: int, seed: int) -> list[str]:
    """Vocabulary characters in both cases, spaces of every kind, characters outside the vocabulary (some that
    uppercase to two letters), and the multi-character tokens written in the text, with and without spaces."""
    rnd = random.Random(seed)
    singles = [t for t in vocab if len(t) == 1]
    pieces = singles + [t.lower() for t in singles] + list("  \t\n\u00a0xyzßﬁİı|") + ["<s>", " </s> ", "<pad>", "<unk>",
                                                                                   "<S>", "<s>\t"]
    return [""] + ["".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 14))) for _ in range(n)]


# ================================================================================================ encoding
@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_transformers_on_random_strings(folders, name):
    folder, ref = folders[name]
    ours = Tokenizer.from_pretrained(folder)
    assert isinstance(ours, Wav2Vec2CTCTokenizer) and isinstance(AutoTokenizer.from_pretrained(folder), Wav2Vec2CTCTokenizer)
    texts = random_strings(list(ref.get_vocab()), 1500, seed=len(name))
    for text in texts:
        expected = ref(text)["input_ids"]
        assert ours(text).input_ids == expected, f"{text!r}: ours {ours(text).input_ids} vs {expected}"
        assert ours.encode(text) == expected
    # A batch, padded with the blank, as the fine-tuning recipe's labels are (right side, mask 1/0).
    batch, ref_batch = ours(texts[1:6], padding=True, return_tensors="pt"), ref(texts[1:6], padding=True, return_tensors="pt")
    assert torch.equal(batch.input_ids, ref_batch["input_ids"]) and torch.equal(batch.attention_mask, ref_batch["attention_mask"])


@pytest.mark.parametrize("name", NAMES)
def test_vocabulary_and_special_tokens_match_transformers(folders, name):
    folder, ref = folders[name]
    ours = Tokenizer.from_pretrained(folder)
    assert (ours.vocab_size, len(ours)) == (ref.vocab_size, len(ref))
    assert ours.get_vocab() == ref.get_vocab()
    assert sorted(ours.all_special_ids) == sorted(ref.all_special_ids)
    for token in ("pad", "unk", "bos", "eos", "word_delimiter"):
        assert getattr(ours, f"{token}_token") == getattr(ref, f"{token}_token"), token
        assert getattr(ours, f"{token}_token_id") == getattr(ref, f"{token}_token_id"), token
    assert ours.do_lower_case == ref.do_lower_case
    ids = list(range(len(ref))) + [len(ref) + 5]  # the last one is outside the vocabulary
    assert ours.convert_ids_to_tokens(ids[:-1]) == ref.convert_ids_to_tokens(ids[:-1])


# ================================================================================================ decoding
def random_ctc_ids(tokenizer, n: int, seed: int) -> list[list[int]]:
    """Frame-level sequences as a CTC model's argmax gives them: runs of one id, blanks between, delimiters, now
    and then a special token or an id outside the vocabulary."""
    rnd = random.Random(seed)
    ids = list(range(len(tokenizer))) + [len(tokenizer) + 3, -100]  # -100: an undone label mask
    blank, delimiter = tokenizer.pad_token_id, tokenizer.word_delimiter_token_id
    sequences = [[], [blank] * 5, [delimiter, delimiter, blank]]
    for _ in range(n):
        seq = []
        for _ in range(rnd.randint(1, 12)):
            token = rnd.choice([blank, blank, delimiter, *ids])
            seq += [token] * rnd.randint(1, 3)
        sequences.append(seq)
    return sequences


DECODE_KWARGS = [{}, {"skip_special_tokens": True}, {"group_tokens": False}, {"spaces_between_special_tokens": True},
                 {"skip_special_tokens": True, "group_tokens": False}]


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_transformers_on_random_ctc_ids(folders, name):
    folder, ref = folders[name]
    ours = Tokenizer.from_pretrained(folder)
    sequences = random_ctc_ids(ref, 400, seed=len(name))
    for kwargs in DECODE_KWARGS:
        for seq in sequences:
            expected = ref.decode(seq, **kwargs)
            assert ours.decode(seq, **kwargs) == expected, f"{seq} {kwargs}: {ours.decode(seq, **kwargs)!r} vs {expected!r}"
        assert ours.batch_decode(sequences, **kwargs) == ref.batch_decode(sequences, **kwargs)
    # (B, T) tensors and arrays, as argmax gives them.
    frames = torch.tensor([s[:6] + [ref.pad_token_id] * (6 - len(s[:6])) for s in sequences[3:40]])
    assert ours.batch_decode(frames) == ref.batch_decode(frames) == ours.batch_decode(frames.numpy())
    assert ours.decode(frames[0]) == ref.decode(frames[0])


def test_ported_decode_cases(folders):
    """transformers' test_tokenizer_decode, _decode_special and _decode_added_tokens' skip case on base-960h."""
    ours = Tokenizer.from_pretrained(folders["base-960h"][0])
    pad, space = ours.pad_token_id, ours.word_delimiter_token_id
    sample = [[11, 5, 15, pad, 15, 8, 98], [24, 22, 5, space, 24, 22, 5, 77]]
    assert ours.decode(sample[0]) == ours.batch_decode(sample)[0]
    assert ours.batch_decode(sample) == ["HELLO<unk>", "BYE BYE<unk>"]  # 98 and 77 are outside: unk
    repeated = [[11, 5, 5, 5, 5, 5, 15, 15, 15, pad, 15, 8, 98],
                [24, 22, 5, pad, pad, pad, space, 24, 22, 5, 77, space]]
    assert ours.batch_decode(repeated) == ["HELLO<unk>", "BYE BYE<unk>"]
    # transformers drops special tokens before merging repeats, the blank with them: the double L is lost.
    assert ours.batch_decode(sample, skip_special_tokens=True) == ["HELO", "BYE BYE"]


def test_special_characters_in_vocabulary(tmp_path):
    """transformers' test_special_characters_in_vocab: multi-character (IPA) tokens, decoded with spaces between."""
    sentence = "ʈʰ æ æ̃ ˧ kʰ"
    folder = write_vocab(tmp_path / "ipa", sorted(set(sentence.split())), {"tokenizer_class": "Wav2Vec2CTCTokenizer"})
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(folder)
    ours = Tokenizer.from_pretrained(folder)
    ids = ours(sentence).input_ids
    assert ids == ref(sentence)["input_ids"]
    assert ours.decode(ids, spaces_between_special_tokens=True) == sentence == ref.decode(ids, spaces_between_special_tokens=True)


# ========================================================================================= files, options
def test_save_round_trip_both_ways(folders, tmp_path):
    for name in ("base-960h", "saved-lower-True", "built"):
        folder, ref = folders[name]
        ours = Tokenizer.from_pretrained(folder)
        ours.save_pretrained(tmp_path / name)
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
        again = Tokenizer.from_pretrained(tmp_path / name)
        theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / name)  # the class is named in what we wrote
        assert type(theirs).__name__ == "Wav2Vec2CTCTokenizer"
        for text in random_strings(list(ref.get_vocab()), 50, seed=1):
            assert again(text).input_ids == theirs(text)["input_ids"] == ref(text)["input_ids"], (name, text)
        for seq in random_ctc_ids(ref, 50, seed=2):
            assert again.decode(seq) == theirs.decode(seq) == ref.decode(seq), (name, seq)
        assert again.get_vocab() == theirs.get_vocab() == ref.get_vocab()


def test_overrides_and_pickling(folders):
    folder, _ = folders["base-960h"]
    lower = Tokenizer.from_pretrained(folder, do_lower_case=True, pad_token="<unk>")
    ref = transformers.Wav2Vec2CTCTokenizer.from_pretrained(folder, do_lower_case=True, pad_token="<unk>")
    assert lower("hello world").input_ids == ref("hello world")["input_ids"] == [11, 5, 15, 15, 8, 4, 18, 8, 13, 15, 14]
    assert lower.pad_token_id == ref.pad_token_id == 3
    assert lower.decode([11, 3, 11, 5]) == ref.decode([11, 3, 11, 5]) == "hhe"
    # The uppercase step is Python code inside `tokenizers`; pickling (DataLoader workers) rebuilds it.
    copy = pickle.loads(pickle.dumps(lower))
    assert copy("hello world").input_ids == lower("hello world").input_ids and copy.decode([11, 5]) == "he"
    with pytest.raises(ValueError, match=r"\['add_prefix_space'\] do not apply .* ctc"):
        Tokenizer.from_pretrained(folder, add_prefix_space=True)


def test_per_language_vocabulary(tmp_path):
    """MMS-style vocab.json, one table per language; target_lang picks one, as in transformers."""
    vocab = {"eng": {"<pad>": 0, "<unk>": 1, "|": 2, "A": 3, "B": 4},
             "fra": {"<pad>": 0, "<unk>": 1, "|": 2, "É": 3, "A": 4}}
    (tmp_path / "mms").mkdir()
    (tmp_path / "mms" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    ref = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "mms" / "vocab.json"), target_lang="fra")
    ours = Tokenizer.from_pretrained(tmp_path / "mms", target_lang="fra")
    assert ours("AÉ BA").input_ids == ref("AÉ BA")["input_ids"] == [4, 3, 2, 1, 4]
    assert ours.decode([4, 4, 0, 3, 2, 4]) == ref.decode([4, 4, 0, 3, 2, 4]) == "AÉ A"
    ours.save_pretrained(tmp_path / "again")  # the file keeps every language
    assert json.loads((tmp_path / "again" / "vocab.json").read_text()) == vocab
    assert Tokenizer.from_pretrained(tmp_path / "again")("B").input_ids == [1]  # target_lang saved: still French
    with pytest.raises(ValueError, match="one vocabulary per language; choose one with target_lang"):
        Tokenizer.from_pretrained(tmp_path / "mms")
    with pytest.raises(ValueError, match=r"target_lang='deu' is not in .*\['eng', 'fra'\]"):
        Tokenizer.from_pretrained(tmp_path / "mms", target_lang="deu")


def test_wrong_folders_are_errors(folders, tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\n")
    with pytest.raises(ValueError, match="not a Wav2Vec2CTCTokenizer"):
        Wav2Vec2CTCTokenizer.from_pretrained(bert)
    phoneme = write_vocab(tmp_path / "phoneme", BASE_960H, {"tokenizer_class": "Wav2Vec2PhonemeCTCTokenizer"})
    with pytest.raises(ValueError, match="legacy files of a Wav2Vec2PhonemeCTCTokenizer"):
        Tokenizer.from_pretrained(phoneme)


# ======================================================================================== CTC end to end
@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory, folders):
    """One folder as a CTC checkpoint on the hub: transformers' Wav2Vec2ForCTC, its Wav2Vec2Processor (feature
    extractor + Wav2Vec2CTCTokenizer on base-960h's vocabulary), all written by transformers."""
    folder = tmp_path_factory.mktemp("ctc-checkpoint")
    torch.manual_seed(0)
    config = tiny_config("wav2vec2", feat_extract_norm="layer", do_stable_layer_norm=True)
    config.vocab_size = len(BASE_960H)  # one logit per character of base-960h's vocabulary
    hf = transformers.Wav2Vec2ForCTC(config).eval()
    hf.save_pretrained(folder)
    # (The tokenizer as transformers 5 writes it: base-960h's own tokenizer_config.json also says
    # return_attention_mask=false, which transformers' processor call applies to the audio too.)
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(folders["saved-lower-False"][0])
    extractor = transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder, hf


def test_ctc_model_and_processor_transcribe_as_transformers(ctc_checkpoint):
    folder, hf = ctc_checkpoint
    model, processor = Wav2Vec2ForCTC.from_pretrained(folder).eval(), Processor.from_pretrained(folder)
    ref_processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
    assert isinstance(processor.tokenizer, Wav2Vec2CTCTokenizer)
    assert processor.model_input_names == ref_processor.model_input_names == ["input_values", "attention_mask", "labels"]
    g = np.random.default_rng(7)
    waves = [g.standard_normal(n).astype(np.float32) * 0.3 for n in (2400, 1700, 3100)]

    inputs = processor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    ref_inputs = ref_processor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(inputs.input_values, attention_mask=inputs.attention_mask).logits  # (B, T, V)
        ref_logits = hf(ref_inputs["input_values"], attention_mask=ref_inputs["attention_mask"]).logits
    diff = assert_close(logits, ref_logits, ATOL_FP32, "CTC logits through both processors")
    ids, ref_ids = logits.argmax(-1), ref_logits.argmax(-1)  # (B, T): one id per 20 ms frame
    assert torch.equal(ids, ref_ids)
    texts = processor.batch_decode(ids)
    assert texts == ref_processor.batch_decode(ref_ids)
    assert any(texts), "a random model should still emit some characters"
    for kwargs in DECODE_KWARGS:
        assert processor.batch_decode(ids, **kwargs) == ref_processor.batch_decode(ref_ids, **kwargs), kwargs
    assert processor.decode(ids[0]) == ref_processor.decode(ref_ids[0])
    print(f"\nCTC end to end: logits max diff {diff:.2e}; transcripts {texts}")


def test_ctc_processor_overrides(ctc_checkpoint):
    folder, _ = ctc_checkpoint
    ours = Processor.from_pretrained(folder, return_attention_mask=False, do_lower_case=True, padding_side="left")
    ref = transformers.Wav2Vec2Processor.from_pretrained(folder, return_attention_mask=False, do_lower_case=True,
                                                         padding_side="left")
    assert ours.feature_extractor.return_attention_mask is ref.feature_extractor.return_attention_mask is False
    assert ours.feature_extractor.padding_side == ref.feature_extractor.padding_side == "left"
    assert ours.tokenizer.padding_side == ref.tokenizer.padding_side == "left"
    assert ours(text="hello").input_ids == ref(text="hello")["input_ids"]
    assert ours.batch_decode([[11, 5, 15, 0, 15, 8]]) == ref.batch_decode([[11, 5, 15, 0, 15, 8]]) == ["hello"]
    with pytest.raises(ValueError, match=r"Unknown processor option\(s\) \['do_lowercase'\]"):
        Processor.from_pretrained(folder, do_lowercase=True)
