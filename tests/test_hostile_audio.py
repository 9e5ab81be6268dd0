"""Hostile audio input (issue 18): files whose headers lie, loud and broken samples, odd masks and dtypes, odd
file names, and one bad or long input among good ones. Each case is made here, in tmp_path, with soundfile and
numpy; the model is the bundled digits model, whose shipped samples come with their transcripts.

Classes of cases: resource bounds (A), batching (B), per-input failures (C), masks and padding (D), dtypes and
the attention plot (E), file names and folders (F).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from minispeechseq import Processor, SpeechEncoderDecoderModel, Wav2Vec2FeatureExtractor, load_audio, transcribe
from minispeechseq.files.audiofile import MAX_DURATION_ENV, AudioInfo, check_declared_length, probe_audio
from minispeechseq.tools.cli import bundled_model_dir, main
from minispeechseq.recognition.recognizer import transcribe_batch
from tests.utils import assert_close

MODEL = bundled_model_dir()
SAMPLES = os.path.join(os.path.dirname(MODEL), "samples")
with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as _f:
    TEXTS = dict(csv.reader(_f, delimiter="\t"))
SAMPLE, SAMPLE_TEXT = os.path.join(SAMPLES, "000578.wav"), TEXTS["000578.wav"]
MiB = 2**20
# Two rows of one batch vs each row alone, fp32: the same frames through the same layers (the mask keeps the
# padding out), so only summation order differs; measured 2e-6 on the bundled model.
ATOL_PADDING = 1e-4


@pytest.fixture(scope="module")
def bundled():
    return SpeechEncoderDecoderModel.from_pretrained(MODEL).eval(), Processor.from_pretrained(MODEL)


def sample(name: str) -> np.ndarray:
    return sf.read(os.path.join(SAMPLES, name), dtype="float32")[0]


def run_cli(argv: list[str], capsys) -> tuple[int, list[str], list[str]]:
    code = main(["transcribe", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def peak_bytes(fn) -> tuple[object, int]:
    """fn()'s result and the peak of the memory Python and numpy allocated during it (tracemalloc)."""
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ================================================================================== A. resource bounds
@pytest.mark.parametrize("rate", [1, 999, 400_000])
def test_absurd_sample_rates_are_refused_before_reading(tmp_path, rate):
    # 4 KB of PCM: at 1 Hz its header promises 2000 s, 32 M samples once resampled to 16 kHz.
    path = tmp_path / f"{rate}.wav"
    sf.write(path, (np.random.default_rng(0).standard_normal(2000) * 3000).astype(np.int16), rate, subtype="PCM_16")
    with pytest.raises(ValueError, match=f"{rate} Hz, outside") as info:
        load_audio(path)
    assert str(path) in str(info.value) and len(str(info.value).splitlines()) == 1


def test_a_flac_declaring_2_36_samples_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "huge.flac"
    sf.write(path, (np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16), 16000, format="FLAC")
    data = bytearray(path.read_bytes())
    # STREAMINFO starts at byte 8; the total sample count is its bits 108-143: byte 21's low nibble, bytes 22-25.
    data[21] |= 0x0F
    data[22:26] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert sf.info(path).frames == 2**36 - 1, "the patch should make libsndfile read 2^36 - 1 frames (256 GiB)"
    for read in (load_audio, probe_audio):
        with pytest.raises(ValueError, match="frames per byte") as info:
            read(path)
        assert str(path) in str(info.value)


def test_pcm_frames_are_bounded_by_the_file_size_exactly():
    # libsndfile 1.2 already clamps WAV, AU and AIFF frame counts to the file's size (tried with patched headers);
    # this is the check that does not rely on it, exact for PCM and a ratio for compressed data.
    with pytest.raises(ValueError, match="declares 1000000 frames of 1 x 2 bytes but the file has 4000 bytes"):
        check_declared_length(AudioInfo("x.wav", 10**6, 16000, 1, "WAV", "PCM_16"), 4000, 3600)
    check_declared_length(AudioInfo("x.wav", 1978, 16000, 1, "WAV", "PCM_16"), 4000, 3600)
    check_declared_length(AudioInfo("x.flac", 10**6, 16000, 1, "FLAC", "PCM_16"), 4000, 3600)  # 250 frames/byte


