"""Hostile settings (issue 18): configs, generation settings, training arguments and the command line's errors.

Every case must end in ONE line on stderr (or one ValueError sentence in Python) naming what was wrong, before
anything large is allocated or any step is taken; `--debug` adds the traceback. The model is the `debug` training
preset (~19 k parameters) saved by our own code, so each case takes milliseconds.

Classes of cases (counted in the report): cli (the error policy of every subcommand), config (config.json fields),
generation (generate settings and token ids), memory (estimates refused before allocating), training (train /
data / evaluate arguments and data), environment (variables set to nonsense).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from minispeechseq import GenerationConfig, SpeechEncoderDecoderModel, Tokenizer, Wav2Vec2FeatureExtractor
from minispeechseq.tools.cli import main
from minispeechseq.generation import loop
from minispeechseq.training import train
from minispeechseq.training.digits import DIGIT_WORDS, build_digits_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 14  # the digits tokenizer: <pad> <s> </s> <unk> and ten words


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six tone-burst utterances with digit transcripts, and the digits tokenizer (no espeak-ng needed)."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "wavs").mkdir()
    lines = []
    for i in range(6):
        t = np.arange(4000 + 800 * i) / 16000
        sf.write(folder / "wavs" / f"{i}.wav", (0.1 * np.sin(2 * np.pi * (300 + 50 * i) * t)).astype(np.float32), 16000)
        lines.append(f"wavs/{i}.wav\t{DIGIT_WORDS[i]} {DIGIT_WORDS[i + 1]}\n")
    (folder / "train.tsv").write_text("".join(lines))
    build_digits_tokenizer(folder / "tokenizer")
    return folder


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory):
    """A complete model folder (config, weights, generation config, tokenizer, feature extractor)."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_pretrained(corpus / "tokenizer")
    train.preset_model("debug", tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model(model_dir):
    return SpeechEncoderDecoderModel.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32), 16000)
    return path


def one_error_line(capsys, argv: list[str], prefix: str = "minispeechseq") -> str:
    """Run the CLI in-process: a non-zero status and exactly one stderr line, `<prefix>...: error: ...`."""
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code != 0, f"exit status 0 for {argv}; stdout {out!r}"
    assert len(lines) == 1 and lines[0].startswith(prefix) and ": error: " in lines[0], f"not one error line: {err!r}"
    return lines[0]


