"""Real voices: the FSDD reader, splits by speaker, joined strings with exact boundaries, and the mixed corpus's
manifests. The fixtures are sixteen FSDD recordings (tests/fixtures/fsdd/README.md: credit and license)."""

import json
import os
import random
import shutil

import numpy as np
import pytest

from minispeechseq.audio import load_audio
from minispeechseq.training import fsdd
from minispeechseq.training.data import SAMPLING_RATE, ManifestDataset

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "fsdd")
FULL_FSDD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "fsdd")
SPEAKERS = ["jackson", "nicolas", "theo", "yweweler"]


def test_read_fsdd_takes_digit_and_speaker_from_the_name(tmp_path):
    for name in os.listdir(FIXTURES):
        shutil.copy(os.path.join(FIXTURES, name), tmp_path)
    (tmp_path / "notes.txt").write_text("not a recording")
    (tmp_path / "3_theo.wav").write_bytes(b"")  # no take index: not FSDD's naming
    recordings = fsdd.read_fsdd(tmp_path)
    assert len(recordings) == 16, [os.path.basename(r.path) for r in recordings]
    assert fsdd.speakers_of(recordings) == SPEAKERS
    assert {(r.digit, r.word) for r in recordings} == {(3, "three"), (7, "seven")}
    first = recordings[0]
    assert os.path.basename(first.path) == f"{first.digit}_{first.speaker}_{first.take}.wav"


def test_read_fsdd_accepts_the_clone_root_and_names_an_empty_folder(tmp_path):
    shutil.copytree(FIXTURES, tmp_path / "clone" / "recordings")
    assert len(fsdd.read_fsdd(tmp_path / "clone")) == 16
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no FSDD recording"):
        fsdd.read_fsdd(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="No FSDD folder"):
        fsdd.read_fsdd(tmp_path / "missing")


def test_split_by_speaker_puts_no_speaker_on_both_sides():
    recordings = fsdd.read_fsdd(FIXTURES)
    for held in SPEAKERS:
        train, test = fsdd.split_by_speaker(recordings, [held])
        assert {r.speaker for r in test} == {held}
        assert held not in {r.speaker for r in train}
        assert len(train) + len(test) == len(recordings)
    with pytest.raises(ValueError, match="No recordings of speaker"):
        fsdd.split_by_speaker(recordings, ["george"])


def test_joined_string_boundaries_are_exact():
    clips = [("one", np.full(800, 0.5, np.float32)), ("two", np.full(1600, -0.25, np.float32)),
             ("three", np.full(400, 0.75, np.float32))]
    utterance = fsdd.joined_string(clips, random.Random(3), pause_s=(0.05, 0.2), edge_s=(0.1, 0.2))
    assert utterance.text == "one two three"
    previous_end = 0.0
    for (word, clip), (timed_word, start, end) in zip(clips, utterance.words):
        a, b = round(start * SAMPLING_RATE), round(end * SAMPLING_RATE)
        assert timed_word == word and b - a == len(clip)
        np.testing.assert_array_equal(utterance.audio[a:b], clip)  # the word's samples, nothing else
        assert start - previous_end >= 0.05 - 1e-9 or previous_end == 0.0, "pause shorter than asked"
        previous_end = end
    silent = np.ones(len(utterance.audio), bool)
    for _, start, end in utterance.words:
        silent[round(start * SAMPLING_RATE) : round(end * SAMPLING_RATE)] = False
    assert not utterance.audio[silent].any(), "outside the words the join is silence"


def test_joined_string_overlap_adds_clips_and_keeps_each_words_bounds():
    clips = [(w, np.full(1600, 0.1, np.float32)) for w in ("four", "five", "six", "seven")]
    for seed in range(20):
        utterance = fsdd.joined_string(clips, random.Random(seed), pause_s=(0.0, 0.05), overlap_s=0.03)
        for (_, s0, e0), (_, s1, e1) in zip(utterance.words, utterance.words[1:]):
            assert e0 - s0 == pytest.approx(0.1) and s1 > s0, "each word keeps its clip's length, in time order"
            assert s1 >= e0 - 0.03 - 1 / SAMPLING_RATE, f"overlap {e0 - s1:.4f} s beyond the 0.03 s allowed"
        total = sum(len(c) for _, c in clips) * 0.1
        assert utterance.audio.sum() == pytest.approx(total, rel=1e-5), "overlapping clips are added, not cut"


