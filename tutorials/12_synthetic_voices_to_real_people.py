"""Tutorial 12: from synthetic voices to real people. A recognizer is judged on voices it has not heard.

Run it:  pip install -e ".[tutorials,train]" && python tutorials/12_synthetic_voices_to_real_people.py
         (pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

The bundled digits model used to be trained on espeak-ng's voices only. It scored 1.9 % WER on held-out synthetic
strings and nonsense on people. This tutorial measures that domain shift, then shows what was done about it:
1. what a person sounds like next to espeak-ng (a spectrogram each: the 8 kHz recordings hold nothing above 4 kHz);
2. the voice augmentations of `minispeechseq.training.augment`, applied to a real sample;
3. the ablation: one augmentation at a time, same seed and budget, judged on a speaker held out of training;
4. leave-one-speaker-out (LOSO): four folds, each testing on the one speaker it never heard;
5. the retrained bundled model: held-out synthetic voices, another synthesizer, and a noise curve;
6. its errors on a real speaker, read (and written out as wav files to listen to).

The long runs (the ablation, the folds, the shipped model: about an hour and a half of CPU) are not rerun here.
This tutorial reads their records, shipped in tutorials/results/voices/ (made by ablation.sh, folds.sh and final.sh
there, which say how), and runs the live parts in seconds: the spectrograms, the augmentations, and the new bundled
model on the real samples it ships with.

Real recordings: Free Spoken Digit Dataset (FSDD), Zohar Jackson et al., CC BY-SA 4.0 (the bundled samples
`fsdd_*.wav` are made from it; minispeechseq/bundled/samples/FSDD_CREDIT.md).

Shape legend: L audio samples, F frequency bins, N STFT frames.
"""

# %%
import collections
import csv
import json
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import soundfile

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.training import augment
from minispeechseq.training.data import SAMPLING_RATE
from minispeechseq.training.digits import DIGIT_WORDS
from minispeechseq.training.metrics import word_error_rate

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
HERE = os.path.dirname(os.path.abspath(__file__))
RECORDS = os.path.join(HERE, "results", "voices")
BUNDLED = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled")
SAMPLES = os.path.join(BUNDLED, "samples")
FSDD = os.path.join(HERE, "..", "..", "shared", "data", "fsdd", "recordings")  # optional: only for listening


def read_jsonl(name: str) -> list[dict]:
    with open(os.path.join(RECORDS, name), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def read_tsv(path: str) -> dict[str, str]:
    with open(path, encoding="utf-8") as f:
        return {row[0]: row[1] for row in csv.reader(f, delimiter="\t")}


def spectrogram(wave: np.ndarray, n_fft: int = 256) -> np.ndarray:
    """log power, (F, N): 16 ms windows every 16 ms, 31 Hz bins."""
    hop = n_fft
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(wave, (0, n_fft)), n_fft)[::hop]  # (N, n_fft)
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2  # (N, F)
    return 10 * np.log10(power.T + 1e-10)  # (F, N)


def show(ax, wave: np.ndarray, title: str) -> None:
    # 24 colours: the picture reads the same, and the PNG stays small (noise textures compress badly)
    ax.imshow(spectrogram(wave), origin="lower", aspect="auto", cmap=plt.get_cmap("magma", 24), vmin=-80, vmax=20,
              interpolation="nearest",
              extent=(0, len(wave) / SAMPLING_RATE, 0, SAMPLING_RATE / 2000))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("seconds")
    ax.set_ylabel("kHz")


# %% [markdown]
# ## 1. The domain shift, measured
#
# `models.jsonl` holds every table of the model card for two models: the synthetic-voices model (the bundled model
# before this recipe) and the retrained one. Here is the old one on sets it never trained on. FSDD's four speakers
# (jackson, nicolas, theo, yweweler: four men; US, Belgian-French, US and German accents) say isolated digits, and
# "joined" strings are 2-7 of one speaker's recordings put one after another with 80-400 ms pauses. A WER above
# 100 % means the model wrote more wrong words than the reference has words (insertions count).

