"""The training loop: exact resume after SIGKILL, DDP (gloo, 2 processes) = one process, and the pieces.

Runs are real subprocesses of `python -m minispeechseq.tools.train` on a tiny synthetic corpus with the `debug`
preset (~19 k parameters), one thread each, so the whole file stays short on a 2-core machine.
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from minispeechseq.tools import train as train_cli
from minispeechseq.training import train
from minispeechseq.training.digits import build_digits_tokenizer
from tests.utils import ATOL_FP32, write_tone_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
# torchrun's rendezvous (its TCP store, on a port from the OS): about a second on an idle machine. Past 60 s torch
# fails with "Timed out after 60 seconds waiting for clients" instead of waiting its default 600 s.
RENDEZVOUS_TIMEOUT_S = 60
# The whole two-process run on a loaded 2-core machine. It also bounds the workers' own process-group set-up
# (in train.py, with torch's default timeout of 30 minutes); its failure names the run and the rendezvous limit.
DDP_RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 utterances of tone bursts (no espeak-ng needed: the loop's mechanics, not recognition), a tokenizer."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.tsv").write_text("".join(write_tone_corpus(folder, count=16, max_digits=3)))
    return folder


def _command(corpus, out, *extra):
    return [sys.executable, "-m", "minispeechseq.tools.train", "--preset", "debug", "--train-manifest",
            str(corpus / "train.tsv"), "--tokenizer", str(corpus / "tokenizer"), "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "4", "--log-every", "1", "--save-every", "2", "--quiet", *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    return env


def _run(cmd, timeout=120, what=None):
    what = what or " ".join(cmd)
    try:
        result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout,
                                check=False)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"{what} did not finish within {timeout} s; its stderr ends:\n{stderr[-3000:]}", pytrace=False)
    assert result.returncode == 0, f"{what} failed:\n{result.stderr[-3000:]}"


def _free_port() -> int:
    """A TCP port the OS has just handed out as free (a bind to port 0). A fixed port collides with whatever
    else holds it: a second test suite on the machine, another job."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(out):
    with open(os.path.join(out, train.METRICS_FILE), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_resume_after_sigkill_gives_the_same_losses(corpus, tmp_path):
    # Dropout and SpecAugment stay on: the RNG state must be restored too, not only weights and optimizer.
    _run(_command(corpus, tmp_path / "straight"))
    reference = _losses(tmp_path / "straight")
    assert sorted(reference) == list(range(1, STEPS + 1))

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(corpus, killed), cwd=REPO, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not train.checkpoints(str(killed)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed:\n{stderr[-2000:]}"
    resumed_from = train.checkpoints(str(killed))[-1][0]
    assert resumed_from < STEPS, "the run finished before it could be killed"

    _run(_command(corpus, killed, "--resume"))
    resumed = _losses(killed)
    assert sorted(resumed) == list(range(1, STEPS + 1)), f"steps logged: {sorted(resumed)}"
    diff = max(abs(resumed[s] - reference[s]) for s in range(resumed_from + 1, STEPS + 1))
    assert diff <= ATOL_FP32, f"after resuming at step {resumed_from}: max loss difference {diff:.3e}"


def test_ddp_two_processes_equal_one_process(corpus, tmp_path):
    # Same global batch (4 = 2 x 2), no dropout or SpecAugment (each process draws its own masks).
    flags = ("--dropout", "0", "--no-spec-augment")
    _run(_command(corpus, tmp_path / "one", *flags))
    port = _free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(port), "--rdzv-conf", f"timeout={RENDEZVOUS_TIMEOUT_S}"]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        # The port this test used to take (29517) held, as another run beside this one would hold it.
        try:
            other.bind(("127.0.0.1", 29517))
            other.listen()
        except OSError:
            pass  # something else holds it already: the same situation
        _run(torchrun + _command(corpus, tmp_path / "two", *flags)[1:], timeout=DDP_RUN_TIMEOUT_S,
             what=f"torchrun with 2 processes (rendezvous on 127.0.0.1:{port}, limited to {RENDEZVOUS_TIMEOUT_S} s)")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(two) == list(range(1, STEPS + 1))
    diff = max(abs(one[s] - two[s]) for s in one)
    assert diff <= ATOL_FP32, f"DDP vs one process: max loss difference {diff:.3e}"
    assert len({round(v, 6) for v in one.values()}) > 1, "the loss never changed: nothing was trained"


def test_out_with_checkpoints_needs_resume(corpus, tmp_path):
    os.makedirs(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / train.TRAINER_STATE).write_bytes(b"")
    args = train_cli.build_parser().parse_args(_command(corpus, tmp_path)[3:])
    with pytest.raises(ValueError, match="pass --resume"):
        train.train(args)


def test_argument_errors():
    with pytest.raises(ValueError, match="one of --preset NAME, --encoder DIR --decoder DIR, or --init DIR"):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x"]))
    with pytest.raises(ValueError, match="one of --preset NAME"):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x", "--preset", "tiny", "--init", "m"]))
    with pytest.raises(ValueError, match="--dropout applies when a model is built"):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x", "--init", "m", "--dropout", "0.1"]))
    with pytest.raises(ValueError, match="both --encoder DIR and --decoder DIR"):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x", "--encoder", "e"]))
    with pytest.raises(ValueError, match="--grad-accum must be at least 1"):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x", "--preset", "tiny", "--grad-accum", "0"]))


def test_warmup_cosine_schedule():
    lrs = [train.warmup_cosine(s, warmup_steps=10, total_steps=110) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)  # half way through the cosine
    assert lrs[110] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:])), "the decay must be monotone"


