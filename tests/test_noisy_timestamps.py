"""Word timestamps and long recordings on audio like real audio (issue 27): background noise and real voices.

The audio is made by the test, with every word's true start and end known: espeak-ng digit strings built word by
word (training/digits.py) and FSDD recordings joined one speaker at a time (training/fsdd.py), with noise added
at a stated SNR by tools/bench_noise.py (white, pink, brown, babble; "fan": pink noise that switches on 12 dB
louder part way through). The seeds here are not the bench's (5150), on which the detector's constants were
chosen.

Targets for the bundled model (40 ms frames), asserted at 30 and 20 dB for every noise kind (and at 40 dB, which
must be no harder): median boundary error <= 60 ms and 90th percentile <= 150 ms, for starts and for ends
separately, one by one and in the long-form output; long-form WER within +2 points of the same strings transcribed
one by one (cut out of the same noisy audio). 10 dB is reported, not targeted: `python -m
minispeechseq.tools.bench_noise` measures every level. Real voices (FSDD, one speaker per
recording): median <= 80 ms and 90th percentile <= 200 ms, long-form WER within +3 points of one by one, asserted
for the bundled model (which heard the four speakers in training) and, as the issue asks, for speakers held out of
training: each speaker with the leave-one-speaker-out model that never heard them (tutorials/results/voices/folds).
"""

import os
import shutil

import jiwer
import numpy as np
import pytest
import torch

from minispeechseq import Processor, SpeechEncoderDecoderModel, transcribe
from minispeechseq.recognition.longform import (
    MIN_SPEECH_S,
    plan_chunks,
    speech_segments,
)
from minispeechseq.recognition.pauses import sound_runs
from minispeechseq.tools.bench_noise import (
    NOISE_KINDS,
    babble_sources,
    boundary_errors,
    long_boundary_errors,
    noise_for,
    pieces_of,
    with_noise,
)
from minispeechseq.training.digits import TimedUtterance

BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minispeechseq", "bundled", "digits")
FOLDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tutorials", "results", "voices",
                     "folds")  # the leave-one-speaker-out models
FSDD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data", "fsdd")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng makes the held-out audio (apt-get install espeak-ng)")
MEDIAN_TARGET_MS, P90_TARGET_MS = 60.0, 150.0  # issue 27, starts and ends each
LONG_WER_MARGIN = 0.02  # long-form WER may exceed one-by-one by this much
RATE = 16000
# A fricative's tail under 20 dB of noise is below the noise: a cut within this of a word's edge is in that tail.
EDGE_TOLERANCE_S = 0.05
# Every kind, babble (other voices) included, but "room": reverberation is no noise the issue set targets for, and
# its word ends come late (the tail of each word rings on in the room): test_reverberant_room reports it.
TARGET_KINDS = [kind for kind in NOISE_KINDS if kind != "room"]


@pytest.fixture(scope="module")
def bundled():
    return SpeechEncoderDecoderModel.from_pretrained(BUNDLED), Processor.from_pretrained(BUNDLED)


@pytest.fixture(scope="module")
def strings():
    from minispeechseq.training.digits import timed_digit_strings

    return timed_digit_strings(16, seed=2727), babble_sources(2727)


# ------------------------------------------------------------------------------------------- the detector
@pytest.mark.parametrize("kind", ["white", "pink", "brown", "fan"])
def test_noise_alone_is_no_sound(kind):
    """10 s of noise and nothing else (the fan switching on in it): no stretch as long as the shortest speech
    (longform.MIN_SPEECH_S, 0.1 s) is called sound, so no chunk is made of noise alone."""
    rng = np.random.default_rng(11)
    noise = 0.05 * noise_for(kind, 10 * RATE, rng, [])
    runs = sound_runs(noise, RATE)
    longest = max((b - a for a, b in runs), default=0.0)
    assert longest < MIN_SPEECH_S, f"{kind} noise alone: a {longest * 1e3:.0f} ms stretch was called sound"
    assert speech_segments(runs, len(noise), RATE) == []


def test_digital_silence_is_unchanged_by_the_floor():
    """Exact zeros between bursts: the floor is the silence, each edge found within half a 10 ms frame."""
    x = np.zeros(2 * RATE, dtype=np.float32)
    burst = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    for a, b in [(0.2, 0.5), (0.9, 1.6)]:
        x[int(a * RATE):int(b * RATE)] = burst[: int(b * RATE) - int(a * RATE)]
    runs = sound_runs(x, RATE)
    assert len(runs) == 2 and np.allclose(runs, [(0.2, 0.5), (0.9, 1.6)], atol=0.005), runs


