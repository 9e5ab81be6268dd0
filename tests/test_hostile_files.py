"""Hostile files, folders and checkpoints (issue 18, the files part): what a careless or hostile user puts on disk.

Each test names its class in its name's first word, counted in the closing report: permissions, deletion,
special (FIFOs and devices where a file was expected), size, index (shard indexes), tokenizer, disk (full or
read-only), symlink, training (trainer state and training checkpoints). The rules they check live in one place each:
the file reader in config.py (`read_text`), the marker rule in resolve.py, and saving in checkpoint.py (`atomic_save`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.test_doc_examples import write_bert_tokenizer
from tests.test_save_interrupted import leftovers, same_weights, tiny_model

import minispeechseq.files.checkpoint as ckpt
from minispeechseq import GenerationConfig, SpeechEncoderDecoderModel, Tokenizer, Wav2Vec2FeatureExtractor
from minispeechseq.tools.cli import bundled_model_dir, main
from minispeechseq.files.readers import CONFIG_MAX_BYTES, TOKENIZER_MAX_BYTES, read_json
from minispeechseq.tools import train as train_cli
from minispeechseq.training import train

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(bundled_model_dir()).parent / "samples"


@contextlib.contextmanager
def no_hang(seconds: int = 20):
    """Fail (instead of blocking the suite) if the body hangs, as an open() of a FIFO with no writer does."""
    def alarm(*_):
        raise TimeoutError(f"blocked for more than {seconds} s (a FIFO opened for reading?)")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    """The bundled digits model's folder, copied: every JSON file the library reads, a tokenizer, weights."""
    folder = tmp_path / "digits"
    shutil.copytree(bundled_model_dir(), folder)
    return folder


# ================================================================================================ permissions
@pytest.mark.parametrize("folder_mode, file_mode", [(0o700, 0o600), (0o755, 0o644), (0o750, 0o640)],
                         ids=["0700-0600", "0755-0644", "0750-0640"])
def test_permissions_of_an_existing_checkpoint_survive_a_save(tmp_path, folder_mode, file_mode):
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder)
    (folder / "vocab.txt").write_text("[PAD]\n")  # carried over, not written by the save
    for name in os.listdir(folder):
        os.chmod(folder / name, file_mode)
    os.chmod(folder, folder_mode)
    tiny_model(1).save_pretrained(folder)
    assert mode(folder) == folder_mode, f"folder mode {oct(mode(folder))}, expected {oct(folder_mode)}"
    modes = {name: oct(mode(folder / name)) for name in os.listdir(folder)}
    assert set(modes.values()) == {oct(file_mode)}, modes


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask-022", "umask-077"])
def test_permissions_of_a_new_checkpoint_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        tiny_model(0).save_pretrained(tmp_path / "new")
    finally:
        os.umask(previous)
    folder = tmp_path / "new"
    assert mode(folder) == 0o777 & ~umask, oct(mode(folder))
    assert {mode(folder / n) for n in os.listdir(folder)} == {0o666 & ~umask}


# =================================================================================================== deletion
def user_folders(parent: Path) -> list[Path]:
    """Folders of the user's whose names match the save's own patterns, one shaped exactly like a save's container."""
    made = [parent / ".old-mymodel-v1", parent / ".tmp-mymodel-scratch", parent / ".old-mymodel-abc123"]
    for folder in made:
        (folder / "x").mkdir(parents=True)
        (folder / "x" / "config.json").write_text("{}")
        (folder / "notes.txt").write_text("mine")
    return made


def assert_untouched(folders: list[Path]) -> None:
    for folder in folders:
        assert (folder / "notes.txt").read_text() == "mine" and (folder / "x" / "config.json").exists(), folder


def test_deletion_never_happens_to_unmarked_folders_on_load(tmp_path):
    mine = user_folders(tmp_path)
    for load in (SpeechEncoderDecoderModel.from_pretrained, Tokenizer.from_pretrained, GenerationConfig.from_pretrained):
        with pytest.raises(FileNotFoundError):
            load(tmp_path / "mymodel")
    assert not (tmp_path / "mymodel").exists(), "a user's folder was taken for a checkpoint a save had moved aside"
    assert_untouched(mine)


def test_deletion_never_happens_to_unmarked_folders_on_save_and_convert(tmp_path, checkpoint):
    mine = user_folders(tmp_path)
    tiny_model(0).save_pretrained(tmp_path / "mymodel")
    tiny_model(1).save_pretrained(tmp_path / "mymodel")
    assert main(["convert", str(checkpoint), str(tmp_path / "mymodel")]) == 0
    assert_untouched(mine)