# %%
models = {r["model"]: r for r in read_jsonl("models.jsonl")}
old = models["synthetic_voices_model"]
speakers = sorted({k.rsplit("_", 1)[0] for k in old["wer"] if k.endswith("_isolated")})
print("the synthetic-voices model (greedy WER):")
for speaker in speakers:
    print(f"  {speaker:9s} isolated {old['wer'][speaker + '_isolated']:7.1%}   joined {old['wer'][speaker + '_joined']:7.1%}")
print(f"  synthetic test split {old['wer']['synthetic_test']:.1%}; held-out espeak-ng voices "
      f"{old['wer']['unseen_espeak']:.1%}; flite's voices {old['wer']['flite']:.1%}; white noise at 10 dB "
      f"{old['wer']['white_10dB']:.1%}")
assert old["wer"]["synthetic_test"] < 0.03 and min(old["wer"][s + "_isolated"] for s in speakers) > 0.5, \
    "the prose: fine on its own voices, lost on people"
old_on_samples = read_tsv(os.path.join(RECORDS, "old_model_on_samples.tsv"))
references = read_tsv(os.path.join(SAMPLES, "transcripts.tsv"))
for name, text in old_on_samples.items():
    print(f"  {name}: said {references[name]!r}, the old model heard {text!r}")

# %% [markdown]
# What differs? Put a real sample beside a synthetic one. The synthetic voice is clean, evenly paced and reaches
# 8 kHz; the person was recorded at 8 kHz, so nothing is above 4 kHz, and the room and the microphone colour
# everything. A model trained on the left has never seen the right.

# %%
synthetic_name = next(n for n in references if not n.startswith("fsdd_"))
real_name = "fsdd_jackson.wav"
synthetic, real = (load_audio(os.path.join(SAMPLES, n)) for n in (synthetic_name, real_name))
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8), layout="constrained")
show(axes[0], synthetic, f"espeak-ng: {references[synthetic_name]!r}")
show(axes[1], real, f"a person (FSDD, jackson): {references[real_name]!r}")
fig.savefig(os.path.join(OUT, "12_synthetic_vs_real.png"), dpi=120)
plt.close(fig)
above = int(4200 / (SAMPLING_RATE / 256))  # the first bin above 4.2 kHz
high_real, high_synthetic = spectrogram(real)[above:].mean(), spectrogram(synthetic)[above:].mean()
print(f"mean power above 4.2 kHz: synthetic {high_synthetic:.0f} dB, real {high_real:.0f} dB")
assert high_real < high_synthetic - 20, "the 8 kHz recording holds nothing above 4 kHz"

# %% [markdown]
# ## 2. The augmentations
#
# Each draws a new "voice", "room" or "channel" for a training utterance (`augment.VoiceAugmentation` chains them,
# each with its probability):
# - speed (0.85-1.15, resampled: pitch and formants move with it) and a formant (vocal-tract length) warp that
#   moves the spectral envelope at the same length and pitch;
# - a room: an impulse response simulated with pyroomacoustics in a random shoebox room, RT60 0.15-0.6 s;
# - the channel: a band limit (low cut 50-400 Hz, high cut 3-7.5 kHz: telephone to wide band) and a random EQ;
# - noise at 0-30 dB SNR: white, pink, brown, or babble made from other utterances of the batch.

# %%
rng = np.random.default_rng(0)
others = [load_audio(os.path.join(SAMPLES, n)) for n in references if n != real_name]
room = augment.room_impulse_response(np.random.default_rng(3))
versions = {
    "as recorded": real,
    "speed x1.15": augment.change_speed(real, 1.15),
    "formants x1.15": augment.warp_formants(real, 1.15),
    "room (reverb)": augment.reverberate(real, room),
    "telephone band 300-3400 Hz": augment.band_limit(real, 300, 3400),
    "babble at 5 dB": augment.add_noise(real, augment.babble(len(real), others, rng), 5.0),
}
assert len(versions["speed x1.15"]) == round(len(real) / 1.15), "speed changes the duration by the factor"
assert len(versions["formants x1.15"]) == len(real) and len(versions["room (reverb)"]) == len(real)
fig, axes = plt.subplots(2, 3, figsize=(10, 4.6), layout="constrained")
for ax, (title, wave) in zip(axes.flat, versions.items()):
    show(ax, wave, title)
