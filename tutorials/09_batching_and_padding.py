"""Tutorial 09: batching and padding (the attention-mask rule), and SpecAugment.

Run it:  pip install -e ".[tutorials]" && python tutorials/09_batching_and_padding.py
         (the pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

Recordings have different lengths; a batch is one rectangle. So the short ones are padded with zeros, and the
question is whether the padding changes what the model computes for the real audio. The answer depends on the
first normalisation of the encoder's conv front end, and it decides whether a checkpoint wants an attention mask:

    feat_extract_norm="layer" (wav2vec2-large-lv60, XLS-R, the bundled digits model): each frame is normalised on
        its own; the mask keeps padding out of attention -> padded + mask == unpadded, exactly (to rounding).
    feat_extract_norm="group" (wav2vec2-base, HuBERT-base): GroupNorm normalises each channel over *all* time
        steps, padding included -> no mask can undo it. These checkpoints were pre-trained on unpadded audio and
        fine-tuned on zero-padded batches without a mask, so their feature extractors say
        return_attention_mask=False: feed them zero padding, no mask, as they were trained.

We measure both rules, then draw SpecAugment, the training-time masking of frames and channels.

Shape legend: B batch, L samples, T frames, D encoder width, C conv channels.
"""

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
import torch

import minispeechseq
from minispeechseq import (
    Processor,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    load_audio,
)
from minispeechseq.wav2vec2 import sample_span_starts, spans_to_mask

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
PACKAGE = os.path.dirname(minispeechseq.__file__)
SAMPLES = os.path.join(PACKAGE, "bundled", "samples")

# %% [markdown]
# ## 1. A padded batch
#
# The feature extractor pads to the longest waveform (`padding=True`) and, when the checkpoint's config asks for
# it (`return_attention_mask`), returns a mask: 1 for real samples, 0 for padding. The encoder turns the sample
# mask into a frame mask with the conv length formula (tutorial 01).

# %%
model = SpeechEncoderDecoderModel.from_pretrained(os.path.join(PACKAGE, "bundled", "digits")).eval()
processor = Processor.from_pretrained(os.path.join(PACKAGE, "bundled", "digits"))
short, long_ = load_audio(os.path.join(SAMPLES, "003183.wav")), load_audio(os.path.join(SAMPLES, "000578.wav"))
batch = processor([short, long_], sampling_rate=16000, padding=True, return_tensors="pt")
print(f"lengths {len(short)} and {len(long_)} -> input_values {tuple(batch.input_values.shape)}, "
      f"mask sums {batch.attention_mask.sum(-1).tolist()}; this checkpoint: "
      f"feat_extract_norm={model.config.encoder.feat_extract_norm!r}, "
      f"return_attention_mask={processor.feature_extractor.return_attention_mask}")
assert batch.input_values.shape == (2, len(long_)) and batch.attention_mask.sum(-1).tolist() == [len(short), len(long_)]
assert bool((batch.input_values[0, len(short):] == 0).all()), "padding is zeros (padding_value)"

# %% [markdown]
# ## 2. Layer norm: padded + mask == unpadded
#
# The short utterance alone, and inside the padded batch with its mask: the encoder's frames for the real audio
# agree to float rounding, and so do the transcripts. Without the mask they do not: attention then spreads
# weight over the padded frames.

# %%
encoder = model.encoder
with torch.no_grad():
    alone_inputs = processor(short, sampling_rate=16000, return_tensors="pt")
    alone = encoder(alone_inputs.input_values, attention_mask=alone_inputs.attention_mask).last_hidden_state[0]
    in_batch = encoder(batch.input_values, attention_mask=batch.attention_mask).last_hidden_state[0]
    no_mask = encoder(batch.input_values).last_hidden_state[0]
T_real = alone.shape[0]
diff_mask = float((in_batch[:T_real] - alone).abs().max())
diff_no_mask = float((no_mask[:T_real] - alone).abs().max())
print(f"layer-norm encoder, {T_real} real frames: padded with mask vs alone max |diff| = {diff_mask:.1e}; "
      f"padded without mask: {diff_no_mask:.1e}")
assert diff_mask < 1e-4 and diff_no_mask > 1e-2
texts = processor.batch_decode(model.generate(batch.input_values, attention_mask=batch.attention_mask),
                               skip_special_tokens=True)
alone_text = processor.batch_decode(model.generate(alone_inputs.input_values, attention_mask=alone_inputs.attention_mask),
                                    skip_special_tokens=True)[0]
print(f"transcripts in the batch: {[t.strip() for t in texts]}; the short one alone: {alone_text.strip()!r}")
assert texts[0].strip() == alone_text.strip()