def test_deletion_still_recovers_a_save_killed_between_its_renames(tmp_path):
    # The marked containers a kill leaves (tests/test_save_interrupted.py kills a real process there).
    folder, old = tmp_path / "mymodel", tiny_model(0)
    old.save_pretrained(folder)
    mine = user_folders(tmp_path)
    aside = ckpt.make_save_container(str(tmp_path), "old", "mymodel")
    os.rename(folder, os.path.join(aside, "x"))
    Path(ckpt.make_save_container(str(tmp_path), "tmp", "mymodel"), "x").mkdir()
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), old)
    assert_untouched(mine)
    assert sorted(leftovers(folder)) == sorted(p.name for p in mine), "the save's own containers were left"


# ============================================================================================== special files
JSON_FILES = {  # every JSON file of a checkpoint folder that Python opens, and what reads it
    "config.json": SpeechEncoderDecoderModel.from_pretrained,
    "generation_config.json": GenerationConfig.from_pretrained,
    "preprocessor_config.json": Wav2Vec2FeatureExtractor.from_pretrained,
    "tokenizer_config.json": Tokenizer.from_pretrained,
    "special_tokens_map.json": Tokenizer.from_pretrained,
}


@pytest.mark.parametrize("name", list(JSON_FILES))
def test_special_fifo_in_place_of_each_json_file_is_refused(checkpoint, name):
    (checkpoint / name).unlink()
    os.mkfifo(checkpoint / name)
    with no_hang(), pytest.raises(ValueError, match="FIFO") as error:
        JSON_FILES[name](checkpoint)
    assert str(checkpoint / name) in str(error.value) and "\n" not in str(error.value)


LOAD_FIFOS_RUST_WOULD_OPEN = textwrap.dedent("""
    import os, sys
    from minispeechseq import SpeechEncoderDecoderModel, Tokenizer
    folder = sys.argv[1]
    for name in ("model.safetensors", "tokenizer.json"):
        os.unlink(os.path.join(folder, name))
    for name, load in [("model.safetensors", SpeechEncoderDecoderModel.from_pretrained),
                       ("pytorch_model.bin", SpeechEncoderDecoderModel.from_pretrained),
                       ("tokenizer.json", Tokenizer.from_pretrained)]:
        os.mkfifo(os.path.join(folder, name))
        try:
            load(folder)
        except ValueError as e:
            print(e)
        os.unlink(os.path.join(folder, name))
""")


def test_special_fifo_in_place_of_files_that_rust_opens_is_refused(checkpoint):
    # In a child process, with a timeout: safetensors and tokenizers open files in Rust, where a blocked open()
    # ignores SIGALRM, so `no_hang` could not stop a regression from blocking the suite.
    done = subprocess.run([sys.executable, "-c", LOAD_FIFOS_RUST_WOULD_OPEN, str(checkpoint)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 3, done.stdout + done.stderr
    for line, name in zip(lines, ["model.safetensors", "pytorch_model.bin", "tokenizer.json"]):
        assert f"{checkpoint / name} is a FIFO" in line, line


def test_special_device_in_place_of_config_json_is_refused(checkpoint):
    (checkpoint / "config.json").unlink()
    (checkpoint / "config.json").symlink_to("/dev/zero")  # read until memory runs out, if it were read
    with no_hang(), pytest.raises(ValueError, match="character device"):
        SpeechEncoderDecoderModel.from_pretrained(checkpoint)


def test_special_fifo_inside_a_save_destination_is_refused_and_nothing_changes(tmp_path):
    folder, old = tmp_path / "ckpt", tiny_model(0)
    old.save_pretrained(folder)
    os.mkfifo(folder / "pipe")
    with no_hang(), pytest.raises(OSError, match=r"pipe is a FIFO .* move it out") as error:
        tiny_model(1).save_pretrained(folder)
    assert "\n" not in str(error.value)
    assert stat.S_ISFIFO(os.lstat(folder / "pipe").st_mode), "the FIFO was lost"
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), old) and leftovers(folder) == []


