"""Tutorial 01: from a waveform to contextual speech features, one module of the wav2vec2 encoder at a time.

Run it:  python tutorials/01_waveform_to_features.py   (the picture goes to $MINISPEECHSEQ_TUTORIAL_OUT, default ".")

wav2vec 2.0 (and HuBERT, the same network) turns raw 16 kHz samples into one feature vector every 20 ms:

    samples (B, L) -> conv frames (B, T, C) -> projection (B, T, D) -> + positional conv -> transformer (B, T, D)

We build a tiny random model with the real conv stack (so the timing is the real one), push a waveform
through each module by hand, and check at every step the shape and, at the end, that our step-by-step
result equals the full model's output. A real checkpoint works the same way: Wav2Vec2Model.from_pretrained(folder).

Shape legend: B batch, L samples, T frames, C conv channels, D model width.
"""

# %%
import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np
import torch

from minispeechseq.wav2vec2 import Wav2Vec2Model
from minispeechseq.wav2vec2_config import Wav2Vec2Config

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT", ".")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
SR = 16000

# %% [markdown]
# ## 1. A waveform
#
# If espeak-ng is installed we let it say a few words; otherwise we synthesise a chirp (a tone sweeping from
# 200 Hz to 2 kHz). Either way we get float samples at 16 kHz, normalised to zero mean and unit variance,
# which is what wav2vec2's feature extractor feeds the model.


# %%
def speak(text: str) -> np.ndarray | None:
    if not shutil.which("espeak-ng"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "say.wav")
        try:
            subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True, timeout=20)
            with wave.open(path) as w:
                rate, raw = w.getframerate(), w.readframes(w.getnframes())
        except (subprocess.SubprocessError, OSError, wave.Error):
            return None
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768
    # espeak-ng speaks at 22050 Hz; linear interpolation to 16 kHz is good enough for a picture.
    t_new = np.arange(int(len(audio) * SR / rate)) / SR
    return np.interp(t_new, np.arange(len(audio)) / rate, audio).astype(np.float32)


audio = speak("hello speech")
if audio is None:
    t = np.arange(SR) / SR  # one second
    audio = np.sin(2 * np.pi * (200 * t + 0.5 * 1800 * t**2)).astype(np.float32)  # 200 Hz -> 2 kHz chirp
audio = (audio - audio.mean()) / (audio.std() + 1e-7)
samples = torch.from_numpy(audio)[None]  # (B=1, L)
print(f"waveform: {tuple(samples.shape)} = {samples.shape[1] / SR:.2f} s at {SR} Hz")
assert samples.dim() == 2 and samples.shape[0] == 1

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
# ## 7. A picture: the waveform, the 20 ms frame grid, and the features
#
# Each column of the lower panel is one frame's feature vector; the grid lines above mark where frames start.

# %%
try:
    import matplotlib

    matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    seconds = np.arange(samples.shape[1]) / SR
    top.plot(seconds, audio, lw=0.5)
    for f in range(T):
        top.axvline(f * 320 / SR, color="grey", lw=0.3)
    top.set_title(f"waveform ({samples.shape[1]} samples) and its {T} frames (hop 20 ms, window 25 ms)")
    bottom.imshow(x[0].T.numpy(), aspect="auto", origin="lower", extent=(0, T * 320 / SR, 0, config.hidden_size))
    bottom.set_xlabel("time (s)")
    bottom.set_ylabel("feature")
    bottom.set_title("contextual features (random weights: the structure, not the content)")
    fig.tight_layout()
    path = os.path.join(OUT, "01_waveform_to_features.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"picture: {path}")
    assert os.path.exists(path)