# %% [markdown]
# ## 3. Group norm: no mask can make padded == unpadded
#
# A small random encoder with wav2vec2-base's front end (`feat_extract_norm="group"`). Random weights are fine
# here: the question is arithmetic, not skill. The first conv layer's GroupNorm averages each channel over every
# time step, so the padding zeros shift the statistics of *every* frame, the real ones too. The attention mask
# enters only later, in the transformer; by then the damage is done.

# %%
group_config = Wav2Vec2Config(conv_dim=(32, 32, 32), conv_kernel=(10, 8, 4), conv_stride=(5, 4, 4),
                              feat_extract_norm="group", hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
group_encoder = Wav2Vec2Model(group_config).eval()
layer_encoder = Wav2Vec2Model(Wav2Vec2Config.from_dict({**group_config.to_dict(), "feat_extract_norm": "layer"})).eval()
x_alone = torch.from_numpy((short - short.mean()) / short.std())[None]  # (1, L)
x_padded = torch.nn.functional.pad(x_alone, (0, len(long_) - len(short)))  # (1, L_long), zeros after
mask = (torch.arange(x_padded.shape[1]) < len(short)).long()[None]  # (1, L_long)
rows, per_frame = {}, {}
with torch.no_grad():
    for name, enc in (("group", group_encoder), ("layer", layer_encoder)):
        reference = enc(x_alone).last_hidden_state[0]  # (T, D)
        n = reference.shape[0]
        for how, kwargs in (("padded, with mask", {"attention_mask": mask}), ("padded, no mask", {})):
            gap = (enc(x_padded, **kwargs).last_hidden_state[0, :n] - reference).abs().amax(-1)  # (T,) per frame
            per_frame[name, how] = gap.numpy()
            rows.setdefault(name, {})[how] = float(gap.max())
print("| front end | padded + mask vs alone | padded, no mask vs alone |\n|---|---|---|")
for name, r in rows.items():
    print(f"| {name} norm | {r['padded, with mask']:.1e} | {r['padded, no mask']:.1e} |")
assert rows["layer"]["padded, with mask"] < 1e-4
assert rows["group"]["padded, with mask"] > 1e-2, "group norm: the mask does not undo the padding"

# The same, frame by frame: where in the utterance does padding change the output?
fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
styles = {("layer", "padded, with mask"): ("tab:blue", "-"), ("layer", "padded, no mask"): ("tab:blue", ":"),
          ("group", "padded, with mask"): ("tab:red", "-"), ("group", "padded, no mask"): ("orange", "--")}
for (name, how), gap in per_frame.items():
    color, line = styles[name, how]
    ax.semilogy(np.maximum(gap, 1e-9), color=color, linestyle=line, label=f"{name} norm, {how}")
ax.axhline(1e-4, color="0.5", lw=0.6)
ax.set_xlabel(f"frame of the short utterance (padded to {x_padded.shape[1]} samples; 1e-9 = identical)")
ax.set_ylabel("max |padded - alone|")
ax.set_title("padding + mask changes nothing with layer norm, everything with group norm", fontsize=10)
ax.legend(fontsize=8, loc="center right")
fig.savefig(os.path.join(OUT, "09_padding_rule.png"), dpi=120)
plt.close(fig)

# One more effect, before the model: the feature extractor itself. With a mask it normalises each utterance over
# its real samples; without one (return_attention_mask=False, the group-norm checkpoints' setting) it pads first
# and normalises the padded row, zeros included (as transformers does; minispeechseq/audio.py), so the short
# utterance's values depend on the longest one in its batch.
no_mask = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
in_batch = no_mask([short, long_], sampling_rate=16000, padding=True, return_tensors="pt").input_values[0, :len(short)]
alone_values = no_mask(short, sampling_rate=16000, return_tensors="pt").input_values[0]
shift = float((in_batch - alone_values).abs().max())
print(f"feature extractor without a mask: the short utterance's input_values in the batch vs alone: max |diff| "
      f"{shift:.2f} (the padded row's mean and variance include {len(long_) - len(short)} zeros)")
assert shift > 1e-2

# %% [markdown]
# The picture (09_padding_rule.png) shows it frame by frame. Layer norm with the mask: rounding only, everywhere.
# Layer norm without the mask: a small change at every frame (attention gives the padding some weight) and a larger
# one at the last few frames, whose positional conv reads the padding beside them. Group norm: the two lines (with
# and without the mask) lie on top of each other, large at every frame, because the change happens in the first
# conv layer, before the mask is used.
#
# So for group-norm checkpoints the library follows what they were trained on: their feature extractor
# config says `return_attention_mask=False`, `transcribe` and the training collator send zero-padded batches with no
# mask, and a transcript can differ slightly with the batch it is in. Batching similar lengths together
# (`BucketBatchSampler` in training) keeps the padding, and the difference, small.
#
# ## 4. SpecAugment
#
# SpecAugment (Park et al. 2019) masks spans of time and frequency. In training, wav2vec2 hides random spans of
# frames (replaced by a learned vector, `masked_spec_embed`) and, if configured, random spans of channels (set to
# 0), on the projected features before the transformer. The model must then fill in from context, which makes it
# robust. The bundled model trained with `mask_time_prob=0.05`, spans of 2 frames (80 ms, less than one digit);
# wav2vec2's fine-tuning recipes use larger values. We draw masks for one utterance with the bundled settings and
# with heavier ones (time p = 0.3, spans of 5 frames; channel p = 0.2, spans of 16 channels), and check that the
# encoder does what the picture shows.

# %%
one = processor(long_, sampling_rate=16000, return_tensors="pt")
with torch.no_grad():
    frames = encoder.feature_encoder(one.input_values)  # (1, T, C)
    projected, _ = encoder.feature_projection(frames)  # (1, T, D)
T, D = projected.shape[1:]
generator = torch.Generator().manual_seed(0)
c = model.config.encoder
light = spans_to_mask(sample_span_starts([T], T, c.mask_time_prob, c.mask_time_length, c.mask_time_min_masks,
                                         generator), c.mask_time_length, T)  # (1, T)
heavy_time = spans_to_mask(sample_span_starts([T], T, 0.3, 5, 2, generator), 5, T)  # (1, T)
heavy_channels = spans_to_mask(sample_span_starts([D], D, 0.2, 16, 1, generator), 16, D)  # (1, D)
with torch.no_grad():
    masked = encoder.spec_augment(projected, [T], mask_time_indices=heavy_time)  # (1, T, D), eval mode: time only
masked = masked.masked_fill(heavy_channels[:, None, :], 0.0)  # channels, as training does
print(f"{T} frames: bundled settings mask {int(light.sum())} frames; heavy: {int(heavy_time.sum())} frames and "
      f"{int(heavy_channels.sum())} of {D} channels")
assert torch.equal(masked[0, heavy_time[0]][:, ~heavy_channels[0]],
                   encoder.masked_spec_embed.expand(int(heavy_time.sum()), -1)[:, ~heavy_channels[0]])
assert torch.equal(masked[0, ~heavy_time[0]][:, ~heavy_channels[0]], projected[0, ~heavy_time[0]][:, ~heavy_channels[0]])

scale = float(projected.abs().quantile(0.99))  # one colour scale for the three panels
fig, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, layout="constrained")
panels = [
    (projected[0], "projected features (what the transformer would read)"),
    (projected[0].masked_fill(light[0][:, None], 0) + light[0][:, None] * encoder.masked_spec_embed.detach(),
     f"bundled settings: time p = {c.mask_time_prob}, spans of {c.mask_time_length} frames"),
    (masked[0], "heavy: time p = 0.3, spans of 5 frames; channels p = 0.2, spans of 16"),
]
for ax, (data, title) in zip(axes, panels):
    image = ax.imshow(data.T.detach().numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-scale, vmax=scale,
                      interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("channel")
axes[-1].set_xlabel("frame (40 ms)")
axes[-1].xaxis.set_major_locator(plt.MaxNLocator(integer=True))
fig.colorbar(image, ax=axes, label="value", shrink=0.6)
path = os.path.join(OUT, "09_spec_augment.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)
assert np.isfinite(scale)

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Pad the short utterance with twice as much silence (append zeros before calling the processor). Observe: the
#    layer-norm encoder with its mask still agrees with the utterance alone to rounding, while the group-norm
#    difference changes with the amount of padding: its statistics include every padded step.
# 2. Run the layer-norm encoder on the padded batch without the mask, and generate. Observe: the frames differ
#    (printed in section 2); see whether the transcript survives. A less confident model would change words.
# 3. In section 4, set heavy time masking to p = 0.6, spans of 5. Observe: well under p x T frames masked (about
#    45 % of them): `sample_span_starts` draws p x T / 5 span starts, and spans overlap.
#
# ## References
#
# - Ba, Kiros, Hinton (2016). Layer Normalization. arXiv:1607.06450
# - Wu, He (2018). Group Normalization. ECCV 2018. arXiv:1803.08494
# - Park et al. (2019). SpecAugment: A Simple Data Augmentation Method for Automatic Speech Recognition.
#   Interspeech 2019. arXiv:1904.08779
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
