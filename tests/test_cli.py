"""The command line: transcribe (text and JSON lines, folders, errors that do not stop the batch),
inspect and convert, on a tiny checkpoint written by transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from tests.test_doc_examples import VOCAB, tiny_bert_config, tiny_encoder_config, write_bert_tokenizer

from minispeechseq import SpeechEncoderDecoderModel
from minispeechseq.tools.cli import main

transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("asr")
    torch.manual_seed(0)
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        tiny_encoder_config(feat_extract_norm="layer", do_stable_layer_norm=True), tiny_bert_config()
    )
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    model = transformers.SpeechEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id = 2, 3
    model.generation_config.pad_token_id, model.generation_config.max_length = 0, 8
    model.save_pretrained(folder)
    write_bert_tokenizer(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    sf.write(folder / "a.wav", rng.standard_normal(8000).astype(np.float32) * 0.1, 16000)
    sf.write(folder / "b.flac", (rng.standard_normal((12000, 2)) * 3000).astype(np.int16), 8000)  # stereo, 8 kHz
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_transcribe_prints_one_line_per_file(model_dir, audio_dir, capsys):
    assert main(["transcribe", str(audio_dir), "--model", str(model_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(audio_dir / "a.wav"), str(audio_dir / "b.flac")]
    assert all(set(line.split("\t")[1].split()) <= set(VOCAB) | set("abcdefghijklmnopqrstuvwxyz") for line in lines)


def test_transcribe_json_matches_transformers(model_dir, audio_dir, capsys):
    assert main(["transcribe", str(audio_dir / "a.wav"), "--model", str(model_dir), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(audio_dir / "a.wav")
    ref = transformers.SpeechEncoderDecoderModel.from_pretrained(model_dir)
    processor = transformers.Wav2Vec2Processor.from_pretrained(model_dir)
    audio, _ = sf.read(audio_dir / "a.wav", dtype="float32")
    ids = ref.generate(processor(audio, sampling_rate=16000, return_tensors="pt").input_values)
    assert record["text"] == processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


def test_bad_files_are_reported_and_the_rest_transcribed(model_dir, audio_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    code = main(["transcribe", str(tmp_path / "missing.wav"), str(tmp_path / "empty"), str(tmp_path / "broken.wav"),
                 str(audio_dir / "a.wav"), "--model", str(model_dir)])
    out, err = capsys.readouterr()
    assert code != 0
    assert out.strip().startswith(str(audio_dir / "a.wav"))
    errors = err.strip().splitlines()
    assert len(errors) == 3, err
    assert "missing.wav" in errors[0] and "empty" in errors[1] and "broken.wav" in errors[2]


def test_bad_model_folder_is_one_line(tmp_path, audio_dir):
    done = subprocess.run([sys.executable, "-m", "minispeechseq", "transcribe", str(audio_dir / "a.wav"), "--model",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "config.json" in done.stderr


def test_plot_attention_writes_a_png(model_dir, audio_dir, tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    png = tmp_path / "attn.png"
    assert main(["transcribe", str(audio_dir / "a.wav"), "--model", str(model_dir), "--plot-attention", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_and_convert_a_legacy_checkpoint(model_dir, tmp_path, capsys):
    # A legacy layout: pytorch_model.bin with the positional conv as weight_g / weight_v.
    from safetensors.torch import load_file

    state = load_file(model_dir / "model.safetensors")
    legacy = {}
    for k, v in state.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        legacy[k] = v
    old = tmp_path / "old"
    old.mkdir()
    torch.save(legacy, old / "pytorch_model.bin")
    (old / "config.json").write_text((model_dir / "config.json").read_text())

    assert main(["inspect", str(old)]) == 0
    out = capsys.readouterr().out
    assert "weight_g" in out and "SpeechEncoderDecoderModel" in out

    assert main(["convert", str(old), str(tmp_path / "new")]) == 0
    converted = load_file(tmp_path / "new" / "model.safetensors")
    assert not any("weight_g" in k for k in converted)
    for k, v in state.items():
        assert torch.equal(converted[k], v), k


def test_inspect_prints_the_whole_load_report(model_dir, tmp_path, capsys):
    """inspect is the load report, line by line (tutorial 11 reads the report as data and shows the command)."""
    from safetensors.torch import load_file

    old = tmp_path / "old"
    old.mkdir()
    legacy = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                 "weight_v"): v
              for k, v in load_file(model_dir / "model.safetensors").items()}
    # A .bin written from a state dict holds BERT's tied LM-head bias a second time: the model skips it.
    legacy["decoder.cls.predictions.decoder.bias"] = torch.zeros(len(VOCAB))
    torch.save(legacy, old / "pytorch_model.bin")
    (old / "config.json").write_text((model_dir / "config.json").read_text())

    assert main(["inspect", str(old)]) == 0
    lines = capsys.readouterr().out.splitlines()
    model = SpeechEncoderDecoderModel.from_pretrained(old)
    report, state = model.load_report, model.state_dict()
    mapping = [line.strip() for line in lines if line.startswith("  ") and " -> " in line]
    assert mapping == [f"{theirs} -> {ours} {list(state[ours].shape)}" for theirs, ours in report.loaded]
    assert f"skipped ({len(report.skipped)}): " + ", ".join(report.skipped) in lines and report.skipped
    assert f"newly initialised ({len(report.initialized)}): none" in lines and report.initialized == []
    assert [line for line in lines if line.startswith("note: ")] == [f"note: {n}" for n in report.notes]
    assert report.notes, "the legacy weight_g / weight_v tensors are noted"


@pytest.mark.parametrize("command", ["train", "pretrain", "data", "evaluate"])
def test_training_commands_reach_their_modules(command, capsys):
    # `minispeechseq train|pretrain|data|evaluate` hand their options to their programs' main (cli.SUBPROGRAMS).
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: minispeechseq {command} ")


@pytest.mark.parametrize("module", ["tools.train", "tools.pretrain", "tools.data", "tools.evaluate"])
def test_training_programs_run_with_python_m(module):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout, not an installed copy
    done = subprocess.run([sys.executable, "-m", f"minispeechseq.{module}", "--help"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: minispeechseq "), done.stdout[:200]