def test_speaker_strings_use_one_speakers_takes_each():
    recordings = fsdd.read_fsdd(FIXTURES)
    strings = fsdd.speaker_strings(recordings, count=3, seed=0, digits=(2, 4))
    assert [s for s, _, _ in strings] == [s for s in SPEAKERS for _ in range(3)]
    clips = {(r.speaker, r.word): [load_audio(x.path) for x in recordings if (x.speaker, x.word) == (r.speaker, r.word)]
             for r in recordings}
    for speaker, utterance, takes in strings:
        assert 2 <= len(utterance.words) <= 4
        assert [t.word for t in takes] == utterance.text.split() and {t.speaker for t in takes} == {speaker}
        for word, start, end in utterance.words:
            piece = utterance.audio[round(start * SAMPLING_RATE) : round(end * SAMPLING_RATE)]
            assert any(len(c) == len(piece) and np.allclose(c, piece, atol=1e-6) for c in clips[(speaker, word)]), \
                f"{word!r} in a {speaker} string is not one of {speaker}'s own takes"


def test_real_corpus_and_fold_manifests(tmp_path):
    corpus = tmp_path / "corpus"
    os.makedirs(corpus / "wavs")
    np_wave = np.zeros(1600, np.float32)
    import soundfile
    soundfile.write(corpus / "wavs" / "0.wav", np_wave, SAMPLING_RATE)
    (corpus / "train.tsv").write_text("wavs/0.wav\tone two\n")
    fsdd.write_real_corpus(FIXTURES, corpus, fsdd.RealCorpusRecipe(joined_per_speaker=2))
    manifests = fsdd.write_mixed_manifests(corpus, real_weight=2)
    isolated = ManifestDataset(corpus / "real" / "isolated.tsv")
    assert len(isolated) == 16 and sorted(set(isolated.speakers)) == SPEAKERS
    for path in isolated.paths:  # byte-identical copies of the dataset's files
        with open(path, "rb") as copy, open(os.path.join(FIXTURES, os.path.basename(path)), "rb") as original:
            assert copy.read() == original.read()
    mixed = ManifestDataset(manifests["mixed"])
    assert len(mixed) == 1 + 2 * (16 + 8), "synthetic rows once, real rows `real_weight` times"
    for held in SPEAKERS:
        train = ManifestDataset(manifests[f"{held}/train"])
        assert held not in train.speakers and len(train) == 1 + 2 * (12 + 6)
        assert set(ManifestDataset(manifests[f"{held}/isolated"]).speakers) == {held}
        assert set(ManifestDataset(manifests[f"{held}/joined"]).speakers) == {held}
    with pytest.raises(ValueError, match="real_weight must be at least 1"):
        fsdd.write_mixed_manifests(corpus, real_weight=0)


def test_held_out_takes_are_in_no_training_manifest(tmp_path):
    corpus = tmp_path / "corpus"
    os.makedirs(corpus / "wavs")
    import soundfile
    soundfile.write(corpus / "wavs" / "0.wav", np.zeros(1600, np.float32), SAMPLING_RATE)
    (corpus / "train.tsv").write_text("wavs/0.wav\tone two\n")
    fsdd.write_real_corpus(FIXTURES, corpus, fsdd.RealCorpusRecipe(joined_per_speaker=6))
    held = "3_jackson_0.wav"
    with open(corpus / "real" / "joined_words.jsonl") as f:
        records = [json.loads(line) for line in f]
    using = {str(corpus / "real" / r["audio_path"]) for r in records if held in r["takes"]}
    assert using, "the fixture's joined strings should use the held-out take at least once"
    manifests = fsdd.write_mixed_manifests(corpus, held_out_takes=[held])
    for name, path in manifests.items():
        paths = set(ManifestDataset(path).paths)
        if name == "mixed" or name.endswith("/train"):
            assert not any(os.path.basename(p) == held for p in paths) and not paths & using, \
                f"{name} holds the held-out take or a string made with it"
    assert any(os.path.basename(p) == held for p in ManifestDataset(manifests["jackson/isolated"]).paths), \
        "test sets keep every recording"
    mixed = ManifestDataset(manifests["mixed"])
    assert len(mixed) == 1 + 16 - 1 + 6 * 4 - len(using)


@pytest.mark.skipif(not os.path.isdir(FULL_FSDD), reason="needs ../shared/data/fsdd (the whole FSDD folder)")
def test_the_shared_fsdd_folder_reads_as_four_speakers_of_500():
    recordings = fsdd.read_fsdd(FULL_FSDD)
    assert fsdd.speakers_of(recordings) == SPEAKERS
    for speaker in SPEAKERS:
        mine = [r for r in recordings if r.speaker == speaker]
        assert len(mine) == 500 and {r.digit for r in mine} == set(range(10))
