"""Augmentation for voices, rooms and microphones the model never heard.

A model trained on clean synthetic speech learns the synthesizer: one vocal tract per voice, no room, a full
16 kHz band, no noise. Each function below changes one of those, on a float32 waveform at 16 kHz, and can be read
and tested alone; `VoiceAugmentation` draws which of them an utterance gets.

| function | what it imitates | how |
|---|---|---|
| `change_speed` | faster / slower speakers (tempo and pitch together) | resampling (Ko et al. 2015, "Audio augmentation for speech recognition") |
| `warp_formants` | other vocal-tract lengths at the same pitch | the spectrum's frequency axis stretched (VTLP: Jaitly & Hinton 2013) |
| `band_limit` | telephone lines and 8 kHz recordings (nothing above 4 kHz) | a Butterworth band-pass (scipy.signal) |
| `random_eq` | microphones and rooms that colour the sound | a smooth random gain curve over frequency |
| `reverberate` | a room | convolution with a shoebox room's impulse response (pyroomacoustics, image method) |
| `add_noise` | background noise at a chosen SNR | white, pink, brown, or babble (other speech mixed low) |

The libraries: soxr (a runtime dependency) resamples; scipy.signal designs the filters and convolves;
pyroomacoustics simulates rooms. The last two are the `train` extra (setup.cfg says why).

Shape legend: L audio samples, F frequency bins, N frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr

from .data import SAMPLING_RATE

NOISE_TYPES = ("white", "pink", "brown", "babble")


def _scipy_signal():
    # Imported on use: scipy is the `train` extra, and the library itself (transcribing) never needs it.
    try:
        from scipy import signal  # optional: the `train` extra
    except ImportError as e:
        raise ImportError("This augmentation needs scipy: pip install 'minispeechseq[train]'.") from e
    return signal


def _power(wave: np.ndarray) -> float:
    return float(np.mean(np.square(wave, dtype=np.float64))) + 1e-12


# ================================================================================================ the voice
def change_speed(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `wave` `factor` times faster: the length divides by `factor`, the pitch and formants multiply by it.

    Resampling from SAMPLING_RATE * factor to SAMPLING_RATE reads the same samples as if they had been recorded
    at a higher rate: fewer output samples for the same sound."""
    if factor <= 0:
        raise ValueError(f"speed factor must be > 0, got {factor}.")
    return soxr.resample(wave, SAMPLING_RATE * factor, SAMPLING_RATE).astype(np.float32, copy=False)


def warp_formants(wave: np.ndarray, alpha: float, n_fft: int = 512) -> np.ndarray:
    """Move the spectral envelope (formants) by `alpha` at the same length and pitch: a shorter vocal tract
    (alpha > 1) puts every formant higher.

    Vocal tract length perturbation (VTLP): in each STFT frame the magnitude at frequency f is taken from
    f / alpha of the original (linear interpolation between bins), the phase is kept. The harmonics' spacing
    (the pitch) is blurred little at alpha within ±15 %, which is the range used here."""
    signal = _scipy_signal()
    if not 0.5 <= alpha <= 2.0:
        raise ValueError(f"formant warp alpha must be within [0.5, 2], got {alpha}.")
    if len(wave) < n_fft:
        return wave.astype(np.float32, copy=True)
    _, _, spec = signal.stft(wave, nperseg=n_fft, noverlap=n_fft * 3 // 4)  # (F, N) complex
    source = np.arange(spec.shape[0]) / alpha  # the original bin each output bin reads (fractional)
    below = np.floor(source).astype(int)
    frac = (source - below)[:, None]  # (F, 1)
    magnitude = np.pad(np.abs(spec), ((0, 2), (0, 0)))  # (F + 2, N): bins past the top read as 0
    below = np.minimum(below, magnitude.shape[0] - 2)
    warped = magnitude[below] * (1 - frac) + magnitude[below + 1] * frac  # (F, N), linear interpolation
    _, out = signal.istft(warped * np.exp(1j * np.angle(spec)), nperseg=n_fft, noverlap=n_fft * 3 // 4)
    out = out[: len(wave)]
    if len(out) < len(wave):
        out = np.pad(out, (0, len(wave) - len(out)))
    return (out * np.sqrt(_power(wave) / _power(out))).astype(np.float32)  # same loudness


# ============================================================================================ the channel
def band_limit(wave: np.ndarray, low_hz: float | None, high_hz: float | None, order: int = 8) -> np.ndarray:
    """Keep the band [low_hz, high_hz] (either side None: no limit there), with a Butterworth filter.

    300-3400 Hz is the telephone band; high_hz = 4000 is what an 8 kHz recording holds."""
    signal = _scipy_signal()
    nyquist = SAMPLING_RATE / 2
    if low_hz is not None and high_hz is not None and not 0 < low_hz < high_hz < nyquist:
        raise ValueError(f"band must satisfy 0 < low < high < {nyquist:.0f} Hz, got {low_hz} and {high_hz}.")
    if low_hz is not None and high_hz is not None:
        sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=SAMPLING_RATE, output="sos")
    elif high_hz is not None:
        sos = signal.butter(order, high_hz, btype="lowpass", fs=SAMPLING_RATE, output="sos")
    elif low_hz is not None:
        sos = signal.butter(order, low_hz, btype="highpass", fs=SAMPLING_RATE, output="sos")
    else:
        return wave.astype(np.float32, copy=True)
    return signal.sosfilt(sos, wave).astype(np.float32)


def random_eq(wave: np.ndarray, rng: np.random.Generator, max_db: float = 8.0, points: int = 6) -> np.ndarray:
    """Colour the sound like an unknown microphone: a gain curve drawn at `points` log-spaced frequencies
    (uniform in ±max_db), interpolated over log frequency, applied in the frequency domain; loudness kept."""
    spectrum = np.fft.rfft(wave)  # (F,)
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLING_RATE)
    anchors = np.geomspace(60.0, SAMPLING_RATE / 2, points)
    gains_db = rng.uniform(-max_db, max_db, points)
    curve = np.interp(np.log(np.maximum(freqs, 1.0)), np.log(anchors), gains_db)
    out = np.fft.irfft(spectrum * 10.0 ** (curve / 20.0), n=len(wave))
    return (out * np.sqrt(_power(wave) / _power(out))).astype(np.float32)


