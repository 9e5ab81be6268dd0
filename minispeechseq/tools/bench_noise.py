"""Word timestamps and long recordings under background noise, measured (issue 27).

The audio is made here, with exact word boundaries: espeak-ng digit strings built word by word
(training/digits.py), with noise added at a stated signal-to-noise ratio (training/augment.py's `make_noise`):
white, pink, brown, babble (other digit strings mixed), "fan": pink noise whose level switches on part way
through (12 dB quieter before, a 1 s ramp), the slowly varying level of a real room, and "room": the speech said in
a simulated reverberant room (RT60 0.3-0.6 s, `in_reverberant_room`) over pink noise. The SNR is the power of the
words alone (the pauses carry no speech) over the power of the noise (the fan's at its full level).

    python -m minispeechseq.tools.bench_noise --count 40 --seconds 90 --fsdd ../shared/data/fsdd  # the README's

Real voices (--fsdd): per FSDD speaker, 2-3 minutes of that speaker's takes joined into digit strings (the join
points are the true word boundaries), over the speaker's own room tone (the quietest moments of their takes), and
with white and pink noise at 30 dB added as an 8 kHz recording carries it (`measure_real`). The bundled model heard
all four speakers in training; `--heldout FOLDS` measures each speaker with the model that never heard them
(FOLDS/SPEAKER, leave-one-speaker-out):

    python -m minispeechseq.tools.bench_noise --fsdd ../shared/data/fsdd --real-only \
        --heldout tutorials/results/voices/folds

Per condition: the median and 90th percentile of |start error| and of |end error| over the words of the
utterances transcribed correctly (a wrong transcript has no word to compare), the WER of those utterances, and
a long recording (digit strings with 0.6-1.5 s pauses, the same noise throughout) transcribed long-form, beside
the WER of its strings cut out of the same noisy audio and transcribed one by one; and the long-form words'
boundary errors, over the strings the long-form transcript got right (`long_boundary_errors`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time

import numpy as np
import soxr

from ..audio import load_audio
from ..processor import Processor
from ..recognition.recognizer import transcribe
from ..speech_encoder_decoder import SpeechEncoderDecoderModel
from ..training.augment import make_noise, reverberate, room_impulse_response
from ..training.digits import (
    SAMPLING_RATE,
    TimedUtterance,
    join_with_pauses,
    long_recording,
    timed_digit_strings,
)
from ..training.fsdd import read_fsdd, speaker_strings
from .cli import bundled_model_dir

NOISE_KINDS = ("white", "pink", "brown", "babble", "fan", "room")
SNRS_DB = (40, 30, 20, 10)
FAN_QUIET_DB = 12.0  # the fan's level before it switches on, below its full level
FAN_RAMP_S = 1.0
ROOM_RT60_S = (0.3, 0.6)  # "room": the speech said in a simulated room of this reverberation time, + pink noise


def speech_power(utterance: TimedUtterance) -> float:
    """Mean square of the samples inside words (the pauses are not speech)."""
    inside = np.concatenate([utterance.audio[int(s * SAMPLING_RATE):int(e * SAMPLING_RATE)]
                             for _, s, e in utterance.words])
    return float(np.mean(inside.astype(np.float64) ** 2))


def noise_for(kind: str, length: int, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    """Unit-power noise (at its full level) of one of NOISE_KINDS, `length` samples."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}.")
    if kind == "room":  # the room's own noise floor, under its reverberation (in_reverberant_room)
        return make_noise("pink", length, rng)
    if kind != "fan":
        return make_noise(kind, length, rng, others)
    noise = make_noise("pink", length, rng)
    switch = rng.uniform(0.2, 0.7) * length  # the fan switches on somewhere in the middle part
    t = (np.arange(length) - switch) / (FAN_RAMP_S * SAMPLING_RATE)
    quiet = 10 ** (-FAN_QUIET_DB / 20)
    return (noise * (quiet + (1 - quiet) * np.clip(t + 0.5, 0.0, 1.0))).astype(np.float32)


