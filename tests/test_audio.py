"""load_audio and Wav2Vec2FeatureExtractor, checked against soundfile/soxr directly and against transformers' extractor."""

import numpy as np
import pytest
import soundfile
import torch
import transformers

from minispeechseq.audio import (
    AutoFeatureExtractor,
    Wav2Vec2FeatureExtractor,
    load_audio,
)
from tests.utils import assert_close

# The extractor is float32 numpy math in the same order as transformers'; 1e-6 is the bar the task sets for it.
ATOL_FEATURES = 1e-6

RNG = np.random.default_rng(0)


def tone(n: int, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


# ============================================================================================ load_audio
def test_load_audio_int16_wav_matches_pcm_scale(tmp_path):
    pcm = (RNG.standard_normal(1600) * 3000).astype(np.int16)
    path = tmp_path / "a.wav"
    soundfile.write(path, pcm, 16000, subtype="PCM_16")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.shape == (1600,)
    assert_close(torch.from_numpy(wave), torch.from_numpy(pcm.astype(np.float32) / 32768), 0.0, "int16 wav")


def test_load_audio_stereo_is_mean_of_channels(tmp_path):
    left, right = tone(800), tone(800, freq=300.0)
    path = tmp_path / "s.flac"
    soundfile.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_24")
    wave = load_audio(path)
    ref = (left + right) / 2
    assert_close(torch.from_numpy(wave), torch.from_numpy(ref), 1e-6, "stereo downmix")  # 24-bit quantization


def test_load_audio_resamples_to_16k(tmp_path):
    import soxr

    x = tone(8000, rate=8000)
    path = tmp_path / "r.wav"
    soundfile.write(path, x, 8000, subtype="FLOAT")
    wave = load_audio(path)
    assert wave.shape == (16000,), wave.shape
    assert_close(torch.from_numpy(wave), torch.from_numpy(soxr.resample(x, 8000, 16000)), 0.0, "soxr resample")
    # And resampled audio is still the same tone: compare with the tone synthesized at 16 kHz (away from the edges).
    assert_close(torch.from_numpy(wave[1000:-1000]), torch.from_numpy(tone(16000)[1000:-1000]), 1e-2, "tone at 16k")


def test_load_audio_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No audio file"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 10)
    with pytest.raises(ValueError, match="notes.txt"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="no audio samples"):
        load_audio(empty)


# ====================================================================== feature extractor vs transformers
def ref_extractor(**kw):
    return transformers.Wav2Vec2FeatureExtractor(**kw)


BATCHES = {
    "single": [tone(1000)],
    "equal": [tone(700), tone(700, freq=200.0)],
    "ragged": [RNG.standard_normal(900).astype(np.float32) * 0.1, tone(613), tone(1001, freq=50.0)],
}
CALLS = {
    "longest": dict(padding=True),
    "max_length": dict(padding="max_length", max_length=1200),
    "truncate": dict(padding="max_length", max_length=650, truncation=True),
    "multiple": dict(padding="longest", pad_to_multiple_of=128),
}


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_extractor_matches_transformers(batch, call, with_mask):
    config = dict(return_attention_mask=with_mask, do_normalize=True)
    ours = Wav2Vec2FeatureExtractor(**config)(BATCHES[batch], sampling_rate=16000, return_tensors="pt", **CALLS[call])
    ref = ref_extractor(**config)(BATCHES[batch], sampling_rate=16000, return_tensors="pt", **CALLS[call])
    assert ours.input_values.dtype == torch.float32
    assert_close(ours.input_values, ref["input_values"], ATOL_FEATURES, f"{batch}/{call}/mask={with_mask}")
    if with_mask:
        assert torch.equal(ours.attention_mask, ref["attention_mask"]), (ours.attention_mask, ref["attention_mask"])
    else:
        assert "attention_mask" not in ours


def test_extractor_inputs_forms_agree():
    """A 2-D array is a batch of rows; a tensor, a list of floats and an array give the same result."""
    fe = Wav2Vec2FeatureExtractor()
    x = tone(500)
    a = fe(x, return_tensors="pt").input_values
    assert a.shape == (1, 500)
    assert torch.equal(fe(torch.from_numpy(x), return_tensors="pt").input_values, a)
    assert torch.equal(fe(x.tolist(), return_tensors="pt").input_values, a)
    two = np.stack([x, x[::-1].copy()])
    ref = ref_extractor()(two, sampling_rate=16000, return_tensors="pt")["input_values"]
    assert_close(fe(two, return_tensors="pt").input_values, ref, ATOL_FEATURES, "2-D array as batch")
    assert_close(fe(torch.from_numpy(two), return_tensors="pt").input_values, ref, ATOL_FEATURES, "2-D tensor as batch")


def test_extractor_int16_is_scaled_pcm():
    pcm = (RNG.standard_normal(400) * 2000).astype(np.int16)
    fe = Wav2Vec2FeatureExtractor(do_normalize=False)
    ours = fe(pcm, return_tensors="pt").input_values
    assert ours.dtype == torch.float32
    assert_close(ours[0], torch.from_numpy(pcm.astype(np.float32) / 32768), 0.0, "int16 / 32768")
    # Normalized, the scale cancels: transformers (which only casts the int16 codes) agrees within the epsilon's effect.
    ref = ref_extractor()(pcm, sampling_rate=16000, return_tensors="pt")["input_values"]
    ours_normalized = Wav2Vec2FeatureExtractor()(pcm, return_tensors="pt").input_values
    assert_close(ours_normalized, ref.float(), 1e-4, "int16 normalized")


def test_extractor_no_normalize_and_padding_value():
    fe = Wav2Vec2FeatureExtractor(do_normalize=False, padding_value=-1.0, return_attention_mask=True)
    out = fe([tone(10), tone(6)], padding=True, return_tensors="pt")
    ref = ref_extractor(do_normalize=False, padding_value=-1.0, return_attention_mask=True)(
        [tone(10), tone(6)], sampling_rate=16000, padding=True, return_tensors="pt"
    )
    assert_close(out.input_values, ref["input_values"], ATOL_FEATURES, "no normalize")
    assert (out.input_values[1, 6:] == -1.0).all()


def test_extractor_left_padding_normalizes_real_samples():
    """transformers slices the first `length` samples even when padding on the left (its bug); we use the real ones."""
    x_long, x_short = tone(12), RNG.standard_normal(7).astype(np.float32)
    out = Wav2Vec2FeatureExtractor(return_attention_mask=True, padding_side="left")([x_long, x_short], padding=True,
                                                                                     return_tensors="pt")
    expected = (x_short - x_short.mean()) / np.sqrt(x_short.var() + 1e-7)
    assert_close(out.input_values[1, 5:], torch.from_numpy(expected), ATOL_FEATURES, "left-padded real part")
    assert (out.input_values[1, :5] == 0).all() and out.attention_mask[1].tolist() == [0] * 5 + [1] * 7


def test_extractor_silence_is_finite_zero():
    out = Wav2Vec2FeatureExtractor(return_attention_mask=True)([np.zeros(100, np.float32), tone(50)], padding=True,
                                                               return_tensors="pt")
    assert torch.isfinite(out.input_values).all()
    assert (out.input_values[0] == 0).all()


def test_extractor_errors():
    fe = Wav2Vec2FeatureExtractor()
    with pytest.raises(ValueError, match="8000 Hz"):
        fe(tone(10), sampling_rate=8000)
    bad = tone(10)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fe(bad)
    with pytest.raises(ValueError, match="inf"):
        fe([tone(5), np.array([0.0, np.inf], dtype=np.float32)])
    with pytest.raises(ValueError, match="empty"):
        fe(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="empty list"):
        fe([])
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        fe(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="different lengths"):  # unpadded rows of different lengths: no tensor
        fe([tone(5), tone(6)], padding=False, return_tensors="pt")
    with pytest.raises(ValueError, match="max_length"):
        fe(tone(5), padding="max_length")


def test_extractor_config_round_trip_with_transformers(tmp_path):
    ref = ref_extractor(return_attention_mask=True, do_normalize=False, padding_value=0.5)
    ref.save_pretrained(tmp_path / "hf")
    ours = AutoFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert (ours.return_attention_mask, ours.do_normalize, ours.padding_value) == (True, False, 0.5)
    ours.extra["custom_key"] = 7
    ours.save_pretrained(tmp_path / "ours")
    again = Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "ours")
    assert again.to_dict() == ours.to_dict()
    assert again.extra["custom_key"] == 7
    back = transformers.Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "ours")
    assert back.return_attention_mask is True and back.padding_value == 0.5
    with pytest.raises(FileNotFoundError, match="No folder or file"):
        Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no preprocessor_config.json"):
        Wav2Vec2FeatureExtractor.from_pretrained(tmp_path / "empty")


def test_batch_feature_access_and_to():
    out = Wav2Vec2FeatureExtractor(return_attention_mask=True)([tone(5), tone(3)], padding=True, return_tensors="pt")
    assert out["input_values"] is out.input_values
    assert out.to("cpu") is out and out.attention_mask.device.type == "cpu"
    with pytest.raises(AttributeError, match="input_values"):
        _ = out.labels