# ===================================================================================================== cli
# One mistake per subcommand and kind: (argv with {model} / {clip} / {tmp} placeholders, words the line must hold).
CLI_CASES = {
    "transcribe, missing model": (["transcribe", "{clip}", "--model", "{tmp}/nope"], "nope"),
    "transcribe, --batch-size 0": (["transcribe", "{clip}", "--batch-size", "0"], "--batch-size"),
    "transcribe, --chunk-length nan": (["transcribe", "{clip}", "--chunk-length", "nan"], "--chunk-length"),
    "transcribe, unknown option": (["transcribe", "{clip}", "--beams", "2"], "--beams"),
    "no subcommand": ([], "required"),
    "unknown subcommand": (["transcrib", "{clip}"], "transcrib"),
    # A bad setting is said once, before any audio is read, however many inputs there are.
    "transcribe, --num-beams 0 on three inputs": (["transcribe", "{clip}", "{clip}", "{clip}", "--num-beams", "0"],
                                                 "num_beams"),
    "transcribe, --temperature -1 on two inputs": (["transcribe", "{clip}", "{clip}", "--do-sample", "--temperature",
                                                    "-1"], "temperature"),
    "inspect, missing folder": (["inspect", "{tmp}/nope"], "nope"),
    "convert, missing source": (["convert", "{tmp}/nope", "{tmp}/out"], "nope"),
    "convert, destination is a file": (["convert", "{model}", "{tmp}/a-file"], "a-file"),
    "data, folder is a file": (["data", "{tmp}/a-file"], "a-file"),
    "data, --utterances 0": (["data", "{tmp}/d", "--utterances", "0"], "--utterances"),
    "train, no model": (["train", "--out", "{tmp}/run"], "--preset"),
    "train, unknown option": (["train", "--out", "{tmp}/run", "--learning-rate", "1"], "--learning-rate"),
    "evaluate, missing manifest": (["evaluate", "{model}", "--manifest", "{tmp}/none.tsv"], "none.tsv"),
    "evaluate, neither input": (["evaluate", "{model}"], "--manifest"),
    "evaluate, --num-beams 0": (["evaluate", "{model}", "--manifest", "m.tsv", "--num-beams", "0"], "--num-beams"),
    "bench, --repeats 0": (["bench", "--repeats", "0"], "--repeats"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_every_subcommand_fails_in_one_line(model_dir, clip, tmp_path, capsys, case):
    (tmp_path / "a-file").write_text("x")
    argv, words = CLI_CASES[case]
    line = one_error_line(capsys, [a.format(model=model_dir, clip=clip, tmp=tmp_path) for a in argv])
    assert words in line, f"the error does not name {words!r}: {line}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(tmp_path, capsys, where):
    argv = ["inspect", str(tmp_path / "nope")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    assert main(argv) != 0
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "Traceback (most recent call last)" in err and last.startswith("minispeechseq: error:"), err


def test_debug_reaches_the_subprograms(tmp_path, capsys):
    assert main(["--debug", "train", "--out", str(tmp_path / "run"), "--lr", "inf", "--preset", "debug"]) != 0
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["inspect", "train"])
def test_an_unexpected_exception_is_one_line_that_says_internal_error(model_dir, corpus, tmp_path, capsys,
                                                                        monkeypatch, command):
    def bug(*args, **kwargs):
        raise KeyError("boom")

    if command == "inspect":
        monkeypatch.setattr("minispeechseq.tools.cli._load", bug)
        argv = ["inspect", str(model_dir)]
    else:
        monkeypatch.setattr("minispeechseq.tools.train.train", bug)  # the loop the command line calls
        argv = train_argv(corpus, tmp_path / "run")
    line = one_error_line(capsys, argv)
    assert "internal error: KeyError" in line and "--debug" in line, line


def test_inspect_into_a_closed_pipe_ends_without_a_traceback(model_dir):
    # `minispeechseq inspect DIR | head -0`: the reader is gone before the first write.
    proc = subprocess.Popen([sys.executable, "-m", "minispeechseq", "inspect", str(model_dir)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ================================================================================================= configs
# config.json edits: (path of the field, the value written, words of the error besides the field name).
CONFIG_CASES = {
    "encoder not an object": (("encoder",), 5, "must be a config"),
    "encoder.hidden_size a string": (("encoder", "hidden_size"), "16", "an int >= 1"),
    "encoder.hidden_size 0": (("encoder", "hidden_size"), 0, "an int >= 1"),
    "encoder.hidden_size negative": (("encoder", "hidden_size"), -24, "an int >= 1"),
    "encoder.num_attention_heads 5": (("encoder", "num_attention_heads"), 5, "divisible"),
    "encoder.conv_dim shorter": (("encoder", "conv_dim"), [16], "same, non-zero length"),
    "encoder.conv_kernel 0": (("encoder", "conv_kernel"), [0, 8], "ints >= 1"),
    "encoder.hidden_dropout 1.5": (("encoder", "hidden_dropout"), 1.5, "[0, 1]"),
    "encoder.layerdrop -0.1": (("encoder", "layerdrop"), -0.1, "[0, 1]"),
    "encoder.layer_norm_eps 0": (("encoder", "layer_norm_eps"), 0, "> 0"),
    "encoder.feat_extract_norm batch": (("encoder", "feat_extract_norm"), "batch", "'group', 'layer'"),
    "encoder.conv_bias a string": (("encoder", "conv_bias"), "yes", "true or false"),
    "decoder.vocab_size 0": (("decoder", "vocab_size"), 0, "an int >= 1"),
    "decoder.n_embd a float": (("decoder", "n_embd"), 24.0, "an int >= 1"),
    "decoder.n_layer true": (("decoder", "n_layer"), True, "an int >= 1"),
    "decoder.n_head 5": (("decoder", "n_head"), 5, "divisible"),
    "decoder.n_positions null": (("decoder", "n_positions"), None, "an int >= 1"),
    "decoder.attn_pdrop 2": (("decoder", "attn_pdrop"), 2, "[0, 1]"),
    "decoder.model_type unknown": (("decoder", "model_type"), "llama", "not supported"),
}


def edited_checkpoint(model_dir, tmp_path, keys, value):
    folder = tmp_path / "edited"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    target = config
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_fields_are_refused_before_allocating(model_dir, tmp_path, monkeypatch, case):
    keys, value, words = CONFIG_CASES[case]
    folder = edited_checkpoint(model_dir, tmp_path, keys, value)

    def allocated(*args, **kwargs):
        raise AssertionError("a parameter was allocated before the config was checked")

    monkeypatch.setattr(torch.nn.Module, "register_parameter", allocated)
    with pytest.raises(ValueError) as error:
        SpeechEncoderDecoderModel.from_pretrained(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder / "config.json") in message, message
    # The field by its full name; a relation between two (heads and width) names both.
    field = ".".join(keys) if words != "divisible" else f"{keys[0]}.*{keys[1]}"
    assert re.search(field, message) and words in message, message


@pytest.mark.parametrize("case", ["list", "string", "null"])
def test_config_json_that_is_not_an_object(model_dir, tmp_path, capsys, case):
    folder = edited_checkpoint(model_dir, tmp_path, ("model_type",), "speech-encoder-decoder")
    (folder / "config.json").write_text({"list": "[1, 2]", "string": '"config"', "null": "null"}[case])
    assert "config.json" in one_error_line(capsys, ["inspect", str(folder)])


def test_a_config_edited_after_it_was_made_is_checked_when_the_model_is_built(model, monkeypatch):
    config = type(model.config).from_dict(model.config.to_dict())
    config.decoder.n_head = 5
    monkeypatch.setattr(torch.nn.Module, "register_parameter", lambda *a, **k: pytest.fail("allocated first"))
    with pytest.raises(ValueError, match=r"decoder\.n_embd \(24\) must be divisible by n_head \(5\)"):
        SpeechEncoderDecoderModel(config=config)


def test_a_terabyte_config_is_refused_with_its_size(model_dir, tmp_path):
    folder = edited_checkpoint(model_dir, tmp_path, ("decoder", "vocab_size"), 10**13)  # 10^13 x 24 x 4 B = 960 TB
    with pytest.raises(ValueError, match=r"parameters x 4 bytes\) would need about [\d,.]+ GB but [\d,.]+ GB"):
        SpeechEncoderDecoderModel.from_pretrained(folder)


# ============================================================================================== generation
BAD_SETTINGS = {
    "length_penalty nan": ({"num_beams": 2, "length_penalty": math.nan}, "length_penalty must be a finite number"),
    "length_penalty inf": ({"num_beams": 2, "length_penalty": math.inf}, "length_penalty must be a finite number"),
    "temperature nan": ({"do_sample": True, "temperature": math.nan}, "temperature must be a finite number"),
    "temperature inf": ({"do_sample": True, "temperature": math.inf}, "temperature must be a finite number"),
    "top_p nan": ({"do_sample": True, "top_p": math.nan}, "top_p must be a finite number"),
    "repetition_penalty inf": ({"repetition_penalty": math.inf}, "repetition_penalty must be a finite number"),
    "num_beams a string": ({"num_beams": "4"}, "num_beams must be an int >= 1"),
    "top_k negative": ({"do_sample": True, "top_k": -1}, "top_k must be an int >= 0"),
    "eos_token_id outside": ({"eos_token_id": 999}, "eos_token_id=\\[999\\] is outside"),
    "eos_token_id list": ({"eos_token_id": [2, VOCAB]}, f"eos_token_id=\\[{VOCAB}\\] is outside"),
    "eos_token_id negative": ({"eos_token_id": -1}, "eos_token_id=\\[-1\\] is outside"),
    "pad_token_id outside": ({"pad_token_id": VOCAB}, "pad_token_id"),
    "forced_eos_token_id outside": ({"forced_eos_token_id": 999}, "forced_eos_token_id"),
    "bad_words_ids outside": ({"bad_words_ids": [[3, 999]]}, "bad_words_ids=\\[999\\] is outside"),
    "suppress_tokens negative": ({"suppress_tokens": [-5]}, "suppress_tokens"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_generation_settings(model, case):
    kwargs, words = BAD_SETTINGS[case]
    with pytest.raises(ValueError, match=words):
        model.generate(torch.zeros(1, 8000), max_new_tokens=3, **kwargs)


def test_a_generation_config_file_with_nan_names_the_file(model_dir, tmp_path):
    folder = edited_checkpoint(model_dir, tmp_path, ("model_type",), "speech-encoder-decoder")
    (folder / "generation_config.json").write_text('{"decoder_start_token_id": 1, "length_penalty": NaN}')
    with pytest.raises(ValueError, match="generation_config.json: length_penalty must be a finite number, got nan"):
        GenerationConfig.from_pretrained(folder)


def test_the_checkpoint_generation_config_decides_when_no_flag_is_given(model_dir, tmp_path, clip, capsys,
                                                                         monkeypatch):
    folder = edited_checkpoint(model_dir, tmp_path, ("model_type",), "speech-encoder-decoder")
    gen = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "num_beams": 3, "max_new_tokens": 4}))
    beams = []
    real = loop._beam_loop
    monkeypatch.setattr(loop, "_beam_loop", lambda s, *a: beams.append(s.config.num_beams) or real(s, *a))
    assert main(["transcribe", str(clip), "--model", str(folder)]) == 0
    assert main(["transcribe", str(clip), "--model", str(folder), "--num-beams", "2"]) == 0
    assert main(["transcribe", str(clip), "--model", str(folder), "--num-beams", "1"]) == 0
    assert beams == [3, 2], f"beam searches run (num_beams each): {beams}; expected the file's 3, then the flag's 2"


def test_num_beams_none_means_the_model_default(model):
    saved = model.generation_config
    model.generation_config = saved.update(num_beams=2)
    try:
        assert model.generate(torch.zeros(1, 8000), num_beams=None, max_new_tokens=2).shape[0] == 1
        with pytest.raises(ValueError, match="num_return_sequences=3 is more than num_beams=2"):
            model.generate(torch.zeros(1, 8000), num_beams=None, num_return_sequences=3, max_new_tokens=2)
    finally:
        model.generation_config = saved


@pytest.mark.parametrize("ids", [-1, [3, -100]])
def test_decode_refuses_negative_ids(corpus, ids):
    tokenizer = Tokenizer.from_pretrained(corpus / "tokenizer")
    with pytest.raises(ValueError, match="negative token ids") as error:
        tokenizer.decode(ids)
    assert "\n" not in str(error.value)


# ================================================================================================== memory
def test_a_huge_num_beams_is_refused_before_the_encoder_runs(model, monkeypatch):
    monkeypatch.setattr(model.encoder, "forward", lambda *a, **k: pytest.fail("the encoder ran"))
    with pytest.raises(ValueError, match=r"num_beams=100000000,.* would need about [\d,.]+ GB but [\d,.]+ GB"):
        model.generate(torch.zeros(1, 16000), num_beams=10**8)


def test_the_beam_estimate_follows_the_available_memory(model, monkeypatch):
    # 200 beams need ~5 MB of cache here: fine with the machine's memory, refused with 1 MB left.
    model.generate(torch.zeros(1, 8000), num_beams=200, max_new_tokens=2)
    monkeypatch.setattr("minispeechseq.files.memory.host_available_bytes", lambda: 10**6)
    with pytest.raises(ValueError, match="num_beams=200"):
        model.generate(torch.zeros(1, 8000), num_beams=200, max_new_tokens=2)


def test_the_beam_refusal_is_one_cli_line(model_dir, clip, capsys):
    line = one_error_line(capsys, ["transcribe", str(clip), "--model", str(model_dir), "--num-beams", "100000000"])
    assert "GB of memory is available" in line, line


# ================================================================================================ training
def train_argv(corpus, out, *extra):
    return ["train", "--preset", "debug", "--train-manifest", str(corpus / "train.tsv"), "--tokenizer",
            str(corpus / "tokenizer"), "--out", str(out), "--batch-size", "2", "--steps", "2", "--quiet", *extra]


BAD_TRAIN_OPTIONS = {
    "--lr inf": (["--lr", "inf"], "--lr must be a finite number > 0"),
    "--lr nan": (["--lr", "nan"], "--lr must be a finite number > 0"),
    "--lr 0": (["--lr", "0"], "--lr must be a finite number > 0"),
    "--max-grad-norm -1": (["--max-grad-norm", "-1"], "--max-grad-norm must be a finite number > 0"),
    "--max-grad-norm 0": (["--max-grad-norm", "0"], "--max-grad-norm must be a finite number > 0"),
    "--max-grad-norm nan": (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number > 0"),
    "--weight-decay -1": (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    "--min-lr-ratio 2": (["--min-lr-ratio", "2"], "--min-lr-ratio must be a number in [0, 1]"),
    "--dropout 1.5": (["--dropout", "1.5"], "--dropout must be a number in [0, 1]"),
    "--warmup-steps -1": (["--warmup-steps", "-1"], "--warmup-steps must be an integer >= 0"),
    "--steps 0": (["--steps", "0"], "--steps must be at least 1"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN_OPTIONS))
def test_bad_training_options(corpus, tmp_path, capsys, case):
    extra, words = BAD_TRAIN_OPTIONS[case]
    line = one_error_line(capsys, train_argv(corpus, tmp_path / "run", *extra))
    assert words in line, line
    assert not (tmp_path / "run").exists(), "training started"


def test_out_that_is_a_file(corpus, tmp_path, capsys):
    (tmp_path / "run").write_text("")
    assert "is a file" in one_error_line(capsys, train_argv(corpus, tmp_path / "run"))


@pytest.mark.parametrize("save_every", ["1", "10"])
def test_training_stops_at_the_first_non_finite_value_without_saving_it(corpus, tmp_path, capsys, monkeypatch,
                                                                         save_every):
    # An optimizer whose step overflows every weight (what --lr inf did): save_every=1 meets the NaN weights at
    # the first save, save_every=10 meets the NaN loss of step 2.
    class Exploding(torch.optim.SGD):
        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    p.mul_(math.inf)  # +-inf, and NaN where a weight was 0

    def exploding(model, lr, weight_decay):
        return Exploding(model.parameters(), lr=lr)

    monkeypatch.setattr(train, "make_optimizer", exploding)
    line = one_error_line(capsys, train_argv(corpus, tmp_path / "run", "--steps", "3", "--save-every", save_every))
    assert ("hold inf or NaN" if save_every == "1" else "not finite") in line, line
    assert not [p for p in os.listdir(tmp_path / "run") if p.startswith(("checkpoint-", "final"))]


def write_manifest(folder, rows: list[str]) -> str:
    path = folder / "m.tsv"
    path.write_text("".join(f"{row}\n" for row in rows))
    return str(path)


def test_corrupt_training_audio_names_the_file_and_the_manifest_line(corpus, tmp_path, capsys):
    shutil.copytree(corpus, tmp_path / "c")
    (tmp_path / "c" / "wavs" / "3.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    line = one_error_line(capsys, train_argv(tmp_path / "c", tmp_path / "run"))
    assert "train.tsv, line 4" in line and "3.wav" in line, line


@pytest.mark.parametrize("case", ["empty", "corrupt audio", "one column"])
def test_evaluate_manifest_errors(model_dir, corpus, tmp_path, capsys, case):
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    rows = {"empty": [], "corrupt audio": [f"{corpus}/wavs/0.wav\tzero one", "bad.wav\tone"],
            "one column": ["wavs/0.wav"]}[case]
    line = one_error_line(capsys, ["evaluate", str(model_dir), "--manifest", write_manifest(tmp_path, rows)])
    assert {"empty": "lists no utterances", "corrupt audio": "line 2", "one column": "line 1"}[case] in line, line


def test_data_without_espeak_ng_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "apt-get install espeak-ng" in one_error_line(capsys, ["data", str(tmp_path / "d")])


# ============================================================================================= environment
@pytest.mark.parametrize("variable", ["WORLD_SIZE", "RANK", "LOCAL_RANK"])
@pytest.mark.parametrize("value", ["inf", "-1", "two"])
def test_torchrun_variables_that_are_not_ranks(corpus, tmp_path, capsys, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    line = one_error_line(capsys, train_argv(corpus, tmp_path / "run"))
    assert f"{variable}={value!r}" in line, line


@pytest.mark.parametrize("value", ["inf", "nan", "-5", "lots"])
def test_eager_memory_limit_variable(model_dir, clip, capsys, monkeypatch, value):
    monkeypatch.setenv("MINISPEECHSEQ_EAGER_MAX_BYTES", value)
    line = one_error_line(capsys, ["transcribe", str(clip), "--model", str(model_dir), "--attn", "eager"])
    assert f"MINISPEECHSEQ_EAGER_MAX_BYTES={value!r}" in line, line