@needs_espeak
@pytest.mark.parametrize("snr", [30, 20])
def test_chunks_are_never_cut_inside_a_word(snr):
    """Unbroken digit strings (50-250 ms between words) longer than a chunk, under pink noise: every cut falls
    between words, none needs an overlapping window, and no chunk is longer than asked."""
    from minispeechseq.training.digits import long_recording

    recording, _ = long_recording(40, seed=2728, pause_s=(0.05, 0.2))  # no pause of PAUSE_S: cuts between words
    noisy = with_noise(recording, "pink", snr, np.random.default_rng(3), [])
    plan = plan_chunks(noisy.audio, RATE, chunk_length_s=5.0)
    cuts = [c.end / RATE for c in plan[:-1]]
    inside = [(cut, w) for cut in cuts for w in recording.words if w[1] + EDGE_TOLERANCE_S < cut < w[2] - EDGE_TOLERANCE_S]
    assert not inside, f"{len(inside)} of {len(cuts)} cuts fall inside a word, e.g. {inside[:3]}"
    assert not any(c.overlap_after for c in plan), "a pause between words was in every window: no overlap needed"
    assert max(c.end - c.start for c in plan) <= 5 * RATE


def assert_boundaries_within(starts: np.ndarray, ends: np.ndarray, what: str, median_target: float,
                             p90_target: float, left_out: dict[str, np.ndarray] | None = None,
                             end_targets: tuple[float, float] | None = None) -> None:
    """Median and 90th percentile of |error| (ms), starts and ends each, within the targets (`end_targets`: other
    ones for the ends). `left_out`: per "start" / "end", a mask of errors kept out of the 90th percentile asserted
    (see UNHEARD_ENDS); it is printed whole."""
    for name, err in (("start", np.abs(starts) * 1e3), ("end", np.abs(ends) * 1e3)):
        if name == "end" and end_targets:
            median_target, p90_target = end_targets
        median, p90 = float(np.median(err)), float(np.percentile(err, 90))
        print(f"{what}, {len(err)} {name}s: median {median:.0f} ms, p90 {p90:.0f} ms")
        if left_out and name in left_out:
            p90 = float(np.percentile(err[~left_out[name]], 90))
        assert median <= median_target and p90 <= p90_target, (
            f"{what}: {name} errors median {median:.0f} ms (target {median_target:.0f}), 90th percentile "
            f"{p90:.0f} ms (target {p90_target:.0f})")


# ------------------------------------------------------------------------------ the targets, per condition
@needs_espeak
@pytest.mark.parametrize("snr", [40, 30, 20])  # the targets are at 30 and 20 dB; 40 must not be worse
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_word_boundaries_under_noise(bundled, strings, kind, snr):
    model, processor = bundled
    utterances, others = strings
    rng = np.random.default_rng([2727, snr, NOISE_KINDS.index(kind)])
    noisy = [with_noise(u, kind, snr, rng, others) for u in utterances]
    results = transcribe(model, [u.audio for u in noisy], processor=processor, timestamps=True)
    starts, ends, _ = boundary_errors(results, noisy)
    assert len(starts) >= 40, f"only {len(starts)} words were transcribed correctly at {kind} {snr} dB"
    assert_boundaries_within(starts, ends, f"\n{kind} noise at {snr} dB", MEDIAN_TARGET_MS, P90_TARGET_MS)


ROOM_END_MEDIAN_MS, ROOM_END_P90_MS = 120.0, 200.0  # no target: a floor (the bench: 35-77 / 76-134 ms, 40-20 dB)


@needs_espeak
@pytest.mark.parametrize("snr", [30, 20])
def test_reverberant_room(bundled, strings, snr):
    """Strings said in a simulated room (RT60 0.3-0.6 s, bench_noise.in_reverberant_room) over pink noise. Starts
    meet the issue's targets; ends come late, since the room rings on after each word (the bench measured medians of
    35-77 ms late at 40-20 dB) and the detector hears that as the word: they are held to a looser floor here, and
    the words are well formed."""
    model, processor = bundled
    utterances, others = strings
    rng = np.random.default_rng([2727, snr, NOISE_KINDS.index("room")])
    noisy = [with_noise(u, "room", snr, rng, others) for u in utterances]
    results = transcribe(model, [u.audio for u in noisy], processor=processor, timestamps=True)
    for r, u in zip(results, noisy):
        assert_well_formed(r["words"], len(u.audio) / RATE)
    starts, ends, _ = boundary_errors(results, noisy)
    assert len(starts) >= 40, f"only {len(starts)} words were transcribed correctly in the room at {snr} dB"
    assert_boundaries_within(starts, ends, f"\nroom, {snr} dB", MEDIAN_TARGET_MS, P90_TARGET_MS,
                             end_targets=(ROOM_END_MEDIAN_MS, ROOM_END_P90_MS))


