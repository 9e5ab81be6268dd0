"""Tokenizer parity with transformers' BERT, GPT-2 and BART tokenizers, on vocab files built here (nothing downloaded).

Each family is tested through both ways in: the legacy files (vocab.txt; vocab.json + merges.txt) and the
tokenizer.json that transformers' own save_pretrained writes.
"""

import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers, trainers
from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

from minispeechseq.tokenizer import AutoTokenizer, Tokenizer

TEXTS = [
    "Hello, world!",
    "The CAFÉ's crème brûlée costs $3.50 — really?",
    "  extra   spaces\tand\nnewlines  ",
    "numbers 1234567 and 3.14159",
    "naïve façade 東京 😀 Ünïcödé",
    "don't stop: it's 10:30 p.m. (okay) [CLS] inside",
    "special tokens in text: a <mask> b </s> <|endoftext|> [SEP]",
    "",
]

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello speech recognition models!",
    "numbers like 1234 and 3.14 appear in transcripts",
    "don't worry, it's fine: the model's output is text.",
    "café crème brûlée naïve façade",
] * 20


# ================================================================================================ fixtures
def write_bert_vocab(folder, do_lower_case=True, strip_accents=None):
    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'$:()[]—-éè")
    words = ["the", "hello", "world", "cafe", "numbers", "and", "stop", "it", "really", "spaces"]
    pieces = ["##" + c for c in chars] + ["##s", "##llo", "##ing", "##ed"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + words + list(dict.fromkeys(pieces))
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case, "strip_accents": strip_accents}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def write_bpe_files(folder, special_tokens, config):
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=330, special_tokens=special_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    folder.mkdir(parents=True)
    backend.model.save(str(folder))  # vocab.json + merges.txt
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    mask = {"content": "<mask>", "lstrip": True, "rstrip": False, "normalized": False, "single_word": False,
            "special": True, "__type": "AddedToken"}
    return {
        "bert-uncased": write_bert_vocab(root / "bert-uncased"),
        "bert-cased": write_bert_vocab(root / "bert-cased", do_lower_case=False),
        "bert-keep-accents": write_bert_vocab(root / "bert-keep-accents", strip_accents=False),
        "gpt2": write_bpe_files(root / "gpt2", ["<|endoftext|>"], {"tokenizer_class": "GPT2Tokenizer"}),
        "bart": write_bpe_files(
            root / "bart", ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], {"tokenizer_class": "BartTokenizer", "mask_token": mask}
        ),
    }


REFERENCES = {
    "bert-uncased": [transformers.BertTokenizer, transformers.BertTokenizerFast, BertTokenizerLegacy],
    "bert-cased": [transformers.BertTokenizer, BertTokenizerLegacy],
    "bert-keep-accents": [transformers.BertTokenizer, BertTokenizerLegacy],
    "gpt2": [transformers.GPT2Tokenizer, transformers.GPT2TokenizerFast],
    "bart": [transformers.BartTokenizer, transformers.BartTokenizerFast],
}
CASES = [(name, ref) for name, refs in REFERENCES.items() for ref in refs]


def compare(ours, ref, what):
    # The pure-Python BertTokenizerLegacy decodes "'s" as " ' s" (it joins tokens with spaces); transformers 5's
    # tokenizers-backed classes (the ones checkpoints load with) use the WordPiece decoder, as we do. Ids must agree.
    check_decode = not isinstance(ref, BertTokenizerLegacy)
    for text in TEXTS:
        for specials in (True, False):
            expected = ref(text, add_special_tokens=specials)["input_ids"]
            got = ours(text, add_special_tokens=specials)["input_ids"]
            assert got == expected, f"{what}: ids of {text!r} (specials={specials}): ours {got} vs {expected}"
            assert ours.encode(text, add_special_tokens=specials) == expected
        ids = ref(text)["input_ids"]
        for skip in (False, True) if check_decode else ():
            expected = ref.decode(ids, skip_special_tokens=skip)
            assert ours.decode(ids, skip_special_tokens=skip) == expected, f"{what}: decode of {text!r} (skip={skip})"
    for name in ("pad", "cls", "sep", "bos", "eos", "unk", "mask"):
        assert getattr(ours, f"{name}_token_id") == getattr(ref, f"{name}_token_id"), f"{what}: {name}_token_id"
        assert getattr(ours, f"{name}_token") == getattr(ref, f"{name}_token"), f"{what}: {name}_token"
    assert (ours.vocab_size, len(ours)) == (ref.vocab_size, len(ref)), what


