"""Tutorial 01: from a sound file to contextual speech features, one module of the wav2vec2 encoder at a time.

Run it:  pip install -e ".[tutorials]" && python tutorials/01_waveform_to_features.py
         (the picture goes to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

wav2vec 2.0 (Baevski et al. 2020) turns raw 16 kHz samples into one feature vector every 20 ms. It learns its own
front end from unlabelled audio: spans of frames are masked, and the model must pick the true (quantised) frame
among distractors. HuBERT (Hsu et al. 2021) is the same network trained with another objective: predict
k-means cluster ids of the masked frames. Either way the encoder arrives knowing speech before it sees a transcript.

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
print(f"receptive field: {model.receptive_field} samples; hop: {int(np.prod(config.conv_stride))} samples")
assert model.receptive_field == 400

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
# 16 here), added to its input, tells each frame about its neighbourhood; attention can then use relative
# position. Its kernel is weight-normalised: weight = g * v / ||v||, one g per kernel tap.

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
# each frame is to every other (cosine similarity): the frames of one word form a bright square on the diagonal,
# and the silent frames resemble each other more than they resemble either word.

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

fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 9), layout="constrained",
                                          gridspec_kw={"height_ratios": [1, 1.6, 2.6]})
top.plot(np.arange(samples.shape[1]) / hop_trained - 0.5, samples[0].numpy(), lw=0.4)
top.set_xlim(-0.5, T_trained - 0.5)
top.set_title(f"input_values: {samples.shape[1]} samples ('one nine'), on the frame axis", fontsize=10)
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
#    distractors (a contrastive loss); HuBERT, the same network, predicts k-means cluster ids of masked frames
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