CONNECTED_MEDIAN_MS, CONNECTED_P90_MS = 60.0, 250.0  # words said without a break: no issue's target, a floor
CONNECTED_SQUEEZED = 0.05  # at most this share of words shorter than 50 ms


@needs_espeak
@pytest.mark.parametrize("noise", [("clean", None), ("white", 30)])
def test_words_said_without_a_break(bundled, noise):
    """Digit words one right after the other (each starts where the one before ends: no pause for the detector
    to find), so every boundary is placed by DTW and the dips of the sound (timestamps.into_valleys). A boundary
    moved to the quiet edge of its search window used to squeeze words to nothing: 17-27 % of the words came out
    shorter than 50 ms and the 90th percentile was 242-282 ms (seed 4242, before the rule that a dip needs sound
    rising above it on both sides); now 2-4 % and 184-221 ms."""
    from minispeechseq.training.digits import timed_digit_strings

    model, processor = bundled
    kind, snr = noise
    utterances = timed_digit_strings(40, seed=4242, min_digits=2, max_digits=7, gap_s=(0.0, 0.0))
    noisy = [with_noise(u, kind, snr, np.random.default_rng(4242), []) for u in utterances]
    results = transcribe(model, [u.audio for u in noisy], processor=processor, timestamps=True)
    for r, u in zip(results, noisy):
        assert_well_formed(r["words"], len(u.audio) / RATE)
    words = [w for r in results for w in r["words"]]
    squeezed = sum(w["end"] - w["start"] < 0.05 for w in words) / len(words)
    assert squeezed <= CONNECTED_SQUEEZED, f"{squeezed:.1%} of {len(words)} words are shorter than 50 ms"
    starts, ends, _ = boundary_errors(results, noisy)
    assert len(starts) >= 120, f"only {len(starts)} words in strings transcribed right"
    assert_boundaries_within(starts, ends, f"\nwords without a break, {kind} {snr}", CONNECTED_MEDIAN_MS,
                             CONNECTED_P90_MS)


@needs_espeak
@pytest.mark.parametrize("snr", [40, 30, 20])
@pytest.mark.parametrize("kind", TARGET_KINDS)
def test_long_recording_under_noise(bundled, strings, kind, snr):
    from minispeechseq.training.digits import long_recording

    model, processor = bundled
    _, others = strings
    recording, pieces = long_recording(90, seed=2729 + snr)  # ~130 words: 2 points are ~3 words
    noisy = with_noise(recording, kind, snr, np.random.default_rng([2729, snr]), others)
    short = transcribe(model, pieces_of(noisy, pieces), processor=processor)
    short_wer = jiwer.wer([p.text for p in pieces], [r["text"] for r in short])
    long = transcribe(model, noisy.audio, processor=processor, timestamps=True)
    long_wer = jiwer.wer(recording.text, long["text"])
    print(f"\n{kind} {snr} dB, {len(noisy.audio) / RATE:.0f} s: long-form WER {long_wer:.1%}, one by one {short_wer:.1%}")
    assert long_wer <= short_wer + LONG_WER_MARGIN, (
        f"{kind} noise at {snr} dB: long-form WER {long_wer:.1%} vs {short_wer:.1%} one by one (margin +2 points)")
    assert_well_formed(long["words"], len(noisy.audio) / RATE)
    starts, ends, _ = long_boundary_errors(long["words"], noisy, pieces)  # the strings long-form got right
    assert len(starts) >= 0.8 * len(recording.words), f"{len(starts)} of {len(recording.words)} words measured"
    assert_boundaries_within(starts, ends, f"{kind} noise at {snr} dB, long-form", MEDIAN_TARGET_MS, P90_TARGET_MS)


def assert_well_formed(words: list[dict], duration: float) -> None:
    # as_dict rounds to the millisecond, so the bounds hold to 0.5 ms
    for w in words:
        assert -5e-4 <= w["start"] <= w["end"] <= duration + 5e-4, w
    for a, b in zip(words, words[1:]):
        assert a["end"] <= b["start"] + 5e-4, (a, b)


