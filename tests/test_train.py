"""The training loop: exact resume after SIGKILL, DDP (gloo, 2 processes) = one process, and the pieces.

Runs are real subprocesses of `python -m minispeechseq.training.train` on a tiny synthetic corpus with the `debug`
preset (~19 k parameters), one thread each, so the whole file stays short on a 2-core machine.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minispeechseq.training import train
from minispeechseq.training.digits import build_digits_tokenizer
from tests.utils import ATOL_FP32, write_tone_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """16 utterances of tone bursts (no espeak-ng needed: the loop's mechanics, not recognition), a tokenizer."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.tsv").write_text("".join(write_tone_corpus(folder, count=16, max_digits=3)))
    return folder


def _command(corpus, out, *extra):
    return [sys.executable, "-m", "minispeechseq.training.train", "--preset", "debug", "--train-manifest",
            str(corpus / "train.tsv"), "--tokenizer", str(corpus / "tokenizer"), "--out", str(out),
            "--steps", str(STEPS), "--batch-size", "4", "--log-every", "1", "--save-every", "2", "--quiet", *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    return env


def _run(cmd, timeout=120):
    result = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}"


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
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517"]
    _run(torchrun + _command(corpus, tmp_path / "two", *flags)[1:], timeout=180)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(two) == list(range(1, STEPS + 1))
    diff = max(abs(one[s] - two[s]) for s in one)
    assert diff <= ATOL_FP32, f"DDP vs one process: max loss difference {diff:.3e}"
    assert len({round(v, 6) for v in one.values()}) > 1, "the loss never changed: nothing was trained"


def test_out_with_checkpoints_needs_resume(corpus, tmp_path):
    os.makedirs(tmp_path / "checkpoint-2")
    (tmp_path / "checkpoint-2" / train.TRAINER_STATE).write_bytes(b"")
    args = train.build_parser().parse_args(_command(corpus, tmp_path)[3:])
    with pytest.raises(ValueError, match="pass --resume"):
        train.train(args)


def test_argument_errors():
    with pytest.raises(ValueError, match="one of --preset NAME, --encoder DIR --decoder DIR, or --init DIR"):
        train.check_args(train.build_parser().parse_args(["--out", "x"]))
    with pytest.raises(ValueError, match="one of --preset NAME"):
        train.check_args(train.build_parser().parse_args(["--out", "x", "--preset", "tiny", "--init", "m"]))
    with pytest.raises(ValueError, match="--dropout applies when a model is built"):
        train.check_args(train.build_parser().parse_args(["--out", "x", "--init", "m", "--dropout", "0.1"]))
    with pytest.raises(ValueError, match="both --encoder DIR and --decoder DIR"):
        train.check_args(train.build_parser().parse_args(["--out", "x", "--encoder", "e"]))
    with pytest.raises(ValueError, match="--grad-accum must be at least 1"):
        train.check_args(train.build_parser().parse_args(["--out", "x", "--preset", "tiny", "--grad-accum", "0"]))


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
