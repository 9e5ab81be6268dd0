"""Where is someone speaking? Sound and pauses judged against the recording's own background.

Real recordings never fall silent: between words there is the hum of a room, a fan, other people. So a pause is
not "near zero" but "no louder than the background here", and the background is measured from the recording:

    1. the waveform is cut into 25 ms frames every 10 ms (the resolution of every time below), and each frame's
       power spectrum is summed into BANDS bands, log-spaced from 100 Hz to the Nyquist frequency, in dB;
    2. the floor of each band is a low percentile (FLOOR_PERCENTILE) of that band over FLOOR_WINDOW_S / 2 before
       and after each moment, the larger of the two: speech fills a band only part of the time, so its quietest
       frames are the background, and the moving windows follow a background that changes (a fan switching on);
       the floor never rises more than MAX_RISE_DB above that of the surrounding BACKGROUND_WINDOW_S, so a long
       stretch of unbroken speech is not taken for background;
    3. a frame's loudness above the background is the mean over the bands of how far each band rises above its
       floor (less NOISE_SPREAD_DB, what noise itself rises by): judging each band against its own floor makes
       white, pink and brown noise alike, and a sound that fills a few bands (the hiss of "six") still counts;
    4. hysteresis: sound starts where that loudness passes ON_DB and extends, backwards and forwards, while it
       stays above OFF_DB, so a word's soft onset and tail belong to the word; dips shorter than min_pause_s do
       not separate sounds, and a soft sound just after a stop's closure (the /s/ of "six") joins its word.
       Both thresholds are at least a fraction of the recording's loudest frames' rise;
    5. other voices (babble) rise above their own floor too, and fall back, as the talker does: what sets the
       talker apart is that it is louder. Otsu's threshold on the histogram of frame levels (over 10 s around
       each moment) splits the talker from the background; a sound starts only at or near the talker's level,
       and both thresholds are at least BACKGROUND_FACTOR times how far the background frames themselves rise
       (their median: robust to the talker's soft sounds among them). A steady noise hardly rises, so under it
       the thresholds stay as in 4.

On digital silence (exact zeros) the floor is the silence itself and every sound is far above it: the detector
then finds what an absolute threshold finds.

`sound_runs` is the one detector of the package: long-form chunking cuts in its pauses (longform.py), and word
boundaries move into them (timestamps.refine_with_sound). Memory stays flat in the recording's length: frames
are analysed BLOCK_FRAMES at a time, and what is kept is 16 numbers per 10 ms.

Shape legend: L audio samples, N frames (one per 10 ms), K bands.
"""

from __future__ import annotations

import bisect

import numpy as np

