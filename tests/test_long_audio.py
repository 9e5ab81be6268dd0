"""Long audio: 10 minutes transcribed in bounded memory with sdpa; eager refuses before it would exhaust memory.

wav2vec2's feature encoder turns 16 kHz audio into 50 frames per second, so 10 minutes are T = 30 000 frames.
Eager attention materialises the (B, H, T, T) weights: 2 heads x 30 000² x 4 bytes = 7.2 GB per layer, more than
many machines have. SDPA computes the same thing in blocks and never holds the matrix. The test transcribes the
10 minutes through the command line in a subprocess and reads its peak resident memory (ru_maxrss), against the
same command on 1 second of audio (the imports and the model: the baseline).

Also here: the eager limit itself (`files/memory.py`'s `EAGER_ATTENTION_MAX_BYTES`, the environment variable
`MINISPEECHSEQ_EAGER_MAX_BYTES`, the per-call `attend(..., eager_max_bytes=...)`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from minispeechseq import (
    BertConfig,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    attention,
)
from minispeechseq.files import memory
from tests.test_doc_examples import VOCAB, write_bert_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE, MINUTES = 16000, 10
HEADS = 2
KERNELS, STRIDES = (10, 8, 4, 4), (5, 4, 4, 4)  # wav2vec2's 320x downsampling, with fewer layers


def frames_of(samples: int) -> int:
    """Each conv layer without padding: (L - kernel) // stride + 1."""
    for k, s in zip(KERNELS, STRIDES):
        samples = (samples - k) // s + 1
    return samples


FRAMES = frames_of(RATE * 60 * MINUTES)  # 29 999

# Runs CLI commands one after the other in one process (the imports paid once) and prints, per command, a JSON
# record with its exit code, its output and the process's peak resident memory so far (ru_maxrss: KiB on Linux).
DRIVER = """
import contextlib, io, json, resource, sys
sys.path.insert(0, {root!r})
import torch
torch.set_num_threads(1)
from minispeechseq.tools.cli import main
for argv in {commands!r}:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({{"code": code, "out": out.getvalue(), "err": err.getvalue(), "peak": peak}}), flush=True)
"""


def run_cli(commands: list[list[str]]) -> list[dict]:
    """One subprocess runs the commands in order; a record per command (peak RSS is a high-water mark, so each
    record's `peak` covers that command and all before it)."""
    done = subprocess.run([sys.executable, "-c", DRIVER.format(root=ROOT, commands=commands)], check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.strip().splitlines()]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small model with wav2vec2's real 320x downsampling (strides 5·4·4·4), layer-norm features, a mask."""
    folder = tmp_path_factory.mktemp("long-audio-model")
    torch.manual_seed(0)
    enc = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=24,
                         conv_dim=(8, 8, 8, 8), conv_kernel=KERNELS, conv_stride=STRIDES,
                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, feat_extract_norm="layer",
                         do_stable_layer_norm=True, conv_bias=True)
    dec = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=32)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec, decoder_start_token_id=2,
                                                                     pad_token_id=0, eos_token_id=3)
    SpeechEncoderDecoderModel(config=config).save_pretrained(folder)
    write_bert_tokenizer(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long-audio")
    rng = np.random.default_rng(0)
    for name, seconds in (("short.wav", 1), ("long.wav", 60 * MINUTES)):
        sf.write(folder / name, (rng.standard_normal(RATE * seconds) * 2000).astype(np.int16), RATE)
    return folder


@pytest.fixture(scope="module")
def runs(model_dir, audio):
    """1 s with sdpa (the baseline: imports, model, one transcription), then 10 min with sdpa, then with eager.
    `--chunk-length 600`: the 10 minutes in one pass (by default they would be cut into 30 s chunks, see
    test_timestamps.py), which is what the attention backends are measured on here."""
    common = ["--model", str(model_dir), "--max-new-tokens", "4", "--json", "--chunk-length", "600"]
    short, long_sdpa, long_eager = run_cli([
        ["transcribe", str(audio / "short.wav"), "--attn", "sdpa", *common],
        ["transcribe", str(audio / "long.wav"), "--attn", "sdpa", *common],
        ["transcribe", str(audio / "long.wav"), "--attn", "eager", *common],
    ])
    return short, long_sdpa, long_eager


def test_ten_minutes_with_sdpa_in_bounded_memory(runs):
    short, long_sdpa, _ = runs
    assert short["code"] == 0 and long_sdpa["code"] == 0, (short["err"], long_sdpa["err"])
    assert json.loads(long_sdpa["out"])["path"].endswith("long.wav")
    base, peak = short["peak"], long_sdpa["peak"]
    materialised = HEADS * FRAMES * FRAMES * 4  # one layer's fp32 attention weights
    audio_bytes = RATE * 60 * MINUTES * 4  # the waveform as float32
    grew = peak - base
    print(f"\n10 min ({FRAMES} frames), sdpa: peak RSS {peak / 2**20:.0f} MiB, after 1 s {base / 2**20:.0f} MiB, "
          f"growth {grew / 2**20:.0f} MiB; materialised T×T weights would be {materialised / 2**30:.1f} GiB")
    # The growth is a few copies of the waveform and of the first conv layer's output (8 channels at 1/5 the
    # rate = 1.6x the waveform); 20 waveforms' worth (730 MiB) bounds it, a tenth of the T×T matrix.
    assert grew < 20 * audio_bytes, f"peak grew by {grew / 2**20:.0f} MiB, above {20 * audio_bytes / 2**20:.0f} MiB"
    assert grew < materialised / 8


def test_ten_minutes_with_eager_refuses_before_allocating(runs):
    short, _, eager = runs
    assert eager["code"] != 0 and eager["out"] == ""
    err = eager["err"].strip()
    assert len(err.splitlines()) == 1, err
    assert f"{FRAMES} queries x {FRAMES} keys" in err and "limit" in err and "sdpa" in err, err
    grew = eager["peak"] - short["peak"]
    assert grew < HEADS * FRAMES * FRAMES * 4 / 8, f"peak RSS grew by {grew / 2**20:.0f} MiB: the weights were allocated"


# ------------------------------------------------------------------------------------------- the limit itself
def qkv(T: int, H: int = 2, hd: int = 4):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, H, T, hd, generator=g) for _ in range(3)]