def test_special_cli_inspect_of_a_fifo_config_is_one_line(checkpoint):
    (checkpoint / "config.json").unlink()
    os.mkfifo(checkpoint / "config.json")
    done = subprocess.run([sys.executable, "-m", "minispeechseq", "inspect", str(checkpoint)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "config.json is a FIFO" in done.stderr


# ====================================================================================================== sizes
@pytest.mark.parametrize("name, cap", [("config.json", CONFIG_MAX_BYTES), ("tokenizer.json", TOKENIZER_MAX_BYTES)])
def test_size_over_the_cap_is_refused_before_reading(checkpoint, name, cap):
    with open(checkpoint / name, "r+b") as f:
        f.truncate(cap + 1)  # sparse: no disk used, and the reader must not read it
    load = SpeechEncoderDecoderModel.from_pretrained if name == "config.json" else Tokenizer.from_pretrained
    with pytest.raises(ValueError, match=f"is {cap + 1:,} bytes, more than"):
        load(checkpoint)


def test_size_of_a_legacy_vocabulary_over_the_cap_is_refused(tmp_path):
    write_bert_tokenizer(tmp_path / "bert")
    (tmp_path / "bert" / "tokenizer.json").unlink(missing_ok=True)  # so that vocab.txt is what is read
    with open(tmp_path / "bert" / "vocab.txt", "r+b") as f:
        f.truncate(TOKENIZER_MAX_BYTES + 1)
    with pytest.raises(ValueError, match=f"vocab.txt is {TOKENIZER_MAX_BYTES + 1:,} bytes, more than"):
        Tokenizer.from_pretrained(tmp_path / "bert")


def test_size_of_nesting_in_a_json_file_is_one_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)  # Python's JSON parser recurses per level
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(tmp_path / "config.json", "transformers config.json")


# ============================================================================================== shard indexes
@pytest.fixture
def sharded(tmp_path) -> Path:
    """A checkpoint whose weights are one shard behind an index, and a valid shard outside the folder."""
    folder = tmp_path / "sharded"
    tiny_model(0).save_pretrained(folder)
    os.rename(folder / "model.safetensors", folder / "model-00001-of-00001.safetensors")
    shutil.copy(folder / "model-00001-of-00001.safetensors", tmp_path / "outside.safetensors")
    return folder


def write_index(folder: Path, weight_map) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("where", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE", 7, None])
def test_index_entries_outside_the_folder_are_refused(sharded, where):
    # A valid shard sits at ../outside.safetensors: loading it would succeed, so only a refusal passes.
    outside = str(sharded.parent / "outside.safetensors")
    keys = list(load_file(sharded / "model-00001-of-00001.safetensors"))
    write_index(sharded, {k: (outside if where == "ABSOLUTE" else where) for k in keys})
    with pytest.raises(ValueError, match="not a shard file name inside the checkpoint folder") as error:
        SpeechEncoderDecoderModel.from_pretrained(sharded)
    assert "model.safetensors.index.json" in str(error.value) and repr(keys[0]) in str(error.value)


@pytest.mark.parametrize("weight_map", [["model-00001-of-00001.safetensors"], "model-00001-of-00001.safetensors"],
                         ids=["list", "string"])
def test_index_that_is_not_a_map_is_refused(sharded, weight_map):
    write_index(sharded, weight_map)
    with pytest.raises(ValueError, match="needs a 'weight_map' object"):
        ckpt.load_state_dict(sharded)


def test_index_cli_inspect_of_a_hostile_index_is_one_line(sharded, capsys):
    write_index(sharded, {"encoder.masked_spec_embed": "../../../../../../etc/passwd"})
    assert main(["inspect", str(sharded)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "etc/passwd" in err[0] and "not a shard file name" in err[0], err


# ================================================================================================= tokenizer
@pytest.mark.parametrize("text", ["not json", "{}", '{"model": 5}', "[1, 2]"])
def test_tokenizer_json_that_tokenizers_rejects_is_one_value_error(checkpoint, text):
    (checkpoint / "tokenizer.json").write_text(text)
    with pytest.raises(ValueError, match="is not a tokenizer.json the tokenizers library can read") as error:
        Tokenizer.from_pretrained(checkpoint)
    assert str(checkpoint / "tokenizer.json") in str(error.value) and "\n" not in str(error.value)


def test_tokenizer_cli_transcribe_with_a_broken_tokenizer_json_is_one_line(checkpoint, capsys):
    (checkpoint / "tokenizer.json").write_text('{"model": 5}')
    assert main(["transcribe", str(next(SAMPLES.glob("*.wav"))), "--model", str(checkpoint)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer.json" in err[0], err


# ====================================================================================================== disks
def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["save_file", "copy2"])
def test_disk_full_during_convert_is_one_line_and_keeps_the_old_destination(checkpoint, tmp_path, monkeypatch,
                                                                           capsys, where):
    dst, old = tmp_path / "dst", tiny_model(0)
    old.save_pretrained(dst)
    (dst / "README.md").write_text("kept")  # so that the carry-over (copy2) has something to copy
    monkeypatch.setattr(*((ckpt, "save_file") if where == "save_file" else (ckpt.shutil, "copy2")), enospc)
    assert main(["convert", str(checkpoint), str(dst)]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(dst), old) and leftovers(dst) == []
    assert (dst / "README.md").read_text() == "kept"


def test_disk_read_only_destination_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    # As root a chmod does not stop writes, so the read-only file system is simulated where a save first writes.
    dst, old = tmp_path / "dst", tiny_model(0)
    old.save_pretrained(dst)
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert main(["convert", str(checkpoint), str(dst)]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Read-only file system" in err[0], err
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(dst), old) and leftovers(dst) == []


# =================================================================================================== symlinks
def test_symlink_inside_a_destination_stays_a_link(tmp_path):
    folder = tmp_path / "ckpt"
    tiny_model(0).save_pretrained(folder)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "vocab.txt").write_text("[PAD]\n")
    (folder / "vocab.txt").symlink_to(tmp_path / "shared" / "vocab.txt")  # a file elsewhere
    (folder / "data").symlink_to("../shared")  # a folder, relative
    (folder / "loop").symlink_to("loop")  # a looping link: it has no target to copy
    os.mkfifo(tmp_path / "pipe")
    (folder / "to-pipe").symlink_to(tmp_path / "pipe")  # opening it would block
    links = {n: os.readlink(folder / n) for n in ("vocab.txt", "data", "loop", "to-pipe")}
    with no_hang():
        tiny_model(1).save_pretrained(folder)
    assert {n: os.readlink(folder / n) if (folder / n).is_symlink() else "copied" for n in links} == links
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), tiny_model(1)) and leftovers(folder) == []


def test_symlink_destination_stays_a_link_and_its_target_gets_the_checkpoint(tmp_path):
    (tmp_path / "store").mkdir()
    target, link = tmp_path / "store" / "v3", tmp_path / "ckpt"
    tiny_model(0).save_pretrained(target)
    (target / "vocab.txt").write_text("[PAD]\n")
    link.symlink_to(target)
    tiny_model(1).save_pretrained(link)
    assert link.is_symlink() and os.readlink(link) == str(target), "the link was replaced"
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(target), tiny_model(1))
    assert (target / "vocab.txt").exists() and leftovers(link) == [] and leftovers(target) == []


def test_symlink_destination_is_recovered_through_the_link(tmp_path):
    (tmp_path / "store").mkdir()
    target, link, old = tmp_path / "store" / "v3", tmp_path / "ckpt", tiny_model(0)
    old.save_pretrained(target)
    link.symlink_to(target)
    aside = ckpt.make_save_container(str(target.parent), "old", "v3")  # a kill between the renames, through the link
    os.rename(target, os.path.join(aside, "x"))
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(link), old) and leftovers(target) == []


