"""Every tutorial is executed here, top to bottom, so none of them can rot.

A tutorial is a Python script (`tutorials/NN_name.py`) whose prose is in comments and whose steps end in
checks (asserts on shapes, equalities with the library or with transformers, figures of a run). What it writes
goes to the folder named by MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/ (git-ignored); the folder is made
when missing, which the second test checks with a fresh path that does not exist yet.
"""

import glob
import os
import re
import runpy
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TUTORIALS = sorted(glob.glob(os.path.join(HERE, "..", "tutorials", "[0-9][0-9]_*.py")))
IDS = [os.path.basename(p) for p in TUTORIALS]
# These let espeak-ng speak the digits corpus and have no stand-in for it (05 falls back to tone "words").
NEED_ESPEAK = ("06_warm_start_finetuning.py", "07_ctc_vs_seq2seq.py", "08_evaluation.py", "10_where_does_the_decoder_listen.py",
               "14_a_run_that_hears.py")


def run(path: str, out: str, monkeypatch: pytest.MonkeyPatch, cwd: str) -> None:
    monkeypatch.setenv("MINISPEECHSEQ_TUTORIAL_OUT", out)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # Tutorials with a long run (14) run its first steps here and draw them over the shipped record of the whole run.
    monkeypatch.setenv("MINISPEECHSEQ_TUTORIAL_QUICK", "1")
    monkeypatch.delenv("MINISPEECHSEQ_HEARING_ARM", raising=False)
    monkeypatch.chdir(cwd)
    runpy.run_path(path, run_name="__main__")


@pytest.mark.parametrize("path", TUTORIALS, ids=IDS)
def test_tutorial_runs(path, tmp_path, monkeypatch):
    """Into a fresh output folder that does not exist yet (a tutorial must make it), from another directory,
    leaving nothing in the working directory."""
    if os.path.basename(path) in NEED_ESPEAK and shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (apt-get install espeak-ng) to render the digits corpus")
    out = tmp_path / "not" / "yet" / "there"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run(path, str(out), monkeypatch, str(cwd))
    assert out.is_dir()
    assert os.listdir(cwd) == [], f"{os.path.basename(path)} wrote into the working directory: {os.listdir(cwd)}"
    for png in out.glob("*.png"):
        assert png.stat().st_size < 300_000, f"{png.name} is {png.stat().st_size} bytes; keep pictures small"


def test_tutorials_share_one_layout():
    """The files behave alike: a docstring with a "Run it" line and a shape legend, notebook cells, one output
    policy, and pictures at dpi >= 120."""
    assert len(TUTORIALS) >= 10
    for path in TUTORIALS:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        name = os.path.basename(path)
        assert source.startswith('"""Tutorial '), name
        docstring = source.split('"""')[1]
        assert "Run it:" in docstring and "Shape legend:" in docstring, name
        assert "# %%" in source, name
        assert 'os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or' in source, name
        assert "os.makedirs(OUT, exist_ok=True)" in source, name
        for dpi in re.findall(r"dpi=(\d+)", source):
            assert int(dpi) >= 120, f"{name}: dpi={dpi}"


def test_default_output_folder_is_ignored():
    with open(os.path.join(HERE, "..", ".gitignore"), encoding="utf-8") as f:
        assert "/tutorials/out/" in f.read().split()
