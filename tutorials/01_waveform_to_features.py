"""Tutorial 01: from a sound file to contextual speech features, one module of the wav2vec2 encoder at a time.

Run it:  pip install -e ".[tutorials]" && python tutorials/01_waveform_to_features.py
         (the picture goes to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

wav2vec 2.0 (Baevski et al. 2020) turns raw 16 kHz samples into one feature vector every 20 ms. It learns its own
front end from unlabelled audio: spans of frames are masked, and the model must pick the true (quantised) frame
among distractors (tutorial 13 plays that game by hand). HuBERT (Hsu et al. 2021) trains the same kind of network
(in this library the same module, with a few config switches) with another objective: predict k-means cluster ids
of the masked frames. Either way the encoder arrives knowing speech before it sees a transcript. Section 8 sets its
learned front end beside the hand-designed one that most speech systems before it (and Whisper) start from: the
log-mel spectrogram.

    file -> load_audio -> feature extractor -> samples (B, L) -> conv frames (B, T, C) -> projection (B, T, D)
         -> + positional conv -> transformer (B, T, D)

We read one of the shipped recordings with the library's `load_audio` and feature extractor, then build a tiny
random model with the real conv stack (so the timing is the real one) and push the samples through each module by
hand, checking each shape and, at the end, that our step-by-step result equals the full model's output. Random
weights are fine for that: the point is the plumbing. The picture at the end uses the trained encoder of the
bundled digits model instead, because random features show nothing.

Shape legend: B batch, L samples, T frames, C conv channels, D model width.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import minispeechseq
from minispeechseq import (
    SpeechEncoderDecoderModel,
    Wav2Vec2FeatureExtractor,
    load_audio,
)
from minispeechseq.wav2vec2 import Wav2Vec2Model
from minispeechseq.wav2vec2_config import Wav2Vec2Config

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
SR = 16000
PACKAGE = os.path.dirname(minispeechseq.__file__)

# %% [markdown]
# ## 1. A waveform, read and normalised by the library
#
# `load_audio(path)` reads any file libsndfile knows, mixes it to mono and resamples it to 16 kHz with soxr, a
# proper resampler: it low-passes before it drops samples, so frequencies above the new Nyquist limit do not fold
# back as aliases (plain linear interpolation does not do that). Asked for 8 kHz, it returns half the samples.
#
# The feature extractor then normalises each utterance to zero mean and unit variance,
# (x - mean) / sqrt(var + 1e-7), which is what wav2vec2 checkpoints were trained on.

# %%
path = os.path.join(PACKAGE, "bundled", "samples", "003183.wav")  # espeak-ng saying "one nine"
audio = load_audio(path)  # (L,) float32 at 16 kHz
half_rate = load_audio(path, sampling_rate=8000)
print(f"{os.path.basename(path)}: {audio.shape[0]} samples at 16 kHz = {audio.shape[0] / SR:.2f} s; "
      f"{half_rate.shape[0]} at 8 kHz")
assert audio.dtype == np.float32 and abs(half_rate.shape[0] - audio.shape[0] / 2) <= 1

feature_extractor = Wav2Vec2FeatureExtractor(do_normalize=True)
samples = feature_extractor(audio, sampling_rate=SR, return_tensors="pt").input_values  # (B=1, L)
by_hand = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
print(f"input_values {tuple(samples.shape)}: mean {samples.mean():.1e}, std {samples.std():.3f}")
assert samples.shape == (1, audio.shape[0])
assert np.allclose(samples[0].numpy(), by_hand, atol=1e-5), "the feature extractor is exactly that formula"

# %% [markdown]
# ## 2. A tiny model with the real conv stack
#
# The conv feature encoder of every wav2vec2 / HuBERT checkpoint has 7 layers with kernels (10, 3, 3, 3, 3, 2, 2)
# and strides (5, 2, 2, 2, 2, 2, 2): 5 * 2^6 = 320 samples per frame, 20 ms at 16 kHz, and one frame sees 400
# samples (25 ms). We keep that stack and shrink everything else (16 channels instead of 512, width 32, 2 layers).

# %%
config = Wav2Vec2Config(
    conv_dim=(16,) * 7, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)
model = Wav2Vec2Model(config).eval()
# One output frame of the last layer sees k_7 frames of layer 6's output; going down, each extra frame of layer i's
# output adds (k_i - 1) inputs, spaced by the product of the strides below it:
# receptive field = 1 + sum_i (k_i - 1) * (s_1 * ... * s_{i-1}) = 1 + 9 + 2*5 + 2*10 + 2*20 + 2*40 + 1*80 + 1*160.
field, spacing = 1, 1
for kernel, stride in zip(config.conv_kernel, config.conv_stride):
    field += (kernel - 1) * spacing
    spacing *= stride
print(f"receptive field: {field} samples by hand, {model.receptive_field} from the model; hop: {spacing} samples")
assert field == model.receptive_field == 400 and spacing == 320

# %% [markdown]
# ## 3. Samples -> conv frames
#
# Each conv layer shortens the sequence: a conv with kernel K and stride s (no padding) turns L inputs into
# floor((L - K) / s) + 1 outputs. `model.output_lengths` applies that formula layer after layer; it is also how
# a sample-level attention mask becomes a frame-level one (`model.frame_attention_mask`).

# %%
with torch.no_grad():
    frames = model.feature_encoder(samples)  # (B, T, C)
T = frames.shape[1]
print(f"conv frames: {tuple(frames.shape)}  (one every 20 ms)")
assert T == int(model.output_lengths(torch.tensor(samples.shape[1])))
assert frames.shape == (1, T, config.conv_dim[-1])

# %% [markdown]
# ## 4. Projection to the model width
#
# A LayerNorm over the C channels of each frame (that normalised tensor is what the model returns as
# `extract_features`), then a Linear layer to the transformer's width D.

# %%
with torch.no_grad():
    x, extract_features = model.feature_projection(frames)  # (B, T, D), (B, T, C)
print(f"projected: {tuple(x.shape)}")
assert x.shape == (1, T, config.hidden_size)

# %% [markdown]
# ## 5. Position, by convolution
#
# wav2vec2 has no table of position embeddings. A wide grouped conv over time (kernel 128 in the real models,
# 16 here), followed by a GELU and added to its input, tells each frame about its neighbourhood; attention can
# then use relative position. Its kernel is weight-normalised: weight = g * v / ||v||, one g per kernel tap. The
# conv pads kernel // 2 frames on each side, so an even kernel gives one frame too many; the last one is dropped
# (minispeechseq/wav2vec2.py, `PositionalConvEmbedding`), and the length stays T.

# %%
with torch.no_grad():
    x = x + model.pos_conv(x)  # (B, T, D)
    x = model.norm(x)  # base models (post-LN) normalise here; pre-LN models normalise after the last layer
print(f"with position: {tuple(x.shape)}")
assert x.shape == (1, T, config.hidden_size)

# %% [markdown]
# ## 6. The transformer
#
# Each layer lets every frame attend to every other (no causal mask: the encoder hears the whole utterance),
# then applies a feed-forward block. The result: one contextual vector per 20 ms of audio.

# %%
with torch.no_grad():
    for layer in model.layers:
        x, _ = layer(x, None)  # (B, T, D)
    full = model(samples)
print(f"contextual features: {tuple(x.shape)}")
assert torch.allclose(x, full.last_hidden_state, atol=1e-6), "step by step == the full model"
assert torch.allclose(extract_features, full.extract_features)

# %% [markdown]
# ## 7. What a trained encoder makes of it
#
# The same steps with trained weights: the encoder of the bundled digits model. Its conv stack is shorter (4 layers,
# strides 10 * 4 * 4 * 4 = 640 samples: one frame every 40 ms, see tutorial 05 for why), and its transformer was
# trained, through the decoder, to make frames that tell the ten digit words apart.
#
# Two pictures of its output. Top: the waveform on the frame axis. Middle: the features, one column per frame
# (each channel scaled to zero mean and unit variance across time, so every row is visible). Bottom: how similar
# each frame is to every other (cosine similarity). The bright squares on the diagonal are shorter than the words:
# runs of a few frames (one sound, 100-200 ms) resemble each other, and a run can resemble a run of the *other*
# word: the end of "one" (frames 6-8) is closer to the end of "nine" (frames 16-21) than the start of "one"
# (frames 3-5) is; both words end in /n/ (checked below). The frames encode sounds more than words; the decoder
# reads words out of them.

# %%
trained = SpeechEncoderDecoderModel.from_pretrained(os.path.join(PACKAGE, "bundled", "digits")).encoder.eval()
with torch.no_grad():
    features = trained(samples).last_hidden_state[0]  # (T, D)
T_trained, hop_trained = features.shape[0], int(np.prod(trained.config.conv_stride))
print(f"trained encoder: {tuple(features.shape)} = (frames, width), one frame per {hop_trained} samples "
      f"({1000 * hop_trained / SR:.0f} ms)")
assert hop_trained == 640
assert T_trained == int(trained.output_lengths(torch.tensor(samples.shape[1])))

unit = torch.nn.functional.normalize(features, dim=-1)  # (T, D), each frame of length 1
similarity = (unit @ unit.T).numpy()  # (T, T)
scaled = ((features - features.mean(0)) / (features.std(0) + 1e-6)).T.numpy()  # (D, T)
end_of_one, start_of_one = similarity[6:9, 16:22].mean(), similarity[3:6, 16:22].mean()
print(f"mean similarity to the end of 'nine' (frames 16-21): end of 'one' (6-8) {end_of_one:.2f}, "
      f"start of 'one' (3-5) {start_of_one:.2f}")
assert end_of_one > start_of_one + 0.1, "the shared /n/: the two words' endings resemble each other"

fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 9), layout="constrained",
                                          gridspec_kw={"height_ratios": [1, 1.6, 2.6]})
top.plot(np.arange(samples.shape[1]) / hop_trained - 0.5, samples[0].numpy(), lw=0.4)
top.set_xlim(-0.5, T_trained - 0.5)
top.set_title(f"input_values: {samples.shape[1]} samples ('one nine'), on the frame axis", fontsize=10)
top.set_ylabel("normalised amplitude")
image = middle.imshow(scaled, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
fig.colorbar(image, ax=middle, label="standardised value")
middle.set_ylabel("channel")
middle.set_title(f"trained encoder output, {T_trained} frames x {features.shape[1]} channels", fontsize=10)
image = bottom.imshow(similarity, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
fig.colorbar(image, ax=bottom, label="cosine similarity")
bottom.set_xlabel("frame (40 ms)")
bottom.set_ylabel("frame (40 ms)")
bottom.set_title("frame-to-frame similarity", fontsize=10)
for ax in (top, middle, bottom):
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
bottom.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
picture = os.path.join(OUT, "01_waveform_to_features.png")
fig.savefig(picture, dpi=120)
plt.close(fig)
print(f"picture: {picture}")
assert os.path.getsize(picture) > 0

# %% [markdown]
# ## 8. The spectrogram, and why wav2vec2 learns its own front end
#
# Most speech systems before wav2vec 2.0, and Whisper today, start from a hand-designed front end: the log-mel
# spectrogram. Cut the waveform into 25 ms windows every 10 ms (400 and 160 samples), take each window's power
# spectrum (|FFT|^2, 201 frequencies from 0 to 8 kHz), pool it into 80 triangular bands equally spaced on the mel
# scale, mel(f) = 2595 log10(1 + f / 700) (narrow bands at low frequencies, wide ones high up, roughly as the ear
# resolves pitch), and take the log (loudness is heard roughly logarithmically). Every choice there (window, band
# edges, the log, dropping the phase) was made by people before any data was seen. We compute it by hand, then set
# it beside what the trained encoder's conv stack makes of the same samples (its output channels, before the
# projection), each channel placed at the mel band whose loudness it follows most closely over time.

# %%
def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


n_fft, hop, n_mels = 400, 160, 80
power = torch.stft(torch.from_numpy(audio), n_fft, hop_length=hop, window=torch.hann_window(n_fft), center=False,
                   return_complex=True).abs().square().numpy()  # (F = 201, frames)
fft_hz = np.linspace(0, SR / 2, n_fft // 2 + 1)  # (F,)
edges = mel_to_hz(np.linspace(0, hz_to_mel(SR / 2), n_mels + 2))  # (n_mels + 2,): each band's left, top, right
rising = (fft_hz[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]  # (n_mels, F)
falling = (edges[2:, None] - fft_hz[None]) / (edges[2:] - edges[1:-1])[:, None]
bands = np.clip(np.minimum(rising, falling), 0, None)  # (n_mels, F): one triangle per band
log_mel = np.log(bands @ power + 1e-10)  # (n_mels, frames)
print(f"log-mel spectrogram: {log_mel.shape} = (bands, 10 ms frames); mel(1000 Hz) = {hz_to_mel(1000):.2f}")
assert log_mel.shape == (n_mels, 1 + (len(audio) - n_fft) // hop), "frames: 1 + (L - 400) // 160, no padding"
assert abs(hz_to_mel(1000) - 1000) < 0.5, "the mel scale is anchored so that 1000 Hz is 1000 mel"

with torch.no_grad():
    conv = trained.feature_encoder(samples)[0].numpy()  # (T, C): the learned front end's output, 40 ms frames
# Pool the spectrogram to the conv frames (4 x 10 ms = 40 ms), then match each channel to the band whose
# loudness over time it correlates with most (Pearson correlation over the T frames).
T_conv = conv.shape[0]
pooled = np.stack([log_mel[:, 4 * t:4 * t + 4].mean(1) for t in range(min(T_conv, log_mel.shape[1] // 4))], 1)
n = pooled.shape[1]
z = lambda a: (a - a.mean(1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-8)  # noqa: E731
corr = z(conv[:n].T) @ z(pooled).T / n  # (C, n_mels)
best_band, best_corr = corr.argmax(1), corr.max(1)
# The control: the same conv stack with random weights. Any filter follows overall loudness a little.
with torch.no_grad():
    untrained = Wav2Vec2Model(trained.config).eval().feature_encoder(samples)[0].numpy()  # (T, C)
random_corr = (z(untrained[:n].T) @ z(pooled).T / n).max(1)  # (C,)
print(f"conv channels: {conv.shape[1]}; correlation of each channel with its best-matching mel band, median: "
      f"trained {np.median(best_corr):.2f}, random weights {np.median(random_corr):.2f}; above 0.7: trained "
      f"{np.mean(best_corr > 0.7):.0%} of channels, random {np.mean(random_corr > 0.7):.0%}")
assert np.median(best_corr) > np.median(random_corr) + 0.1, "training made channels follow band loudness"

fig, (wave_ax, mel_ax, conv_ax) = plt.subplots(3, 1, figsize=(8, 7.5), sharex=True, layout="constrained",
                                               gridspec_kw={"height_ratios": [1, 2, 2]})
seconds = len(audio) / SR
wave_ax.plot(np.arange(len(audio)) / SR, audio, lw=0.4)
wave_ax.set_ylabel("amplitude")
wave_ax.set_title("the waveform ('one nine')", fontsize=10)
image = mel_ax.imshow(log_mel, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                      extent=(0, log_mel.shape[1] * hop / SR, 0, n_mels))
fig.colorbar(image, ax=mel_ax, label="log power")
mel_ax.set_ylabel("mel band (low -> high pitch)")
mel_ax.set_title("hand-designed: log-mel spectrogram, 80 bands, a frame every 10 ms", fontsize=10)
order = np.argsort(best_band, kind="stable")
image = conv_ax.imshow(z(conv.T)[order], aspect="auto", origin="lower", cmap="RdBu_r", vmin=-3, vmax=3,
                       interpolation="nearest", extent=(0, T_conv * hop_trained / SR, 0, conv.shape[1]))
fig.colorbar(image, ax=conv_ax, label="standardised value")
conv_ax.set_ylabel("channel, by its best mel band")
conv_ax.set_xlabel("time (s)")
conv_ax.set_title(f"learned: the trained conv stack's {conv.shape[1]} channels, a frame every 40 ms", fontsize=10)
conv_ax.set_xlim(0, seconds)
picture = os.path.join(OUT, "01_spectrogram.png")
fig.savefig(picture, dpi=120)
plt.close(fig)
print(f"picture: {picture}")

# %% [markdown]
# Training made the channels follow the loudness of frequency bands, as mel bins do (the median correlation printed
# above, against the same stack with random weights), and a part of them follow one band closely; the picture shows
# them switching on and off with the sounds, a coarser cousin of the spectrogram. The difference is who chose. wav2vec 2.0 starts from raw samples so that nothing is fixed in advance: the
# conv filters are trained with the rest of the network, first by the pretraining game on unlabelled audio
# (tutorial 13), and keep whatever helps (finer timing than a 25 ms window, the phase that |FFT|^2 discards, bands
# the mel scale lumps together). It is a bet that enough audio teaches better filters than the hand-designed ones;
# it costs compute (the first conv layer runs at the full 16 kHz), and log-mel front ends remain a strong design
# (Whisper). (This model's conv stack was trained only on transcribed digits, through the decoder; a pretrained
# one has seen far more.)

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. With the tiny model of section 2, ask `model.output_lengths` for 399, 400, 719 and 720 samples. Observe 0, 1,
#    1 and 2 frames: the first frame needs the whole receptive field (400 samples), each next one 320 more (the hop).
# 2. Multiply the waveform by 10 before the feature extractor. Observe: `input_values` is the same to ~1e-5. The
#    normalisation divides out the recording's loudness, so the encoder never sees it.
# 3. Put 3,200 samples (0.2 s) of silence in front of the recording and rerun section 7. Observe: exactly 5 more
#    trained frames (3,200 / 640), and a block of mutually similar frames at the start of the similarity picture.
# 4. (Reading) wav2vec 2.0 learned its conv front end by masking frames and picking the true quantised frame among
#    distractors (a contrastive loss); HuBERT, the same kind of network, predicts k-means cluster ids of masked frames
#    instead. Which of the two needs a first model (or MFCCs) before it can start? (HuBERT: its first targets are
#    clusters of MFCC features.)
#
# ## References
#
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
# - Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed (2021). HuBERT: Self-Supervised Speech Representation
#   Learning by Masked Prediction of Hidden Units. IEEE/ACM TASLP. arXiv:2106.07447
# - Ba, Kiros, Hinton (2016). Layer Normalization. arXiv:1607.06450
