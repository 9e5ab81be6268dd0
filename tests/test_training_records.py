"""The training records the repository ships, and the claims made about them.

- `minispeechseq/bundled/digits/training_metrics.jsonl` is a run of the recipe in the model card (its learning
  rates follow lr 2e-3, 300 warmup steps, cosine to step 3,000; its evaluations are the ones the card quotes).
- `tutorials/results/ablation_posconv_k16.jsonl` differs from it in the positional conv's kernel only: the preset
  differs in that one field, and the run followed the same schedule over the same steps and epochs.
- The model card's real-voices tables quote `tutorials/results/voices/` (folds.jsonl, models.jsonl).
- Evaluating during training does not change the training trajectory (so evaluating every 250 steps instead of
  every 500 leaves the recipe's run as it was).
"""

import json
import math
import os
import re
import runpy
import shutil


from minispeechseq.tools import train as train_cli
from minispeechseq.training import train
from tests.utils import write_tone_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_METRICS = os.path.join(REPO, "minispeechseq", "bundled", "digits", "training_metrics.jsonl")
MODEL_CARD = os.path.join(REPO, "minispeechseq", "bundled", "digits", "MODEL_CARD.md")
RESULTS = os.path.join(REPO, "tutorials", "results")
K16_METRICS = os.path.join(RESULTS, "ablation_posconv_k16.jsonl")


def _records(path):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "loss" in r], [r for r in rows if "wer" in r]


def _recipe_lr(step):
    """The learning rate logged after `step` optimizer steps of the card's recipe, written from its description
    (lr 2e-3, linear warmup over 10 % of 3,000 steps, then half a cosine to 0), not from the library's schedule."""
    peak, warmup, total = 2e-3, 300, 3000
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_recipe_metrics_follow_the_recipe():
    training, evaluations = _records(RECIPE_METRICS)
    assert [r["step"] for r in training] == list(range(10, 3001, 10))
    assert [r["step"] for r in evaluations] == list(range(250, 3001, 250))
    worst = max(abs(r["lr"] - _recipe_lr(r["step"])) for r in training) / 2e-3  # the rate is 0 at the last step
    assert worst < 1e-9, f"logged learning rates differ from the recipe's schedule by up to {worst:.2e} of the peak"
    # 3,000 steps of 16 over 3,165 utterances (198 batches an epoch): the run ends in epoch 15.
    assert training[-1]["epoch"] == 3000 // math.ceil(3165 / 16), training[-1]["epoch"]


def test_model_card_quotes_the_shipped_curve():
    """Every "WER (step N)" figure of the card's curve is the file's, rounded as printed."""
    with open(MODEL_CARD, encoding="utf-8") as f:
        card = f.read()
    start = card.index("Validation WER during training")
    line = card[start:card.index("\n\n", start)]
    _, evaluations = _records(RECIPE_METRICS)
    quoted = {int(step): float(wer) for wer, step in
              re.findall(r"([0-9.]+) % \(step ([0-9]+)\)", line.replace(",", ""))}
    assert len(quoted) == len(evaluations), f"the card quotes {len(quoted)} points, the file has {len(evaluations)}"
    for r in evaluations:
        assert abs(quoted[r["step"]] - 100 * r["wer"]) < 0.051, (r["step"], quoted[r["step"]], 100 * r["wer"])


def test_ablation_arms_differ_in_the_kernel_only():
    script = runpy.run_path(os.path.join(RESULTS, "train_posconv.py"), run_name="train_posconv")
    encoder, decoder = script["posconv_preset"](16)()
    tiny_encoder, tiny_decoder = train.PRESETS["tiny"]()
    assert decoder == tiny_decoder
    assert {k for k in tiny_encoder if encoder[k] != tiny_encoder[k]} == {"num_conv_pos_embeddings"}
    assert (encoder["num_conv_pos_embeddings"], tiny_encoder["num_conv_pos_embeddings"]) == (16, 128)
    assert script["posconv_preset"](128)() == train.PRESETS["tiny"]()

    # The runs themselves, over the steps both reached (the narrow arm was stopped at step 1,500 of its 3,000-step
    # schedule): the same logged steps, learning rates and epochs, so the same schedule and batch order.
    k16_training, k16_evaluations = _records(K16_METRICS)
    k128_training, k128_evaluations = _records(RECIPE_METRICS)
    last = k16_training[-1]["step"]
    assert last == k16_evaluations[-1]["step"] == 1500, (last, k16_evaluations[-1]["step"])
    assert [r["step"] for r in k16_evaluations] == [r["step"] for r in k128_evaluations if r["step"] <= last]
    assert [(r["step"], r["lr"], r["epoch"]) for r in k16_training] == \
        [(r["step"], r["lr"], r["epoch"]) for r in k128_training if r["step"] <= last]


def _tone_corpus(folder):
    """12 tone-burst "utterances" in train.tsv (8) and valid.tsv (4): the loop's mechanics, not recognition."""
    lines = write_tone_corpus(folder, count=12, max_digits=2)
    (folder / "train.tsv").write_text("".join(lines[:8]))
    (folder / "valid.tsv").write_text("".join(lines[8:]))