HOP_S = 0.010  # one frame every 10 ms: the resolution of sound and pause edges
FRAME_S = 0.025  # each frame sees 25 ms, centred on its 10 ms
BANDS = 16
LOWEST_HZ = 100.0  # below this is mains hum and rumble, not speech
FLOOR_WINDOW_S = 1.5  # the background is measured over this much audio around each moment
FLOOR_PERCENTILE = 10.0  # ... as this percentile of each band's level: speech leaves a band quiet this often
FLOOR_STEP_S = 0.1  # the floor is computed every 100 ms and interpolated between
BACKGROUND_WINDOW_S = 10.0  # ... and never rises more than MAX_RISE_DB above the floor of this much audio:
MAX_RISE_DB = 15.0  # unbroken speech longer than FLOOR_WINDOW_S is not background (a fan adds less than this)
NOISE_SPREAD_DB = 3.0  # a band of noise rises this much above its floor by chance: not counted as sound
ON_DB = 4.0  # mean rise over the bands (after NOISE_SPREAD_DB) where a sound starts, at least (noise alone: 1 % of
# frames pass 3 dB)
OFF_DB = 2.5  # ... and where it ends (hysteresis), at least: above what 9 frames of noise in 10 reach (2.2 dB)
# ... and at least these fractions of the recording's loud frames' rise (its 95th percentile): a murmur of other
# voices rises above its own floor too, and only the talker's level says how much is background.
ON_FRACTION, OFF_FRACTION = 0.15, 0.075
BELOW_PEAK_DB = 40.0  # no sound starts this far below the recording's loudest frame (the detector before this one)
# The talker / background split of the frame levels (Otsu's threshold), measured over this much audio around each
# moment, so that a talker who grows quieter (or a fan that switches on) moves it:
SPLIT_WINDOW_S = 10.0
SPLIT_STEP_S = 1.0
SPLIT_BIN_DB = 1.0  # the histogram's resolution
TALKER_GUARD_S = 0.15  # a sound starts no further than this from a frame at the talker's level (a soft onset)
BACKGROUND_GUARD_S = 0.05  # background frames are at least this far from a talker-level frame (within a word,
# the dips between syllables are nearer than this)
BACKGROUND_RISE_WINDOW_S = 5.0  # how far the background rises above its floor is measured over this much audio
BACKGROUND_PERCENTILE = 50.0  # ... as this percentile of the rise of its frames (robust to a talker's soft sounds)
BACKGROUND_FACTOR = 1.5  # ... times this: a sound rises further
BACKGROUND_STEP_S = 0.5
BACKGROUND_MIN_S = 0.25  # ... where the window holds this much background (else over the whole recording's)
SOFT_EDGE_FRAMES = 5  # ... but a sound's onset and tail may reach down there for up to 50 ms
MIN_PAUSE_S = 0.02  # dips shorter than this do not separate two sounds
SOFT_SOUND_S = 0.05  # a stretch above OFF this long that never reaches ON is a soft sound (a fricative), not noise
CLOSURE_S = 0.1  # ... and belongs to a sound that ends this close before it: a stop's closure ("si_x") is no pause
CODA_DB = 15.0  # ... and a sound after a closure this far below the one before it is that sound's coda
BLOCK_FRAMES = 3000  # frames analysed at once: 30 s of audio
SILENT_DB = -120.0  # the level of digital silence, so that log(0) never occurs
DIGITAL_SILENCE_DB = SILENT_DB + 30.0  # a frame (all bands together) below this holds (near) exact zeros


