"""Hub ids work everywhere a transformers user passes them: the model, its halves, each config, the generation
config, the feature extractor, the tokenizer, the processor and the command line (issue 19).

Nothing is downloaded. A huggingface_hub cache is built in a temporary HF_HOME, in the layout transformers fills:

    <HF_HOME>/hub/models--org--name/refs/main                    the commit hash `main` points to
    <HF_HOME>/hub/models--org--name/snapshots/<commit>/...       the files transformers wrote with save_pretrained

(a real cache links those files to `blobs/`; readers only open the paths, so plain copies stand in for the links).
Every test runs offline (HF_HUB_OFFLINE=1), except the `local_files_only=True` one, which turns offline mode off
and makes any request to the hub fail the test.

huggingface_hub reads HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE once, when it is imported. So the in-process tests
set both the environment and `huggingface_hub.constants`; the subprocess test sets the environment alone, which is
what a user does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import transformers
from tests.test_doc_examples import speech, tiny_bert_config, tiny_encoder_config, write_bert_tokenizer

from minispeechseq import (
    AutoFeatureExtractor,
    AutoTokenizer,
    BertConfig,
    BertForCausalLM,
    GenerationConfig,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Tokenizer,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    Wav2Vec2Processor,
)
from minispeechseq.tools.cli import main

huggingface_hub = pytest.importorskip("huggingface_hub", reason="hub ids need huggingface_hub, which is not installed")

transformers.logging.set_verbosity_error()
ROOT = Path(__file__).resolve().parent.parent


def commit_of(repo_id: str, tag: str) -> str:
    """A 40-hex commit hash, fixed per (repo, tag), as the hub would give."""
    return hashlib.sha1(f"{repo_id}@{tag}".encode()).hexdigest()


def put_in_cache(cache: Path, repo_id: str, files: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Copy a saved folder into `cache` as the snapshot `commit` of `repo_id`, with refs/<ref> pointing to it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(files, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)  # no newline: huggingface_hub reads the file as is
    return snapshot


def save_asr_model(folder: Path, decoder_layers: int, max_length: int, with_tokenizer: bool = True) -> None:
    """A tiny wav2vec2 + BERT recognizer with its feature extractor (and tokenizer), all written by transformers."""
    decoder = tiny_bert_config()
    decoder.num_hidden_layers = decoder_layers
    config = transformers.SpeechEncoderDecoderConfig.from_encoder_decoder_configs(tiny_encoder_config(), decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 0, 3
    model = transformers.SpeechEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id, model.generation_config.eos_token_id = 2, 3
    model.generation_config.pad_token_id, model.generation_config.max_length = 0, max_length
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    if with_tokenizer:
        write_bert_tokenizer(folder)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An HF_HOME whose hub cache holds:
    - org/asr: a recognizer + processor; `main` has a 2-layer decoder and max_length 8, tag `v2` (a second
      snapshot) a 1-layer decoder and max_length 5;
    - org/enc, org/dec: the two halves of a warm start (wav2vec2; BERT without cross-attention);
    - org/no-tokenizer: a recognizer with its feature extractor but no tokenizer files."""
    home = tmp_path_factory.mktemp("hf_home")
    cache = home / "hub"
    saved = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    save_asr_model(saved / "asr", decoder_layers=2, max_length=8)
    save_asr_model(saved / "asr-v2", decoder_layers=1, max_length=5)
    save_asr_model(saved / "no-tokenizer", decoder_layers=1, max_length=5, with_tokenizer=False)
    transformers.Wav2Vec2Model(tiny_encoder_config()).save_pretrained(saved / "enc")
    transformers.BertForPreTraining(tiny_bert_config()).save_pretrained(saved / "dec")
    write_bert_tokenizer(saved / "dec")
    snapshots = {
        "org/asr": put_in_cache(cache, "org/asr", saved / "asr", commit_of("org/asr", "main")),
        "org/asr@v2": put_in_cache(cache, "org/asr", saved / "asr-v2", commit_of("org/asr", "v2"), refs=("v2",)),
        "org/enc": put_in_cache(cache, "org/enc", saved / "enc", commit_of("org/enc", "main")),
        "org/dec": put_in_cache(cache, "org/dec", saved / "dec", commit_of("org/dec", "main")),
        "org/no-tokenizer": put_in_cache(cache, "org/no-tokenizer", saved / "no-tokenizer",
                                         commit_of("org/no-tokenizer", "main")),
    }
    return {"home": home, "cache": cache, "snapshots": snapshots}


