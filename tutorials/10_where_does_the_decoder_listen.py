"""Tutorial 10: where does the decoder listen? Word timestamps from cross-attention, and long recordings.

Run it:  pip install -e ".[tutorials]" && python tutorials/10_where_does_the_decoder_listen.py
         (pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing; needs espeak-ng)

When the decoder writes a word it attends to the encoder frames it needs, and in a trained model some
cross-attention heads look exactly where that word is being said. Read those "alignment heads", find the best
monotonic path from tokens to frames (dynamic time warping), and every word gets a start and an end. Whisper does
this for itself (Radford et al. 2023; openai/whisper, timing.py); `minispeechseq.recognition.timestamps` does it for
any SpeechEncoderDecoderModel. Then a recording far longer than the model ever heard is cut at its pauses and
stitched back by those times.

We use the bundled digits model on audio built word by word with espeak-ng, so the true boundaries are known;
last, real recordings, heard by the bundled model and by models that never heard their speaker.

Shape legend: L layers, H heads, S tokens, T encoder frames (40 ms each for this model).
"""

# %%
import os

import jiwer
import matplotlib.pyplot as plt
import numpy as np
import torch

from minispeechseq import Processor, SpeechEncoderDecoderModel, transcribe
from minispeechseq.recognition.longform import plan_chunks
from minispeechseq.recognition.timestamps import (
    MEDIAN_FILTER_WIDTH,
    cross_attention_maps,
    dtw,
    dtw_path,
    head_scores,
    median_filter,
)
from minispeechseq.tools.bench_noise import babble_sources, pieces_of, with_noise
from minispeechseq.training.digits import long_recording, timed_digit_strings

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "minispeechseq", "bundled", "digits")
model = SpeechEncoderDecoderModel.from_pretrained(BUNDLED)
processor = Processor.from_pretrained(BUNDLED)
RATE = processor.feature_extractor.sampling_rate

# %% [markdown]
# ## 1. One utterance with known word boundaries, and every head's cross-attention
#
# `timed_digit_strings` says each digit word alone, trims it to its sound and joins the words with silences of known
# length. We transcribe it, then run the decoder once more over its own tokens (teacher-forced, eager attention)
# to get the cross-attention maps of all L x H heads: row t is the query that wrote token t + 1.

# %%
utterance = timed_digit_strings(1, seed=9)[0]
features = processor(utterance.audio, sampling_rate=RATE, return_tensors="pt")
encoded = model.get_encoder()(features.input_values, attention_mask=features.attention_mask)
ids = model.generate(encoder_outputs=encoded, attention_mask=features.attention_mask)
text = processor.batch_decode(ids, skip_special_tokens=True)[0].strip()
print(f"said: {utterance.text!r}\nheard: {text!r}")
assert text == utterance.text

maps = cross_attention_maps(model, encoded, features.attention_mask, ids)[:, 0]  # (L, H, S, T)
rows = ids.shape[1] - 1  # the queries that wrote the words and the end-of-sequence token
T = maps.shape[-1]
scores = head_scores(maps, rows, T)  # (L, H): peaked x monotonic, in [0, 1]
print("head scores (layer x head):\n", scores.numpy().round(2))
print("the bundled model's stored alignment heads:", model.generation_config.alignment_heads)
assert scores.shape == (2, 4) and float(scores[1].mean()) > float(scores[0, 1:].max()), "layer 1 walks the diagonal"
assert int(scores[0].argmax()) == 0, "of layer 0's heads, head 0 is the one that follows the words"

fig, axes = plt.subplots(2, 4, figsize=(13, 5), sharex=True, sharey=True)
for (layer, head), ax in np.ndenumerate(axes):
    im = ax.imshow(maps[layer, head, :rows].numpy(), aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"layer {layer}, head {head}: score {scores[layer, head]:.2f}", fontsize=9)
for ax in axes[-1]:
    ax.set_xlabel("encoder frame (40 ms)")