fig.savefig(os.path.join(OUT, "12_augmentations.png"), dpi=120)
plt.close(fig)

# %% [markdown]
# ## 3. The ablation: what each augmentation buys on a speaker the model never heard
#
# Every arm fine-tunes the synthetic-voices model for the same 1,200 steps (batches of 16, seed 0) on the mixed
# corpus (espeak-ng strings + three real speakers' isolated digits and joined strings), with *nicolas* held out.
# The base arm has the old recipe's light augmentation (silence, gain, white noise at 15-40 dB); each other arm
# adds one factor. A factor is kept when it lowers nicolas's mean WER (isolated and joined) by at least 2 points,
# about one standard error of a 500-utterance WER near 40 %; a factor that only helps noisy sets is judged on those.

# %%
ablation = {r["arm"]: r for r in read_jsonl("ablation.jsonl")}
base = ablation["base"]


def held_out(record: dict) -> float:
    return (record["wer"]["nicolas_isolated"] + record["wer"]["nicolas_joined"]) / 2


columns = ("nicolas_isolated", "nicolas_joined", "valid", "white10", "babble10")
print("arm          " + "  ".join(f"{c:>16s}" for c in columns) + "   held-out mean   kept")
kept = []
for arm, record in ablation.items():
    gain = held_out(base) - held_out(record)
    keep = arm not in ("base", "all") and gain >= 0.02
    kept += [arm] if keep else []
    print(f"{arm:12s} " + "  ".join(f"{100 * record['wer'][c]:15.1f}%" for c in columns)
          + f"   {100 * held_out(record):12.1f}%   {'yes' if keep else ('-' if arm in ('base', 'all') else 'no')}")
print("kept:", kept)

fig, ax = plt.subplots(figsize=(11, 3.6), layout="constrained")
width = 0.8 / len(ablation)
for k, (arm, record) in enumerate(ablation.items()):
    ax.bar(np.arange(len(columns)) + k * width, [100 * record["wer"][c] for c in columns], width, label=arm)
ax.set_xticks(np.arange(len(columns)) + 0.4 - width / 2, columns)
ax.set_ylabel("greedy WER (%)")
ax.set_title("one factor at a time (nicolas held out; 1,200 steps each; seed 0)", fontsize=10)
ax.legend(fontsize=8, ncol=4)
fig.savefig(os.path.join(OUT, "12_ablation.png"), dpi=120)
plt.close(fig)
with open(os.path.join(RECORDS, "recipe_flags.txt"), encoding="utf-8") as f:
    recipe = f.read().split()
print("the recipe's flags (recipe_flags.txt):", " ".join(recipe))
kept_flags = {"noise": "--snr-db", "speed": "--speed-p", "formant": "--formant-p", "channel": "--band-p",
              "reverb": "--reverb-p", "specaugment": "--mask-time-prob"}
assert all((kept_flags[arm] in recipe) == (arm in kept) for arm in kept_flags), \
    "recipe_flags.txt holds exactly the factors the ablation kept"

# %% [markdown]
# ## 4. Leave-one-speaker-out
#
# Four real speakers are few. To measure how the recipe does on a person it has never heard, train four times,
# each time without one speaker, and test on that speaker alone: the mean over the folds is the estimate, and the
# spread between folds says how much it depends on who speaks. (A random split of files would put every speaker
# on both sides and measure memory of their voices, not hearing.) The folds use the recipe's augmentation with the
# ablation's shorter budget (1,200 steps); the shipped model trains longer on all four speakers, so its own
# numbers on these speakers are not a test (they heard them), and the fold means are what the model card reports.