@pytest.fixture
def offline(hub, monkeypatch):
    """HF_HOME = the test cache's home, offline: in the environment and in huggingface_hub's constants."""
    monkeypatch.setenv("HF_HOME", str(hub["home"]))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(hub["home"]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub["cache"]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return hub


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "a.wav"
    sf.write(path, speech(seconds=0.5).astype("float32") * 0.5, 16000)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, f"the error is more than one line: {message!r}"
    return message


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # only what this command writes
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ======================================================================================== the seed's example
def test_seed_example_with_hub_ids(offline):
    # transformers' documented flow, with the hub id in place of a folder.
    model = SpeechEncoderDecoderModel.from_pretrained("org/asr")
    processor = Wav2Vec2Processor.from_pretrained("org/asr")
    input_values = processor(speech(), return_tensors="pt").input_values
    generated_ids = model.generate(input_values)
    text = processor.batch_decode(generated_ids, skip_special_tokens=True)[0]

    # transformers reads the same cache the same way: same ids, same text.
    ref_model = transformers.SpeechEncoderDecoderModel.from_pretrained("org/asr")
    ref_processor = transformers.Wav2Vec2Processor.from_pretrained("org/asr")
    ref_ids = ref_model.generate(ref_processor(speech(), return_tensors="pt").input_values)
    assert torch.equal(generated_ids, ref_ids), f"ours {generated_ids.tolist()} vs transformers {ref_ids.tolist()}"
    assert text == ref_processor.batch_decode(ref_ids, skip_special_tokens=True)[0]
    # It is main's snapshot (2 decoder layers, max_length 8), read from the cache.
    assert model.config.decoder.num_hidden_layers == 2 and model.generation_config.max_length == 8
    assert same_weights(model, SpeechEncoderDecoderModel.from_pretrained(offline["snapshots"]["org/asr"]))


def test_every_loader_takes_a_hub_id(offline):
    """Each from_pretrained reads the hub id's snapshot exactly as it reads that snapshot's folder."""
    asr, enc, dec = (offline["snapshots"][k] for k in ("org/asr", "org/enc", "org/dec"))
    assert SpeechEncoderDecoderConfig.from_pretrained("org/asr").to_dict() == \
        SpeechEncoderDecoderConfig.from_pretrained(asr).to_dict()
    assert Wav2Vec2Config.from_pretrained("org/enc").to_dict() == Wav2Vec2Config.from_pretrained(enc).to_dict()
    assert BertConfig.from_pretrained("org/dec").to_dict() == BertConfig.from_pretrained(dec).to_dict()
    assert GenerationConfig.from_pretrained("org/asr") == GenerationConfig.from_pretrained(asr)
    assert GenerationConfig.from_pretrained("org/asr").max_length == 8
    for extractor in (Wav2Vec2FeatureExtractor.from_pretrained("org/asr"), AutoFeatureExtractor.from_pretrained("org/asr")):
        assert extractor.to_dict() == Wav2Vec2FeatureExtractor.from_pretrained(asr).to_dict()
    for tokenizer in (Tokenizer.from_pretrained("org/asr"), AutoTokenizer.from_pretrained("org/asr")):
        assert tokenizer.get_vocab() == Tokenizer.from_pretrained(asr).get_vocab()
        assert tokenizer("the quilter").input_ids == Tokenizer.from_pretrained(asr)("the quilter").input_ids
    # The halves' own classes (PreTrainedModel.from_pretrained).
    assert same_weights(Wav2Vec2Model.from_pretrained("org/enc"), Wav2Vec2Model.from_pretrained(enc))
    assert same_weights(BertForCausalLM.from_pretrained("org/dec"), BertForCausalLM.from_pretrained(dec))


def test_warm_start_from_two_cached_halves(offline):
    model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained("org/enc", "org/dec")
    assert same_weights(model.encoder, Wav2Vec2Model.from_pretrained(offline["snapshots"]["org/enc"]))
    assert model.config.decoder.model_type == "bert" and model.config.decoder.add_cross_attention
    # transformers' per-half hub arguments (encoder_revision=, decoder_local_files_only=...) say where each half
    # comes from; they are not config fields to override.
    again = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
        "org/enc", "org/dec", encoder_revision="main", decoder_revision=commit_of("org/dec", "main"),
        encoder_local_files_only=True, decoder_cache_dir=str(offline["cache"]),
    )
    assert same_weights(again.encoder, model.encoder)
    with pytest.raises(FileNotFoundError) as excinfo:
        SpeechEncoderDecoderModel.from_encoder_decoder_pretrained("org/enc", "org/dec", decoder_revision="v9")
    message = one_line_error(excinfo)
    assert "decoder checkpoint folder" in message and "org/dec" in message and "'v9'" in message