# ============================================================================================ training state
def tiny_training_checkpoint(folder: Path, state) -> None:
    train.save_checkpoint(str(folder), tiny_model(0), Tokenizer.from_pretrained(bundled_model_dir()),
                          Wav2Vec2FeatureExtractor.from_pretrained(bundled_model_dir()), state)


def train_args(out: Path, tmp_path: Path) -> list[str]:
    manifest = tmp_path / "train.tsv"
    manifest.write_text("".join(f"{p}\tone\n" for p in sorted(SAMPLES.glob("*.wav"))[:2]))
    return ["--resume", "--out", str(out), "--train-manifest", str(manifest), "--steps", "2", "--quiet"]


@pytest.mark.parametrize("damage", ["truncated", "not a dict", "keys missing"])
def test_training_state_that_is_damaged_is_one_line(tmp_path, capsys, damage):
    out = tmp_path / "run"
    tiny_training_checkpoint(out / "checkpoint-1", {"step": 1})
    state = out / "checkpoint-1" / train.TRAINER_STATE
    if damage == "truncated":
        torch.save({k: torch.zeros(1000) for k in train.TRAINER_STATE_KEYS}, state)
        state.write_bytes(state.read_bytes()[:3000])
    elif damage == "not a dict":
        torch.save([1, 2, 3], state)
    assert train_cli.main(train_args(out, tmp_path)) == 1  # an error, not a usage error (cli_args.run_command)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(state) in err[0] and "checkpoint before it" in err[0], err


def test_training_resume_without_a_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert train_cli.main(train_args(tmp_path / "run", tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no complete checkpoint" in err[0], err


KILL_INSIDE_THE_MODEL_SAVE = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    import minispeechseq.files.checkpoint as ckpt
    from pathlib import Path
    from tests.test_hostile_files import tiny_training_checkpoint
    def die(*args, **kwargs):  # inside model.save_pretrained, itself inside the training checkpoint's save
        os._exit(9)
    ckpt.save_file = die
    tiny_training_checkpoint(Path({folder!r}), {{"step": 5}})
""")


def test_training_checkpoint_killed_leaves_no_nested_temporary(tmp_path):
    folder = tmp_path / "checkpoint-5"
    script = KILL_INSIDE_THE_MODEL_SAVE.format(root=str(ROOT), folder=str(folder))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    left = leftovers(folder)
    assert len(left) == 1 and left[0].startswith(".tmp-checkpoint-5-"), f"left after the kill: {left}"
    assert ckpt.is_save_container(str(tmp_path / left[0])), "the save's container is not marked as its own"
    tiny_training_checkpoint(folder, {"step": 5})  # the resumed run saves this step again: it cleans up
    assert leftovers(folder) == [] and (folder / train.TRAINER_STATE).exists()
