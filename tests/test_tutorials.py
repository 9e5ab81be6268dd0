"""Every tutorial is executed here, top to bottom, so none of them can rot.

A tutorial is a Python script (`tutorials/NN_name.py`) whose prose is in comments and whose steps end in
checks (asserts on shapes, equalities with the library or with transformers). Pictures it draws go to
the folder named by MINISPEECHSEQ_TUTORIAL_OUT (a temporary folder here).
"""

import glob
import os
import runpy

import pytest

TUTORIALS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "tutorials", "[0-9][0-9]_*.py")))


@pytest.mark.parametrize("path", TUTORIALS, ids=[os.path.basename(p) for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MINISPEECHSEQ_TUTORIAL_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(path, run_name="__main__")