# ------------------------------------------------------------------------------------------ real voices
needs_fsdd = pytest.mark.skipif(not os.path.isdir(FSDD), reason=f"the real recordings (FSDD) are not at {FSDD}")


REAL_MEDIAN_TARGET_MS = 80.0  # issue 27, real voices
SPEAKERS = ["jackson", "nicolas", "theo", "yweweler"]  # FSDD's four in ../shared/data/fsdd
REAL_P90_TARGET_MS = 200.0
REAL_LONG_WER_MARGIN = 0.03
# Where a take's end is not the word's audible end: jackson's "six" takes end in a median 245 ms within 10 dB of
# the take's own floor (other digits, his and the others': 70-120 ms), with no band rising above the room there,
# so the truth (the join point) lies up to 0.4 s after anything a detector can hear. (FSDD is recorded at 8 kHz,
# which keeps nothing above 4 kHz, where most of a final /s/ lies.) Those ends are left out of
# the 90th percentile asserted (bench_noise's table gives it with them: 180-400 ms).
UNHEARD_ENDS = {("jackson", "end"): {"six"}}


@pytest.fixture(scope="module")
def real_recordings():
    """Per FSDD speaker, 90 s of that speaker's takes joined into strings, over their own room tone
    (bench_noise.real_recordings / with_room). The bundled model heard all four speakers in training (on other
    joins of these takes); each fold's model never heard its speaker. The join points are the true word
    boundaries, up to the room tone FSDD's trimming leaves at each take's ends."""
    from minispeechseq.tools.bench_noise import real_recordings as make

    return make(FSDD, 90, seed=2731)


@pytest.fixture(scope="module")
def longer_real_recordings():
    """As real_recordings, 240 s per speaker: a model that never heard the speaker gets about 6 strings in 10
    right (its fold's WER, MODEL_CARD.md), so a longer recording is needed for as many measured words."""
    from minispeechseq.tools.bench_noise import real_recordings as make

    return make(FSDD, 240, seed=2731)


REAL_NOISES = [("own", None), ("white", 30)]


def check_real_voice(model, processor, recordings, speaker, noise, heard: str) -> None:
    """One speaker's long recording over their own room (and 30 dB of white noise below 4 kHz, as an 8 kHz
    recording carries it), transcribed long-form and its strings one by one: the word boundaries of both (the
    strings each transcribed right, pooled, as the issue pooled short and long) within the targets (median, 90th
    percentile); long-form WER within +3 points of one by one; the long-form words well formed. `heard` says which
    model, for the messages."""
    from minispeechseq.tools.bench_noise import with_room

    kind, snr = noise
    recording, pieces, takes = recordings[speaker]
    noisy = with_room(recording, takes, kind, snr, np.random.default_rng([2731, SPEAKERS.index(speaker), snr or 0]))
    cut = pieces_of(noisy, pieces)
    short = transcribe(model, cut, processor=processor, timestamps=True)
    short_wer = jiwer.wer([p.text for p in pieces], [r["text"] for r in short])
    long = transcribe(model, noisy.audio, processor=processor, timestamps=True)
    long_wer = jiwer.wer(recording.text, long["text"])
    assert_well_formed(long["words"], len(noisy.audio) / RATE)
    one_by_one = boundary_errors(short, [TimedUtterance(a, p.text, p.words) for a, p in zip(cut, pieces)])
    long_form = long_boundary_errors(long["words"], noisy, pieces)
    starts, ends, words = (np.concatenate([a, b]) for a, b in zip(one_by_one, long_form))
    print(f"\n{speaker} ({heard}) {kind} {snr}: {len(one_by_one[0])} words one by one, {len(long_form[0])} long-form")
    assert len(starts) >= 20, f"{speaker} ({heard}): only {len(starts)} words in strings transcribed right"
    left_out = {name: np.isin(words, sorted(unheard)) for (who, name), unheard in UNHEARD_ENDS.items()
                if who == speaker}  # see UNHEARD_ENDS: the p90 of the other words' ends is asserted
    assert_boundaries_within(starts, ends, f"{speaker} ({heard}), {kind} {snr} dB", REAL_MEDIAN_TARGET_MS,
                             REAL_P90_TARGET_MS, left_out)
    print(f"long-form WER {long_wer:.1%}, one by one {short_wer:.1%}")
    assert long_wer <= short_wer + REAL_LONG_WER_MARGIN, (
        f"{speaker} ({heard}), {kind} {snr} dB: long-form WER {long_wer:.1%} vs {short_wer:.1%} one by one "
        f"(margin +3 points)")


