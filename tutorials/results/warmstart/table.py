"""The warm-start grid's records as the markdown table the encoder's model card shows.

    python tutorials/results/warmstart/table.py [tutorials/results/warmstart/grid.jsonl]

One row per (labelled utterances, arm): the WER on each held-out speaker's isolated digits and joined strings (the
mean of the two), its mean over the folds that ran, and the WER on the held-out synthetic voices (mean over folds).
tests/test_training_records.py checks that the card's table is this script's output for the shipped records.
"""

import json
import os
import sys

ARMS = ("scratch", "hubert", "hubert-frozen", "wav2vec2")
SPEAKERS = ("jackson", "nicolas", "theo", "yweweler")
DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grid.jsonl")


def read(path: str = DEFAULT) -> dict[tuple[int, str], dict[str, dict[str, float]]]:
    """(size, arm) -> speaker -> {"isolated", "joined", "voices"} WERs."""
    cells: dict[tuple[int, str], dict[str, dict[str, float]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                arm, size, speaker = record["arm"].rsplit("_", 2)
                cells.setdefault((int(size), arm), {})[speaker] = record["wer"]
    return cells


def markdown(path: str = DEFAULT) -> str:
    cells = read(path)
    head = ("| labelled | arm | " + " | ".join(SPEAKERS) + " | mean (real) | held-out synthetic voices |\n"
            "|---|---|" + "---|" * len(SPEAKERS) + "---|---|")
    rows = []
    for size, arm in sorted(cells, key=lambda k: (k[0], ARMS.index(k[1]))):
        folds = cells[(size, arm)]
        real = {s: (w["isolated"] + w["joined"]) / 2 for s, w in folds.items()}
        per_speaker = " | ".join(f"{100 * real[s]:.1f}" if s in real else "" for s in SPEAKERS)
        mean = sum(real.values()) / len(real)
        voices = sum(w["voices"] for w in folds.values()) / len(folds)
        rows.append(f"| {size:,} | {arm} | {per_speaker} | {100 * mean:.1f} ({len(real)} fold{'s' if len(real) > 1 else ''}) | {100 * voices:.1f} |")
    return "\n".join([head, *rows])


if __name__ == "__main__":
    print(markdown(*sys.argv[1:]))
