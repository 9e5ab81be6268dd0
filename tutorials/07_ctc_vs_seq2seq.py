"""Tutorial 07: CTC against sequence-to-sequence, on the same trained encoder.

Run it:  pip install -e ".[tutorials]" && python tutorials/07_ctc_vs_seq2seq.py
         (the picture goes to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing; needs espeak-ng)

Two ways to turn encoder frames into text:

    seq2seq (this project's SpeechEncoderDecoderModel): a decoder writes tokens one by one, each time looking at
        the frames through cross-attention and at the tokens it already wrote;
    CTC (Connectionist Temporal Classification, Graves et al. 2006): one Linear layer gives every frame a
        distribution over the alphabet plus a "blank"; the text is read off the frames, no decoder at all.

Most wav2vec2 checkpoints people use for English are CTC models: facebook/wav2vec2-base-960h, the encoder
tutorial 06 warm-starts from, is a wav2vec2 encoder + a CTC head over 32 characters (letters, ', | between words).
In minispeechseq that is `Wav2Vec2ForCTC` (ctc.py).

We put a CTC head on the bundled digits model's trained encoder (kept frozen), train it for a few seconds with
`F.ctc_loss`, decode greedily by hand, and compare the two readers: the CTC posteriors beside the seq2seq
cross-attention, their transcripts, their speed, and what each one can and cannot do.

Shape legend: B batch, L samples, T frames (40 ms each), D encoder width (144), V alphabet (blank + 10 words),
S label tokens.
"""

# %%
import csv
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import minispeechseq
from minispeechseq import (
    Processor,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2ForCTC,
    load_audio,
)
from minispeechseq.training.digits import (
    DIGIT_WORDS,
    recipe_utterances,
)
from minispeechseq.training.metrics import word_error_rate

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
PACKAGE = os.path.dirname(minispeechseq.__file__)
seq2seq = SpeechEncoderDecoderModel.from_pretrained(os.path.join(PACKAGE, "bundled", "digits")).eval()
processor = Processor.from_pretrained(os.path.join(PACKAGE, "bundled", "digits"))
encoder = seq2seq.encoder  # the trained wav2vec2-style encoder, shared by both readers below

# %% [markdown]
# ## 1. Training audio: utterances of the digits corpus's *training* split
#
# The corpus is planned from a seed (tutorial 05): we take the first groups of utterances the recipe would render,
# keep the training split's, and let espeak-ng say them (8 per call, as the recipe does). The 8 shipped samples,
# from the test split, stay unseen for the end.

# %%
waves, texts = recipe_utterances("train", 64)  # rendered as `minispeechseq data` renders the corpus
print(f"{len(waves)} training utterances, {sum(len(t.split()) for t in texts)} words, e.g. {texts[0]!r}")
assert len(waves) >= 64

# %% [markdown]
# ## 2. A CTC head, and its loss written out
#
# The alphabet: blank = 0, then the ten digit words (real CTC models use characters; words keep this fast). The
# encoder is frozen, so we run it once and keep its frames; training then touches one Linear layer.
#
# CTC's loss sums the probability of *every* frame-by-frame path that collapses to the transcript (merge repeats,
# then drop blanks: "_ six six _ _ two _" -> "six two") and takes -log of the sum. `F.ctc_loss` does the sum with
# dynamic programming; it wants log-probabilities time-first (T, B, V), the labels, and both lengths.

# %%
BLANK = 0
VOCAB = ["<blank>", *DIGIT_WORDS]
features = processor.feature_extractor(waves, sampling_rate=16000, padding=True, return_tensors="pt")
with torch.no_grad():
    frames = encoder(features.input_values, attention_mask=features.attention_mask).last_hidden_state  # (B, T, D)
frame_lengths = encoder.output_lengths(features.attention_mask.sum(-1)).long()  # (B,) real frames per utterance
labels = [torch.tensor([VOCAB.index(w) for w in t.split()]) for t in texts]
targets = torch.cat(labels)  # all label sequences, concatenated (F.ctc_loss's 1-D form)
target_lengths = torch.tensor([len(x) for x in labels])
print(f"frames {tuple(frames.shape)}; {int(targets.numel())} label tokens")
assert bool((frame_lengths >= target_lengths).all()), "CTC needs at least one frame per token"

head = torch.nn.Linear(frames.shape[-1], len(VOCAB))  # (D -> V)
optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2)
history = []
for step in range(200):
    log_probs = head(frames).log_softmax(-1)  # (B, T, V)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, frame_lengths, target_lengths, blank=BLANK,
                      reduction="mean")  # "mean": each utterance's loss / its label length, then the batch mean
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    history.append(loss.item())
print(f"CTC loss: {history[0]:.2f} at step 1 -> {history[-1]:.3f} at step {len(history)}")
assert history[-1] < 0.1 * history[0]

