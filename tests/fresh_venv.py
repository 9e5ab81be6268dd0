"""A fresh virtual environment that sees the packages of the interpreter running this code (tests/test_wheel.py).

`python -m venv --system-site-packages` would show the new environment the *base* interpreter's packages: right
when the tests run on the system Python, wrong when they run in a venv of their own (the README's way, and the
only one where the system Python is externally managed): torch, installed there, would not be seen. So the new
environment gets a .pth file that adds the running interpreter's own site folders (a venv's, a conda
environment's, the system's, the user's), each through `site.addsitedir`, so that their own .pth files work as
they do here. The new environment's site-packages stays first on sys.path: what is installed into it wins.

Standard library only: it also runs under interpreters that hold nothing else.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys

PTH_NAME = "_the_test_environment.pth"


def site_folders() -> list[str]:
    """The site-packages folders this interpreter imports from, in its sys.path order."""
    known = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        known.add(site.getusersitepackages())
    known = {os.path.normcase(os.path.abspath(p)) for p in known}
    return [p for p in sys.path if p and os.path.normcase(os.path.abspath(p)) in known]


def make_venv(folder: str) -> str:
    """A venv at `folder`, without pip of its own, that sees site_folders(); returns its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", folder])
    python = os.path.join(folder, "Scripts" if os.name == "nt" else "bin", "python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip()
    with open(os.path.join(purelib, PTH_NAME), "w", encoding="utf-8") as f:
        for path in site_folders():  # a .pth line that starts with "import" is run as code (the site module)
            f.write(f"import site; site.addsitedir({path!r})\n")
    return python


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout
