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
       not separate sounds. Both thresholds are at least a fraction of the recording's loudest frames' rise, so
       a murmur of other voices, which rises above its own floor too, is judged against the talker's level.

On digital silence (exact zeros) the floor is the silence itself and every sound is far above it: the detector
then finds what an absolute threshold finds.

`sound_runs` is the one detector of the package: long-form chunking cuts in its pauses (longform.py), and word
boundaries move into them (timestamps.refine_with_sound). Memory stays flat in the recording's length: frames
are analysed BLOCK_FRAMES at a time, and what is kept is 16 numbers per 10 ms.

Shape legend: L audio samples, N frames (one per 10 ms), K bands.
"""

from __future__ import annotations

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
SOFT_EDGE_FRAMES = 5  # ... but a sound's onset and tail may reach down there for up to 50 ms
MIN_PAUSE_S = 0.02  # dips shorter than this do not separate two sounds
BLOCK_FRAMES = 3000  # frames analysed at once: 30 s of audio
SILENT_DB = -120.0  # the level of digital silence, so that log(0) never occurs


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


def loudness(samples: np.ndarray, sampling_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """How far each 10 ms frame rises above the local background, the mean over bands in dB (N,), and whether
    it is within BELOW_PEAK_DB of the loudest frame (N,): far below it is quiet however it varies (distant
    voices), so no sound starts there; a sound's soft onset and tail may reach down there."""
    levels = band_levels(samples, sampling_rate)
    rise = np.clip(levels - local_floor(levels) - NOISE_SPREAD_DB, 0.0, None).mean(axis=1)  # (N,)
    power = 10 * np.log10(np.sum(10 ** (levels.astype(np.float64) / 10), axis=1))  # (N,): all bands together
    return rise, power >= (power.max() if len(power) else 0.0) - BELOW_PEAK_DB


def sound_runs(samples: np.ndarray, sampling_rate: int, min_pause_s: float = MIN_PAUSE_S) -> list[tuple[float, float]]:
    """The stretches of sound in `samples` (L,), judged against the recording's own background: (start, end) in
    seconds per stretch, in order, separated by pauses of at least min_pause_s."""
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be a positive number of samples per second, got {sampling_rate}.")
    if np.ndim(samples) != 1:
        raise ValueError(f"sound_runs takes one channel (a 1-D waveform), got shape {np.shape(samples)}.")
    rise, near_peak = loudness(samples, sampling_rate)
    peak = float(np.percentile(rise, 95)) if len(rise) else 0.0
    on, off = max(ON_DB, ON_FRACTION * peak), max(OFF_DB, OFF_FRACTION * peak)
    above_off = np.append(rise > off, False)
    runs: list[list[int]] = []
    i, n = 0, len(rise)
    while i < n:
        if rise[i] <= on or not near_peak[i]:
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
    length = len(samples) / sampling_rate
    # A frame starts hearing a sound (FRAME_S - HOP_S) / 2 before its own 10 ms, and stops as long after.
    inset = (FRAME_S - HOP_S) / 2
    return [(min((a + 0.5) * HOP_S + inset, length), min(max((b - 0.5) * HOP_S - inset, (a + 0.5) * HOP_S + inset),
                                                         length)) for a, b in runs]
