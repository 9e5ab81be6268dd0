"""Tutorial 00: a quick tour. A trained speech recognizer, from a sound file to text, in five steps.

Run it:  pip install -e ".[tutorials]" && python tutorials/00_quick_tour.py
         (pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

The package ships one trained model, `minispeechseq/bundled/digits`: a wav2vec2-style encoder (Baevski et al. 2020)
and a GPT-2 decoder (Radford et al. 2019), 1.8 M parameters, that knows English digit words said by espeak-ng's
voices, and 8 test recordings with their transcripts (beside 3 recordings of real people, for tutorial 12).
Everything below is what transformers' documentation does with a real checkpoint:

    load_audio(path) -> waveform (L,) -> processor -> input_values (B, L) -> model.generate -> ids (B, S) -> text

and then the two things that tell you whether it works: the word error rate, and where the decoder listened.
The later tutorials open each box: 01 the encoder, 02 attention and the cache, 03 how the pair is assembled,
04 decoding, 05 training, ... The map of those boxes is the next cell's picture.

Shape legend: B batch, L audio samples (16 kHz), T encoder frames (one per 40 ms here), S tokens, V vocabulary,
H attention heads.
"""

# %%
import csv
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.training.metrics import word_error_rate

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))
PACKAGE = os.path.dirname(minispeechseq.__file__)
MODEL = os.path.join(PACKAGE, "bundled", "digits")
SAMPLES = os.path.join(PACKAGE, "bundled", "samples")

# %% [markdown]
# ## 0. The map
#
# ![The whole model: waveform, conv feature encoder, transformer encoder, cross-attention, decoder, tokens; each box
# names its file](pictures/model_architecture.png)
#
# `tutorials/pictures/model_architecture.png` (drawn by `tutorials/make_pictures.py model`): the top row is the
# speech encoder (wav2vec2.py), run once per utterance; the bottom row is the text decoder (decoders/*.py) and the
# generation loop (generation/), run once per token. They meet in one place: every decoder layer's cross-attention
# reads the encoder's frames (attention.py serves both kinds of attention). Each box names the file to open.
#
# ## 1. A sound file -> a waveform
#
# `load_audio` reads any file libsndfile knows (wav, flac, ogg...), mixes it to mono and resamples it to 16 kHz
# (the rate every wav2vec2 checkpoint was trained at). The result is a float32 numpy array.

# %%
with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as f:
    transcripts = dict(csv.reader(f, delimiter="\t"))  # file name -> what was said
name = "000578.wav"
waveform = load_audio(os.path.join(SAMPLES, name))  # (L,)
print(f"{name}: {waveform.shape[0]} samples = {waveform.shape[0] / 16000:.2f} s; said: {transcripts[name]!r}")
assert waveform.dtype == np.float32 and waveform.ndim == 1

# %% [markdown]
# ## 2. The processor: waveform -> model inputs, and ids -> text
#
# A processor holds the feature extractor (normalise each waveform to zero mean and unit variance, pad a batch,
# and make an attention mask when the checkpoint wants one) and the tokenizer (ids <-> words).

# %%
model = SpeechEncoderDecoderModel.from_pretrained(MODEL).eval()
processor = Processor.from_pretrained(MODEL)
inputs = processor(waveform, sampling_rate=16000, return_tensors="pt")
print(f"input_values {tuple(inputs.input_values.shape)}, mean {inputs.input_values.mean():.1e}, "
      f"std {inputs.input_values.std():.3f}")
assert inputs.input_values.shape == (1, waveform.shape[0])
assert abs(float(inputs.input_values.mean())) < 1e-3 and abs(float(inputs.input_values.std()) - 1) < 1e-2

# %% [markdown]
# ## 3. generate: greedy, then beam search
#
# The decoder starts from `<s>` and writes one token per step, each time reading the audio through
# cross-attention, until it writes `</s>`. Greedy keeps the best token at each step; beam search keeps the 4 best
# partial transcripts (tutorial 04 draws it as a tree).

# %%
with torch.no_grad():
    greedy_ids = model.generate(inputs.input_values, attention_mask=inputs.attention_mask)  # (B, S)
    beam_ids = model.generate(inputs.input_values, attention_mask=inputs.attention_mask, num_beams=4)
print("token ids:", greedy_ids[0].tolist(), "=", processor.tokenizer.convert_ids_to_tokens(greedy_ids[0].tolist()))
greedy_text = processor.batch_decode(greedy_ids, skip_special_tokens=True)[0].strip()
beam_text = processor.batch_decode(beam_ids, skip_special_tokens=True)[0].strip()
print(f"greedy: {greedy_text!r}   beam search (4 beams): {beam_text!r}")
assert greedy_text == transcripts[name] and beam_text == transcripts[name]

# %% [markdown]
# ## 4. The word error rate on the 8 shipped samples
#
# WER = (substituted + deleted + inserted words) / words said, summed over the whole set (tutorial 08 computes it
# by hand). A batch of recordings of different lengths is padded to the longest; the attention mask tells the
# model which samples are real (tutorial 09).

# %%
names = sorted(n for n in transcripts if not n.startswith("fsdd_"))  # the real voices (fsdd_*) are tutorial 12's
batch = processor([load_audio(os.path.join(SAMPLES, n)) for n in names], sampling_rate=16000, padding=True,
                  return_tensors="pt")
