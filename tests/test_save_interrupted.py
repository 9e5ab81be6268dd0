"""Nothing lost: a save that fails, at any point, leaves the previous checkpoint intact and loadable.

`save_pretrained` goes through `checkpoint.atomic_save`: write a temporary folder, move the old folder aside,
rename the new one into place, delete the old one. Faults are injected at each step (the config JSON, the
generation config, the safetensors writer part-way through a file, fsync, copying the files carried over, each
of the two renames, Ctrl-C), and one test kills a real process between the two renames. After each: the old
weights load and equal the old model's, the tokenizer file the save does not write is still there, and no
temporary folder is left next to the checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import minispeechseq.files.checkpoint as ckpt
import minispeechseq.config as config_module
from minispeechseq import (
    BertConfig,
    GenerationConfig,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
)

TOKENIZER_FILE = "vocab.txt"  # a file the model's save does not write: it must survive every save


def tiny_model(seed: int) -> SpeechEncoderDecoderModel:
    torch.manual_seed(seed)
    enc = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                         conv_dim=(8, 8), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4,
                         num_conv_pos_embedding_groups=2)
    dec = BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=16)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2,
                                                                     pad_token_id=0, eos_token_id=3)
    return SpeechEncoderDecoderModel(config=config).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder.parent) if n.startswith((".tmp-", ".old-")))


@pytest.fixture
def saved(tmp_path):
    """An existing checkpoint (model seed 0) with a tokenizer file next to it, and a different model to save over it."""
    folder = tmp_path / "ckpt"
    old = tiny_model(0)
    old.save_pretrained(folder)
    (folder / TOKENIZER_FILE).write_text("[PAD]\n[UNK]\n")
    return folder, old, tiny_model(1)


def assert_old_intact(folder, old) -> None:
    loaded = SpeechEncoderDecoderModel.from_pretrained(folder)
    assert same_weights(loaded, old), "the previous checkpoint's weights changed after a failed save"
    assert (folder / TOKENIZER_FILE).read_text() == "[PAD]\n[UNK]\n", "the tokenizer file was lost"
    assert leftovers(folder) == [], f"temporary folders left behind: {leftovers(folder)}"


def fail(exc: BaseException):
    def raiser(*args, **kwargs):
        raise exc

    return raiser


def partial_save_file(tensors, path, metadata=None):
    """Like a full disk: half a safetensors file is written, then the write fails."""
    with open(path, "wb") as f:
        f.write(b"\x00" * 64)
    raise OSError(errno.ENOSPC, "No space left on device", path)


def rename_failing_at(call: int):
    """os.rename that fails on its `call`-th use (1 = the old folder moved aside, 2 = the new one into place)."""
    real, count = os.rename, {"n": 0}

    def rename(src, dst):
        count["n"] += 1
        if count["n"] == call:
            raise OSError(errno.EIO, "injected rename failure", src)
        return real(src, dst)

    return rename


# (what is patched, the replacement): each a distinct point of failure inside save_pretrained.
FAULTS = {
    "config json": (config_module.ConfigMixin, "to_json_string", fail(OSError(errno.ENOSPC, "disk full"))),
    "generation config": (GenerationConfig, "save_pretrained", fail(OSError("injected"))),
    "safetensors raises": (ckpt, "save_file", fail(OSError(errno.EIO, "injected I/O error"))),
    "safetensors half-written": (ckpt, "save_file", partial_save_file),
    "fsync": (ckpt.os, "fsync", fail(OSError(errno.EIO, "fsync failed"))),
    "copying kept files": (ckpt.shutil, "copy2", fail(OSError(errno.ENOSPC, "disk full while copying"))),
    "first rename": (ckpt.os, "rename", rename_failing_at(1)),
    "second rename": (ckpt.os, "rename", rename_failing_at(2)),
    "ctrl-c while writing": (ckpt, "save_file", fail(KeyboardInterrupt())),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_failed_save_leaves_the_previous_checkpoint(saved, monkeypatch, fault):
    folder, old, new = saved
    target, name, replacement = FAULTS[fault]
    monkeypatch.setattr(target, name, replacement)
    with pytest.raises((OSError, KeyboardInterrupt)):
        new.save_pretrained(folder)
    monkeypatch.undo()
    assert_old_intact(folder, old)
    # And the next save, with nothing failing, goes through.
    new.save_pretrained(folder)
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), new)
    assert (folder / TOKENIZER_FILE).exists() and leftovers(folder) == []


def test_successful_save_keeps_other_files_and_drops_stale_weights(saved):
    folder, _old, new = saved
    torch.save({"stale": torch.zeros(1)}, folder / "pytorch_model.bin")  # weights of an older layout
    new.save_pretrained(folder)
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), new)
    assert (folder / TOKENIZER_FILE).exists()
    assert not (folder / "pytorch_model.bin").exists(), "stale weights of another layout were carried over"
    assert leftovers(folder) == []


KILL_BETWEEN_RENAMES = textwrap.dedent("""
    import os, sys
    import torch
    sys.path.insert(0, {root!r})
    import minispeechseq.files.checkpoint as ckpt
    from tests.test_save_interrupted import tiny_model
    real, n = os.rename, [0]
    def rename(src, dst):
        n[0] += 1
        if n[0] == 2:  # the old folder is aside, the new one not yet in place: die like a SIGKILL would
            os._exit(9)
        real(src, dst)
    ckpt.os.rename = rename
    tiny_model(1).save_pretrained({folder!r})