def test_the_duration_cap_is_an_argument_and_an_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "ten.wav"
    sf.write(path, np.zeros(160_000, np.int16), 16000)
    with pytest.raises(ValueError, match="lasts 10 s, longer than the 5 s limit"):
        load_audio(path, max_duration_s=5)
    monkeypatch.setenv(MAX_DURATION_ENV, "5")
    with pytest.raises(ValueError, match=MAX_DURATION_ENV):
        load_audio(path)
    assert len(load_audio(path, max_duration_s=10)) == 160_000  # the argument wins over the environment
    monkeypatch.setenv(MAX_DURATION_ENV, "a lot")
    with pytest.raises(ValueError, match="expected a positive number of seconds"):
        load_audio(path)


def test_a_long_file_is_read_in_blocks_into_one_output(tmp_path):
    # 10 minutes of 48 kHz stereo silence: 120 KB of FLAC, 230 MB as the float32 (N, 2) array a one-shot read makes.
    path = tmp_path / "silence.flac"
    with sf.SoundFile(path, "w", 48000, 2, format="FLAC") as f:
        for _ in range(10):
            f.write(np.zeros((48000 * 60, 2), np.int16))
    wave, peak = peak_bytes(lambda: load_audio(path))
    assert wave.shape == (16000 * 600,)
    bound = wave.nbytes + 16 * MiB  # the output, and a few blocks of 2^18 frames
    print(f"\n10 min 48 kHz stereo FLAC: traced peak {peak / MiB:.0f} MiB, output {wave.nbytes / MiB:.0f} MiB")
    assert peak <= bound, f"loading peaked at {peak / MiB:.0f} MiB, above {bound / MiB:.0f} MiB"


def test_blocks_give_the_one_shot_result(tmp_path):
    # 20 s of 44.1 kHz stereo: four blocks, resampled in a stream; against soxr on the whole downmixed signal.
    pcm = (np.random.default_rng(1).standard_normal((44100 * 20, 2)) * 3000).astype(np.int16)
    sf.write(tmp_path / "x.wav", pcm, 44100)
    whole = sf.read(tmp_path / "x.wav", dtype="float32")[0].mean(axis=1, dtype=np.float32)
    assert_close(torch.from_numpy(load_audio(tmp_path / "x.wav")), torch.from_numpy(soxr.resample(whole, 44100, 16000)),
                 1e-6, "block-wise read vs one-shot soxr")


# ========================================================================================= B. batching
def write_mixed(tmp_path) -> list[str]:
    """Seven 1 s files and, fourth, one 60 s recording (the samples with 0.5 s pauses)."""
    names = sorted(TEXTS)
    paths = []
    for name in names[:7]:
        paths.append(str(tmp_path / f"short-{name}"))
        sf.write(paths[-1], sample(name)[:16000], 16000)
    pieces = [np.concatenate([sample(n), np.zeros(8000, np.float32)]) for n in names]
    long = np.concatenate(pieces * 8)[: 60 * 16000]
    paths.insert(3, str(tmp_path / "long.wav"))
    sf.write(paths[3], long, 16000)
    return paths


def test_a_long_input_pads_no_short_one(bundled, tmp_path, monkeypatch):
    model, processor = bundled
    paths = write_mixed(tmp_path)
    alone = [transcribe(model, p, processor=processor, chunk_length_s=120) for p in paths]
    shapes, generate = [], model.generate

    def spy(input_values, **kwargs):
        shapes.append(tuple(input_values.shape))
        return generate(input_values, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    # chunk_length_s=120: the 60 s file is one input like the others, not cut into chunks.
    together = transcribe(model, paths, processor=processor, chunk_length_s=120)
    assert together == alone, "batching changed a transcript, or the results are not in the order given"
    padded, real = sum(b * n for b, n in shapes), sum(sf.info(p).frames for p in paths)
    print(f"\nbatches {shapes}: {padded} samples fed for {real} real ones")
    assert padded <= 1.1 * real, f"batches {shapes} fed {padded} samples for {real} real ones"


def test_files_are_read_a_batch_at_a_time_and_printed_in_the_given_order(tmp_path, monkeypatch, capsys):
    paths = write_mixed(tmp_path)  # the 60 s one is longer than the model's 5 s chunks: longform.py cuts it
    events, read, generate = [], sf.SoundFile.read, SpeechEncoderDecoderModel.generate
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, *a, **k: (events.append("read"), read(self, *a, **k))[1])
    monkeypatch.setattr(SpeechEncoderDecoderModel, "generate",
                        lambda self, *a, **k: (events.append("generate"), generate(self, *a, **k))[1])
    code, out, err = run_cli([*paths, "--batch-size", "2"], capsys)
    assert code == 0, err
    assert [line.split("\t")[0] for line in out] == paths
    last_read = len(events) - 1 - events[::-1].index("read")
    assert events.index("generate") < last_read, "every file was read before the first batch ran"