# %% [markdown]
# The library's `Wav2Vec2ForCTC` is the same thing: the encoder, a Linear `lm_head`, and transformers' CTC loss
# (blank = pad_token_id, `ctc_loss_reduction="mean"`). With our encoder and head put in it, it gives the same loss.

# %%
config = Wav2Vec2Config.from_dict({**encoder.config.to_dict(), "vocab_size": len(VOCAB), "pad_token_id": BLANK,
                                   "ctc_loss_reduction": "mean"})
ctc_model = Wav2Vec2ForCTC(config).eval()
ctc_model.encoder.load_state_dict(encoder.state_dict())
ctc_model.lm_head.load_state_dict(head.state_dict())
padded_labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)  # (B, S)
with torch.no_grad():
    library_loss = ctc_model(features.input_values, attention_mask=features.attention_mask, labels=padded_labels).loss
    ours = F.ctc_loss(head(frames).log_softmax(-1).transpose(0, 1), targets, frame_lengths, target_lengths, blank=BLANK)
print(f"Wav2Vec2ForCTC loss {library_loss:.5f}, ours {ours:.5f}")
assert torch.allclose(library_loss, ours, atol=1e-4)

# %% [markdown]
# ## 3. Greedy CTC decoding, by hand, on the unseen samples
#
# Best class per frame, merge runs of the same class, drop the blanks. (A CTC tokenizer's `batch_decode` does the
# same merging; here it is three lines.) The head is a few seconds old and the encoder was trained for another
# reader, yet it reads most digits: the frames already separate the words (tutorial 01's similarity picture).

# %%
SAMPLES = os.path.join(PACKAGE, "bundled", "samples")
with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as f:
    transcripts = dict(csv.reader(f, delimiter="\t"))
names = sorted(n for n in transcripts if not n.startswith("fsdd_"))  # the real voices (fsdd_*) are tutorial 12's
test = processor([load_audio(os.path.join(SAMPLES, n)) for n in names], sampling_rate=16000, padding=True,
                 return_tensors="pt")


def ctc_greedy(logits: torch.Tensor, length: int) -> str:
    best = logits[:length].argmax(-1).tolist()  # (T,) one class per frame
    merged = [c for i, c in enumerate(best) if i == 0 or c != best[i - 1]]  # merge repeats
    return " ".join(VOCAB[c] for c in merged if c != BLANK)  # drop blanks