# =============================================================================================== the room
def room_impulse_response(rng: np.random.Generator, rt60_s: tuple[float, float] = (0.15, 0.6)) -> np.ndarray:
    """The impulse response from a talker to a microphone in a random shoebox room (image method).

    Room 3-10 x 3-8 x 2.5-4 m, reverberation time (RT60) in `rt60_s`, talker and microphone at least 0.5 m from
    the walls. Normalised so the direct path has amplitude 1."""
    try:
        import pyroomacoustics as pra  # optional: the `train` extra, imported on use like scipy
    except ImportError as e:
        raise ImportError("Reverberation needs pyroomacoustics: pip install 'minispeechseq[train]'.") from e
    size = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.5, 4)])
    volume, surface = np.prod(size), 2 * (size[0] * size[1] + size[0] * size[2] + size[1] * size[2])
    # Sabine: RT60 = 0.161 V / (S a), so even fully absorbing walls (a = 1) leave 0.161 V / S; a shorter RT60
    # than that is no real room of this size, so it is raised to just above.
    rt60 = max(rng.uniform(*rt60_s), 1.1 * 0.161 * volume / surface)
    absorption, max_order = pra.inverse_sabine(rt60, size)
    room = pra.ShoeBox(size, fs=SAMPLING_RATE, materials=pra.Material(absorption), max_order=min(max_order, 12))

    def place() -> list[float]:
        return [rng.uniform(0.5, side - 0.5) for side in size[:2]] + [rng.uniform(1.0, 1.8)]

    room.add_source(place())
    room.add_microphone(place())
    room.compute_rir()
    rir = np.asarray(room.rir[0][0], dtype=np.float64)
    return (rir / np.max(np.abs(rir))).astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wave` said in the room of `rir`: convolved, cut to its own length (the tail past the end is dropped, as a
    recording that stops would drop it), and scaled back to the original loudness."""
    out = _scipy_signal().fftconvolve(wave, rir)[: len(wave)]
    return (out * np.sqrt(_power(wave) / _power(out))).astype(np.float32)


# ============================================================================================== the noise
def coloured_noise(length: int, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: white (flat), pink (power 1/f: each octave the same energy) or brown (1/f^2)."""
    white = rng.standard_normal(length)
    if kind == "white":
        noise = white
    elif kind in ("pink", "brown"):
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(length, 1 / SAMPLING_RATE), 20.0)  # no infinite power at 0 Hz
        spectrum /= np.sqrt(freqs) if kind == "pink" else freqs  # amplitude ~ f^-1/2 (pink) or f^-1 (brown)
        noise = np.fft.irfft(spectrum, n=length)
    else:
        raise ValueError(f"noise kind must be one of white, pink, brown (babble is made from speech), got {kind!r}.")
    return (noise / np.sqrt(_power(noise))).astype(np.float32)


def babble(length: int, speech: Sequence[np.ndarray], rng: np.random.Generator, talkers: int = 4) -> np.ndarray:
    """Unit-power babble: `talkers` other utterances (drawn from `speech`), each at a random offset and
    looped to `length`, summed: the murmur of a room full of people."""
    if not speech:
        raise ValueError("babble needs other speech to mix.")
    mix = np.zeros(length, dtype=np.float64)
    for _ in range(talkers):
        other = speech[int(rng.integers(len(speech)))]
        if len(other) == 0:
            continue
        other = other / np.sqrt(_power(other))
        start = int(rng.integers(len(other)))
        mix += np.resize(np.roll(other, -start), length)  # looped: np.resize repeats the array
    return (mix / np.sqrt(_power(mix))).astype(np.float32)


def make_noise(kind: str, length: int, rng: np.random.Generator, others: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Unit-power noise of one of NOISE_TYPES; babble is made from `others` (pink noise stands in without them)."""
    if kind == "babble":
        return babble(length, others, rng) if others else coloured_noise(length, "pink", rng)
    return coloured_noise(length, kind, rng)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float, speech_power: float | None = None) -> np.ndarray:
    """`wave` + `noise` scaled so that speech power / noise power = snr_db.

    `speech_power` defaults to the power of `wave`; pass the power of the speech alone when `wave` carries
    added silence, which would otherwise lower the measured power and let the noise drown the speech."""
    if len(noise) != len(wave):
        raise ValueError(f"noise has {len(noise)} samples, the speech {len(wave)}.")
    power = _power(wave) if speech_power is None else speech_power
    scale = np.sqrt(power / (_power(noise) * 10.0 ** (snr_db / 10.0)))
    return (wave + noise * scale).astype(np.float32)


# ========================================================================================== all together
@dataclass
class VoiceAugmentation:
    """Per utterance, in the order sound meets them: the speaker (speed, formants), silence around the words,
    the room (reverberation), the channel (band, EQ), the noise, the level. Each stage has its probability;
    a probability of 0 switches it off (how each was measured: the model card's ablation).

    With every probability at 0 it draws what `data.Augmentation` draws (silence, gain, white noise at 15-40 dB),
    from the same distributions in another order."""

    max_silence_s: float = 0.3  # leading and trailing silence, each uniform in [0, max]
    gain_db: tuple[float, float] = (-6.0, 6.0)
    speed_p: float = 0.0
    speed: tuple[float, float] = (0.85, 1.15)
    formant_p: float = 0.0
    formant: tuple[float, float] = (0.87, 1.15)
    reverb_p: float = 0.0
    band_p: float = 0.0  # a band limit: low cut 50-400 Hz, high cut 3-7.5 kHz
    eq_p: float = 0.0
    snr_db: tuple[float, float] = (15.0, 40.0)
    noise_types: tuple[str, ...] = ("white",)  # drawn uniformly per utterance

    rooms_in_bank: int = 64

    def __post_init__(self) -> None:
        unknown = set(self.noise_types) - set(NOISE_TYPES)
        if unknown or not self.noise_types:
            raise ValueError(f"noise_types must be a non-empty subset of {NOISE_TYPES}, got {self.noise_types}.")
        self._rooms: list[np.ndarray] | None = None

    @property
    def rooms(self) -> list[np.ndarray]:
        """A fixed bank of room impulse responses, simulated once (a room takes ~0.1 s; an utterance ~0.01 s)."""
        if self._rooms is None:
            rng = np.random.default_rng(12345)  # the same rooms in every run and every DataLoader worker
            self._rooms = [room_impulse_response(rng) for _ in range(self.rooms_in_bank)]
        return self._rooms

    def __call__(self, wave: np.ndarray, rng: np.random.Generator,
                 others: Sequence[np.ndarray] = ()) -> np.ndarray:
        """`others`: other utterances, the babble's talkers (babble falls back to pink noise without them)."""
        if rng.random() < self.speed_p:
            wave = change_speed(wave, rng.uniform(*self.speed))
        if rng.random() < self.formant_p:
            wave = warp_formants(wave, rng.uniform(*self.formant))
        lead, trail = (int(rng.uniform(0, self.max_silence_s) * SAMPLING_RATE) for _ in range(2))
        wave = np.concatenate([np.zeros(lead, np.float32), wave, np.zeros(trail, np.float32)])  # (L',)
        speech = slice(lead, len(wave) - trail)
        if rng.random() < self.reverb_p:
            wave = reverberate(wave, self.rooms[int(rng.integers(len(self.rooms)))])
        if rng.random() < self.band_p:
            wave = band_limit(wave, rng.uniform(50, 400), rng.uniform(3000, 7500))
        if rng.random() < self.eq_p:
            wave = random_eq(wave, rng)
        kind = self.noise_types[int(rng.integers(len(self.noise_types)))]
        noise = make_noise(kind, len(wave), rng, others)
        # Noise power from the speech part only (the added silence would lower the power and raise the noise).
        wave = add_noise(wave, noise, rng.uniform(*self.snr_db), speech_power=_power(wave[speech]))
        return (wave * 10.0 ** (rng.uniform(*self.gain_db) / 20.0)).astype(np.float32)