# ================================================================================ C. per-input failures
@pytest.mark.parametrize("scale", [1e20, 3e38])
def test_loud_audio_normalises_like_quiet_audio(scale):
    x = np.random.default_rng(2).uniform(-1, 1, 16000).astype(np.float32)
    fe = Wav2Vec2FeatureExtractor()
    loud, quiet = fe(x * np.float32(scale), return_tensors="pt"), fe(x, return_tensors="pt")
    assert_close(loud.input_values, quiet.input_values, 1e-5, f"features of x * {scale:g} vs x")


def test_a_float_file_at_3e38_is_transcribed_beside_a_good_one(tmp_path, capsys):
    wave = sample("000578.wav")
    loud = tmp_path / "loud.wav"
    sf.write(loud, (wave / np.abs(wave).max() * 3e38).astype(np.float32), 16000, subtype="FLOAT")
    code, out, err = run_cli([str(loud), os.path.join(SAMPLES, "001484.wav")], capsys)
    assert code == 0, err
    assert out == [f"{loud}\t{SAMPLE_TEXT}", f"{os.path.join(SAMPLES, '001484.wav')}\t{TEXTS['001484.wav']}"]


def bad_files(tmp_path) -> tuple[str, str]:
    wave = sample("000660.wav")
    nan, inf = wave.copy(), wave.copy()
    nan[8000], inf[100] = np.nan, -np.inf
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    return str(tmp_path / "nan.wav"), str(tmp_path / "inf.wav")


def test_transcribe_names_bad_inputs_and_returns_the_others(bundled, tmp_path):
    model, processor = bundled
    nan, inf = bad_files(tmp_path)
    good = sample("002476.wav")
    with pytest.raises(ValueError) as info:
        transcribe(model, [nan, SAMPLE, good[:100], inf, good], processor=processor)
    error = info.value
    assert getattr(error, "results", None) is not None, f"no results came with the error: {error}"
    assert set(error.errors) == {0, 2, 3}
    assert error.results[1] == {"text": SAMPLE_TEXT} and error.results[4] == {"text": TEXTS["002476.wav"]}
    message = str(error)
    assert "nan.wav contains NaN" in message and "input 2: 100 samples" in message and "inf.wav" in message


def test_the_cli_names_bad_files_and_transcribes_the_others(tmp_path, capsys):
    nan, inf = bad_files(tmp_path)
    code, out, err = run_cli([nan, SAMPLE, inf], capsys)
    assert code == 1 and out == [f"{SAMPLE}\t{SAMPLE_TEXT}"]
    assert len(err) == 2 and "nan.wav" in err[0] and "inf.wav" in err[1], err