def in_reverberant_room(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`audio` as a microphone across a simulated room hears it (training/augment.py's image-method shoebox rooms,
    RT60 in ROOM_RT60_S), its clock starting when the direct sound arrives: the true word times hold for the
    direct sound, and the reverberation is what follows it (a word's tail, and sound in the pauses). Needs
    pyroomacoustics (the test and train extras), as the bench needs jiwer."""
    rir = room_impulse_response(rng, ROOM_RT60_S)
    return reverberate(audio, rir[int(np.argmax(np.abs(rir))):])


def with_noise(utterance: TimedUtterance, kind: str, snr_db: float | None, rng: np.random.Generator,
               others: list[np.ndarray]) -> TimedUtterance:
    """The utterance with noise at snr_db (speech power over the noise's full-level power); None: unchanged.
    "room": said in a simulated room first (in_reverberant_room), then pink noise."""
    if snr_db is None:
        return utterance
    if kind == "room":
        utterance = TimedUtterance(in_reverberant_room(utterance.audio, rng), utterance.text, utterance.words)
    noise = noise_for(kind, len(utterance.audio), rng, others)
    scale = np.sqrt(speech_power(utterance) / 10 ** (snr_db / 10))  # the noise has unit power at full level
    return TimedUtterance((utterance.audio + scale * noise).astype(np.float32), utterance.text, utterance.words)


def babble_sources(seed: int, count: int = 12) -> list[np.ndarray]:
    """Other speech for babble: digit strings of their own seed, never the ones measured."""
    return [u.audio for u in timed_digit_strings(count, seed=seed + 7919, min_digits=4)]


def boundary_errors(results: list[dict], utterances: list[TimedUtterance]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Signed start errors and signed end errors (seconds, + late) of the words of correctly transcribed
    utterances, and those words. (A wrong transcript has no word to compare: with a word inserted or dropped,
    which spoken word a transcribed one stands for is a guess, and the guess would be measured, not the times.)"""
    pairs = [(w, truth) for u, r in zip(utterances, results, strict=True) if r["text"] == u.text
             for w, truth in zip(r["words"], u.words)]
    starts = np.array([w["start"] - s for w, (_, s, _) in pairs])
    ends = np.array([w["end"] - e for w, (_, _, e) in pairs])
    return starts, ends, [name for _, (name, _, _) in pairs]


def long_boundary_errors(words: list[dict], recording: TimedUtterance,
                         pieces: list[TimedUtterance]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """boundary_errors for a long recording's long-form `words`: each transcribed word goes to the string
    (`pieces`, in order) whose stretch of the recording holds its middle, a stretch reaching halfway into the
    pauses either side; the strings whose words read as their text are measured against their true times."""
    timed, first = [], 0  # each string with its words at their times in the recording
    for piece in pieces:
        timed.append(TimedUtterance(piece.audio, piece.text, recording.words[first:first + len(piece.words)]))
        first += len(piece.words)
    spans = [(t.words[0][1], t.words[-1][2]) for t in timed]
    cuts = [(a[1] + b[0]) / 2 for a, b in itertools.pairwise(spans)]  # halfway through each pause
    heard: list[list[dict]] = [[] for _ in pieces]
    for w in words:
        heard[int(np.searchsorted(cuts, (w["start"] + w["end"]) / 2))].append(w)
    results = [{"text": " ".join(w["word"] for w in ws), "words": ws} for ws in heard]
    return boundary_errors(results, timed)


def pieces_of(recording: TimedUtterance, pieces: list[TimedUtterance]) -> list[np.ndarray]:
    """The noisy recording cut back into its strings (each with its own edges), for the one-by-one WER."""
    out, first_word = [], 0
    for piece in pieces:
        start = recording.words[first_word][1] - piece.words[0][1]  # where this piece's audio began
        a = round(start * SAMPLING_RATE)
        out.append(recording.audio[a:a + len(piece.audio)])
        first_word += len(piece.words)
    return out


def measure(model, processor, kinds=NOISE_KINDS, snrs=SNRS_DB, count: int = 24, seconds: float = 60.0,
            seed: int = 5150, clean: bool = True) -> list[dict]:
    """One row per (noise kind, SNR), plus a clean row: boundary errors and WERs (see the module docstring)."""
    import jiwer  # optional (the test extra): imported here so that the noise makers load without it

    utterances = timed_digit_strings(count, seed=seed)
    recording, pieces = long_recording(seconds, seed=seed + 1)
    others = babble_sources(seed)
    conditions = ([("clean", None)] if clean else []) + [(k, s) for k in kinds for s in snrs]
    rows = []
    for c, (kind, snr) in enumerate(conditions):
        began = time.perf_counter()
        rng = np.random.default_rng([seed, c])
        noisy = [with_noise(u, kind, snr, rng, others) for u in utterances]
        results = transcribe(model, [u.audio for u in noisy], processor=processor, timestamps=True)
        starts, ends, _ = boundary_errors(results, noisy)
        long_noisy = with_noise(recording, kind, snr, rng, others)
        short = transcribe(model, pieces_of(long_noisy, pieces), processor=processor)
        long = transcribe(model, long_noisy.audio, processor=processor, timestamps=True)
        wer = jiwer.wer([u.text for u in noisy], [r["text"] for r in results])
        rows.append(row(kind, snr, count, starts, ends, wer, recording, long, pieces, short, began))
        print(format_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def error_figures(starts: np.ndarray, ends: np.ndarray, prefix: str = "") -> dict:
    """Signed boundary errors (seconds) summarised in ms: the median and 90th percentile of |error| and the median
    signed error (bias, + late), for starts and ends each; NaN where no word was measured."""
    out = {}
    for name, err in (("start", starts), ("end", ends)):
        for stat, fn in (("median", np.median), ("p90", lambda x: np.percentile(x, 90))):
            out[f"{prefix}{name}_{stat}_ms"] = float(fn(np.abs(err))) * 1e3 if len(err) else float("nan")
        out[f"{prefix}{name}_bias_ms"] = float(np.median(err)) * 1e3 if len(err) else float("nan")
    return out


def row(noise: str, snr: float | None, count: int, starts: np.ndarray, ends: np.ndarray, wer: float,
        recording: TimedUtterance, long: dict, pieces: list[TimedUtterance], short: list[dict], began: float) -> dict:
    """One condition's figures: boundary errors of the short utterances and of the long recording's long-form
    words (words transcribed right, against `recording`'s true times), the WERs, the long-form words' order, and
    the seconds since `began`."""
    import jiwer  # optional (the test extra), as in measure()

    words = long["words"]
    long_starts, long_ends, _ = long_boundary_errors(words, recording, pieces)
    return {
        "noise": noise, "snr_db": snr, "utterances": count, "words_measured": len(starts), "wer": wer,
        **error_figures(starts, ends),
        "long_s": len(recording.audio) / SAMPLING_RATE,
        "long_wer": jiwer.wer(recording.text, long["text"]),
        "short_wer": jiwer.wer([p.text for p in pieces], [r["text"] for r in short]),
        "long_words_measured": len(long_starts), **error_figures(long_starts, long_ends, prefix="long_"),
        "long_words_ordered": all(a["end"] <= b["start"] + 1e-9 for a, b in zip(words, words[1:])),
        "seconds": time.perf_counter() - began,
    }


# ------------------------------------------------------------------------------------------ real voices
REAL_NOISES = (("own", None), ("white", 30), ("pink", 30))  # the recordings' own room, and noise added to it
FSDD_RATE = 8000  # FSDD's recordings: noise they carry is below 4 kHz too
ROOM_FRAME = 320  # 20 ms at 16 kHz: room tone is measured in windows of this, half overlapping
ROOM_PERCENTILE = 10.0  # ... the quietest of each speaker's windows: the room between and around the words


def room_tone(takes: list[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """`length` samples of the room the `takes` (16 kHz) were recorded in: steady noise with the power spectrum
    and level of their quietest 20 ms windows (the ROOM_PERCENTILE of the window powers: the room between and
    around the words). A room's tone is steady; the windows themselves, cut from takes recorded at different
    levels and strung together, would jump in level every 10 ms as no room does."""
    windows = np.concatenate([np.lib.stride_tricks.sliding_window_view(t, ROOM_FRAME)[::ROOM_FRAME // 2]
                              for t in takes if len(t) >= ROOM_FRAME]).astype(np.float64)  # (M, ROOM_FRAME)
    power = np.mean(windows ** 2, axis=1)
    quiet = windows[power <= np.percentile(power, ROOM_PERCENTILE)]
    spectrum = np.mean(np.abs(np.fft.rfft(quiet * np.hanning(ROOM_FRAME), axis=1)) ** 2, axis=0)  # (bins,)
    shaped = np.fft.rfft(rng.standard_normal(length))
    shaped *= np.sqrt(np.interp(np.fft.rfftfreq(length), np.fft.rfftfreq(ROOM_FRAME), spectrum))
    tone = np.fft.irfft(shaped, n=length)
    return (tone * np.sqrt(np.mean(quiet ** 2) / np.mean(tone ** 2))).astype(np.float32)


def band_limited_noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power `kind` noise as an 8 kHz recording carries it: made at FSDD_RATE and resampled to 16 kHz as
    load_audio resamples the recording (soxr), so that, like the speech, it has nothing above 4 kHz."""
    noise = soxr.resample(make_noise(kind, length // 2 + 16, rng), FSDD_RATE, SAMPLING_RATE)[:length]
    return (noise / np.sqrt(np.mean(noise.astype(np.float64) ** 2))).astype(np.float32)


def real_recordings(fsdd: str, seconds: float, seed: int) -> dict[str, tuple[TimedUtterance, list[TimedUtterance],
                                                                            list[np.ndarray]]]:
    """Per FSDD speaker: a long recording of that speaker's takes joined into digit strings (fsdd.speaker_strings:
    2-7 takes, 80-400 ms apart) and the strings joined with 0.6-1.5 s pauses until `seconds`, as long_recording
    joins espeak-ng's; the strings one by one; and the speaker's takes (for their room tone). The join points are
    the true word boundaries, to within the room tone FSDD's trimming left at each take's ends."""
    recordings = read_fsdd(fsdd)
    rng = random.Random(seed)
    out = {}
    for speaker in sorted({r.speaker for r in recordings}):
        own = [r for r in recordings if r.speaker == speaker]
        strings = [u for _, u, _ in speaker_strings(own, max(1, int(seconds / 1.5)), seed=seed)]
        recording, used = join_with_pauses(strings, seconds, rng)
        takes = [load_audio(r.path, SAMPLING_RATE) for r in own]
        out[speaker] = (recording, used, takes)
    return out


def with_room(recording: TimedUtterance, takes: list[np.ndarray], kind: str, snr_db: float | None,
              rng: np.random.Generator) -> TimedUtterance:
    """The recording over its speaker's own room tone (everywhere, the joins' exact zeros included), plus `kind`
    noise, band-limited as an 8 kHz recording's, at snr_db below the words (None: the room alone)."""
    audio = recording.audio + room_tone(takes, len(recording.audio), rng)
    if snr_db is not None:
        scale = np.sqrt(speech_power(recording) / 10 ** (snr_db / 10))
        audio = audio + scale * band_limited_noise(kind, len(audio), rng)
    return TimedUtterance(audio.astype(np.float32), recording.text, recording.words)


def measure_real(model, processor, fsdd: str, seconds: float = 90.0, seed: int = 5150,
                 noises=REAL_NOISES, speakers: list[str] | None = None) -> list[dict]:
    """One row per (FSDD speaker, noise): each speaker's long recording transcribed long-form, and its strings
    cut out of the same noisy audio transcribed one by one with timestamps: their word boundaries (strings
    transcribed correctly) against the join points, and both WERs. `speakers`: only these (their recordings and
    noise are the same as in a run over all). The bundled model trained on all four FSDD speakers (MODEL_CARD.md):
    with it these recordings are new takes' joins, not new voices; a leave-one-speaker-out model (main's
    --heldout) measures a voice it never heard."""
    import jiwer  # optional (the test extra), as in measure()

    rows = []
    for s, (speaker, (recording, pieces, takes)) in enumerate(real_recordings(fsdd, seconds, seed).items()):
        if speakers is not None and speaker not in speakers:
            continue
        for c, (kind, snr) in enumerate(noises):
            began = time.perf_counter()
            rng = np.random.default_rng([seed, s, c])
            noisy = with_room(recording, takes, kind, snr, rng)
            cut = pieces_of(noisy, pieces)  # each string with its own words' times
            short_pieces = [TimedUtterance(a, p.text, p.words) for a, p in zip(cut, pieces)]
            short = transcribe(model, cut, processor=processor, timestamps=True)
            starts, ends, _ = boundary_errors(short, short_pieces)
            long = transcribe(model, noisy.audio, processor=processor, timestamps=True)
            short_wer = jiwer.wer([p.text for p in pieces], [r["text"] for r in short])
            rows.append(row(f"{speaker}:{kind}", snr, len(pieces), starts, ends, short_wer, recording, long, pieces,
                            short, began))
            print(format_row(rows[-1]), file=sys.stderr, flush=True)
    return rows


def heldout_speakers(folds: str) -> list[str]:
    """The speakers with a leave-one-out model in `folds` (a folder per speaker, each a model folder)."""
    found = [name for name in os.listdir(folds) if os.path.isfile(os.path.join(folds, name, "config.json"))]
    if not found:
        raise FileNotFoundError(f"{folds}: no model folders (SPEAKER/config.json) in it")
    return found


HEADER = (f"{'noise':>16s} {'SNR':>4s} {'words':>5s} {'WER':>6s} | {'start med':>9s} {'p90':>5s} {'bias':>5s} | "
          f"{'end med':>7s} {'p90':>5s} {'bias':>5s} | {'long WER':>8s} {'1-by-1':>6s} | {'long words':>10s} "
          f"{'start med/p90':>13s} {'end med/p90':>11s}")


def format_row(r: dict) -> str:
    snr = "-" if r["snr_db"] is None else f"{r['snr_db']}"
    return (f"{r['noise']:>16s} {snr:>4s} {r['words_measured']:>5d} {r['wer']:6.1%} | {r['start_median_ms']:9.0f} "
            f"{r['start_p90_ms']:5.0f} {r['start_bias_ms']:+5.0f} | {r['end_median_ms']:7.0f} {r['end_p90_ms']:5.0f} "
            f"{r['end_bias_ms']:+5.0f} | {r['long_wer']:8.1%} {r['short_wer']:6.1%} | {r['long_words_measured']:10d} "
            f"{r['long_start_median_ms']:6.0f}/{r['long_start_p90_ms']:<6.0f} {r['long_end_median_ms']:5.0f}/"
            f"{r['long_end_p90_ms']:<5.0f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minispeechseq.tools.bench_noise", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=24, help="short utterances per condition")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each condition's long recording")
    parser.add_argument("--seed", type=int, default=5150)
    parser.add_argument("--kinds", nargs="+", default=list(NOISE_KINDS), choices=NOISE_KINDS)
    parser.add_argument("--snrs", nargs="+", type=float, default=list(SNRS_DB))
    parser.add_argument("--fsdd", help="also measure real voices: the FSDD folder (its recordings/)")
    parser.add_argument("--real-seconds", type=float, default=120.0, help="length of each speaker's recording")
    parser.add_argument("--model", help="the model folder (default: the bundled model)")
    parser.add_argument("--heldout", metavar="FOLDS",
                        help="real voices heard by models that never heard them: FOLDS/SPEAKER is a model trained "
                             "without SPEAKER (tutorials/results/voices/folds); only those speakers are measured")
    parser.add_argument("--real-only", action="store_true", help="skip the espeak-ng conditions")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    if (args.heldout or args.real_only) and not args.fsdd:
        parser.error("--heldout and --real-only measure real voices: give --fsdd too")
    folder = args.model or bundled_model_dir()
    model, processor = SpeechEncoderDecoderModel.from_pretrained(folder), Processor.from_pretrained(folder)
    print(HEADER, file=sys.stderr)
    rows = [] if args.real_only else measure(model, processor, args.kinds,
                                             [int(s) if s == int(s) else s for s in args.snrs], args.count,
                                             args.seconds, args.seed)
    if args.heldout:
        for speaker in sorted(heldout_speakers(args.heldout)):
            fold = os.path.join(args.heldout, speaker)
            rows += [{**r, "model": fold, "heldout": True} for r in measure_real(
                SpeechEncoderDecoderModel.from_pretrained(fold), Processor.from_pretrained(fold), args.fsdd,
                args.real_seconds, args.seed, speakers=[speaker])]
    elif args.fsdd:
        rows += measure_real(model, processor, args.fsdd, args.real_seconds, args.seed)
    print(HEADER)
    for r in rows:
        print(format_row(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