def test_limit_per_call_env_and_module_default(monkeypatch):
    q, k, v = qkv(64)
    need = 1 * 2 * 64 * 64 * 4  # fp32 weights
    out, _ = attention.attend(q, k, v, impl="eager", eager_max_bytes=need)  # exactly at the limit: allowed
    with pytest.raises(ValueError, match=r"64 queries x 64 keys .* 32,768 bytes .* limit of 32,767 bytes.*'sdpa'") as info:
        attention.attend(q, k, v, impl="eager", eager_max_bytes=need - 1)
    assert memory.EAGER_MAX_BYTES_ENV in str(info.value)
    # The environment variable, read at each call.
    monkeypatch.setenv(memory.EAGER_MAX_BYTES_ENV, str(need - 1))
    with pytest.raises(ValueError, match="limit"):
        attention.attend(q, k, v, impl="eager")
    # sdpa has no such limit: it does not materialise the weights.
    sdpa, _ = attention.attend(q, k, v, impl="sdpa")
    assert torch.allclose(sdpa, out, atol=1e-5)
    monkeypatch.setenv(memory.EAGER_MAX_BYTES_ENV, "4e9")
    attention.attend(q, k, v, impl="eager")
    # The module-level default, when the variable is unset.
    monkeypatch.delenv(memory.EAGER_MAX_BYTES_ENV)
    monkeypatch.setattr(memory, "EAGER_ATTENTION_MAX_BYTES", need - 1)
    with pytest.raises(ValueError, match="limit"):
        attention.attend(q, k, v, impl="eager")


def test_a_module_reads_the_limit_once_when_eager_is_chosen(monkeypatch):
    """An Attention module is given the limit with its backend: the environment is not read at every call."""
    q, k, v = qkv(64)
    need = 1 * 2 * 64 * 64 * 4
    layer = attention.Attention(8, 2)
    monkeypatch.setenv(memory.EAGER_MAX_BYTES_ENV, str(need - 1))
    attention.set_attn_implementation(layer, "eager")
    assert layer.eager_max_bytes == need - 1
    monkeypatch.setenv(memory.EAGER_MAX_BYTES_ENV, "4e9")  # too late for this module: it was read when chosen
    x = torch.randn(1, 64, 8)
    with pytest.raises(ValueError, match="limit of"):
        layer(x)
    attention.set_attn_implementation(layer, "eager")  # chosen again: read again
    layer(x)


@pytest.mark.parametrize("raw", ["lots", "-5", "0"])
def test_bad_limit_in_the_environment(monkeypatch, raw):
    monkeypatch.setenv(memory.EAGER_MAX_BYTES_ENV, raw)
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match=f"{memory.EAGER_MAX_BYTES_ENV}='{raw}'"):
        attention.attend(q, k, v, impl="eager")


def test_the_default_limit_refuses_ten_minutes_and_allows_a_minute():
    # 10 min at 50 frames/s, 12 heads (wav2vec2-base): 30 000² x 12 x 4 bytes = 43 GB -> refused.
    # 1 min: 3 000² x 12 x 4 = 0.43 GB -> allowed under the 2 GiB default.
    for frames, refused in ((30_000, True), (3_000, False)):
        q = torch.empty(1, 12, frames, 64, device="meta")  # shapes only: nothing is allocated
        if refused:
            with pytest.raises(ValueError, match="sdpa"):
                memory.check_eager_memory(q, q, memory.EAGER_ATTENTION_MAX_BYTES)
        else:
            memory.check_eager_memory(q, q, memory.EAGER_ATTENTION_MAX_BYTES)
