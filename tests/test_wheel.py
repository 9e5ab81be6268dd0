"""The package as a user installs it: build a wheel from the checkout, install it into a fresh virtual environment,
and use it from a folder outside the repository.

CI otherwise tests only the editable install, where every file of the checkout is importable; here a file missing
from the package data (the bundled model, its samples) or a package missing from setup.cfg fails. The virtual
environment sees the test environment's packages, however the tests were started (system Python, venv, conda:
tests/fresh_venv.py), so torch and the other dependencies are reused and nothing is downloaded; its own
site-packages come first, so `minispeechseq` is the wheel's. The wheel is built offline, with this environment's
setuptools (`pip wheel --no-build-isolation`); the test extra lists what that needs.
"""

from __future__ import annotations

import csv
import glob
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.fresh_venv import make_venv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def missing_build_tools() -> list[str]:
    """What `pip wheel --no-build-isolation` needs here and this environment lacks: setuptools (pyproject.toml's
    build backend) and, for setuptools before 70.1 (which brought its own bdist_wheel), the wheel package."""
    if importlib.util.find_spec("setuptools") is None:
        return ["setuptools", "wheel"]
    major, minor = (int(part) for part in importlib.metadata.version("setuptools").split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return ["wheel"]
    return []


def run(cmd: list[str], cwd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel's path, the venv's python, a working folder outside the repository)."""
    missing = missing_build_tools()
    if missing:
        pytest.fail(f"Building the wheel offline needs {' and '.join(missing)} in the test environment "
                    f"({sys.executable}): pip install {' '.join(missing)} (the test extra lists "
                    "them: pip install -e '.[test]').", pytrace=False)
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), ROOT],
        cwd=str(tmp))
    wheels = glob.glob(str(dist / "minispeechseq-*.whl"))
    assert len(wheels) == 1, f"expected one minispeechseq wheel, found {wheels}"
    python = make_venv(str(tmp / "venv"))
    # The test environment's pip installs into the venv (--python), so the venv needs no pip of its own;
    # --force-reinstall: an editable minispeechseq of the same version is visible through the test environment's
    # site folders.
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
         "--force-reinstall", wheels[0]], cwd=str(tmp))
    work = tmp / "elsewhere"
    work.mkdir()
    return wheels[0], python, str(work)


def purelib(python: str) -> str:
    """Where `python` installs pure-Python packages: its site-packages."""
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return run([python, "-c", code], cwd=os.path.dirname(python)).stdout.strip()


def test_the_wheel_venv_sees_the_packages_of_the_venv_the_tests_run_in(tmp_path):
    """The README's way: the tests run in a venv of their own (no system packages) that holds torch and the rest.
    A stand-in module installed in such a venv only must import in the venv made from it for the wheel."""
    outer = str(tmp_path / "outer")
    run([sys.executable, "-m", "venv", "--without-pip", outer], cwd=str(tmp_path))
    outer_python = os.path.join(outer, "bin", "python")
    with open(os.path.join(purelib(outer_python), "only_in_the_test_venv.py"), "w", encoding="utf-8") as f:
        f.write("WHERE = 'the test venv'\n")
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from tests.fresh_venv import make_venv; "
            f"print(make_venv({str(tmp_path / 'inner')!r}))")
    inner_python = run([outer_python, "-c", code], cwd=str(tmp_path)).stdout.strip()
    done = subprocess.run([inner_python, "-c", "import only_in_the_test_venv as m; print(m.WHERE)"],
                          cwd=str(tmp_path), capture_output=True, text=True, env=venv_env(inner_python))
    assert done.returncode == 0 and done.stdout.strip() == "the test venv", (
        f"the wheel's venv does not see the test venv's packages:\n{done.stderr[-1500:]}")


def venv_env(python: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
    return env


def test_wheel_has_one_top_level_package(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = sorted({n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))})
    size = os.path.getsize(wheel)
    print(f"\nwheel: {os.path.basename(wheel)}, {size / 2**20:.2f} MiB, {len(names)} files")
    assert top == ["minispeechseq"], f"the wheel installs top-level names {top}; only minispeechseq is expected"
    for needed in ("minispeechseq/weights_convert/__init__.py", "minispeechseq/weights_convert/gpt2.py",
                   "minispeechseq/bundled/digits/model.safetensors", "minispeechseq/bundled/samples/transcripts.tsv",
                   "minispeechseq/bundled/ssl_encoder/model.safetensors"):
        assert needed in names, f"{needed} is missing from the wheel"


def test_pip_show_lists_no_other_top_level_module(installed):
    _, python, work = installed
    shown = run([sys.executable, "-m", "pip", "--python", python, "show", "-f", "minispeechseq"], cwd=work).stdout
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    top = {f.split("/")[0] for f in files if not f.startswith("..")}  # "../../../bin/minispeechseq": the script
    assert top == {"minispeechseq", "minispeechseq-0.1.0.dist-info"}, sorted(top)


def test_every_module_imports_from_the_installed_package(installed):
    _, python, work = installed
    code = (
        "import importlib, json, os, pkgutil, minispeechseq\n"
        "names = [m.name for m in pkgutil.walk_packages(minispeechseq.__path__, 'minispeechseq.')\n"
        "         if m.name != 'minispeechseq.__main__']  # importing __main__ runs the command line\n"
        "files = [importlib.import_module(n).__file__ for n in names]\n"
        "print(json.dumps({'root': minispeechseq.__file__, 'names': names, 'files': files}))\n"
    )
    out = json.loads(run([python, "-c", code], cwd=work, env=venv_env(python)).stdout)
    assert not out["root"].startswith(ROOT), f"minispeechseq came from the checkout ({out['root']}), not the wheel"
    assert "minispeechseq.weights_convert.gpt2" in out["names"]
    assert "minispeechseq.training.train" in out["names"] and "minispeechseq.tools.train" in out["names"]
    outside = [f for f in out["files"] if f.startswith(ROOT)]
    assert not outside, f"modules loaded from the checkout instead of the wheel: {outside}"


def samples_and_texts(python: str, work: str) -> tuple[str, dict[str, str]]:
    code = "import minispeechseq, os; print(os.path.dirname(minispeechseq.__file__))"
    package = run([python, "-c", code], cwd=work, env=venv_env(python)).stdout.strip()
    samples = os.path.join(package, "bundled", "samples")
    with open(os.path.join(samples, "transcripts.tsv"), encoding="utf-8") as f:
        expected = {row[0]: row[1] for row in csv.reader(f, delimiter="\t")}
    return samples, expected


def test_cli_transcribes_the_installed_samples(installed):
    _, python, work = installed
    samples, expected = samples_and_texts(python, work)
    out = run(["minispeechseq", "transcribe", samples, "--json"], cwd=work, env=venv_env(python)).stdout
    got = {os.path.basename(json.loads(line)["path"]): json.loads(line)["text"] for line in out.splitlines()}
    assert got == expected, f"transcripts differ from transcripts.tsv: {got} vs {expected}"


def test_cli_inspects_the_installed_bundled_model(installed):
    _, python, work = installed
    samples, _ = samples_and_texts(python, work)
    model = os.path.join(os.path.dirname(samples), "digits")
    out = run(["minispeechseq", "inspect", model], cwd=work, env=venv_env(python)).stdout
    # The key table at work: transformers' GPT-2 name -> ours, and nothing skipped or left uninitialised.
    assert "decoder.wte.weight -> decoder.embed_tokens.weight" in out, out[:2000]
    assert "skipped (0)" in out and "newly initialised (0)" in out, out[-1000:]


def test_seed_example_runs_against_the_installed_package(installed):
    """The documentation's inference flow, with the bundled model: processor -> generate -> batch_decode."""
    _, python, work = installed
    samples, expected = samples_and_texts(python, work)
    name = sorted(expected)[0]
    code = (
        "import os, sys, minispeechseq\n"
        "from minispeechseq import SpeechEncoderDecoderModel, Wav2Vec2Processor, load_audio\n"
        "folder = os.path.join(os.path.dirname(minispeechseq.__file__), 'bundled', 'digits')\n"
        "model = SpeechEncoderDecoderModel.from_pretrained(folder)\n"
        "processor = Wav2Vec2Processor.from_pretrained(folder)\n"
        "waveform = load_audio(sys.argv[1], sampling_rate=16000)\n"
        "inputs = processor(waveform, sampling_rate=16000, return_tensors='pt')\n"
        "ids = model.generate(inputs.input_values, num_beams=4)\n"
        "print(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())\n"
    )
    out = run([python, "-c", code, os.path.join(samples, name)], cwd=work, env=venv_env(python)).stdout.strip()
    assert out == expected[name], f"{name}: {out!r} vs {expected[name]!r}"