# ========================================================================================= parity tests
@pytest.mark.parametrize("name,ref_class", CASES, ids=[f"{n}-{r.__name__}" for n, r in CASES])
def test_legacy_files_match_transformers(folders, name, ref_class):
    compare(Tokenizer.from_pretrained(folders[name]), ref_class.from_pretrained(folders[name]), f"{name} legacy")


@pytest.mark.parametrize("name", list(REFERENCES))
def test_tokenizer_json_matches_transformers(folders, tmp_path, name):
    ref = REFERENCES[name][0].from_pretrained(folders[name])
    ref.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    compare(AutoTokenizer.from_pretrained(tmp_path), ref, f"{name} tokenizer.json")


@pytest.mark.parametrize("name", list(REFERENCES))
def test_our_save_reads_back_in_both_libraries(folders, tmp_path, name):
    ours = Tokenizer.from_pretrained(folders[name])
    ours.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / f).exists(), f
    compare(Tokenizer.from_pretrained(tmp_path), REFERENCES[name][0].from_pretrained(folders[name]), f"{name} ours saved")
    compare(Tokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(tmp_path), f"{name} hf reads ours")


@pytest.mark.parametrize("name", ["bert-uncased", "bart"])
def test_batch_padding_and_truncation_match_transformers(folders, name):
    ours, ref = Tokenizer.from_pretrained(folders[name]), REFERENCES[name][0].from_pretrained(folders[name])
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=48), dict(padding=True, truncation=True, max_length=6)):
        got = ours(TEXTS, return_tensors="pt", **kwargs)
        expected = ref(TEXTS, return_tensors="pt", **kwargs)
        assert torch.equal(got.input_ids, expected["input_ids"]), (kwargs, got.input_ids, expected["input_ids"])
        assert torch.equal(got.attention_mask, expected["attention_mask"]), kwargs
    lists = ours(TEXTS[:2], truncation=True, max_length=4)
    assert lists["input_ids"] == ref(TEXTS[:2], truncation=True, max_length=4)["input_ids"]
    assert ours.batch_decode(got.input_ids, skip_special_tokens=True) == ref.batch_decode(expected["input_ids"], skip_special_tokens=True)
    assert ours.batch_decode(got.input_ids.tolist()) == ref.batch_decode(expected["input_ids"].tolist())


def test_tokens_and_ids_conversion(folders):
    ours, ref = Tokenizer.from_pretrained(folders["bert-uncased"]), transformers.BertTokenizer.from_pretrained(folders["bert-uncased"])
    ids = ref("hello the worlds")["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids[1]) == ref.convert_ids_to_tokens(ids[1])
    tokens = ref.convert_ids_to_tokens(ids) + ["not-a-token"]
    assert ours.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens)
    assert ours.decode(torch.tensor(ids)) == ref.decode(ids)


# ========================================================================================= round trips, errors
@pytest.mark.parametrize("name", ["gpt2", "bart"])
def test_byte_level_round_trip_is_exact(folders, name):
    ours = Tokenizer.from_pretrained(folders[name])
    plain = [t for t in TEXTS if "special tokens" not in t]  # special tokens in the text are skipped on decode
    for text in plain + ["\u00a0nbsp and zero\u200bwidth", "emoji 👩‍👩‍👧 family"]:
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == text


def test_wordpiece_round_trip_gives_normalized_text(folders):
    ours = Tokenizer.from_pretrained(folders["bert-uncased"])
    assert ours.decode(ours.encode("Hello,  THE world!"), skip_special_tokens=True) == "hello, the world!"


def test_padding_without_pad_token_is_a_clear_error(folders):
    gpt2 = Tokenizer.from_pretrained(folders["gpt2"])
    assert gpt2.pad_token_id is None and gpt2.mask_token_id is None
    with pytest.raises(ValueError, match="no pad token"):
        gpt2(["a", "bb"], padding=True)
    gpt2.pad_token = gpt2.eos_token
    out = gpt2(["a", "bb b"], padding=True, return_tensors="pt")
    assert out.input_ids.shape[0] == 2 and (out.input_ids[0, -1] == gpt2.eos_token_id).item()


def test_errors(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match="No tokenizer folder"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").write_text("{}")
    (tmp_path / "merges.txt").write_text("")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "Speech2Text2Tokenizer"}))
    with pytest.raises(ValueError, match="only reads through tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    bert = Tokenizer.from_pretrained(folders["bert-uncased"])
    with pytest.raises(ValueError, match="different token counts"):
        bert(["a", "a b c"], return_tensors="pt")
    with pytest.raises(ValueError, match="string or a list of strings"):
        bert(123)
    with pytest.raises(ValueError, match="batch_decode"):
        bert.decode(torch.zeros(2, 3, dtype=torch.long))