def best_time(fn, repeats: int = 3) -> float:
    """The fastest of a few runs, in seconds (the least disturbed by whatever else the machine does)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


with torch.no_grad():
    ctc_logits = ctc_model(test.input_values, attention_mask=test.attention_mask).logits  # (B, T, V)
    test_lengths = encoder.output_lengths(test.attention_mask.sum(-1)).long()
    ctc_texts = [ctc_greedy(lg, int(n)) for lg, n in zip(ctc_logits, test_lengths)]
    ids = seq2seq.generate(test.input_values, attention_mask=test.attention_mask)
    seq_texts = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    # Timing: both readers share the encoder pass; what differs is what comes after it.
    encoded = encoder(test.input_values, attention_mask=test.attention_mask)
    t_encoder = best_time(lambda: encoder(test.input_values, attention_mask=test.attention_mask))
    t_ctc = best_time(lambda: [ctc_greedy(lg, int(n)) for lg, n in
                               zip(ctc_model.lm_head(encoded.last_hidden_state), test_lengths)])
    t_decoder = best_time(lambda: seq2seq.generate(encoder_outputs=encoded, attention_mask=test.attention_mask))
refs = [transcripts[n] for n in names]
for n, ref, c, s in zip(names, refs, ctc_texts, seq_texts):
    print(f"  {n}  said {ref!r:36} CTC {c!r:36} seq2seq {s!r}")
wer_ctc, wer_seq = word_error_rate(refs, ctc_texts), word_error_rate(refs, seq_texts)
print(f"WER on the 8 samples: CTC head (trained {len(history)} steps on {len(waves)} utterances) {wer_ctc:.1%}, "
      f"seq2seq {wer_seq:.1%}")
print(f"time for the batch of 8: the shared encoder {t_encoder * 1e3:.0f} ms; then the CTC head + greedy "
      f"{t_ctc * 1e3:.1f} ms, the seq2seq decoder's greedy generate {t_decoder * 1e3:.0f} ms")
assert wer_ctc <= 0.2, "a linear CTC head on a trained encoder reads most digits"
assert t_decoder > 5 * t_ctc, "one Linear per frame is much cheaper than a decoder step per token"

# %% [markdown]
# ## 4. Two pictures of one utterance: per-frame CTC posteriors, and the decoder's cross-attention
#
# Same frames, one axis. Top: the CTC head's probability of each class at each frame: mostly blank, with one short
# spike per word, where the word is. Bottom: the seq2seq decoder's cross-attention (mean over layers and heads):
# one row per token it wrote, each row looking at the frames of its word.

# %%
i = names.index("002476.wav")
n = int(test_lengths[i])
posteriors = ctc_logits[i, :n].softmax(-1).T  # (V, T)
seq2seq.set_attn_implementation("eager")
with torch.no_grad():
    one = processor(load_audio(os.path.join(SAMPLES, names[i])), sampling_rate=16000, return_tensors="pt")
    said = seq2seq.generate(one.input_values, attention_mask=one.attention_mask)
    attention = seq2seq(one.input_values, attention_mask=one.attention_mask, decoder_input_ids=said[:, :-1],
                        output_attentions=True).cross_attentions
seq2seq.set_attn_implementation("sdpa")
attention = torch.stack(attention)[:, 0].mean(dim=(0, 1))  # (S, T)
words = processor.tokenizer.convert_ids_to_tokens(said[0, 1:].tolist())
assert attention.shape[1] == n

fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True, layout="constrained")
for ax, image_data, rows, title in (
    (top, posteriors, VOCAB, f"CTC head: P(class | frame)   greedy: {ctc_texts[i]!r}"),
    (bottom, attention, words, f"seq2seq decoder: cross-attention   generate: {seq_texts[i]!r}"),
):
    image = ax.imshow(image_data.numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="probability" if ax is top else "attention weight")
bottom.set_xlabel("encoder frame (40 ms)")
bottom.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
path = os.path.join(OUT, "07_ctc_vs_seq2seq.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)
blank_share = float((posteriors.argmax(0) == BLANK).float().mean())
print(f"frames whose best class is blank: {blank_share:.0%}")
assert blank_share > 0.5

# %% [markdown]
# ## 5. What each buys, and what it costs
#
# - **Speed.** CTC is one encoder pass and one Linear; seq2seq adds a decoder step per token. Measured above on 8
#   recordings, with the shares printed below: the decoder is tiny (2 layers), yet it runs once per token (up to
#   8 steps for these transcripts), each step paying the fixed per-call overhead tutorial 02 measured, so it takes
#   a visible share of the time (23 % when we ran it; the encoder still took the most); that share grows with
#   the decoder's size and the transcript's length, while CTC's head stays a rounding error next to the encoder.
# - **An internal language model.** The decoder reads the tokens it wrote, so it learns what text is likely;
#   CTC's frames are independent given the audio (it needs an external LM, e.g. n-gram beam search, for that).
# - **Order and translation.** CTC's output follows the audio left to right, one token per frame at most, so it
#   cannot reorder words: no translation. A decoder can write anything, in any order (speech translation
#   checkpoints such as wav2vec2-xls-r-300m-en-to-15 are seq2seq).
# - **Length control and looping.** CTC's output can never be longer than the number of frames, and it cannot
#   loop. A decoder decides when to stop by writing </s>; it can stop early (deletions) or repeat itself
#   (insertions such as "five five" for "five"): tutorial 08 finds both among the bundled model's errors, and
#   generate's `max_new_tokens`, `no_repeat_ngram_size` and `repetition_penalty` exist for that reason.
# - **Alignment for free.** The CTC spikes above say *when* each word was said; cross-attention often does too,
#   but nothing forces it to.

# %%
print(f"share of the seq2seq time spent after the encoder: {t_decoder / (t_encoder + t_decoder):.0%}; "
      f"of the CTC time: {t_ctc / (t_encoder + t_ctc):.1%}")
assert t_ctc < 0.05 * t_encoder, "the CTC head is a rounding error next to the encoder"
frames_per_second = 16000 / 640
print(f"CTC can emit at most {n} tokens for this {n / frames_per_second:.2f} s utterance (one per frame); "
      f"the seq2seq decoder stops where it writes </s> (or at max_new_tokens).")

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Decode the CTC head greedily but skip the blank removal (keep only the merge of repeats). Observe: the blank
#    symbol fills the text between words. Then skip the merge instead: every word appears once per frame it spans.
# 2. Find a transcript with a doubled digit ("one one") and look at its per-frame argmax. Observe: a blank frame
#    separates the two runs of "one"; without it the merge would make them one word. That is what the blank is for.
# 3. Give `F.ctc_loss` labels longer than the frames (repeat one utterance's labels 20 times). Observe an infinite
#    loss: no alignment of S labels to fewer than S frames exists (`zero_infinity=True` is how training survives
#    such a sample).
#
# ## References
#
# - Graves, Fernández, Gomez, Schmidhuber (2006). Connectionist Temporal Classification: Labelling
#   Unsegmented Sequence Data with Recurrent Neural Networks. ICML 2006
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