@needs_fsdd
@pytest.mark.parametrize("noise", REAL_NOISES)
@pytest.mark.parametrize("speaker", SPEAKERS)
def test_real_voices(bundled, real_recordings, speaker, noise):
    """The bundled model, which heard these four speakers in training (other joins of these takes)."""
    check_real_voice(*bundled, real_recordings, speaker, noise, heard="bundled model, heard in training")


@needs_fsdd
@pytest.mark.parametrize("noise", REAL_NOISES)
@pytest.mark.parametrize("speaker", SPEAKERS)
def test_real_voices_never_heard(longer_real_recordings, speaker, noise):
    """The issue's real-voice targets on a speaker held out of training: each speaker measured with the
    leave-one-speaker-out model that never heard them (tutorials/results/voices/folds/SPEAKER, made by folds.sh
    and fold_models.py; its alignment heads chosen on synthetic speech only)."""
    folder = os.path.join(FOLDS, speaker)
    model, processor = SpeechEncoderDecoderModel.from_pretrained(folder), Processor.from_pretrained(folder)
    check_real_voice(model, processor, longer_real_recordings, speaker, noise, heard="never heard: its fold's model")


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_fold_models_load_and_hear_the_synthetic_samples(speaker):
    """Each shipped fold model (float16 on disk) loads as float32 with alignment heads of its own, and hears the
    package's synthetic sample strings (espeak-ng voices it trained on, strings it did not): every fold heard the
    whole synthetic corpus, only one real speaker is missing. Needs no FSDD: the files are checked where CI runs."""
    import csv

    folder = os.path.join(FOLDS, speaker)
    model, processor = SpeechEncoderDecoderModel.from_pretrained(folder), Processor.from_pretrained(folder)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    heads = model.generation_config.alignment_heads
    assert heads and all(0 <= layer < 2 and 0 <= head < 4 for layer, head in heads), heads
    samples = os.path.join(os.path.dirname(BUNDLED), "samples")
    with open(os.path.join(samples, "transcripts.tsv"), encoding="utf-8") as f:
        rows = [(name, text) for name, text in csv.reader(f, delimiter="\t") if not name.startswith("fsdd_")]
    heard = transcribe(model, [os.path.join(samples, name) for name, _ in rows], processor=processor)
    wer = jiwer.wer([text for _, text in rows], [r["text"] for r in heard])
    assert len(rows) == 8 and wer <= 0.10, f"fold without {speaker}: WER {wer:.1%} on the {len(rows)} synthetic samples"


def test_long_form_words_are_measured_per_string_transcribed_right():
    """long_boundary_errors gives each long-form word to the string whose stretch (reaching halfway into the pauses
    either side) holds its middle, and measures only the strings whose words read as their text: a word heard in
    a pause goes to the nearer string, and a wrong string is left out whole."""
    silent = np.zeros(RATE, dtype=np.float32)
    pieces = [TimedUtterance(silent, "one two", [("one", 0.1, 0.4), ("two", 0.5, 0.8)]),
              TimedUtterance(silent, "three", [("three", 0.1, 0.5)]),
              TimedUtterance(silent, "four", [("four", 0.1, 0.3)])]
    recording = TimedUtterance(np.zeros(6 * RATE, dtype=np.float32), "one two three four",
                               [("one", 1.0, 1.3), ("two", 1.4, 1.7), ("three", 3.0, 3.4), ("four", 5.0, 5.2)])
    words = [{"word": "one", "start": 1.02, "end": 1.31}, {"word": "two", "start": 1.45, "end": 2.2},  # ends late
             {"word": "three", "start": 2.9, "end": 3.3},
             {"word": "four", "start": 4.2, "end": 4.4},  # in the pause, nearer four: "three" alone stays right
             {"word": "five", "start": 5.0, "end": 5.2}]  # "four five" for "four": left out
    starts, ends, names = long_boundary_errors(words, recording, pieces)
    assert names == ["one", "two", "three"], names
    np.testing.assert_allclose(starts, [0.02, 0.05, -0.1], atol=1e-9)
    np.testing.assert_allclose(ends, [0.01, 0.5, -0.1], atol=1e-9)
