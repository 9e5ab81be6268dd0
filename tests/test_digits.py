"""The spoken-digits corpus: the plan drawn from a seed, espeak-ng synthesis, the corpus on disk, its tokenizer."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from minispeechseq.training import digits
from minispeechseq.training.data import SAMPLING_RATE


def _digits_of(text: str) -> str:
    return "".join(str(digits.DIGIT_WORDS.index(w)) for w in text.split())


# ------------------------------------------------------------------------------------------- the plan
def test_plan_splits_by_string_and_covers_every_digit_in_every_split():
    recipe = digits.DigitsRecipe(num_utterances=600, seed=3)
    plan = digits.plan_digits_corpus(recipe, ["en-us", "en-gb"])
    assert len(plan) == 600
    by_split = {s: [p for p in plan if p.split == s] for s in digits.SPLITS}
    multi = {s: {_digits_of(p.text) for p in items if len(p.text.split()) > 1} for s, items in by_split.items()}
    assert not multi["test"] & multi["train"], f"test strings in training: {sorted(multi['test'] & multi['train'])[:5]}"
    assert not multi["valid"] & multi["train"], "validation strings in training"
    assert not multi["test"] & multi["valid"], "test strings in validation"
    for split, items in by_split.items():
        singles = {p.text for p in items if len(p.text.split()) == 1}
        assert singles == set(digits.DIGIT_WORDS), f"{split} lacks single digits {set(digits.DIGIT_WORDS) - singles}"
    lengths = {len(p.text.split()) for p in plan}
    assert lengths == set(range(1, 9)), f"digit-string lengths drawn: {sorted(lengths)}"
    # Settings within the recipe's ranges, voices with variants.
    assert all(130 <= p.speed <= 200 and 25 <= p.pitch <= 75 and 0 <= p.word_gap <= 8 for p in plan)
    assert any("+f" in p.voice for p in plan) and any("+m" in p.voice for p in plan)


def test_plan_is_a_function_of_the_seed():
    voices = ["en-us", "en-gb"]
    a = digits.plan_digits_corpus(digits.DigitsRecipe(num_utterances=100, seed=1), voices)
    b = digits.plan_digits_corpus(digits.DigitsRecipe(num_utterances=100, seed=1), voices)
    c = digits.plan_digits_corpus(digits.DigitsRecipe(num_utterances=100, seed=2), voices)
    assert a == b
    assert [p.text for p in a] != [p.text for p in c]


def test_plan_rejects_bad_recipes():
    with pytest.raises(ValueError, match="at least 30"):
        digits.plan_digits_corpus(digits.DigitsRecipe(num_utterances=10), ["en-us"])
    with pytest.raises(ValueError, match="valid_fraction"):
        digits.plan_digits_corpus(digits.DigitsRecipe(valid_fraction=0.6, test_fraction=0.5), ["en-us"])


def test_split_at_silences_cuts_at_long_quiet_runs_only():
    sound = np.full(100, 0.5, np.float32)
    short_gap = np.zeros(50, np.float32)  # a word gap: kept inside the piece
    breath = np.full(600, 2e-5, np.float32)  # a break with -94 dB noise (espeak-ng's breathy variants)
    x = np.concatenate([np.zeros(300, np.float32), sound, short_gap, sound, breath, sound, np.zeros(700, np.float32)])
    pieces = digits._split_at_silences(x, min_run=500)
    assert len(pieces) == 2, f"expected 2 pieces, got {len(pieces)}"
    margin = 50
    assert len(pieces[0]) == 250 + 2 * margin and len(pieces[1]) == 100 + 2 * margin, [len(p) for p in pieces]


# ------------------------------------------------------------------------------------------ espeak-ng
def test_english_voices_exclude_mbrola_and_synthesize():
    voices = digits.english_voices()
    assert "en-us" in voices and "en-gb" in voices
    assert all(not v.startswith("mb-") and v != "variant" for v in voices)


def test_synthesize_many_matches_one_call_per_utterance():
    texts = ["one", "two three", "four five six seven"]
    many = digits.synthesize_many(texts, "en-us+f3", speed=150, pitch=40, word_gap=4)  # a breathy variant
    single = [digits.synthesize(t, "en-us+f3", speed=150, pitch=40, word_gap=4) for t in texts]
    assert len(many) == 3
    for text, m, s in zip(texts, many, single):
        # The pieces are the single calls without espeak-ng's own lead-in and trailing silence (< 0.5 s in all).
        assert m.dtype == np.float32 and 0 < len(m) <= len(s), f"{text!r}: {len(m)} vs {len(s)} samples"
        assert len(s) - len(m) < 0.5 * SAMPLING_RATE, f"{text!r}: {len(s) - len(m)} samples shorter"
    assert len(many[0]) < len(many[1]) < len(many[2])


def test_make_digits_corpus_writes_manifests_tokenizer_and_16k_audio(tmp_path):
    recipe = digits.DigitsRecipe(num_utterances=40, seed=5)
    manifests = digits.make_digits_corpus(tmp_path, recipe, workers=2)
    rows = {s: Path(p).read_text(encoding="utf-8").splitlines() for s, p in manifests.items()}
    assert sum(map(len, rows.values())) == 40
    path, text = rows["test"][0].split("\t")
    info = soundfile.info(os.path.join(tmp_path, path))
    assert info.samplerate == 16000 and info.channels == 1 and info.frames > 1600
    assert all(w in digits.DIGIT_WORDS for w in text.split())
    # Regenerating into the same folder keeps it; another recipe there is refused.
    digits.make_digits_corpus(tmp_path, recipe, workers=2)
    with pytest.raises(ValueError, match="another recipe"):
        digits.make_digits_corpus(tmp_path, digits.DigitsRecipe(num_utterances=40, seed=6))
    assert os.path.exists(tmp_path / "tokenizer" / "tokenizer.json")


# ------------------------------------------------------------------------------------------ tokenizer
def test_digits_tokenizer_loads_in_transformers_and_ours(tmp_path):
    from transformers import AutoTokenizer

    from minispeechseq.tokenizer import Tokenizer

    digits.build_digits_tokenizer(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_pretrained(tmp_path)
    text = "four zero seven seven"
    assert ours.encode(text) == ref.encode(text) == [8, 4, 11, 11]
    assert (ours.pad_token_id, ours.bos_token_id, ours.eos_token_id, ours.unk_token_id) == (
        ref.pad_token_id, ref.bos_token_id, ref.eos_token_id, ref.unk_token_id) == (0, 1, 2, 3)
    ids = [1, 8, 4, 2, 0]
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True) == "four zero"


def test_recipe_utterances_render_a_split_as_the_corpus_does():
    """The first test-split utterances, in memory: the plan's test strings in order, as 16 kHz audio."""
    waves, texts = digits.recipe_utterances("test", 3)
    plan = digits.plan_digits_corpus(digits.DigitsRecipe(), digits.english_voices())
    assert texts == [u.text for u in plan if u.split == "test"][:3]
    assert len(waves) == 3 and all(w.dtype == np.float32 and len(w) > SAMPLING_RATE // 10 for w in waves)
    with pytest.raises(ValueError, match="split must be one of train, valid, test"):
        digits.recipe_utterances("dev", 1)
