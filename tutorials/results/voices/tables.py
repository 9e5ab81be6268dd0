"""The model card's real-voices tables, in Markdown, from the records in this folder.

    python tutorials/results/voices/tables.py
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def read(name: str) -> list[dict]:
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def main() -> None:
    models = {r["model"]: r for r in read("models.jsonl")}
    ablation = read("ablation.jsonl")
    folds = {r["arm"].removeprefix("fold_"): r for r in read("folds.jsonl")}
    if ablation:
        columns = ("nicolas_isolated", "nicolas_joined", "valid", "white10", "babble10")
        print("| arm | " + " | ".join(columns) + " | held-out mean | train s |")
        print("|---" * (len(columns) + 3) + "|")
        for r in ablation:
            mean = (r["wer"]["nicolas_isolated"] + r["wer"]["nicolas_joined"]) / 2
            print(f"| {r['arm']} | " + " | ".join(pct(r["wer"][c]) for c in columns) + f" | {pct(mean)} | {r['train_s']} |")
        print()
    if folds:
        print("| held-out speaker | isolated | joined |")
        print("|---|---|---|")
        for s, r in folds.items():
            print(f"| {s} | {pct(r['wer'][s + '_isolated'])} | {pct(r['wer'][s + '_joined'])} |")
        iso = sum(r["wer"][s + "_isolated"] for s, r in folds.items()) / len(folds)
        joi = sum(r["wer"][s + "_joined"] for s, r in folds.items()) / len(folds)
        print(f"| **mean** | **{pct(iso)}** | **{pct(joi)}** |")
        print()
    if models:
        names = list(models)
        sets = list(models[names[0]]["wer"])
        print("| set | utterances | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 2) + "|")
        for s in sets:
            print(f"| {s} | {models[names[0]]['utterances'][s]} | "
                  + " | ".join(pct(models[n]["wer"][s]) if s in models[n]["wer"] else "" for n in names) + " |")


if __name__ == "__main__":
    main()