""")


def test_process_killed_between_the_renames_is_recovered(saved):
    folder, old, _new = saved
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = KILL_BETWEEN_RENAMES.format(root=root, folder=str(folder))
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, f"the save was expected to die with code 9, got {done.returncode}: {done.stderr}"
    # The window really happened: the folder is gone, the old checkpoint sits aside.
    assert not folder.exists()
    assert [n for n in leftovers(folder) if n.startswith(".old-")], leftovers(folder)
    # Loading puts it back, with nothing lost.
    assert_old_intact(folder, old)


def test_a_save_after_a_killed_one_recovers_first(saved):
    folder, _old, new = saved
    # Reproduce the state a kill between the renames leaves: old folder aside in a marked container.
    aside = ckpt.make_save_container(str(folder.parent), "old", "ckpt")
    os.rename(folder, os.path.join(aside, "x"))
    # atomic_save restores the old folder before writing, so its tokenizer file is carried into the new one.
    new.save_pretrained(folder)
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), new)
    assert (folder / TOKENIZER_FILE).exists()
    assert leftovers(folder) == []


def test_a_save_killed_while_writing_leaves_a_temp_folder_the_next_save_removes(saved):
    folder, old, new = saved
    dead = Path(ckpt.make_save_container(str(folder.parent), "tmp", "ckpt"))  # what a kill inside write() leaves
    (dead / "x").mkdir()
    (dead / "x" / "model.safetensors").write_bytes(b"half a file")
    # Loading must not touch it (it could belong to a save still running in another process)...
    assert same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), old)
    assert dead.exists()
    # ...the next save to this folder removes it.
    new.save_pretrained(folder)
    assert leftovers(folder) == [] and same_weights(SpeechEncoderDecoderModel.from_pretrained(folder), new)


def test_aside_folders_of_a_sibling_are_not_touched(tmp_path):
    # `ckpt` and `ckpt-2` live side by side: recovering one must not take the other's aside copy.
    sibling_aside = Path(ckpt.make_save_container(str(tmp_path), "old", "ckpt-2"))
    (sibling_aside / "x").mkdir()
    (sibling_aside / "x" / "config.json").write_text(json.dumps({}))
    assert ckpt.recover_interrupted_save(tmp_path / "ckpt") is False
    assert not (tmp_path / "ckpt").exists() and (sibling_aside / "x" / "config.json").exists()
