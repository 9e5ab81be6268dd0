"""The warm-start comparison: fine-tune on 50 / 200 / 1,000 labelled utterances from (a) scratch, (b) the
self-supervised encoder, (c) the same encoder frozen, for each held-out real speaker; two runs at a time.

    python tutorials/results/warmstart/grid.py CORPUS RUNS_DIR ENCODER [OTHER_ENCODER]

CORPUS holds the sets of make_sets.py; ENCODER is `minispeechseq pretrain`'s OUT/encoder. With OTHER_ENCODER (the
other objective's encoder), arm (b) also runs from it at 200 utterances: which objective trains better. Every run
has the same budget (STEPS optimizer steps of BATCH utterances, lr 1e-3, seed 0) and is measured on the held-out
speaker's isolated digits and joined strings and on the held-out synthetic voices; each run appends one record to
RUNS_DIR/grid.jsonl through tutorials/results/voices/run_arm.py. Finished runs are skipped, so the grid resumes.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

STEPS, BATCH = 250, 8
SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
HERE = os.path.dirname(os.path.abspath(__file__))


def jobs(corpus: str, encoder: str, other: str | None) -> list[tuple[str, list[str], list[str]]]:
    arms = {"scratch": [], "ssl": ["--encoder-init", encoder], "frozen": ["--encoder-init", encoder, "--freeze-encoder"]}
    out = []
    for n in (200, 50, 1000):  # the target's size first
        for speaker in SPEAKERS:
            runs = dict(arms)
            if other and n == 200:
                runs["ssl_other"] = ["--encoder-init", other]
            for arm, flags in runs.items():
                tests = [f"isolated={corpus}/folds/{speaker}/isolated.tsv", f"joined={corpus}/folds/{speaker}/joined.tsv",
                         f"voices={corpus}/heldout_voices/unseen150.tsv"]
                train = ["--preset", "tiny", *flags, "--data", corpus,
                         "--train-manifest", f"{corpus}/folds/{speaker}/labelled_{n}.tsv", "--steps", str(STEPS),
                         "--batch-size", str(BATCH), "--lr", "1e-3", "--eval-every", "100000", "--save-every", "125",
                         "--log-every", "10", "--seed", "0", "--quiet"]
                out.append((f"{arm}_{n}_{speaker}", tests, train))
    return out


def main() -> int:
    corpus, runs, encoder = sys.argv[1:4]
    other = sys.argv[4] if len(sys.argv) > 4 else None
    os.makedirs(runs, exist_ok=True)
    results = os.path.join(runs, "grid.jsonl")
    done = set()
    if os.path.exists(results):
        with open(results, encoding="utf-8") as f:
            done = {json.loads(line)["arm"] for line in f if line.strip()}

    def run(job: tuple[str, list[str], list[str]]) -> int:
        name, tests, train = job
        command = [sys.executable, os.path.join(HERE, "..", "voices", "run_arm.py"), name, runs, results]
        for test in tests:
            command += ["--test", test]
        with open(os.path.join(runs, f"{name}.log"), "w") as log:
            return subprocess.run([*command, "--", *train], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode

    todo = [j for j in jobs(corpus, encoder, other) if j[0] not in done]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(run, todo))
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