def band_levels(samples: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Each 10 ms frame's power in BANDS log-spaced bands, in dB: (N, K). Frame i is centred on sample
    (i + 0.5) * hop."""
    hop, size = round(HOP_S * sampling_rate), round(FRAME_S * sampling_rate)
    n = len(samples) // hop
    if n == 0:
        return np.zeros((0, BANDS), dtype=np.float32)
    freqs = np.fft.rfftfreq(size, 1.0 / sampling_rate)
    edges = np.geomspace(LOWEST_HZ, sampling_rate / 2, BANDS + 1)
    band_of = np.searchsorted(edges, freqs, side="right") - 1  # (bins,): -1 below LOWEST_HZ, BANDS at Nyquist
    band_of[band_of >= BANDS] = BANDS - 1
    to_bands = (band_of[:, None] == np.arange(BANDS)).astype(np.float32)  # (bins, K): which band each bin adds to
    window = np.hanning(size).astype(np.float32)
    pad = (size - hop) // 2
    wave = np.asarray(samples, dtype=np.float32)
    out = np.empty((n, BANDS), dtype=np.float32)
    for first in range(0, n, BLOCK_FRAMES):
        last = min(n, first + BLOCK_FRAMES)
        lo, hi = first * hop - pad, (last - 1) * hop - pad + size  # the samples these frames see
        piece = wave[max(lo, 0):min(hi, len(wave))]
        piece = np.pad(piece, (max(0, -lo), max(0, hi - len(wave))))  # zeros beyond the recording's ends
        frames = np.lib.stride_tricks.sliding_window_view(piece, size)[::hop]  # (block, size), a view
        power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (block, bins)
        summed = power @ to_bands  # (block, K)
        out[first:last] = 10 * np.log10(np.maximum(summed, 10 ** (SILENT_DB / 10)))
    return out


def total_power(levels: np.ndarray) -> np.ndarray:
    """Each frame's power, all bands together, in dB: (N,), from band levels (N, K) in dB."""
    return 10 * np.log10(np.sum(10 ** (levels.astype(np.float64) / 10), axis=1))


def rolling_percentile(x: np.ndarray, before: int, after: int, q: float, step_s: float = FLOOR_STEP_S) -> np.ndarray:
    """The q-th percentile of x (N, K) over frames [i - before, i + after] around each frame i: (N, K), computed
    every step_s and interpolated (each window at most before + after + 1 frames: flat in memory)."""
    n = len(x)
    step = max(1, round(step_s / HOP_S))
    centres = np.arange(0, n, step)
    if centres[-1] != n - 1:
        centres = np.append(centres, n - 1)
    at = np.stack([np.percentile(x[max(0, c - before):c + after + 1], q, axis=0) for c in centres])  # (points, K)
    return np.stack([np.interp(np.arange(n), centres, at[:, k]) for k in range(x.shape[1])], axis=1)


def local_floor(levels: np.ndarray) -> np.ndarray:
    """The background level of each band around each frame: (N, K), from `levels` (N, K) in dB.

    The larger of the floors measured just before and just after each frame: where the background steps up (a fan
    switching on), the window after the step already hears only the new level, and where it steps down the window
    before does; a floor over a window centred on the step would lag it by half the window."""
    if len(levels) == 0:
        return levels
    side, wide = round(FLOOR_WINDOW_S / 2 / HOP_S), round(BACKGROUND_WINDOW_S / 2 / HOP_S)
    local = np.maximum(rolling_percentile(levels, side, 0, FLOOR_PERCENTILE),
                       rolling_percentile(levels, 0, side, FLOOR_PERCENTILE))
    background = rolling_percentile(levels, wide, wide, FLOOR_PERCENTILE, step_s=1.0)
    return np.minimum(local, background + MAX_RISE_DB)


def otsu_threshold(values: np.ndarray) -> float:
    """The level (dB) that splits `values` (M,) into two classes with the largest variance between them (Otsu,
    1979), on a histogram of SPLIT_BIN_DB bins: where a recording's loud frames part from its quiet ones."""
    edges = np.arange(np.floor(values.min()), np.ceil(values.max()) + 2 * SPLIT_BIN_DB, SPLIT_BIN_DB)
    counts, _ = np.histogram(values, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    below, below_sum = np.cumsum(counts)[:-1], np.cumsum(counts * centres)[:-1]  # the class under each cut
    total, total_sum = counts.sum(), (counts * centres).sum()
    above = total - below
    between = (below_sum * total - total_sum * below) ** 2 / np.maximum(below * above, 1)  # (mu0 - mu1)^2 w0 w1
    between[(below == 0) | (above == 0)] = -1.0
    return float(edges[1:-1][int(np.argmax(between))]) if len(between) else float(values.min())


def talker_split(power: np.ndarray) -> np.ndarray:
    """The level (dB) that parts the talker from the background around each frame: (N,), from each frame's
    power (N,), Otsu's threshold over SPLIT_WINDOW_S of frames. Exact zeros (digital silence, joins of clips)
    are left out: they are neither, and would split the recording into silence and everything else."""
    n, half, step = len(power), round(SPLIT_WINDOW_S / 2 / HOP_S), max(1, round(SPLIT_STEP_S / HOP_S))
    centres = np.append(np.arange(0, n, step), n - 1)
    split = []
    for c in centres:
        heard = power[max(0, c - half):c + half + 1]
        heard = heard[heard > DIGITAL_SILENCE_DB]
        split.append(otsu_threshold(heard) if len(heard) > 1 else SILENT_DB)
    return np.interp(np.arange(n), centres, split)


def background_rise(rise: np.ndarray, background: np.ndarray) -> np.ndarray:
    """How far the background itself rises above its floor around each frame: (N,), the BACKGROUND_PERCENTILE of
    `rise` (N,) over the `background` frames (N,) bool within BACKGROUND_RISE_WINDOW_S (over all of them where a
    window holds fewer than BACKGROUND_MIN_S; 0 where there are none). A steady noise hardly rises above its own
    floor, but a murmur of voices rises and falls like speech: only what rises further is the talker."""
    n, half, step = len(rise), round(BACKGROUND_RISE_WINDOW_S / 2 / HOP_S), max(1, round(BACKGROUND_STEP_S / HOP_S))
    fewest = round(BACKGROUND_MIN_S / HOP_S)
    everywhere = float(np.percentile(rise[background], BACKGROUND_PERCENTILE)) if background.any() else 0.0
    centres = np.append(np.arange(0, n, step), n - 1)
    at = []
    for c in centres:
        lo, hi = max(0, c - half), c + half + 1
        quiet = rise[lo:hi][background[lo:hi]]
        at.append(float(np.percentile(quiet, BACKGROUND_PERCENTILE)) if len(quiet) >= fewest else everywhere)
    return np.interp(np.arange(n), centres, at)


def within(mask: np.ndarray, seconds: float) -> np.ndarray:
    """Frames (N,) within `seconds` of a frame where `mask` (N,) is true."""
    reach = round(seconds / HOP_S)
    return np.convolve(mask, np.ones(2 * reach + 1), mode="full")[reach:reach + len(mask)] > 0


def loudness(samples: np.ndarray, sampling_rate: int) -> tuple[np.ndarray, ...]:
    """How far each 10 ms frame rises above the local background, the mean over bands in dB (N,); how far the
    background alone rises there (N,, `background_rise`); whether a sound may start there (N,): within
    TALKER_GUARD_S of a frame at the talker's level (`talker_split`) and within BELOW_PEAK_DB of the loudest
    frame; whether it is within BELOW_PEAK_DB (N,): a sound's soft onset and tail may reach below that; and
    each frame's power, all bands together (N,) in dB."""
    levels = band_levels(samples, sampling_rate)
    power = total_power(levels)  # (N,)
    near_peak = power >= (power.max() if len(power) else 0.0) - BELOW_PEAK_DB
    rise = np.clip(levels - local_floor(levels) - NOISE_SPREAD_DB, 0.0, None).mean(axis=1)  # (N,)
    if len(levels) == 0:
        return rise, rise, near_peak, near_peak, power
    talker = power >= talker_split(power)  # (N,)
    background = ~within(talker, BACKGROUND_GUARD_S)  # neither at the talker's level nor next to it
    may_start = near_peak & within(talker, TALKER_GUARD_S)
    return rise, BACKGROUND_FACTOR * background_rise(rise, background), may_start, near_peak, power


def with_soft_sounds(runs: list[list[int]], above_off: np.ndarray) -> list[list[int]]:
    """`runs` ([first, last + 1] frame each, in order) joined by the soft sounds after them: a stretch of at
    least SOFT_SOUND_S above the `off` level (N,) bool that never reached `on` (the /s/ of "six" after its /k/,
    under noise) belongs to a run that ends within CLOSURE_S before it: the gap between them is a stop's
    closure, not a pause. (A soft onset needs no such rule: with no gap before its vowel, it is in its run.)"""
    closure, shortest = round(CLOSURE_S / HOP_S), round(SOFT_SOUND_S / HOP_S)
    starts = [r[0] for r in runs]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above_off.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):  # each stretch above `off`: frames [a, b)
        k = bisect.bisect_right(starts, a) - 1  # the last run starting at or before a; k + 1 starts after it
        before = runs[k] if k >= 0 else None
        after = runs[k + 1] if k + 1 < len(runs) else None
        if b - a < shortest or (before and before[1] > a) or (after and after[0] < b):
            continue  # too short for a sound, or part of a run already
        if before and a - before[1] <= closure:  # a coda after its closure, as in "six"
            before[1] = b
    return runs


def with_codas(runs: list[list[int]], power: np.ndarray) -> list[list[int]]:
    """`runs` ([first, last + 1] frame each, in order) with each run that starts within CLOSURE_S after the one
    before and stays CODA_DB below its loudest frame (power (N,) in dB) joined to it: the burst and hiss after a
    stop's closure ("si_x") are a word's coda, not a word; a word after a short pause has a vowel of its own."""
    out: list[list[int]] = []
    closure = round(CLOSURE_S / HOP_S)
    for run in runs:
        if out and run[0] - out[-1][1] <= closure and (
                power[run[0]:run[1]].max() <= power[out[-1][0]:out[-1][1]].max() - CODA_DB):
            out[-1][1] = run[1]
        else:
            out.append(list(run))
    return out


def sound_runs(samples: np.ndarray, sampling_rate: int, min_pause_s: float = MIN_PAUSE_S) -> list[tuple[float, float]]:
    """The stretches of sound in `samples` (L,), judged against the recording's own background: (start, end) in
    seconds per stretch, in order, separated by pauses of at least min_pause_s."""
    return sounds_and_power(samples, sampling_rate, min_pause_s)[0]


def sounds_and_power(samples: np.ndarray, sampling_rate: int,
                     min_pause_s: float = MIN_PAUSE_S) -> tuple[list[tuple[float, float]], np.ndarray]:
    """`sound_runs`, and each 10 ms frame's power (N,) in dB that it measured on the way (word boundaries that find
    no pause look for a dip in it: timestamps.into_valleys), so the spectrum is taken once."""
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of samples per second, got {sampling_rate}.")
    if np.ndim(samples) != 1:
        raise ValueError(f"sound_runs takes one channel (a 1-D waveform), got shape {np.shape(samples)}.")
    rise, background, may_start, near_peak, power = loudness(samples, sampling_rate)
    peak = float(np.percentile(rise, 95)) if len(rise) else 0.0
    on, off = max(ON_DB, ON_FRACTION * peak), max(OFF_DB, OFF_FRACTION * peak)
    on, off = np.maximum(on, background + ON_DB - OFF_DB), np.maximum(off, background)  # (N,) each
    above_off = np.append(rise > off, False)
    runs: list[list[int]] = []
    i, n = 0, len(rise)
    while i < n:
        if rise[i] <= on[i] or not may_start[i]:
            i += 1
            continue
        start, faint = i, 0
        while start > 0 and above_off[start - 1] and faint < SOFT_EDGE_FRAMES:  # the soft onset before `on`
            start -= 1
            faint = 0 if near_peak[start] else faint + 1
        end, faint = i, 0
        while above_off[end] and faint < SOFT_EDGE_FRAMES:  # the tail, while it stays above `off`
            faint = 0 if near_peak[end] else faint + 1
            end += 1
        if runs and start - runs[-1][1] < max(1, round(min_pause_s / HOP_S)):
            runs[-1][1] = end  # a short dip inside one sound
        else:
            runs.append([start, end])
        i = end
    runs = with_codas(with_soft_sounds(runs, above_off[:-1] & near_peak), power)
    length = len(samples) / sampling_rate
    # A frame starts hearing a sound (FRAME_S - HOP_S) / 2 before its own 10 ms, and stops as long after.
    inset = (FRAME_S - HOP_S) / 2
    return [(min((a + 0.5) * HOP_S + inset, length), min(max((b - 0.5) * HOP_S - inset, (a + 0.5) * HOP_S + inset),
                                                         length)) for a, b in runs], power