# %%
folds = {r["arm"].removeprefix("fold_"): r for r in read_jsonl("folds.jsonl")}
assert sorted(folds) == speakers, f"one fold per speaker: {sorted(folds)}"
print("held-out speaker   isolated   joined")
for speaker, record in folds.items():
    print(f"  {speaker:15s} {record['wer'][speaker + '_isolated']:8.1%} {record['wer'][speaker + '_joined']:8.1%}")
mean_isolated = float(np.mean([r["wer"][s + "_isolated"] for s, r in folds.items()]))
mean_joined = float(np.mean([r["wer"][s + "_joined"] for s, r in folds.items()]))
old_isolated = float(np.mean([old["wer"][s + "_isolated"] for s in speakers]))
old_joined = float(np.mean([old["wer"][s + "_joined"] for s in speakers]))
print(f"  mean            {mean_isolated:8.1%} {mean_joined:8.1%}   (the synthetic-voices model: {old_isolated:.1%}, "
      f"{old_joined:.1%}; targets 10 % and 15 %)")
assert mean_isolated < old_isolated and mean_joined < old_joined

# %% [markdown]
# ## 5. The retrained bundled model
#
# The shipped model fine-tunes the synthetic-voices model on the whole mixed corpus (all four speakers, minus the
# takes its real samples are made of) with the recipe. First the live check: the real samples it ships with, which
# it never heard.

# %%
model = SpeechEncoderDecoderModel.from_pretrained(os.path.join(BUNDLED, "digits"))
processor = Processor.from_pretrained(os.path.join(BUNDLED, "digits"))
real_names = sorted(n for n in references if n.startswith("fsdd_"))
batch = processor([load_audio(os.path.join(SAMPLES, n)) for n in real_names], sampling_rate=SAMPLING_RATE,
                  padding=True, return_tensors="pt")
heard = processor.batch_decode(model.generate(batch.input_values, attention_mask=batch.attention_mask),
                               skip_special_tokens=True)
for name, text in zip(real_names, heard):
    print(f"  {name}: said {references[name]!r}, heard {text!r} (the old model: {old_on_samples[name]!r})")
samples_wer = word_error_rate([references[n] for n in real_names], heard)
print(f"WER on the real samples: {samples_wer:.0%}")

new = models["final"]
print(f"synthetic test split {old['wer']['synthetic_test']:.1%} -> {new['wer']['synthetic_test']:.1%}; held-out "
      f"espeak-ng voices {old['wer']['unseen_espeak']:.1%} -> {new['wer']['unseen_espeak']:.1%}; flite's voices "
      f"(never trained on) {old['wer']['flite']:.1%} -> {new['wer']['flite']:.1%}")

# %% [markdown]
# The noise curve: the synthetic test strings with noise added at a given SNR (the seeded copies of
# evaluate_model.py; babble is made from other test utterances). The old model had only met white noise at 15-40 dB.

# %%
noises = sorted({k.split("_")[0] for k in new["wer"] if k.endswith("dB")})
snrs = sorted({int(k.split("_")[1][:-2]) for k in new["wer"] if k.endswith("dB")}, reverse=True)
fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
for noise, colour in zip(noises, ("tab:blue", "tab:pink", "tab:brown", "tab:green")):
    for record, style in ((old, ":"), (new, "-")):
        ax.plot(snrs, [100 * record["wer"][f"{noise}_{s}dB"] for s in snrs], style, marker="o", color=colour,
                label=f"{noise}, {'old' if record is old else 'retrained'}")
ax.set_xlabel("SNR (dB)")
ax.set_ylabel("greedy WER (%)")
ax.set_ylim(0, 100)
ax.invert_xaxis()
ax.legend(fontsize=8, ncol=2)
ax.set_title("synthetic test strings in noise", fontsize=10)
fig.savefig(os.path.join(OUT, "12_noise_curve.png"), dpi=120)
plt.close(fig)
for noise in noises:
    print(f"  {noise:7s}" + "".join(f"  {s:2d} dB {old['wer'][f'{noise}_{s}dB']:6.1%} -> {new['wer'][f'{noise}_{s}dB']:6.1%}"
                                    for s in snrs))

