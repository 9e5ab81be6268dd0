"""Run every tutorial, time it, and copy its pictures into tutorials/pictures/ (committed, so a reader sees them).

Run it:  python tutorials/make_pictures.py            (all tutorials)
         python tutorials/make_pictures.py 04 07      (the ones whose names start with these numbers)

Each tutorial runs in a fresh process with MINISPEECHSEQ_TUTORIAL_OUT set to a temporary folder, as the test suite
runs it; the runtimes printed at the end are the ones tutorials/README.md quotes.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PICTURES = os.path.join(HERE, "pictures")


def main(prefixes: list[str]) -> int:
    tutorials = sorted(glob.glob(os.path.join(HERE, "[0-9][0-9]_*.py")))
    if prefixes:
        tutorials = [t for t in tutorials if os.path.basename(t).startswith(tuple(prefixes))]
    os.makedirs(PICTURES, exist_ok=True)
    times = {}
    for path in tutorials:
        name = os.path.basename(path)
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "MINISPEECHSEQ_TUTORIAL_OUT": out, "MPLBACKEND": "Agg"}
            start = time.perf_counter()
            result = subprocess.run([sys.executable, path], env=env, cwd=out, capture_output=True, text=True, check=False)
            times[name] = time.perf_counter() - start
            if result.returncode != 0:
                print(result.stdout[-2000:], result.stderr[-4000:], sep="\n")
                print(f"{name} failed (exit {result.returncode})")
                return 1
            for png in sorted(glob.glob(os.path.join(out, "*.png"))):
                shutil.copy(png, PICTURES)
                print(f"{name}: {os.path.basename(png)} ({os.path.getsize(png) // 1000} kB)")
    print("\n| tutorial | runtime |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.0f} s |")
    print(f"| all | {sum(times.values()):.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