def test_evaluation_does_not_change_the_training_trajectory(tmp_path):
    """Evaluating after every step (eval mode: no dropout, no SpecAugment, no augmentation) draws from no random
    stream the training uses, so the losses are those of a run that evaluates only at its end."""
    _tone_corpus(tmp_path / "corpus")
    losses = {}
    for eval_every in (1, 6):
        out = tmp_path / f"eval-every-{eval_every}"
        argv = ["--preset", "debug", "--data", str(tmp_path / "corpus"), "--out", str(out), "--steps", "6",
                "--batch-size", "4", "--log-every", "1", "--eval-every", str(eval_every), "--save-every", "6",
                "--max-new-tokens", "4", "--quiet"]
        assert train_cli.main(argv) == 0
        training, evaluations = _records(out / train.METRICS_FILE)
        assert len(evaluations) == 6 // eval_every
        losses[eval_every] = [r["loss"] for r in training]
        shutil.rmtree(out)
    difference = max(abs(a - b) for a, b in zip(losses[1], losses[6]))
    assert len(losses[1]) == len(losses[6]) == 6 and difference == 0.0, \
        f"evaluating every step moved the training losses by up to {difference:.2e}"


def test_model_card_quotes_the_voices_records():
    """The card's leave-one-speaker-out table and its synthetic-voices and noise rows are the shipped records'
    figures (tutorials/results/voices/folds.jsonl, models.jsonl), rounded as printed."""
    voices = os.path.join(RESULTS, "voices")
    with open(MODEL_CARD, encoding="utf-8") as f:
        card = f.read()
    with open(os.path.join(voices, "folds.jsonl"), encoding="utf-8") as f:
        folds = {r["arm"].removeprefix("fold_"): r["wer"] for r in map(json.loads, f)}
    for speaker, wer in folds.items():
        row = f"| {speaker} | {100 * wer[speaker + '_isolated']:.1f} % | {100 * wer[speaker + '_joined']:.1f} % |"
        assert row in card, f"the card's fold row for {speaker} should read {row!r}"
    mean = sum(w[s + "_isolated"] for s, w in folds.items()) / len(folds)
    assert f"**{100 * mean:.1f} %** [≤ 10 %]" in card, f"the card's mean isolated WER should be {100 * mean:.1f} %"
    with open(os.path.join(voices, "models.jsonl"), encoding="utf-8") as f:
        models = {r["model"]: r["wer"] for r in map(json.loads, f)}
    old, new = models["synthetic_voices_model"], models["final"]
    for key in ("synthetic_test", "unseen_espeak", "flite"):
        assert f"| {100 * old[key]:.1f} % | **{100 * new[key]:.1f} %** |" in card, key
    for noise in ("white", "pink", "babble"):
        cells = " | ".join(f"{100 * old[f'{noise}_{s}dB']:.1f} % → **{100 * new[f'{noise}_{s}dB']:.1f} %**"
                           for s in (30, 20, 10, 5))
        assert f"| {noise} | {cells} |" in card, f"the card's {noise} noise row"


def test_shipped_fold_models_are_the_recorded_folds():
    """tutorials/results/voices/folds/ holds the four leave-one-speaker-out models the timestamp tests load. Their
    rerun (folds/rerun.jsonl) scored what the card's folds.jsonl records, WER and CER to the last digit; each
    model's training record ends at the recipe's 1,200 steps; each was trained on a manifest without its speaker."""
    voices = os.path.join(RESULTS, "voices")
    records = {}
    for name in ("folds.jsonl", os.path.join("folds", "rerun.jsonl")):
        with open(os.path.join(voices, name), encoding="utf-8") as f:
            records[name] = {r["arm"]: r for r in map(json.loads, f)}
    card, rerun = records.values()
    assert set(card) == set(rerun) == {f"fold_{s}" for s in ("jackson", "nicolas", "theo", "yweweler")}, rerun.keys()
    for arm, r in rerun.items():
        speaker = arm.removeprefix("fold_")
        assert (r["wer"], r["cer"]) == (card[arm]["wer"], card[arm]["cer"]), f"{arm}: {r['wer']} vs {card[arm]['wer']}"
        manifest = r["train_args"][r["train_args"].index("--train-manifest") + 1]
        assert manifest.endswith(os.path.join("folds", speaker, "train.tsv")), manifest
        with open(os.path.join(voices, "folds", speaker, "training_metrics.jsonl"), encoding="utf-8") as f:
            steps = [json.loads(line)["step"] for line in f]
        assert max(steps) == int(r["train_args"][r["train_args"].index("--steps") + 1]) == 1200, (speaker, max(steps))


def test_model_card_quotes_the_heldout_timestamp_record():
    """The card's table of word timestamps on voices never heard is tutorials/results/timestamps/heldout.json
    (bench_noise --heldout), rounded as printed, and that record says every speaker was measured by its own fold."""
    with open(os.path.join(RESULTS, "timestamps", "heldout.json"), encoding="utf-8") as f:
        rows = json.load(f)
    with open(MODEL_CARD, encoding="utf-8") as f:
        card = f.read()
    assert len(rows) == 12, len(rows)  # 4 speakers x (own room, + white 30, + pink 30)
    for r in rows:
        speaker, kind = r["noise"].split(":")
        assert r["heldout"] and r["model"].endswith(os.path.join("folds", speaker)), r["model"]
        noise = "own room" if kind == "own" else f"+ {kind} {r['snr_db']} dB"
        cells = [f"{r[f'{prefix}{name}_median_ms']:.0f} / {r[f'{prefix}{name}_p90_ms']:.0f}"
                 for prefix in ("", "long_") for name in ("start", "end")]
        line = (f"| {speaker} | {noise} | {r['words_measured']} + {r['long_words_measured']} | {' | '.join(cells)} | "
                f"{100 * r['long_wer']:.1f} % ({100 * r['short_wer']:.1f} %) |")
        assert line in card, f"the card's row for {speaker}, {noise} should read {line!r}"
