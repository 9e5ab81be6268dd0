"""The digits recipe, the manifest dataset, bucketing, augmentation, collation, and WER/CER."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from minispeechseq import data, metrics
from minispeechseq.audio import Wav2Vec2FeatureExtractor


def _digits_of(text: str) -> str:
    return "".join(str(data.DIGIT_WORDS.index(w)) for w in text.split())


# ------------------------------------------------------------------------------------------- the plan
def test_plan_splits_by_string_and_covers_every_digit_in_every_split():
    recipe = data.DigitsRecipe(num_utterances=600, seed=3)
    plan = data.plan_digits_corpus(recipe, ["en-us", "en-gb"])
    assert len(plan) == 600
    by_split = {s: [p for p in plan if p.split == s] for s in data.SPLITS}
    multi = {s: {_digits_of(p.text) for p in items if len(p.text.split()) > 1} for s, items in by_split.items()}
    assert not multi["test"] & multi["train"], f"test strings in training: {sorted(multi['test'] & multi['train'])[:5]}"
    assert not multi["valid"] & multi["train"], "validation strings in training"
    assert not multi["test"] & multi["valid"], "test strings in validation"
    for split, items in by_split.items():
        singles = {p.text for p in items if len(p.text.split()) == 1}
        assert singles == set(data.DIGIT_WORDS), f"{split} lacks single digits {set(data.DIGIT_WORDS) - singles}"
    lengths = {len(p.text.split()) for p in plan}
    assert lengths == set(range(1, 9)), f"digit-string lengths drawn: {sorted(lengths)}"
    # Settings within the recipe's ranges, voices with variants.
    assert all(130 <= p.speed <= 200 and 25 <= p.pitch <= 75 and 0 <= p.word_gap <= 8 for p in plan)
    assert any("+f" in p.voice for p in plan) and any("+m" in p.voice for p in plan)


def test_plan_is_a_function_of_the_seed():
    voices = ["en-us", "en-gb"]
    a = data.plan_digits_corpus(data.DigitsRecipe(num_utterances=100, seed=1), voices)
    b = data.plan_digits_corpus(data.DigitsRecipe(num_utterances=100, seed=1), voices)
    c = data.plan_digits_corpus(data.DigitsRecipe(num_utterances=100, seed=2), voices)
    assert a == b
    assert [p.text for p in a] != [p.text for p in c]


def test_plan_rejects_bad_recipes():
    with pytest.raises(ValueError, match="at least 30"):
        data.plan_digits_corpus(data.DigitsRecipe(num_utterances=10), ["en-us"])
    with pytest.raises(ValueError, match="valid_fraction"):
        data.plan_digits_corpus(data.DigitsRecipe(valid_fraction=0.6, test_fraction=0.5), ["en-us"])


def test_split_at_silences_cuts_at_long_quiet_runs_only():
    sound = np.full(100, 0.5, np.float32)
    short_gap = np.zeros(50, np.float32)  # a word gap: kept inside the piece
    breath = np.full(600, 2e-5, np.float32)  # a break with -94 dB noise (espeak-ng's breathy variants)
    x = np.concatenate([np.zeros(300, np.float32), sound, short_gap, sound, breath, sound, np.zeros(700, np.float32)])
    pieces = data._split_at_silences(x, min_run=500)
    assert len(pieces) == 2, f"expected 2 pieces, got {len(pieces)}"
    margin = 50
    assert len(pieces[0]) == 250 + 2 * margin and len(pieces[1]) == 100 + 2 * margin, [len(p) for p in pieces]


# ------------------------------------------------------------------------------------------ espeak-ng
def test_english_voices_exclude_mbrola_and_synthesize():
    voices = data.english_voices()
    assert "en-us" in voices and "en-gb" in voices
    assert all(not v.startswith("mb-") and v != "variant" for v in voices)


def test_synthesize_many_matches_one_call_per_utterance():
    texts = ["one", "two three", "four five six seven"]
    many = data.synthesize_many(texts, "en-us+f3", speed=150, pitch=40, word_gap=4)  # a breathy variant
    single = [data.synthesize(t, "en-us+f3", speed=150, pitch=40, word_gap=4) for t in texts]
    assert len(many) == 3
    for text, m, s in zip(texts, many, single):
        # The pieces are the single calls without espeak-ng's own lead-in and trailing silence (< 0.5 s in all).
        assert m.dtype == np.float32 and 0 < len(m) <= len(s), f"{text!r}: {len(m)} vs {len(s)} samples"
        assert len(s) - len(m) < 0.5 * data.SAMPLING_RATE, f"{text!r}: {len(s) - len(m)} samples shorter"
    assert len(many[0]) < len(many[1]) < len(many[2])


def test_make_digits_corpus_writes_manifests_tokenizer_and_16k_audio(tmp_path):
    recipe = data.DigitsRecipe(num_utterances=40, seed=5)
    manifests = data.make_digits_corpus(tmp_path, recipe, workers=2)
    rows = {s: Path(p).read_text(encoding="utf-8").splitlines() for s, p in manifests.items()}
    assert sum(map(len, rows.values())) == 40
    path, text = rows["test"][0].split("\t")
    info = soundfile.info(os.path.join(tmp_path, path))
    assert info.samplerate == 16000 and info.channels == 1 and info.frames > 1600
    assert all(w in data.DIGIT_WORDS for w in text.split())
    # Regenerating into the same folder keeps it; another recipe there is refused.
    data.make_digits_corpus(tmp_path, recipe, workers=2)
    with pytest.raises(ValueError, match="another recipe"):
        data.make_digits_corpus(tmp_path, data.DigitsRecipe(num_utterances=40, seed=6))
    assert os.path.exists(tmp_path / "tokenizer" / "tokenizer.json")


# ------------------------------------------------------------------------------------------ tokenizer
def test_digits_tokenizer_loads_in_transformers_and_ours(tmp_path):
    from transformers import AutoTokenizer

    from minispeechseq.tokenizer import Tokenizer

    data.build_digits_tokenizer(tmp_path)
    ref = AutoTokenizer.from_pretrained(str(tmp_path))
    ours = Tokenizer.from_pretrained(tmp_path)
    text = "four zero seven seven"
    assert ours.encode(text) == ref.encode(text) == [8, 4, 11, 11]
    assert (ours.pad_token_id, ours.bos_token_id, ours.eos_token_id, ours.unk_token_id) == (
        ref.pad_token_id, ref.bos_token_id, ref.eos_token_id, ref.unk_token_id) == (0, 1, 2, 3)
    ids = [1, 8, 4, 2, 0]
    assert ours.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True) == "four zero"


# ----------------------------------------------------------------------------------------- manifests
def _write_corpus(folder, durations):
    os.makedirs(folder / "wavs", exist_ok=True)
    lines = []
    for i, seconds in enumerate(durations):
        wave = 0.1 * np.sin(np.arange(int(seconds * 16000)) * 0.05).astype(np.float32)
        soundfile.write(folder / "wavs" / f"{i}.wav", wave, 16000, subtype="PCM_16")
        lines.append(f"wavs/{i}.wav\t{' '.join(data.DIGIT_WORDS[(i + k) % 10] for k in range(i % 3 + 1))}\n")
    (folder / "train.tsv").write_text("".join(lines))
    return folder / "train.tsv"


def test_manifest_dataset_reads_relative_paths_and_lengths(tmp_path):
    manifest = _write_corpus(tmp_path, [0.5, 0.25, 1.0])
    ds = data.ManifestDataset(manifest)
    assert len(ds) == 3 and ds.lengths == [8000, 4000, 16000]
    item = ds[2]
    assert item["index"] == 2 and item["audio"].shape == (16000,) and item["text"] == "two three four"


def test_manifest_errors_are_sentences(tmp_path):
    with pytest.raises(FileNotFoundError, match="No manifest"):
        data.ManifestDataset(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("only-one-field\n")
    with pytest.raises(ValueError, match="line 1: expected `audio_path<TAB>transcript`"):
        data.ManifestDataset(tmp_path / "bad.tsv")
    (tmp_path / "gone.tsv").write_text("nowhere.wav\tone\n")
    with pytest.raises(FileNotFoundError, match="line 1: no audio file"):
        data.ManifestDataset(tmp_path / "gone.tsv")


# ------------------------------------------------------------------------------------------- batching
def test_bucket_batches_cover_everything_once_and_group_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1000, 100000, size=1000).tolist()
    sampler = data.BucketBatchSampler(lengths, batch_size=16, seed=7, pool_batches=10)
    batches = sampler.batches(epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    # Padding: the spread within a bucketed batch is far below that of a random batch.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    random_spread = np.mean([np.ptp(rng.choice(lengths, 16)) for _ in range(100)])
    assert spread < random_spread / 5, f"bucketed spread {spread:.0f} vs random {random_spread:.0f}"
    assert sampler.batches(1) == batches, "same (seed, epoch) must give the same batches"
    assert sampler.batches(2) != batches, "another epoch must reshuffle"


def test_shortest_first_epoch_then_random():
    lengths = [5, 3, 9, 1, 7, 2]
    sampler = data.BucketBatchSampler(lengths, batch_size=2, seed=0, shortest_first=True)
    assert sampler.batches(0) == [[3, 5], [1, 0], [4, 2]]
    assert sampler.batches(1) != sampler.batches(0)


def test_rank_shares_partition_a_global_batch():
    batch = list(range(10))
    shares = [data.rank_share(batch, r, 3) for r in range(3)]
    assert sorted(i for share in shares for i in share) == batch


# --------------------------------------------------------------------------------------- augmentation
def test_augmentation_snr_silence_and_determinism():
    wave = (np.random.default_rng(1).standard_normal(16000) * 0.1).astype(np.float32)  # aperiodic "speech"
    aug = data.Augmentation(max_silence_s=0.3, gain_db=(0.0, 0.0), snr_db=(20.0, 20.0))
    out = aug(wave, data.item_rng(0, 0, 5))
    again = aug(wave, data.item_rng(0, 0, 5))
    np.testing.assert_array_equal(out, again)
    assert 16000 <= len(out) <= 16000 + 2 * 4800
    # Find where the speech sits: the residual against the clean wave is the noise, at 20 dB below the speech.
    lead = int(np.argmin([np.mean((out[k:k + 16000] - wave) ** 2) for k in range(len(out) - 16000 + 1)]))
    noise = out[lead:lead + 16000] - wave
    snr = 10 * np.log10(np.mean(wave ** 2) / np.mean(noise ** 2))
    assert abs(snr - 20.0) < 0.3, f"measured SNR {snr:.2f} dB, expected 20 dB"
    assert not np.array_equal(out, aug(wave, data.item_rng(0, 1, 5))), "another epoch must draw anew"


# ------------------------------------------------------------------------------------------- collation
class _WordTokenizer:
    eos_token_id = 2

    def encode(self, text, add_special_tokens=True):
        return [4 + data.DIGIT_WORDS.index(w) for w in text.split()]


def test_collator_pads_audio_with_mask_and_labels_with_minus_100():
    fe = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    collate = data.Collator(fe, _WordTokenizer())
    items = [{"index": 0, "audio": np.ones(100, np.float32) * np.arange(100), "text": "one two"},
             {"index": 1, "audio": np.ones(60, np.float32) * np.arange(60), "text": "nine"}]
    batch = collate(items)
    assert batch["input_values"].shape == (2, 100)
    assert batch["attention_mask"].tolist() == [[1] * 100, [1] * 60 + [0] * 40]
    assert batch["labels"].tolist() == [[5, 6, 2], [13, 2, -100]]
    # The feature extractor's own output for the short one, alone: padding did not change its values.
    alone = fe(items[1]["audio"], return_tensors="pt")["input_values"][0]
    assert torch.equal(batch["input_values"][1, :60], alone)
    no_mask = data.Collator(Wav2Vec2FeatureExtractor(return_attention_mask=False), _WordTokenizer())(items)
    assert "attention_mask" not in no_mask


# ---------------------------------------------------------------------------------------------- metrics
def test_word_error_rate_by_hand():
    wer = metrics.word_error_rate
    assert wer(["one two three four"], ["one two tree four"]) == pytest.approx(1 / 4)  # one substitution
    assert wer("one two", "one two") == 0.0  # a single pair may be given as two strings
    assert wer(["one"], ["one two three"]) == pytest.approx(2.0)  # two insertions over one word: above 1
    assert wer(["one two", ""], ["one two", "three"]) == pytest.approx(1 / 2)  # an empty reference: insertions count
    # 1 substitution + 1 deletion + 1 insertion + 4 deletions over 10 words.
    refs = ["one two three", "four five", "six", "seven eight nine zero"]
    hyps = ["one too three", "four", "six six", ""]
    assert wer(refs, hyps) == pytest.approx(7 / 10)
    # Corpus level: 1 error over 1 + 9 words is 0.1, where the mean of per-utterance rates would be 0.5.
    assert wer(["one", "two three four five six seven eight nine zero"],
               ["two", "two three four five six seven eight nine zero"]) == pytest.approx(1 / 10)
    assert wer(["  one   two "], ["one\ttwo"]) == 0.0  # whitespace runs are one separator


def test_character_error_rate_by_hand():
    cer = metrics.character_error_rate
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)  # 2 substitutions + 1 insertion over 6 characters
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space is a character
    assert cer(["one  two "], ["one two"]) == 0.0  # a double space is still one
    assert cer(["ab", "cdef"], ["ab", "cdxf"]) == pytest.approx(1 / 6)  # summed over the corpus


def test_without_jiwer_the_training_commands_say_what_to_install():
    # sys.modules[name] = None makes `import jiwer` fail as if it were not installed.
    code = ("import sys; sys.modules['jiwer'] = None; from minispeechseq.cli import main; "
            "sys.exit(main(['evaluate', 'some-model']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "minispeechseq: error: `evaluate` is not available: Word and character error rates need jiwer: "
        "pip install 'minispeechseq[train]'"], done.stderr


def test_error_rate_input_errors():
    with pytest.raises(ValueError, match="pair up"):
        metrics.word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no words"):
        metrics.word_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="no characters"):
        metrics.character_error_rate([" "], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        metrics.word_error_rate([], [])