def garble(path, start: float, stop: float) -> None:
    """Overwrite the bytes between fractions start and stop of the file with random ones: the header stays valid,
    the coded frames there do not."""
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * stop)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def damaged_folder(tmp_path) -> tuple[str, dict[str, str]]:
    """A folder of two good WAVs and four damaged inputs; returns it and, per damaged file, words its error says."""
    folder = tmp_path / "batch"
    folder.mkdir()
    wave = sample("000578.wav")  # 2.9 s: several Ogg pages, so a damaged one in the middle leaves the last intact
    for name in ("000660.wav", "001484.wav"):
        sf.write(folder / name, sample(name), 16000, subtype="PCM_16")
    sf.write(folder / "garbled.flac", wave, 16000, format="FLAC", subtype="PCM_16")
    garble(folder / "garbled.flac", 0.3, 0.6)
    sf.write(folder / "garbled.ogg", wave, 16000, format="OGG", subtype="VORBIS")
    garble(folder / "garbled.ogg", 0.45, 0.5)
    for name in ("garbled.flac", "garbled.ogg"):  # what the issue saw: the header checks pass them
        assert probe_audio(folder / name).frames == len(wave), f"{name}'s header should still read"
    sf.write(folder / "truncated.wav", wave, 16000, subtype="PCM_16")
    whole = (folder / "truncated.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(whole[: len(whole) // 2 + 1])  # cut inside the data chunk, mid-sample
    (folder / "notes.wav").write_text("not a sound file at all\n" * 50)
    expected = {"garbled.flac": "could not be decoded", "garbled.ogg": "could not be decoded",
                "truncated.wav": "truncated", "notes.wav": "could not be read as audio"}
    return str(folder), expected


def test_each_damaged_file_is_its_own_one_line_error(tmp_path):
    folder, expected = damaged_folder(tmp_path)
    for name, words in expected.items():
        path = os.path.join(folder, name)
        with pytest.raises(ValueError) as info:
            load_audio(path)
        message = str(info.value)
        assert path in message and words in message and len(message.splitlines()) == 1, message


def test_damaged_files_in_a_folder_leave_the_good_ones_transcribed(tmp_path, capsys):
    folder, expected = damaged_folder(tmp_path)
    code, out, err = run_cli([folder], capsys)
    assert code == 1, "a failed input gives exit status 1, as for the other per-input failures"
    assert out == [f"{os.path.join(folder, name)}\t{TEXTS[name]}" for name in ("000660.wav", "001484.wav")], (out, err)
    assert len(err) == len(expected), err
    for name, words in expected.items():
        lines = [line for line in err if os.path.join(folder, name) in line]
        assert len(lines) == 1 and words in lines[0] and "internal error" not in lines[0], (name, err)


def test_a_wav_whose_length_was_never_written_is_read_to_its_end(tmp_path):
    """A writer on a pipe cannot seek back to fill in the data chunk's size and leaves a value at the 32-bit limit
    there (0xFFFFFFFF, or 0x7FFFFFFF rounded down to whole frames): that is no truncation, and the file is read to
    its end, as libsndfile reads it."""
    wave = sample("000660.wav")
    path = tmp_path / "piped.wav"
    sf.write(path, wave, 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    for placeholder in (0xFFFFFFFF, 0x7FFFFFFE):
        data[at : at + 4] = placeholder.to_bytes(4, "little")
        path.write_bytes(bytes(data))
        assert len(load_audio(path)) == len(wave), f"data size {placeholder:#x}"


def test_a_batch_that_fails_is_retried_input_by_input(bundled, monkeypatch):
    model, processor = bundled
    waves = [sample("000660.wav"), sample("002476.wav")[:23456], sample("001484.wav")]
    generate = model.generate

    def fragile(input_values, attention_mask=None, **kwargs):  # as if something in waveform 1 broke the model
        if 23456 in attention_mask.sum(-1).tolist():
            raise RuntimeError("a row of 23456 samples broke this batch")
        return generate(input_values, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(model, "generate", fragile)
    with pytest.raises(ValueError) as info:
        transcribe(model, waves, processor=processor)
    assert set(getattr(info.value, "errors", {})) == {1}, info.value
    assert [r and r["text"] for r in info.value.results] == [TEXTS["000660.wav"], None, TEXTS["001484.wav"]]


# ============================================================================== D. masks and padding
def test_left_padding_gives_the_unpadded_result(bundled):
    model, processor = bundled
    short, long = sample("003183.wav"), sample("000578.wav")
    processor.feature_extractor.padding_side = "left"
    try:
        texts = transcribe_batch(model, processor, [short, long], batch_size=2)
        batch = processor.feature_extractor([short, long], padding=True, return_tensors="pt")
    finally:
        processor.feature_extractor.padding_side = "right"
    assert texts == [TEXTS["003183.wav"], TEXTS["000578.wav"]]
    assert batch.attention_mask[0, 0] == 0, "the short row should be padded on the left"
    with torch.no_grad():
        padded = model.encoder(batch.input_values, attention_mask=batch.attention_mask).last_hidden_state
        alone = model.encoder(processor.feature_extractor(short, return_tensors="pt").input_values).last_hidden_state
    diff = assert_close(padded[0, : alone.shape[1]], alone[0], ATOL_PADDING, "left-padded row vs alone")
    print(f"\nleft-padded vs unpadded encoder output: max |diff| = {diff:.1e}")


# A mask with holes (1, 0, 1, 0) is accepted and read as transformers reads it: tests/test_mask_holes.py.
@pytest.mark.parametrize("values", [(0.5, 1.0), (2, 1)], ids=["half", "two"])
def test_masks_of_values_other_than_0_and_1_are_refused(bundled, values):
    model, _ = bundled
    x = torch.randn(1, 8000)
    mask = torch.ones(1, 8000)
    for k, v in enumerate(values):  # quarters of the mask
        mask[0, k * 2000 : (k + 1) * 2000] = v
    with pytest.raises(ValueError, match="attention_mask") as info:
        model.encoder(x, attention_mask=mask)
    assert len(str(info.value).splitlines()) == 1


def test_pad_refuses_a_mask_of_halves():
    with pytest.raises(ValueError, match="attention_mask holds 0.5"):
        Wav2Vec2FeatureExtractor().pad({"input_values": [np.ones(4, np.float32)], "attention_mask": [[1, 1, 0.5, 0]]})


@pytest.mark.parametrize("max_length", [-5, 0])
def test_non_positive_max_length_is_refused(max_length):
    with pytest.raises(ValueError, match="expected a positive number of samples"):
        Wav2Vec2FeatureExtractor()(np.ones(100, np.float32), truncation=True, max_length=max_length)


# ======================================================================= E. dtypes and the attention plot
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_float64_and_float16_audio_is_cast_to_the_model(bundled, dtype):
    # transformers' model fails here with torch's "expected scalar type"; its pipeline casts to the model's dtype.
    model, _ = bundled
    x = torch.from_numpy(sample("001117.wav"))[None].to(dtype)
    with torch.no_grad():
        assert torch.equal(model.encoder(x).last_hidden_state, model.encoder(x.float()).last_hidden_state)


def test_bfloat16_model_with_attention_plot(tmp_path, capsys):
    code, out, err = run_cli([SAMPLE, "--dtype", "bfloat16", "--plot-attention", str(tmp_path / "a.png")], capsys)
    assert code == 0, err
    assert out == [f"{SAMPLE}\t{SAMPLE_TEXT}"] and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_attention_plot_into_a_folder(tmp_path, capsys):
    code, _, err = run_cli([SAMPLE, "--plot-attention", str(tmp_path)], capsys)
    assert code == 0, err
    assert (tmp_path / "000578.png").is_file() and not os.path.exists(f"{tmp_path}.png")


def test_attention_plot_errors_are_one_line(tmp_path, capsys, monkeypatch):
    code, out, err = run_cli([SAMPLE, "--plot-attention", str(tmp_path / "missing" / "a.png")], capsys)
    assert code == 1 and out == [f"{SAMPLE}\t{SAMPLE_TEXT}"]
    assert len(err) == 1 and "cannot write the attention plot" in err[0], err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out, err = run_cli([SAMPLE, "--plot-attention", str(tmp_path / "a.png")], capsys)
    assert code == 1 and out == [], "the missing library should be said before any work"
    assert len(err) == 1 and "needs matplotlib" in err[0], err


# =================================================================================== F. names and folders
def test_a_file_name_that_is_not_utf8(tmp_path, capsys):
    raw = os.fsencode(tmp_path) + b"/d\xffgits.wav"
    with open(SAMPLE, "rb") as src, open(raw, "wb") as dst:
        dst.write(src.read())
    name = os.fsdecode(raw)
    code, out, err = run_cli([name], capsys)
    assert code == 0, err
    assert out == [f"{tmp_path}/d\\xffgits.wav\t{SAMPLE_TEXT}"]
    code, out, _ = run_cli([name, "--json"], capsys)
    assert os.fsencode(json.loads(out[0])["path"]) == raw


def test_tabs_and_newlines_in_names_are_escaped(tmp_path, capsys):
    odd = tmp_path / "a\tb\nc\\d.wav"
    odd.write_bytes(open(SAMPLE, "rb").read())
    code, out, err = run_cli([str(odd)], capsys)
    assert code == 0, err
    assert out == [f"{tmp_path}/a\\tb\\nc\\\\d.wav\t{SAMPLE_TEXT}"]


def test_an_unreadable_subfolder_is_reported(tmp_path, capsys, monkeypatch):
    (tmp_path / "locked").mkdir()
    sf.write(tmp_path / "locked" / "x.wav", sample("001117.wav"), 16000)
    sf.write(tmp_path / "ok.wav", sample("001117.wav"), 16000)
    scandir = os.scandir

    def guarded(path="."):  # what a folder without read permission does (chmod cannot stop root, who runs CI)
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    code, out, err = run_cli([str(tmp_path)], capsys)
    assert code == 1 and out == [f"{tmp_path / 'ok.wav'}\t{TEXTS['001117.wav']}"]
    assert len(err) == 1 and "locked" in err[0] and "cannot read" in err[0], err
