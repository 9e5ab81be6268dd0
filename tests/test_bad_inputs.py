"""Bad input, as a matrix: audio, text/labels, checkpoints, generation arguments, and the command line.

Each bad input must give a clear error that names the problem (ValueError / FileNotFoundError with a sentence),
never a crash deep inside torch and never a silent wrong output. Where an input is valid but unusual (int16
arrays, stereo, 8/48 kHz files, an all-zero signal) the test checks that it gives the same result as its plain
float / mono / 16 kHz equivalent, within a stated tolerance, and finite outputs.

The CLI part checks that every one of these errors reaches the user as one line on stderr with a non-zero exit
code, and that a batch reports each failing file and still transcribes the others.

The model is a tiny transformers SpeechEncoderDecoderModel (wav2vec2 with layer-norm features and an attention
mask + BERT) written with save_pretrained, as in tests/test_cli.py.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from safetensors.torch import load_file, save_file

from minispeechseq import (
    SpeechEncoderDecoderModel,
    Tokenizer,
    Wav2Vec2FeatureExtractor,
    load_audio,
)
from minispeechseq.tools.cli import main
from tests.test_doc_examples import (
    tiny_bert_config,
    tiny_encoder_config,
    write_bert_tokenizer,
)
from tests.utils import assert_close

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()  # its bars on stderr would mix with the CLI's error lines

# soxr's HQ resampler on a 440 Hz tone, compared with the tone synthesised at 16 kHz away from the edges:
# the filter's passband ripple and 16-bit quantisation (3e-5) stay well below this.
ATOL_RESAMPLED = 1e-2
# Feature extraction of int16 PCM vs the same samples as float32 / 32768: both normalise to unit variance, so
# they differ only through the 1e-7 variance epsilon and float32 rounding.
ATOL_INT16 = 1e-5


# =========================================================================================== fixtures
def write_transformers_model(folder: pathlib.Path, decoder_config) -> None:
    torch.manual_seed(0)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        tiny_encoder_config(feat_extract_norm="layer", do_stable_layer_norm=True), decoder_config
    )
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    model = transformers.SpeechEncoderDecoderModel(config=config)
    gen = model.generation_config
    gen.decoder_start_token_id, gen.eos_token_id, gen.pad_token_id, gen.max_length = 2, 3, 0, 8
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr")
    write_transformers_model(folder, tiny_bert_config())
    write_bert_tokenizer(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return SpeechEncoderDecoderModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def extractor(model_dir):
    return Wav2Vec2FeatureExtractor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return Tokenizer.from_pretrained(model_dir)


def tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n: int = 4000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; assert one line on stderr and a non-zero exit; return that line."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code != 0, f"exit code 0 for {argv}; stdout {out!r}"
    assert len(lines) == 1 and lines[0].startswith("minispeechseq: error:"), f"stderr is not one error line: {err!r}"
    return lines[0]


# ============================================================================================== audio
# Bad waveforms given as arrays: (what the extractor receives, the words the error must contain).
BAD_ARRAYS = {
    "empty": (np.zeros(0, dtype=np.float32), "empty"),
    "nan": (np.array([0.1, np.nan, 0.2] * 200, dtype=np.float32), "NaN or inf"),
    "inf": (np.array([0.1, np.inf, 0.2] * 200, dtype=np.float32), "NaN or inf"),
    "3-D array": (np.zeros((1, 2, 4000), dtype=np.float32), "shape"),
    "stereo array (N, 2) as one item": ([np.zeros((4000, 2), dtype=np.float32)], "downmix stereo"),
    "bool array": (np.ones(4000, dtype=bool), "dtype bool"),
    "a string": ("speech.wav", "raw_speech is a str"),
}


@pytest.mark.parametrize("case", list(BAD_ARRAYS))
def test_bad_waveform_arrays(extractor, case):
    wave, words = BAD_ARRAYS[case]
    with pytest.raises(ValueError, match=words):
        extractor(wave, sampling_rate=16000)


# Bad tensors given to the model directly: (input_values, words).
BAD_TENSORS = {
    "empty": (torch.zeros(1, 0), "empty"),
    "shorter than the receptive field": (torch.randn(1, 10), "receptive field"),
    "nan": (torch.full((1, 4000), float("nan")), "NaN or infinite"),
    "3-D tensor": (torch.zeros(1, 1, 4000), "expected \\(batch, samples\\)"),
    "int16 tensor": (torch.zeros(1, 4000, dtype=torch.int16), "float samples"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_bad_waveform_tensors(model, case):
    values, words = BAD_TENSORS[case]
    with pytest.raises(ValueError, match=words):
        model.generate(values)


def test_padding_mask_leaving_less_than_the_receptive_field(model, extractor):
    # A 10-sample clip padded inside a batch: its attention mask says 10 real samples, which make no frame.
    batch = extractor([noise(10), noise(4000)], sampling_rate=16000, padding=True, return_attention_mask=True,
                      return_tensors="pt")
    with pytest.raises(ValueError, match="Waveform 0 .* fewer than the receptive field"):
        model.generate(batch.input_values, attention_mask=batch.attention_mask)


def write_file(folder: pathlib.Path, kind: str) -> pathlib.Path:
    """A bad audio file of the given kind."""
    if kind == "missing":
        return folder / "missing.wav"
    path = folder / f"{kind.replace(' ', '_')}.wav"
    if kind == "not audio":
        path.write_text("this is a text file, not a recording\n")
    elif kind == "truncated header":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    elif kind == "zero frames":
        sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "nan samples":
        sf.write(path, np.array([0.1, np.nan, 0.2] * 200, dtype=np.float32), 16000, subtype="FLOAT")
    return path


BAD_FILES = {
    "missing": (FileNotFoundError, "No audio file"),
    "not audio": (ValueError, "could not be read as audio"),
    "truncated header": (ValueError, "could not be read as audio"),
    "zero frames": (ValueError, "no audio samples"),
    "nan samples": (ValueError, "NaN or infinite"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_audio_files(tmp_path, kind):
    error, words = BAD_FILES[kind]
    path = write_file(tmp_path, kind)
    with pytest.raises(error, match=words) as info:
        load_audio(path)
    assert str(path) in str(info.value), f"the error does not name the file: {info.value}"


# ---- valid but unusual audio: the same result as the plain equivalent
def test_int16_array_equals_float_equivalent(model, extractor):
    pcm = (noise(4000) * 32768 / 0.5).clip(-32768, 32767).astype(np.int16)
    as_int = extractor(pcm, sampling_rate=16000, return_tensors="pt").input_values
    as_float = extractor(pcm.astype(np.float32) / 32768, sampling_rate=16000, return_tensors="pt").input_values
    assert_close(as_int, as_float, ATOL_INT16, "int16 vs float32/32768 features")
    ids_int, ids_float = model.generate(as_int), model.generate(as_float)
    assert torch.equal(ids_int, ids_float), f"{ids_int.tolist()} vs {ids_float.tolist()}"


def test_stereo_file_equals_mono_file(tmp_path, model, extractor):
    mono = (noise(4000) * 32767).astype(np.int16)
    sf.write(tmp_path / "mono.wav", mono, 16000, subtype="PCM_16")
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono], axis=1), 16000, subtype="PCM_16")
    a, b = load_audio(tmp_path / "mono.wav"), load_audio(tmp_path / "stereo.wav")
    assert_close(torch.from_numpy(b), torch.from_numpy(a), 0.0, "identical L/R downmix vs mono")
    ids = [model.generate(extractor(w, sampling_rate=16000, return_tensors="pt").input_values) for w in (a, b)]
    assert torch.equal(ids[0], ids[1])


@pytest.mark.parametrize("rate", [8000, 48000])
def test_other_sampling_rates_are_resampled(tmp_path, model, extractor, rate):
    sf.write(tmp_path / "t.wav", tone(0.5, rate), rate, subtype="PCM_16")
    wave = load_audio(tmp_path / "t.wav")
    assert wave.shape == (8000,), f"{rate} Hz, 0.5 s should become 8000 samples at 16 kHz, got {wave.shape}"
    assert_close(torch.from_numpy(wave[800:-800]), torch.from_numpy(tone(0.5, 16000)[800:-800]), ATOL_RESAMPLED,
                 f"{rate} Hz file resampled vs tone at 16 kHz")
    out = model(extractor(wave, sampling_rate=16000, return_tensors="pt").input_values,
                decoder_input_ids=torch.tensor([[2]]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.encoder_last_hidden_state).all()
    # And the extractor refuses the file's own rate rather than silently treating it as 16 kHz.
    with pytest.raises(ValueError, match=f"{rate} Hz .* resample"):
        extractor(tone(0.5, rate), sampling_rate=rate)


def test_all_zero_signal_is_finite(model, extractor):
    features = extractor(np.zeros(4000, dtype=np.float32), sampling_rate=16000, return_tensors="pt")
    # (x - mean) / sqrt(var + 1e-7) with var = 0: exactly zero, not 0/0.
    assert torch.equal(features.input_values, torch.zeros(1, 4000)), "normalising silence must give zeros"
    out = model(features.input_values, attention_mask=features.attention_mask, decoder_input_ids=torch.tensor([[2]]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.encoder_last_hidden_state).all()
    ids = model.generate(features.input_values, attention_mask=features.attention_mask)
    assert ids.shape[0] == 1 and int(ids[0, 0]) == 2


# ========================================================================================= text / labels
def test_empty_transcript(model, tokenizer):
    ids = tokenizer("").input_ids
    assert ids == [tokenizer.cls_token_id, tokenizer.sep_token_id], ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == ""
    loss = model(torch.from_numpy(noise())[None], labels=torch.tensor([ids])).loss
    assert torch.isfinite(loss), loss


def test_characters_outside_the_vocabulary_become_unk(model, tokenizer):
    ids = tokenizer("the ☃ 漢 glad").input_ids
    assert ids.count(tokenizer.unk_token_id) == 2, tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.decode(ids, skip_special_tokens=False) == "[CLS] the [UNK] [UNK] glad [SEP]"
    loss = model(torch.from_numpy(noise())[None], labels=torch.tensor([ids])).loss
    assert torch.isfinite(loss), loss


def test_labels_longer_than_the_decoder_positions(model):
    labels = torch.full((1, model.max_target_positions + 1), 5)
    with pytest.raises(ValueError, match=f"labels: {model.max_target_positions + 1} tokens, beyond the decoder's {model.max_target_positions} positions"):
        model(torch.from_numpy(noise())[None], labels=labels)


def test_label_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.from_numpy(noise())[None], labels=torch.tensor([[5, 999]]))


def test_decoder_input_ids_outside_the_vocabulary(model):
    with pytest.raises(ValueError, match="vocabulary"):
        model(torch.from_numpy(noise())[None], decoder_input_ids=torch.tensor([[2, 999]]))


# ============================================================================================ checkpoints
class Payload:
    """A pickle that, when unpickled by a plain pickle.load / torch.load(weights_only=False), creates a file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def make_bad_checkpoint(kind: str, good: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    """A copy of the good checkpoint folder, broken in one way."""
    folder = tmp / kind.replace(" ", "_")
    if kind == "missing folder":
        return folder
    shutil.copytree(good, folder)
    weights = folder / "model.safetensors"
    if kind == "no weights":
        weights.unlink()
    elif kind == "no config":
        (folder / "config.json").unlink()
    elif kind == "config not json":
        (folder / "config.json").write_text("{ not json")
    elif kind == "truncated safetensors":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif kind == "corrupted safetensors":
        data = bytearray(weights.read_bytes())
        data[:8] = (2**62).to_bytes(8, "little")  # the header length: far beyond the file
        weights.write_bytes(bytes(data))
    elif kind == "pickled code in .bin":
        weights.unlink()
        state = {"decoder.bert.embeddings.word_embeddings.weight": Payload(str(tmp / "PWNED"))}
        torch.save(state, folder / "pytorch_model.bin")
    elif kind == "shape mismatch":
        state = load_file(weights)
        name = "decoder.bert.embeddings.word_embeddings.weight"
        state[name] = state[name][:-1]  # one row short
        save_file(state, weights)
    elif kind == "config of another model type":
        (folder / "config.json").write_text(json.dumps(tiny_bert_config().to_dict()))
    elif kind == "keys of another architecture":
        # A GPT-2-decoder checkpoint's weights under this BERT-decoder config.json.
        other = tmp / "gpt2-pair"
        write_transformers_model(other, transformers.GPT2Config(vocab_size=46, n_embd=24, n_layer=2, n_head=4,
                                                                n_positions=64, add_cross_attention=True))
        shutil.copy(other / "model.safetensors", weights)
    elif kind == "shard index, missing shard":
        state = load_file(weights)
        weights.unlink()
        names = sorted(state)
        half = len(names) // 2
        shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
        save_file({k: state[k] for k in names[:half]}, folder / "model-00001-of-00002.safetensors")
        index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        raise AssertionError(kind)
    return folder


# kind -> (error type, words the message must contain)
BAD_CHECKPOINTS = {
    "missing folder": (FileNotFoundError, "not a folder|not a local folder"),
    "no weights": (FileNotFoundError, "has no weights"),
    "no config": (FileNotFoundError, "config.json"),
    "config not json": (ValueError, "not valid JSON"),
    "truncated safetensors": (ValueError, "not a readable safetensors file"),
    "corrupted safetensors": (ValueError, "not a readable safetensors file"),
    "pickled code in .bin": (ValueError, "weights_only=True"),
    "shape mismatch": (ValueError, r"shape mismatches: .*embed_tokens.weight: checkpoint \(45, 24\) vs model \(46, 24\)"),
    "config of another model type": (ValueError, "model_type='bert' checkpoint, not a speech-encoder-decoder"),
    "keys of another architecture": (ValueError, "has no place for: .*'decoder.transformer"),
    "shard index, missing shard": (FileNotFoundError, "lists model-00002-of-00002.safetensors, which is not in"),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoints(model_dir, tmp_path, capsys, kind):
    error, words = BAD_CHECKPOINTS[kind]
    folder = make_bad_checkpoint(kind, model_dir, tmp_path)
    capsys.readouterr()  # only what the CLI writes below is checked
    with pytest.raises(error, match=words):
        SpeechEncoderDecoderModel.from_pretrained(folder)
    # The same error through the command line: one line, non-zero exit, for each command that loads a model.
    audio = tmp_path / "a.wav"
    sf.write(audio, noise(), 16000)
    for argv in (["transcribe", str(audio), "--model", str(folder)], ["inspect", str(folder)],
                 ["convert", str(folder), str(tmp_path / "out")]):
        line = cli_error(capsys, argv)
        assert str(folder.name) in line or "not" in line, line
    assert not (tmp_path / "out").exists(), "convert wrote an output folder from a bad checkpoint"
    assert not (tmp_path / "PWNED").exists(), "the pickle's payload ran: torch.load executed code"


def test_the_pickle_payload_is_live(tmp_path):
    # The control for the test above: the same payload, loaded *without* weights_only, does create its file. So
    # the absence of the file there proves the load refused it, not that the payload was harmless.
    marker = tmp_path / "control-marker"
    torch.save({"w": Payload(str(marker))}, tmp_path / "evil.bin")
    torch.load(tmp_path / "evil.bin", weights_only=False)
    assert marker.exists()


# ====================================================================================== generation arguments
BAD_GENERATION = {
    "num_return_sequences > num_beams": ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences=3 .* num_beams=2"),
    "top_p = 0": ({"do_sample": True, "top_p": 0.0}, "top_p must be in \\(0, 1\\]"),
    "top_p > 1": ({"do_sample": True, "top_p": 1.5}, "top_p must be in \\(0, 1\\]"),
    "temperature = 0 with sampling": ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0"),
    "temperature < 0 with sampling": ({"do_sample": True, "temperature": -1.0}, "temperature must be > 0"),
    "max_new_tokens beyond positions": ({"max_new_tokens": 1000}, "beyond the decoder's 64 positions"),
    "max_length beyond positions": ({"max_length": 65}, "beyond the decoder's 64 positions"),
    "max_new_tokens = 0": ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
    "num_beams = 0": ({"num_beams": 0}, "num_beams must be an int >= 1"),
    "unknown kwarg": ({"max_tokens": 5}, "Unknown generation argument.*max_tokens"),
    "misspelt kwarg": ({"num_beam": 2}, "Unknown generation argument.*num_beam"),
}


@pytest.mark.parametrize("case", list(BAD_GENERATION))
def test_bad_generation_arguments(model, case):
    kwargs, words = BAD_GENERATION[case]
    with pytest.raises(ValueError, match=words):
        model.generate(torch.from_numpy(noise())[None], **kwargs)


OOV_GENERATION = {
    "decoder_start_token_id outside the vocabulary": {"decoder_start_token_id": 999},
    "suppress_tokens outside the vocabulary": {"suppress_tokens": [999]},
    "forced_bos_token_id outside the vocabulary": {"forced_bos_token_id": 999},
}


@pytest.mark.parametrize("case", list(OOV_GENERATION))
def test_generation_token_ids_outside_the_vocabulary(model, case):
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(torch.from_numpy(noise())[None], **OOV_GENERATION[case])


CLI_GENERATION = {
    "--top-p 1.5": ["--do-sample", "--top-p", "1.5"],
    "--top-p 0": ["--do-sample", "--top-p", "0"],
    "--temperature 0": ["--do-sample", "--temperature", "0"],
    "--max-new-tokens 1000": ["--max-new-tokens", "1000"],
    "--num-beams 0": ["--num-beams", "0"],
}


@pytest.mark.parametrize("case", list(CLI_GENERATION))
def test_bad_generation_arguments_on_the_command_line(model_dir, tmp_path, capsys, case):
    sf.write(tmp_path / "a.wav", noise(), 16000)
    line = cli_error(capsys, ["transcribe", str(tmp_path / "a.wav"), "--model", str(model_dir), *CLI_GENERATION[case]])
    flag = case.split()[0].lstrip("-").replace("-", "_")
    assert flag in line, f"the error does not name {flag}: {line}"


# ================================================================================================= CLI batch
def test_batch_reports_each_bad_file_and_transcribes_the_others(model_dir, tmp_path, capsys):
    good = [tmp_path / "good1.wav", tmp_path / "good2.flac"]
    sf.write(good[0], noise(4000, seed=1), 16000)
    sf.write(good[1], (np.stack([noise(6000, 2), noise(6000, 3)], 1) * 20000).astype(np.int16), 48000)  # stereo 48k
    bad = [write_file(tmp_path, kind) for kind in BAD_FILES]
    argv = ["transcribe", *map(str, [bad[0], good[0], *bad[1:], good[1]]), "--model", str(model_dir), "--json"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0
    paths = [json.loads(line)["path"] for line in out.strip().splitlines()]
    assert paths == [str(good[0]), str(good[1])], out
    errors = err.strip().splitlines()
    assert len(errors) == len(bad), err
    for path, line in zip(bad, errors):
        assert line.startswith("minispeechseq: error:") and str(path) in line, line


def test_batch_with_a_clip_shorter_than_the_receptive_field(model_dir, tmp_path, capsys):
    sf.write(tmp_path / "short.wav", noise(10), 16000)
    sf.write(tmp_path / "good.wav", noise(4000), 16000)
    code = main(["transcribe", str(tmp_path / "short.wav"), str(tmp_path / "good.wav"), "--model", str(model_dir)])
    out, err = capsys.readouterr()
    assert code != 0
    assert out.startswith(str(tmp_path / "good.wav")), out
    assert len(err.strip().splitlines()) == 1 and "short.wav" in err, err