# %% [markdown]
# ## 6. Its errors on a real speaker, read and listened to
#
# The fold records keep the first 60 wrong transcripts of each held-out test set, in the manifest's order, which is
# sorted by digit: for the hardest speaker these are his zeros to threes, not a sample of all his errors. Isolated
# digits make the errors easy to read: one word in, one word out. Which digits does a new voice turn into which?

# %%
worst = max(folds, key=lambda s: folds[s]["wer"][s + "_isolated"])
errors = folds[worst]["errors"][worst + "_isolated"]
confusions = collections.Counter((ref, hyp) for _, ref, hyp in errors)
print(f"the hardest held-out speaker: {worst}; the most frequent confusions (said -> heard):")
for (ref, hyp), count in confusions.most_common(8):
    print(f"  {count:3d} x  {ref!r} -> {hyp!r}")
assert all(ref in DIGIT_WORDS for _, ref, _ in errors)
# Listen: the recordings are FSDD's own files. Where ../shared/data/fsdd is present, the first three errors are
# copied beside the pictures.
if os.path.isdir(FSDD):
    for k, (name, ref, hyp) in enumerate(errors[:3]):
        listen = f"12_error{k}_{ref}_heard_{hyp.replace(' ', '_') or 'nothing'}.wav"
        shutil.copyfile(os.path.join(FSDD, name), os.path.join(OUT, listen))
        wave, rate = soundfile.read(os.path.join(FSDD, name))
        print(f"  wrote {listen} ({len(wave) / rate:.2f} s at {rate} Hz; FSDD's {name})")
else:
    print("(../shared/data/fsdd is not here: clone FSDD to listen to these recordings)")

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. In section 2, use a factor of 0.85 for both `change_speed` and `warp_formants`. Observe: the slowed sample is
#    longer (the duration assert now checks round(L / 0.85)) and its harmonics (the thin horizontal lines) sit
#    lower and closer together; the formant-warped one keeps its length and its harmonic spacing (the pitch), while
#    the broad bright bands (the vocal tract's resonances) move down. That is the difference between a faster talker
#    and a longer vocal tract, which is why the recipe has both.
# 2. In section 2, add babble at 0 dB and at -5 dB. Observe: the sample's harmonics sink into the babble's texture;
#    the noise curve of section 5 shows what that costs the model at each SNR.
# 3. In section 4, compute a fold's standard error, sqrt(p (1 - p) / 500) for p near 0.37 (500 isolated digits
#    per held-out speaker): about 2 points. Observe: the folds' isolated WERs span about 8 points (33 % to 41 %),
#    several standard errors: who speaks matters more than which of their utterances were drawn, and four
#    speakers are few to estimate it.
# 4. In section 6, replace `max` with `min` to read the easiest held-out speaker's confusions. Observe which digit
#    pairs appear for both speakers (confusions of the words themselves, similar sounds) and which for one only
#    (confusions of that voice).
#
# ## References
#
# - Jackson et al. Free Spoken Digit Dataset (FSDD), github.com/Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0
# - Ko, Peddinti, Povey, Khudanpur (2015). Audio Augmentation for Speech Recognition. Interspeech 2015 (speed
#   perturbation)
# - Jaitly, Hinton (2013). Vocal Tract Length Perturbation (VTLP) improves speech recognition. ICML 2013 workshop
#   (the idea behind the formant warp)
# - Scheibler, Bezzam, Dokmanić (2018). Pyroomacoustics: A Python package for audio room simulations and array
#   processing algorithms. ICASSP 2018 (the simulated rooms); Allen, Berkley (1979). Image method for efficiently
#   simulating small-room acoustics. JASA
# - Park et al. (2019). SpecAugment: A Simple Data Augmentation Method for Automatic Speech Recognition.
#   Interspeech 2019. arXiv:1904.08779 (masking, the augmentation tutorial 09 draws)