def test_tiny_preset_shape(tmp_path):
    from minispeechseq.tokenizer import Tokenizer

    build_digits_tokenizer(tmp_path)
    model = train.preset_model("tiny", Tokenizer.from_pretrained(tmp_path))
    n = sum(p.numel() for p in model.parameters())
    assert 1.7e6 < n < 1.9e6, f"{n} parameters; the tiny preset is ~1.8 M"
    enc = model.config.encoder
    assert int(np.prod(enc.conv_stride)) == 640 and enc.conv_stride[0] == 10  # 40 ms frames, stride-10 first layer
    assert enc.num_hidden_layers == 4 and enc.hidden_size == 144 and enc.num_conv_pos_embeddings == 128
    assert model.config.decoder.model_type == "gpt2" and model.config.decoder.n_layer == 2


@pytest.mark.parametrize("extra, message", [
    (["--speed-p", "1.5"], "--speed-p must be a number in \\[0, 1\\], got 1.5"),
    (["--formant-p", "-0.1"], "--formant-p must be a number in \\[0, 1\\]"),
    (["--reverb-p", "nan"], "--reverb-p must be a number in \\[0, 1\\]"),
    (["--mask-time-prob", "2"], "--mask-time-prob must be a number in \\[0, 1\\]"),
    (["--mask-feature-length", "0"], "--mask-feature-length must be at least 1"),
    (["--snr-db", "30", "0"], "--snr-db must be two finite numbers LOW <= HIGH, got 30.0 0.0"),
    (["--snr-db", "0", "inf"], "--snr-db must be two finite numbers"),
    (["--noise-types", "white,traffic"], "--noise-types 'white,traffic': expected a comma-separated list of"),
    (["--noise-types", ","], "--noise-types ',': expected"),
])
def test_voice_augmentation_flags_are_checked(extra, message):
    with pytest.raises(ValueError, match=message):
        train_cli.check_args(train_cli.build_parser().parse_args(["--out", "x", "--preset", "tiny", *extra]))


def test_voice_augmentation_flags_build_the_voice_augmentation():
    from minispeechseq.training.augment import VoiceAugmentation
    from minispeechseq.training.data import Augmentation

    parse = train_cli.build_parser().parse_args
    plain = train.make_augmentation(parse(["--out", "x", "--preset", "tiny"]))
    assert type(plain) is Augmentation, "no voice flag: the plain augmentation, as before"
    assert train.make_augmentation(parse(["--out", "x", "--preset", "tiny", "--no-augment"])) is None
    voice = train.make_augmentation(parse(["--out", "x", "--preset", "tiny", "--speed-p", "0.5", "--snr-db", "0", "30",
                                           "--noise-types", "white, babble"]))
    assert isinstance(voice, VoiceAugmentation)
    assert (voice.speed_p, voice.snr_db, voice.noise_types, voice.formant_p) == (0.5, (0.0, 30.0), ("white", "babble"), 0.0)


def test_init_fine_tunes_a_whole_pair_with_voice_augmentation(corpus, tmp_path):
    _run(_command(corpus, tmp_path / "first", "--steps", "2", "--save-every", "2"))
    first = os.path.join(tmp_path, "first", "final")
    cmd = [a for a in _command(corpus, tmp_path / "tuned", "--steps", "2", "--save-every", "2") if a != "debug"]
    cmd[cmd.index("--preset")] = "--init"
    cmd.insert(cmd.index("--init") + 1, first)
    _run(cmd + ["--speed-p", "1", "--formant-p", "1", "--reverb-p", "1", "--band-p", "1", "--eq-p", "1",
                "--snr-db", "0", "30", "--noise-types", "pink,babble", "--mask-time-prob", "0.2"])
    from minispeechseq import SpeechEncoderDecoderModel

    before = SpeechEncoderDecoderModel.from_pretrained(first)
    after = SpeechEncoderDecoderModel.from_pretrained(os.path.join(tmp_path, "tuned", "final"))
    assert after.config.encoder.mask_time_prob == 0.2, "--mask-time-prob is saved with the fine-tuned model"
    moved = max((a - b).abs().max().item() for a, b in zip(after.parameters(), before.parameters()))
    assert moved > 0, "--init loaded the model but two steps changed no weight"
