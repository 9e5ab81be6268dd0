"""The warm-start comparison: fine-tune on 50 / 200 / 1,000 labelled utterances from (a) scratch, (b) a
self-supervised encoder, (c) the same encoder frozen, for each held-out real speaker; two runs at a time.

    python tutorials/results/warmstart/grid.py CORPUS RUNS_DIR --sizes 200 --encoder hubert=DIR --encoder wav2vec2=DIR
    python tutorials/results/warmstart/grid.py CORPUS RUNS_DIR --sizes 200 50 1000 --encoder hubert=DIR --frozen hubert

CORPUS holds the sets of make_sets.py; each --encoder NAME=DIR is `minispeechseq pretrain`'s OUT/encoder, run as
arm NAME; --frozen NAME adds arm NAME-frozen (that encoder, no gradients into it). Every run has the same budget
(STEPS optimizer steps of BATCH utterances, lr 1e-3, seed 0) and is measured on the held-out speaker's isolated
digits and joined strings and on the held-out synthetic voices; each run appends one record, named ARM_SIZE_SPEAKER,
to RUNS_DIR/grid.jsonl through tutorials/results/voices/run_arm.py. Finished runs are skipped, so the grid resumes
and a second call adds arms or sizes.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

STEPS, BATCH = 600, 16
SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
HERE = os.path.dirname(os.path.abspath(__file__))


def jobs(corpus: str, sizes: list[int], speakers: list[str], encoders: dict[str, str],
         frozen: list[str]) -> list[tuple[str, list[str], list[str]]]:
    arms = {"scratch": [], **{name: ["--encoder-init", path] for name, path in encoders.items()},
            **{f"{name}-frozen": ["--encoder-init", encoders[name], "--freeze-encoder"] for name in frozen}}
    out = []
    for n in sizes:
        for speaker in speakers:
            for arm, flags in arms.items():
                tests = [f"isolated={corpus}/folds/{speaker}/isolated.tsv", f"joined={corpus}/folds/{speaker}/joined.tsv",
                         f"voices={corpus}/heldout_voices/unseen150.tsv"]
                train = ["--preset", "tiny", *flags, "--data", corpus,
                         "--train-manifest", f"{corpus}/folds/{speaker}/labelled_{n}.tsv", "--steps", str(STEPS),
                         "--batch-size", str(BATCH), "--lr", "1e-3", "--eval-every", "100000", "--save-every", "125",
                         "--log-every", "10", "--seed", "0", "--quiet"]
                out.append((f"{arm}_{n}_{speaker}", tests, train))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("runs")
    parser.add_argument("--sizes", type=int, nargs="+", required=True)
    parser.add_argument("--speakers", nargs="+", default=list(SPEAKERS), help="the held-out speakers (folds) to run")
    parser.add_argument("--encoder", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--frozen", action="append", default=[], help="NAME of an --encoder")
    args = parser.parse_args()
    encoders = dict(item.split("=", 1) for item in args.encoder)
    os.makedirs(args.runs, exist_ok=True)
    corpus, runs = args.corpus, args.runs
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

    todo = [j for j in jobs(corpus, args.sizes, args.speakers, encoders, args.frozen) if j[0] not in done]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = list(pool.map(run, todo))
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
