"""Each augmentation of training/augment.py checked for the property it claims, on speech-like test signals."""

import numpy as np
import pytest

from minispeechseq.training import augment
from minispeechseq.training.data import SAMPLING_RATE


def _voiced(seconds: float = 1.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A crude vowel: harmonics of f0 under a formant-like envelope (peaks at 700 and 1200 Hz), plus a little noise."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    wave = np.zeros_like(t)
    for k in range(1, int(7000 / f0)):
        f = k * f0
        envelope = np.exp(-((f - 700) / 250) ** 2) + 0.6 * np.exp(-((f - 1200) / 300) ** 2) + 0.02
        wave += envelope * np.sin(2 * np.pi * f * t)
    wave += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def _band_power(wave: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLING_RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def _centroid(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SAMPLING_RATE)
    return float((spectrum * freqs).sum() / spectrum.sum())


@pytest.mark.parametrize("factor", [0.85, 0.9, 1.1, 1.15])
def test_speed_changes_duration_by_the_factor(factor):
    wave = _voiced(1.0)
    out = augment.change_speed(wave, factor)
    expected = len(wave) / factor
    assert abs(len(out) - expected) <= 2, f"{len(out)} samples, expected {expected:.1f}"
    # Pitch moves with tempo: the strongest harmonic (700 Hz region) moves by the factor.
    peak = lambda w: np.fft.rfftfreq(len(w), 1 / SAMPLING_RATE)[np.argmax(np.abs(np.fft.rfft(w)))]  # noqa: E731
    assert peak(out) == pytest.approx(peak(wave) * factor, rel=0.03)
    with pytest.raises(ValueError, match="speed factor must be > 0"):
        augment.change_speed(wave, 0.0)


@pytest.mark.parametrize("alpha", [0.87, 1.15])
@pytest.mark.parametrize("centre", [800.0, 1500.0])
def test_formant_warp_moves_the_envelope_by_alpha_keeps_length_and_loudness(alpha, centre):
    # A noise-excited formant: white noise kept in one band (centre ± 20 %). Its spectral centroid must move by
    # alpha (the band's frequencies are multiplied by alpha), within 3 %.
    noise = augment.coloured_noise(SAMPLING_RATE, "white", np.random.default_rng(0))
    formant = augment.band_limit(noise, 0.8 * centre, 1.2 * centre)
    out = augment.warp_formants(formant, alpha)
    assert out.shape == formant.shape
    ratio = _centroid(out) / _centroid(formant)
    assert ratio == pytest.approx(alpha, rel=0.03), f"centroid moved by {ratio:.3f}, asked {alpha}"
    loudness = np.mean(out.astype(np.float64) ** 2) / np.mean(formant.astype(np.float64) ** 2)
    assert loudness == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(ValueError, match="alpha must be within"):
        augment.warp_formants(formant, 3.0)


def test_formant_warp_keeps_the_pitch():
    wave = _voiced(1.0, f0=140.0)
    out = augment.warp_formants(wave, 1.15)
    spectrum = np.abs(np.fft.rfft(out))
    freqs = np.fft.rfftfreq(len(out), 1 / SAMPLING_RATE)
    low = (freqs > 60) & (freqs < 400)  # the first harmonics: still at multiples of 140 Hz
    peak = freqs[low][np.argmax(spectrum[low])]
    assert min(abs(peak - 140), abs(peak - 280)) < 5, f"strongest low partial at {peak:.1f} Hz, f0 is 140 Hz"


def test_band_limit_removes_the_band_outside():
    wave = augment.coloured_noise(SAMPLING_RATE, "white", np.random.default_rng(0))
    out = augment.band_limit(wave, 300, 3400)
    inside = _band_power(out, 500, 3000) / _band_power(wave, 500, 3000)
    above = _band_power(out, 4500, 8000) / _band_power(wave, 4500, 8000)
    below = _band_power(out, 20, 150) / _band_power(wave, 20, 150)
    assert inside > 0.8, f"the pass band kept only {inside:.2f} of its power"
    assert 10 * np.log10(above) < -40 and 10 * np.log10(below) < -30, \
        f"above 4.5 kHz: {10 * np.log10(above):.1f} dB, below 150 Hz: {10 * np.log10(below):.1f} dB"
    low_only = augment.band_limit(wave, None, 4000)  # what an 8 kHz recording holds
    assert 10 * np.log10(_band_power(low_only, 5000, 8000) / _band_power(wave, 5000, 8000)) < -40
    with pytest.raises(ValueError, match="band must satisfy"):
        augment.band_limit(wave, 3000, 2000)


def test_random_eq_colours_but_keeps_loudness():
    wave = augment.coloured_noise(SAMPLING_RATE, "white", np.random.default_rng(1))
    out = augment.random_eq(wave, np.random.default_rng(2), max_db=8.0)
    assert out.shape == wave.shape
    assert np.mean(out.astype(np.float64) ** 2) == pytest.approx(np.mean(wave.astype(np.float64) ** 2), rel=1e-3)
    bands = [(100, 300), (300, 1000), (1000, 3000), (3000, 8000)]
    gains = [10 * np.log10(_band_power(out, *b) / _band_power(wave, *b)) for b in bands]
    assert max(gains) - min(gains) > 1.0, f"the EQ left every band within 1 dB: {gains}"
    assert max(gains) - min(gains) < 2 * 8.0 + 1.0, f"band gains {gains} exceed ±8 dB"


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_is_added_at_the_asked_snr(kind, snr_db):
    rng = np.random.default_rng(4)
    wave = _voiced(1.5)
    if kind == "babble":
        noise = augment.babble(len(wave), [_voiced(0.7, f0, seed=i) for i, f0 in enumerate((110, 180, 220))], rng)
    else:
        noise = augment.coloured_noise(len(wave), kind, rng)
    out = augment.add_noise(wave, noise, snr_db)
    added = out.astype(np.float64) - wave
    measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(added ** 2))
    assert abs(measured - snr_db) < 0.5, f"{kind} at {snr_db} dB measured {measured:.2f} dB"


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(5)
    per_octave = {}
    for kind in ("white", "pink", "brown"):
        noise = augment.coloured_noise(4 * SAMPLING_RATE, kind, rng)
        assert np.mean(noise.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-3)
        per_octave[kind] = 10 * np.log10(_band_power(noise, 2000, 4000) / _band_power(noise, 1000, 2000))
    # Power in an octave twice as high: white +3 dB (twice the bandwidth), pink 0 dB, brown -3 dB.
    assert per_octave["white"] == pytest.approx(3.0, abs=0.5), per_octave
    assert per_octave["pink"] == pytest.approx(0.0, abs=0.5), per_octave
    assert per_octave["brown"] == pytest.approx(-3.0, abs=0.5), per_octave
    with pytest.raises(ValueError, match="noise kind must be one of"):
        augment.coloured_noise(100, "purple", rng)


def test_reverberation_keeps_length_and_bounds_energy():
    pytest.importorskip("pyroomacoustics", reason="reverberation needs the train extra (pyroomacoustics)")
    rng = np.random.default_rng(6)
    wave = _voiced(1.0)
    for _ in range(3):
        rir = augment.room_impulse_response(rng)
        assert np.abs(rir).max() == pytest.approx(1.0) and len(rir) > 0.05 * SAMPLING_RATE
        out = augment.reverberate(wave, rir)
        assert out.shape == wave.shape and np.isfinite(out).all()
        assert np.mean(out.astype(np.float64) ** 2) == pytest.approx(np.mean(wave.astype(np.float64) ** 2), rel=1e-3)
        # A room smears the sound: the end of a tone burst decays instead of stopping.
        burst = np.zeros(SAMPLING_RATE, np.float32)
        burst[:4000] = wave[:4000]
        tail = augment.reverberate(burst, rir)[4400:6000]
        assert np.abs(tail).max() > 1e-3, "no reverberant tail after the burst ended"


def test_voice_augmentation_is_seeded_and_checks_noise_types():
    aug = augment.VoiceAugmentation(speed_p=1.0, formant_p=1.0, band_p=1.0, eq_p=1.0, snr_db=(5.0, 5.0),
                                    noise_types=("pink", "babble"))
    wave = _voiced(0.8)
    others = [_voiced(0.5, 200.0, seed=9)]
    a = aug(wave, np.random.default_rng(7), others)
    b = aug(wave, np.random.default_rng(7), others)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and np.isfinite(a).all()
    assert not np.array_equal(a, aug(wave, np.random.default_rng(8), others))
    with pytest.raises(ValueError, match="noise_types must be a non-empty subset"):
        augment.VoiceAugmentation(noise_types=("hum",))