for ax in axes[:, 0]:
    ax.set_yticks(range(rows), utterance.text.split() + ["</s>"])
fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
fig.savefig(os.path.join(OUT, "10_heads.png"), dpi=120, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# Layer 1's heads walk down the diagonal: each word looks at its own stretch of audio. Most layer-0 heads look at
# a few fixed places instead (several words on one frame), and score low: they would make bad clocks. Layer 0's
# head 0 is the exception, partly following the words (the synthetic-voices model before the real-voices
# fine-tuning had none such). The score is measured, not assumed (`head_scores`: how peaked each row is, times how
# often the next word's attention moves forwards); averaged over 60 held-out utterances it picked layer 1's four
# heads and layer 0's head 0, which the bundled model's generation_config.json stores as `alignment_heads`.
#
# ## 2. DTW: the best monotonic path from tokens to frames
#
# Dynamic time warping (Sakoe & Chiba 1978, first for matching spoken words) lines up two sequences that run at
# different speeds. Here one is the tokens, the other the frames, and the cost of pairing token i with frame j is
# minus how much the alignment heads attend there. First the matrix: the chosen heads' maps are normalised per
# frame over the tokens (so a frame every token looks at does not win), median-filtered over 7 frames, and averaged.

# %%
heads = model.generation_config.alignment_heads
assert sorted(map(tuple, heads)) == [(0, 0), (1, 0), (1, 1), (1, 2), (1, 3)], "the prose above names these heads"
chosen = torch.stack([maps[layer, head, :rows, :T] for layer, head in heads])  # (heads, S, T)
std, mean = torch.std_mean(chosen, dim=-2, keepdim=True, unbiased=False)  # over the tokens, per frame
matrix = median_filter((chosen - mean) / std.clamp_min(1e-9), MEDIAN_FILTER_WIDTH).mean(0)  # (S, T)
cost = -matrix.numpy().astype(np.float64)  # (S, T): cheap where the heads attend

# %% [markdown]
# DTW fills a table `total[i, j]`: the cheapest way to reach token i at frame j, where each step moves one frame
# right (same token), one token down (same frame) or both. Each cell looks at its three possible predecessors and
# remembers which one it took; walking those choices back from the last cell gives the path. Ties go to the
# diagonal, then down, as in the library.

# %%
def dtw_by_hand(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    S, T = cost.shape
    total = np.full((S + 1, T + 1), np.inf)  # row 0 and column 0: a border that only (0, 0) may leave
    total[0, 0] = 0.0
    came = {}  # (i, j) -> the predecessor taken
    for i in range(1, S + 1):
        for j in range(1, T + 1):
            before = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]  # diagonal, from above, from the left
            best = min(before, key=lambda cell: total[cell])  # the first of equal ones: diagonal first
            total[i, j] = cost[i - 1, j - 1] + total[best]
            came[i, j] = best
    path, cell = [], (S, T)
    while cell[0] > 0 and cell[1] > 0:
        path.append((cell[0] - 1, cell[1] - 1))  # back to 0-based (token, frame)
        cell = came[cell]
    tokens, frames = zip(*reversed(path))
    return np.array(tokens), np.array(frames)


token_idx, frame_idx = dtw_by_hand(cost)
for name, (lib_tokens, lib_frames) in [("dtw", dtw(cost)), ("dtw_path", dtw_path(maps, heads, rows, T))]:
    assert np.array_equal(lib_tokens, token_idx) and np.array_equal(lib_frames, frame_idx), name
print(f"DTW by hand = the library's dtw and dtw_path: a path of {len(token_idx)} cells through a {rows} x {T} matrix")
assert (np.diff(token_idx) >= 0).all() and (np.diff(frame_idx) >= 0).all(), "the path only moves forwards"
assert (token_idx[0], frame_idx[0]) == (0, 0) and (token_idx[-1], frame_idx[-1]) == (rows - 1, T - 1)
frames_per_token = np.bincount(token_idx, minlength=rows)
print("frames the path gives each token:", list(zip(utterance.text.split() + ["</s>"], frames_per_token.tolist())))
assert frames_per_token[rows - 2] <= 2, "section 3's prose: the last word collapses to a frame or two here"

# %% [markdown]
# The path drawn on the very matrix it was computed on. Where the path enters a token's row is that token's
# start; frame j is heard at (j x 640 + 680 / 2) / 16000 s, the centre of the samples it saw.

# %%
frame_s = model.encoder.samples_per_frame / RATE
fig, ax = plt.subplots(figsize=(10, 3.2))
im = ax.imshow(matrix.numpy(), aspect="auto", cmap="magma", interpolation="nearest")
ax.plot(frame_idx, token_idx, color="cyan", lw=1.5, label="DTW path")
for _, start, end in utterance.words:
    ax.axvline(start / frame_s, color="white", lw=0.6, ls=":")
ax.set_yticks(range(rows), utterance.text.split() + ["</s>"])
ax.set_xlabel("encoder frame (40 ms); dotted: where each word really starts")
ax.legend(loc="upper right", fontsize=8)
fig.colorbar(im, ax=ax, label="alignment heads' attention\n(z-scored per frame, filtered, mean)")
fig.savefig(os.path.join(OUT, "10_dtw.png"), dpi=120, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## 3. Words on the waveform
#
# The picture shows what DTW alone gets wrong. Most tokens' bright blocks begin a few frames before their word's
# dotted start: the alignment heads already look at the pause before a word, so the path enters each row early
# (on held-out strings, DTW's starts are a median of 150-180 ms early). And the last word can collapse: here </s>
# attends to the frames of "eight" as strongly as "eight" does, and the cheapest path gives "eight" one frame. The
# waveform knows to 10 ms where sound stops and starts. So each boundary between words finally moves into a pause
# of the waveform: the longest one near it, by a small dynamic program (a long pause a little further away beats
# the short closure inside "ei_ght"). Speech with no pause between two words keeps the DTW boundary.
# `transcribe(..., timestamps=True)` does all of it.

# %%
result = transcribe(model, utterance.audio, processor=processor, timestamps=True)
errors = []
print(f"{'word':>6}  {'start':>6} {'true':>6}   {'end':>6} {'true':>6}")
for w, (word, start, end) in zip(result["words"], utterance.words):
    print(f"{w['word']:>6}  {w['start']:6.3f} {start:6.3f}   {w['end']:6.3f} {end:6.3f}")
    errors += [abs(w["start"] - start), abs(w["end"] - end)]
print(f"median boundary error {np.median(errors) * 1e3:.0f} ms, worst {max(errors) * 1e3:.0f} ms")
assert np.median(errors) <= 0.06

t = np.arange(len(utterance.audio)) / RATE
fig, ax = plt.subplots(figsize=(10, 2.6))
ax.plot(t, utterance.audio, color="0.5", lw=0.5)
for w, (_, start, end) in zip(result["words"], utterance.words):
    ax.axvspan(w["start"], w["end"], color="tab:orange", alpha=0.3)
    ax.text((w["start"] + w["end"]) / 2, 0.9 * np.abs(utterance.audio).max(), w["word"], ha="center", fontsize=9)
    ax.plot([start, end], [-0.9 * np.abs(utterance.audio).max()] * 2, color="tab:blue", lw=3)
ax.set_xlabel("seconds; orange: the words' times from attention + pauses, blue: the truth")
ax.set_yticks([])
fig.savefig(os.path.join(OUT, "10_words.png"), dpi=120, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## 4. A long recording under noise: cut at the pauses, transcribe the chunks in batches, stitch
#
# The bundled model heard a few seconds at a time, never a pause above 0.3 s inside an utterance, and its decoder
# has 32 positions. Its generation config says so (`chunk_length_s`, `chunk_max_pause_s`), and `transcribe` cuts
# a longer recording at its pauses (keeping 0.2 s each side), transcribes all chunks in batches of similar length,
# and joins them. Speech with no pause for longer than a chunk would be cut in windows that overlap by 1 s, and the
# word times decide which of the two chunks keeps a word said in the overlap.
#
# A real recording is never silent between words, so we mix in *babble* (other people saying other digit strings)
# 20 dB below the talker: the hardest background for a pause detector, since it is speech too. The detector
# (recognition/pauses.py) judges each moment against the recording's own levels: Otsu's split of the frame levels
# into background and talker, and a sound may only start near the talker's level. The one-by-one WER cuts the same
# noisy recording back into its strings.

# %%
recording, pieces = long_recording(40, seed=5)
recording = with_noise(recording, "babble", 20, np.random.default_rng(5), babble_sources(5))
plan = plan_chunks(recording.audio, RATE, model.generation_config.chunk_length_s,
                   model.generation_config.chunk_max_pause_s)
long = transcribe(model, recording.audio, processor=processor, timestamps=True)
short = transcribe(model, pieces_of(recording, pieces), processor=processor)
long_wer = jiwer.wer(recording.text, long["text"])
short_wer = jiwer.wer([p.text for p in pieces], [r["text"] for r in short])
print(f"{len(recording.audio) / RATE:.0f} s under babble at 20 dB, cut into {len(plan)} chunks: WER {long_wer:.1%}; "
      f"the same {len(pieces)} strings one by one: {short_wer:.1%}")
assert len(plan) > 5 and long_wer <= short_wer + 0.02
words_ok = all(0 <= w["start"] <= w["end"] <= len(recording.audio) / RATE for w in long["words"])
in_order = all(a["end"] <= b["start"] + 1e-9 for a, b in zip(long["words"], long["words"][1:]))
assert words_ok and in_order, "every word inside the recording, in time order"
if long["text"] == recording.text:  # word by word against the truth
    errors = [abs(w[key] - true) for w, (_, start, end) in zip(long["words"], recording.words)
              for key, true in (("start", start), ("end", end))]
    print(f"word boundaries: median error {np.median(errors) * 1e3:.0f} ms, 90th percentile "
          f"{np.percentile(errors, 90) * 1e3:.0f} ms over {len(errors)} boundaries")
    assert np.median(errors) <= 0.06
else:
    print("word boundaries not compared: the long-form text differs from the truth, so words cannot be paired")

t = np.arange(len(recording.audio)) / RATE
fig, ax = plt.subplots(figsize=(12, 2.6))
ax.plot(t, recording.audio, color="0.5", lw=0.3)
top = np.abs(recording.audio).max()
for k, chunk in enumerate(plan):
    ax.axvspan(chunk.start / RATE, chunk.end / RATE, color=("tab:green", "tab:purple")[k % 2], alpha=0.15)
for w in long["words"]:
    ax.plot([w["start"], w["end"]], [0.95 * top] * 2, color="tab:orange", lw=3, solid_capstyle="butt")
for _, start, end in recording.words:
    ax.plot([start, end], [-0.95 * top] * 2, color="tab:blue", lw=3, solid_capstyle="butt")
ax.set_xlabel(f"seconds; shaded: the {len(plan)} chunks; orange (top): the words' times, blue (bottom): the truth; "
              "babble 20 dB below the talker")
ax.set_yticks([])
fig.savefig(os.path.join(OUT, "10_chunks.png"), dpi=120, bbox_inches="tight")
plt.close(fig)

# %% [markdown]
# ## 5. A voice the model never heard
#
# The package ships three real recordings (`bundled/samples/fsdd_*.wav`: one speaker each, takes no model here
# trained on). The bundled model heard these three people in training, other takes of theirs; for each speaker,
# `tutorials/results/voices/folds/SPEAKER` holds a model trained on everyone *but* them (leave-one-speaker-out:
# the only honest way to say what a new voice gets). Transcribe each recording with both.

# %%
SAMPLES = os.path.join(os.path.dirname(BUNDLED), "samples")
FOLDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "voices", "folds")
for speaker in ("jackson", "theo", "yweweler"):
    path = os.path.join(SAMPLES, f"fsdd_{speaker}.wav")
    heard = transcribe(model, path, processor=processor, timestamps=True)
    never = transcribe(os.path.join(FOLDS, speaker), path, timestamps=True)
    for name, r in (("heard him", heard), ("never heard him", never)):
        times = "  ".join(f"{w['word']} {w['start']:.2f}-{w['end']:.2f}" for w in r["words"])
        print(f"{speaker:>8s}, the model that {name:>15s}: {times}")
    if len(heard["words"]) == len(never["words"]):  # the same number of words: compare them one by one
        pairs = list(zip(heard["words"], never["words"]))
        moved = max(abs(a[k] - b[k]) for a, b in pairs for k in ("start", "end"))
        print(f"{'':>8s}  the two disagree on {sum(a['word'] != b['word'] for a, b in pairs)} word(s); "
              f"their times differ by at most {moved * 1e3:.0f} ms")
        assert moved <= 0.02, "words set apart by pauses: the times come from the pauses, whichever words"

# %% [markdown]
# Where the model that never heard a speaker writes wrong words (the lines above: the folds get some of these digits
# wrong, as their 33-36 % WER on these speakers' isolated digits says), its word *times* can still be right: in
# these recordings each word is set apart by a pause, and section 3's move into the pauses puts the boundaries where
# the sound says, whichever words the decoder wrote. The times lean on the model where no pause separates two words
# (exercise 6), or where it writes more or fewer words than were said. The project measures both on the four FSDD
# speakers, each by the model that never heard them (README, "Word timestamps and long recordings": medians of 2-6
# ms, 90th percentiles at most 179 ms, over the strings transcribed right).

# %%
print("pictures in", OUT)

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Call `dtw_path` with layer 0's heads (`[[0, 0], [0, 1], [0, 2], [0, 3]]`) instead of the stored alignment
#    heads. Observe: the path no longer follows the words; the starts move far from the dotted lines.
# 2. In `dtw_by_hand`, forbid vertical moves (drop "from above"). Observe: every token must now take at least one
#    frame of its own; compare with the path above, where a token may share its frame with the next.
# 3. Turn the DTW path's starts (the first frame of each token's row) into seconds with the formula of section 2,
#    and compare them with the true starts. Observe: they come early, in the pause before each word (the first word
#    always at frame 0, where the path must begin); that is what section 3's move into the pauses corrects.
# 4. Transcribe the long recording with `chunk_length_s` halved (on a copy of the generation config). Observe:
#    more chunks, and whether any word is cut at a chunk edge.
# 5. In section 4, raise the babble to 10 dB below the talker (`with_noise(..., "babble", 10, ...)`). Observe: the
#    long-form WER leaves the one-by-one WER far behind (the bench measured 41 % against 5 %): the other voices now
#    reach the talker's level, and the chunks hold digits nobody in front of the microphone said.
# 6. In section 1, say the words without a break: `timed_digit_strings(1, seed=9, gap_s=(0.0, 0.0))[0]`. Observe:
#    with no pause to move into, the boundaries come from DTW and from dips of the sound (a dip needs sound rising
#    6 dB above it on both sides); the errors grow from a few ms to tens (the model card measured medians of
#    12-55 ms and 90th percentiles near 200 ms on such strings).
#
# ## References
#
# - Sakoe, Chiba (1978). Dynamic programming algorithm optimization for spoken word recognition. IEEE
#   Transactions on Acoustics, Speech, and Signal Processing 26(1) (dynamic time warping)
# - Radford, Kim, Xu, Brockman, McLeavey, Sutskever (2023). Robust Speech Recognition via Large-Scale Weak
#   Supervision. ICML 2023. arXiv:2212.04356 (Whisper; its word timestamps use cross-attention heads and DTW)