# ========================================================================================= the command line
def test_cli_transcribe_with_a_hub_id(offline, wav, capsys):
    code, out, err = cli(capsys, ["transcribe", str(wav), "--model", "org/asr"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[0] == str(wav)
    # The text the library gives for the same file and model.
    model = SpeechEncoderDecoderModel.from_pretrained("org/asr")
    processor = Wav2Vec2Processor.from_pretrained("org/asr")
    audio, _ = sf.read(wav, dtype="float32")
    ids = model.generate(processor(audio, sampling_rate=16000, return_tensors="pt").input_values)
    assert lines[0].split("\t")[1] == processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    code, out, err = cli(capsys, ["inspect", "org/asr", "--revision", "v2"])
    assert code == 0, err
    assert "SpeechEncoderDecoderModel" in out and "num_hidden_layers=1" in out  # v2's 1-layer decoder


def test_cli_in_a_fresh_process_reads_the_environment(hub, wav):
    """What a user does: HF_HOME and HF_HUB_OFFLINE in the environment, read when huggingface_hub is imported."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")}
    env.update(HF_HOME=str(hub["home"]), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "minispeechseq", "transcribe", str(wav), "--model"]
    done = subprocess.run([*run, "org/asr"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{wav}\t") and len(done.stdout.strip().splitlines()) == 1
    missed = subprocess.run([*run, "org/missing"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert missed.returncode != 0 and len(missed.stderr.strip().splitlines()) == 1, missed.stderr
    assert "org/missing" in missed.stderr and str(hub["home"] / "hub") in missed.stderr


# ============================================================================================ what can fail
def test_an_id_not_in_the_cache_is_one_clear_error(offline, wav, capsys):
    for load in (SpeechEncoderDecoderModel.from_pretrained, Wav2Vec2Processor.from_pretrained,
                 Tokenizer.from_pretrained, GenerationConfig.from_pretrained, Wav2Vec2Config.from_pretrained):
        with pytest.raises(FileNotFoundError) as excinfo:
            load("org/missing")
        message = one_line_error(excinfo)
        # What was tried: the local path, then the hub cache, and why that could not help.
        assert "org/missing" in message and "not a local" in message, message
        assert str(offline["cache"]) in message and "HF_HUB_OFFLINE=1" in message, message
    code, out, err = cli(capsys, ["transcribe", str(wav), "--model", "org/missing"])
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "org/missing" in err and "HF_HUB_OFFLINE=1" in err


def test_a_revision_not_cached_is_one_clear_error(offline, wav, capsys):
    with pytest.raises(FileNotFoundError) as excinfo:
        SpeechEncoderDecoderModel.from_pretrained("org/asr", revision="v3")
    message = one_line_error(excinfo)
    assert "org/asr" in message and "not its revision 'v3'" in message and "cached: main, v2" in message, message
    with pytest.raises(FileNotFoundError, match="not its revision 'v3'"):
        Wav2Vec2Processor.from_pretrained("org/asr", revision="v3")
    code, out, err = cli(capsys, ["transcribe", str(wav), "--model", "org/asr", "--revision", "v3"])
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "'v3'" in err


def test_a_model_without_its_tokenizer_names_the_missing_part(offline, wav, capsys):
    # The model itself loads from the cache...
    SpeechEncoderDecoderModel.from_pretrained("org/no-tokenizer")
    # ...but its processor cannot, and says which half is missing.
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        Wav2Vec2Processor.from_pretrained("org/no-tokenizer")
    code, out, err = cli(capsys, ["transcribe", str(wav), "--model", "org/no-tokenizer"])
    assert code != 0 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "org/no-tokenizer" in err and "not its processor" in err and "no tokenizer files" in err, err


def test_a_missing_local_path_is_not_sent_to_the_hub(offline, tmp_path, monkeypatch):
    def no_lookup(*args, **kwargs):
        raise AssertionError("a path that cannot be a hub id was looked up on the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_lookup)
    for path in (tmp_path / "nowhere", "./nowhere", "a/b/c"):
        with pytest.raises(FileNotFoundError) as excinfo:
            SpeechEncoderDecoderModel.from_pretrained(path)
        assert "not a local folder, nor a hub id" in one_line_error(excinfo)


def test_a_file_where_a_folder_is_expected(offline, tmp_path):
    # Before one resolver, the model raised a ValueError here and the tokenizer a FileNotFoundError: still both.
    file = tmp_path / "config.json"
    file.write_text("{}")
    for load in (SpeechEncoderDecoderModel.from_pretrained, Tokenizer.from_pretrained, Wav2Vec2Processor.from_pretrained):
        for kind in (ValueError, FileNotFoundError):
            with pytest.raises(kind, match="is a file; a .*folder was expected"):
                load(file)
    assert BertConfig.from_pretrained(file).vocab_size == BertConfig().vocab_size  # configs may be given by their file


def test_without_huggingface_hub_a_hub_id_says_what_to_install(offline, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now raises ImportError
    with pytest.raises(FileNotFoundError, match=r"install huggingface_hub \(pip install huggingface_hub\)"):
        Tokenizer.from_pretrained("org/asr")


# ================================================================================ revision, cache_dir, local_files_only
def test_revision_selects_a_snapshot(offline):
    for revision in ("v2", commit_of("org/asr", "v2")):  # a tag, and the commit hash itself
        model = SpeechEncoderDecoderModel.from_pretrained("org/asr", revision=revision)
        assert model.config.decoder.num_hidden_layers == 1 and model.generation_config.max_length == 5
        assert SpeechEncoderDecoderConfig.from_pretrained("org/asr", revision=revision).decoder.num_hidden_layers == 1
        assert GenerationConfig.from_pretrained("org/asr", revision=revision).max_length == 5
        assert Wav2Vec2Processor.from_pretrained("org/asr", revision=revision).tokenizer.vocab_size > 0
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained("org/asr", revision="v2"),
                        SpeechEncoderDecoderModel.from_pretrained(offline["snapshots"]["org/asr@v2"]))
    assert SpeechEncoderDecoderModel.from_pretrained("org/asr", revision="main").config.decoder.num_hidden_layers == 2


def test_cache_dir_outside_hf_home(offline, tmp_path):
    elsewhere = tmp_path / "other-cache"
    put_in_cache(elsewhere, "team/asr", offline["snapshots"]["org/asr@v2"], commit_of("team/asr", "main"))
    # Not in HF_HOME's cache...
    with pytest.raises(FileNotFoundError, match="has no copy of it"):
        SpeechEncoderDecoderConfig.from_pretrained("team/asr")
    # ...but found with cache_dir, by every loader.
    model = SpeechEncoderDecoderModel.from_pretrained("team/asr", cache_dir=elsewhere)
    assert model.config.decoder.num_hidden_layers == 1
    assert Wav2Vec2Processor.from_pretrained("team/asr", cache_dir=elsewhere).tokenizer.pad_token_id == 0
    assert GenerationConfig.from_pretrained("team/asr", cache_dir=str(elsewhere)).max_length == 5
    assert Wav2Vec2FeatureExtractor.from_pretrained("team/asr", cache_dir=elsewhere).sampling_rate == 16000
    # A miss names the cache it looked in.
    with pytest.raises(FileNotFoundError, match=f"{elsewhere}.*has no copy of it"):
        Tokenizer.from_pretrained("org/asr", cache_dir=elsewhere)


def test_local_files_only_reads_the_cache_without_asking_the_hub(offline, monkeypatch):
    # Online mode, but any request to the hub fails the test: local_files_only alone must keep it offline.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def no_request(*args, **kwargs):
        raise AssertionError("the hub was asked despite local_files_only=True")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", no_request)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", no_request)
    model = SpeechEncoderDecoderModel.from_pretrained("org/asr", local_files_only=True)
    assert model.config.decoder.num_hidden_layers == 2
    assert Wav2Vec2Processor.from_pretrained("org/asr", revision="v2", local_files_only=True).tokenizer.vocab_size > 0
    assert BertConfig.from_pretrained("org/dec", local_files_only=True).vocab_size > 0
    with pytest.raises(FileNotFoundError) as excinfo:
        Tokenizer.from_pretrained("org/missing", local_files_only=True)
    assert "local_files_only=True" in one_line_error(excinfo)


def test_a_local_folder_wins_over_the_cache(offline, tmp_path, monkeypatch):
    # A folder ./org/asr next to the user holds the v2 model; the cache's main has the 2-layer one.
    monkeypatch.chdir(tmp_path)
    shutil.copytree(offline["snapshots"]["org/asr@v2"], tmp_path / "org" / "asr")
    assert SpeechEncoderDecoderModel.from_pretrained("org/asr").config.decoder.num_hidden_layers == 1
    assert GenerationConfig.from_pretrained("org/asr").max_length == 5