results = {}
with torch.no_grad():
    for beams in (1, 4):
        ids = model.generate(batch.input_values, attention_mask=batch.attention_mask, num_beams=beams)
        results[beams] = [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
references = [transcripts[n] for n in names]
for n, ref, hyp in zip(names, references, results[1]):
    print(f"  {n}  said {ref!r:38} heard {hyp!r}")
wer = {beams: word_error_rate(references, hyps) for beams, hyps in results.items()}
print(f"WER on the {len(names)} samples ({sum(len(r.split()) for r in references)} words): "
      f"greedy {wer[1]:.1%}, beam search {wer[4]:.1%}")
# 8 samples are a smoke test (the model card measures the WER over 400): a trained model gets nearly all right.
assert max(wer.values()) <= 0.1, f"WER {wer} on 8 samples of its own domain"

# %% [markdown]
# ## 5. Where did the decoder listen? The cross-attention of a trained model
#
# Re-run the model on its own transcript (teacher forcing: the decoder reads `<s>` + the words it wrote) with
# `output_attentions=True`. Only the "eager" attention backend materialises the weights, so we switch to it.
# Each row is one output token; each column one encoder frame (40 ms); the weights in a row sum to 1. A trained
# model reads the audio left to right: a diagonal, one bright spot per spoken digit. (`</s>` has no word to find;
# where it looks is whatever training left there.)
#
# Not every head follows the audio. Most of layer 0's heads "park" on a few fixed frames whatever the token (tutorial
# 10 draws all 8 heads); averaged in, they would add faint vertical stripes that mean nothing. So we average only
# the heads that track the words, which the model's generation_config.json stores as `alignment_heads`
# (layer, head) pairs (tutorial 10 measures how they were chosen; Whisper ships the same field).

# %%
backend = model.attn_implementation
model.set_attn_implementation("eager")
with torch.no_grad():
    out = model(inputs.input_values, attention_mask=inputs.attention_mask, decoder_input_ids=greedy_ids[:, :-1],
                output_attentions=True)
model.set_attn_implementation(backend)
# out.cross_attentions: one (B, H, S, T) tensor per decoder layer
weights = torch.stack(out.cross_attentions)[:, 0]  # (layers, H, S, T)
heads = model.generation_config.alignment_heads  # [(layer, head), ...]
mean = torch.stack([weights[layer, head] for layer, head in heads]).mean(dim=0)  # (S, T): over those heads
tokens = processor.tokenizer.convert_ids_to_tokens(greedy_ids[0, 1:].tolist())  # what each row predicts
peaks = mean.argmax(-1).tolist()
print("frame each token looks at most:", list(zip(tokens, peaks)), f"of {mean.shape[1]} frames")
assert torch.allclose(mean.sum(-1), torch.ones(len(tokens)), atol=1e-5)
assert peaks[:-1] == sorted(peaks[:-1]), "the digits are read left to right"

fig, (ax_wave, ax_attn) = plt.subplots(2, 1, figsize=(9, 5), sharex=True, layout="constrained",
                                      gridspec_kw={"height_ratios": [1, 1.4]})
T = mean.shape[1]
hop = len(waveform) / T  # samples per frame (640 = 40 ms for this model; the last frame is partial)
ax_wave.plot(np.arange(len(waveform)) / hop, waveform, lw=0.4, color="tab:blue")
ax_wave.set_xlim(-0.5, T - 0.5)
ax_wave.set_ylabel("amplitude")
ax_wave.set_title(f"{name}: the waveform, drawn on the frame axis; transcribed {greedy_text!r}", fontsize=10)
image = ax_attn.imshow(mean.numpy(), aspect="auto", cmap="viridis", vmin=0, interpolation="nearest")
ax_attn.set_yticks(range(len(tokens)), tokens)
ax_attn.set_xlabel("encoder frame (40 ms each)")
ax_attn.set_title(f"cross-attention, mean over the {len(heads)} alignment heads (layer, head) {heads}", fontsize=10)
for ax in (ax_wave, ax_attn):
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
fig.colorbar(image, ax=[ax_wave, ax_attn], label="attention weight", shrink=0.6)
path = os.path.join(OUT, "00_cross_attention.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)
assert os.path.getsize(path) > 0

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Transcribe the three real voices shipped beside the samples (`fsdd_*.wav` in bundled/samples; their words are
#    in transcripts.tsv) exactly as in section 4, and compare their WER with the synthetic samples'. Observe the
#    domain gap: the model card says which voices the model heard in training, and people speak otherwise
#    (tutorial 12, from synthetic voices to real people, is about closing that gap).
# 2. In section 5, draw the mean over every head of both layers (`weights.mean(dim=(0, 1))`) instead of the
#    alignment heads. Observe: faint vertical columns appear and the diagonal blurs. Layer 0's parked heads look
#    at a few fixed frames whatever the word (tutorial 10 measures it).
# 3. Call `model.generate(..., max_new_tokens=2)` on a sample of five digits. Observe: two words and no </s>; the
#    decoder was cut off, it did not decide to stop (a transcript can lose words this way; tutorial 07 compares
#    how CTC and a decoder end).
#
# ## References
#
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
# - Radford, Wu, Child, Luan, Amodei, Sutskever (2019). Language Models are Unsupervised Multitask Learners.
#   OpenAI report (GPT-2)
# - Wang, Wu, Pino, Baevski, Auli, Conneau (2021). Large-Scale Self- and Semi-Supervised Learning for Speech
#   Translation. Interspeech 2021 (the warm-started wav2vec2 encoder + decoder that transformers' documentation cites)
# - Vaswani et al. (2017). Attention Is All You Need. NeurIPS 2017. arXiv:1706.03762
