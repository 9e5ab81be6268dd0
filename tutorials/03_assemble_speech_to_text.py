"""Tutorial 03: a speech-to-text model from two pretrained halves.

Run it:  pip install -e ".[tutorials]" && python tutorials/03_assemble_speech_to_text.py
         (the picture and checkpoints go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

Nobody has a pretrained speech-to-*text* model lying around for every language and domain, but there are plenty of
pretrained speech encoders (wav2vec2, HuBERT: they turn audio into contextual frames) and pretrained text models.
Those text models were trained on different games: BERT is a *masked* language model (it fills in hidden words
from the words on both sides, and never had to write left to right); GPT-2 is a causal one (it predicts the next
word from the words before it). Neither has heard audio. SpeechEncoderDecoderModel glues one encoder and one text
model together and teaches the text model to write what the encoder heard (warm-starting: Wang et al. 2021 and
Li et al. 2021 for speech, Rothe et al. 2020 for text to text):

    waveform (B, L) --wav2vec2--> frames (B, T, D_enc) --enc_to_dec_proj--> memory (B, T, D_dec)
    text so far (B, S) --BERT with causal self-attention + NEW cross-attention to memory--> next-token logits (B, S, V)

We (1) write two tiny "pretrained" halves to disk (random weights: there is no model hub on this machine, but the
folders have exactly the layout of real checkpoints), (2) join them, (3) look at what is new, (4) compute the loss on
one (audio, text) pair and take one optimizer step, (5) save the joint model and load it back, in minispeechseq and,
when it is installed, in transformers' own SpeechEncoderDecoderModel.

Shape legend: B batch, L audio samples, T encoder frames, S text tokens, D width, V vocabulary.
"""

# %%
import os
import shutil
import sys

import matplotlib.pyplot as plt
import numpy as np
import torch

from minispeechseq import (
    BertConfig,
    BertForCausalLM,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Tokenizer,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tutorials/, for standins.py
import standins  # the tiny stand-in checkpoints, shared by the tutorials

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
WORK = os.path.join(OUT, "03_checkpoints")  # the checkpoint folders this tutorial writes
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
SR = 16000

# %% [markdown]
# ## 1. Two pretrained halves, on disk
#
# A speech encoder: wav2vec2 with a shortened conv stack (4 layers instead of 7, but the same hop: 5 * 4 * 4 * 4 =
# 320 samples = 20 ms per frame) and width 32. A text model: BERT, width 24. A real BERT checkpoint is a masked
# language model, so its config says `is_decoder=False, add_cross_attention=False`: bidirectional self-attention
# and no cross-attention at all. Each is written with `save_pretrained`, in transformers' layout (config.json +
# model.safetensors), which is what `transformers.Wav2Vec2Model.save_pretrained` and
# `BertForMaskedLM.save_pretrained` write too. BERT also needs its tokenizer: a WordPiece vocabulary (vocab.txt).
# The few lines that write them live in tutorials/standins.py (tutorial 11 uses the same sizes): open it.

# %%
encoder_dir, decoder_dir = os.path.join(WORK, "tiny-wav2vec2"), os.path.join(WORK, "tiny-bert")
WORDS = ["hello", "world", "speech", "to", "text", "the", "a", "model", "is", "small"]
encoder_config = standins.write_wav2vec2(encoder_dir)  # Wav2Vec2Model(...).save_pretrained + the feature extractor
decoder_config = standins.write_bert(decoder_dir, WORDS, hidden_size=24, subwords=True)  # + vocab.txt
V = decoder_config.vocab_size  # the special tokens, the words, a..z and ##a..##z
print("encoder folder:", sorted(os.listdir(encoder_dir)))
print("decoder folder:", sorted(os.listdir(decoder_dir)))
assert {"config.json", "model.safetensors"} <= set(os.listdir(encoder_dir)) & set(os.listdir(decoder_dir))

# %% [markdown]
# ## 2. Join them
#
# `from_encoder_decoder_pretrained(encoder_folder, decoder_folder)` loads each half with its own `from_pretrained`,
# after switching the text model into a decoder: causal self-attention (`is_decoder=True`, a token may only look
# back; BERT's weights were trained to look both ways, one more thing fine-tuning must adapt) and one
# cross-attention block per layer (`add_cross_attention=True`). The BERT checkpoint has no weights for those
# blocks, so they are initialised fresh, and the loader says so twice: a warning on the "minispeechseq" logger
# (on stderr just below, printed by Python's own last-resort handler as it would be in your script) and, as data,
# in the decoder's `load_report`, which is what we read.

# %%
model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_dir, decoder_dir)

new_in_decoder = model.decoder.load_report.initialized
print(f"\nnewly initialised in the decoder ({len(new_in_decoder)} tensors):", new_in_decoder[:4], "...")
assert model.config.decoder.is_decoder and model.config.decoder.add_cross_attention
# Everything new is cross-attention (its four projections and its LayerNorm), in every layer, and nothing else.
assert new_in_decoder and all(".cross_attn" in k for k in new_in_decoder)
assert {k.split(".")[1] for k in new_in_decoder} == {str(i) for i in range(decoder_config.num_hidden_layers)}
assert model.encoder.load_report.initialized == []  # the encoder is the checkpoint, entirely

# The pretrained parts really are the checkpoint's: compare with the halves loaded alone.
alone = BertForCausalLM.from_pretrained(decoder_dir)
assert torch.equal(model.decoder.layers[0].self_attn.q_proj.weight, alone.layers[0].self_attn.q_proj.weight)
encoder_alone = Wav2Vec2Model.from_pretrained(encoder_dir).state_dict()
assert all(torch.equal(v, encoder_alone[k]) for k, v in model.encoder.state_dict().items())

# %% [markdown]
# ## 3. The projection between them: enc_to_dec_proj
#
# Cross-attention computes its keys and values from the encoder's frames with the decoder's k_proj / v_proj, which
# BERT's layout sizes (D_dec -> D_dec). Our encoder speaks width 32, our decoder 24 (wav2vec2-large speaks 1024,
# bert-base 768): the widths differ, so the model inserts one Linear(D_enc, D_dec), `enc_to_dec_proj`, also freshly
# initialised. When the widths are equal there is no projection. (A decoder config may instead set
# `cross_attention_hidden_size` = D_enc, sizing its k_proj / v_proj for the encoder directly; then there is no
# projection either.) The projection belongs to neither checkpoint, so it is not in the decoder's `load_report`;
# the loader reports it in a line of its own, the second warning printed in step 2.

# %%
reports = model.encoder.load_report.initialized + new_in_decoder
assert not any("enc_to_dec_proj" in name for name in reports), "neither half's report holds the projection"
fe = Wav2Vec2FeatureExtractor.from_pretrained(encoder_dir)
tokenizer = Tokenizer.from_pretrained(decoder_dir)
print("\nprojection:", model.enc_to_dec_proj)
assert model.enc_to_dec_proj.in_features == encoder_config.hidden_size
assert model.enc_to_dec_proj.out_features == decoder_config.hidden_size

probe = torch.randn(1, 4000)  # a quarter of a second of noise, only to look at shapes
with torch.no_grad():
    frames = model.encoder(probe).last_hidden_state  # (B, T, D_enc)
    memory, _ = model.encode(probe)  # (B, T, D_dec): the same frames, projected
print(f"encoder frames {tuple(frames.shape)} -> memory for cross-attention {tuple(memory.shape)}")
assert frames.shape[-1] == 32 and memory.shape == (*frames.shape[:2], 24)
assert torch.allclose(memory, model.enc_to_dec_proj(frames), atol=1e-6)

# %% [markdown]
# ## 4. One (audio, text) pair, its loss, one optimizer step
#
# The audio: espeak-ng saying "hello world" when it is installed, else a synthetic stand-in (two tone bursts, one
# per "word"). The feature extractor normalises it to zero mean and unit variance.
#
# The text: BERT's tokenizer writes `[CLS] hello world [SEP]`. The decoder starts from
# `decoder_start_token_id` = [CLS] and must predict each next token, ending with [SEP]. So the labels are the tokens
# *after* [CLS]; the model shifts them right behind the start token itself (teacher forcing):
#
#     decoder reads  [CLS]  hello  world
#     must predict   hello  world  [SEP]
#
# (transformers' documentation passes the whole `input_ids`, [CLS] included, as labels; the model then learns to
# predict [CLS] after [CLS], harmless but useless. We drop it.) pad_token_id is needed too: it fills the decoder's
# input where a batch's labels are padded (-100).

# %%
text = "hello world"
audio = None
if shutil.which("espeak-ng"):
    from minispeechseq.training.digits import synthesize

    try:
        audio = synthesize(text, voice="en-us")
    except (OSError, ValueError):  # a broken espeak-ng install: fall back, as when it is missing
        audio = None
source = "espeak-ng" if audio is not None else "synthetic tones"
if audio is None:
    t = np.arange(int(0.4 * SR)) / SR
    audio = np.concatenate([np.sin(2 * np.pi * 300 * t), np.zeros(SR // 10), np.sin(2 * np.pi * 700 * t)])
audio = audio.astype(np.float32)
input_values = fe(audio, sampling_rate=SR, return_tensors="pt").input_values  # (B=1, L)

model.config.decoder_start_token_id = tokenizer.cls_token_id
model.config.pad_token_id = tokenizer.pad_token_id
model.config.eos_token_id = tokenizer.sep_token_id
ids = tokenizer(text, return_tensors="pt").input_ids  # (1, S+1): [CLS] hello world [SEP]
labels = ids[:, 1:]  # (1, S): hello world [SEP]
print(f"\naudio: {source}, {input_values.shape[1] / SR:.2f} s; tokens: {tokenizer.convert_ids_to_tokens(ids[0].tolist())}")
assert tokenizer.decode(labels[0], skip_special_tokens=True) == text
assert ids[0, 0] == tokenizer.cls_token_id and ids[0, -1] == tokenizer.sep_token_id


def pair_loss() -> float:
    """The loss on our pair, in eval mode (no dropout, no SpecAugment masking), so two calls are comparable."""
    model.eval()
    with torch.no_grad():
        return model(input_values, labels=labels).loss.item()


before = pair_loss()
model.train()  # dropout and SpecAugment on, as in training
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
out = model(input_values, labels=labels)
print(f"logits {tuple(out.logits.shape)}; loss {out.loss.item():.4f} (ln V = {np.log(V):.4f}: a guess)")
out.loss.backward()
# Gradients reach every part: the new cross-attention, the new projection, and both pretrained halves. (We look at
# the encoder's input projection, not at one of its layers: wav2vec2 configs have layerdrop=0.1, which skips a
# random layer now and then in training, and a skipped layer gets no gradient in that step.)
assert model.decoder.layers[0].cross_attn.q_proj.weight.grad is not None
assert model.enc_to_dec_proj.weight.grad is not None
assert model.encoder.feature_projection.proj.weight.grad is not None
optimizer.step()
optimizer.zero_grad()
after = pair_loss()
print(f"loss on the pair: {before:.4f} before the step, {after:.4f} after")
assert out.logits.shape == (1, labels.shape[1], V)
assert after < before, f"one step on this pair should lower its loss: {before:.4f} -> {after:.4f}"

# %% [markdown]
# ## 5. A picture: what is pretrained, and what is new
#
# Parameter counts per part, for our tiny pair and, to compare, for a real one: wav2vec2-base + bert-base (both
# 768 wide, so no projection), built on PyTorch's "meta" device, which records shapes without allocating memory.
# The picture draws both as shares, so that 45 thousand and 232 million parameters read on one scale: the new glue
# is about an eighth of each, cross-attention plus a small projection in the tiny pair (its widths differ),
# cross-attention alone in the real one. Everything else, seven eighths, arrives trained.
# The strip under the bars draws the real pair tensor by tensor, in the model's order: the new glue is not one
# block at the end but a slice of every decoder layer, between its self-attention and its feed-forward, so from the
# first step of fine-tuning every decoder layer computes something its checkpoint never did.

# %%
n = {name: p.numel() for name, p in model.named_parameters()}
new = {k for k in n if k.startswith("decoder.") and k[len("decoder."):] in new_in_decoder} | {
    k for k in n if k.startswith("enc_to_dec_proj.")}
parts = {
    "encoder (pretrained)": sum(v for k, v in n.items() if k.startswith("encoder.")),
    "decoder (pretrained)": sum(v for k, v in n.items() if k.startswith("decoder.") and k not in new),
    "cross-attention (new)": sum(n[k] for k in new if k.startswith("decoder.")),
    "enc_to_dec_proj (new)": sum(n[k] for k in new if k.startswith("enc_to_dec_proj.")),
}
assert sum(parts.values()) == model.num_parameters()
for name, count in parts.items():
    print(f"  {name:24s} {count:7d} parameters")
new_share = (parts["cross-attention (new)"] + parts["enc_to_dec_proj (new)"]) / model.num_parameters()

with torch.device("meta"):  # shapes only: no memory, no initialisation cost worth mentioning
    base_pair = SpeechEncoderDecoderModel(config=SpeechEncoderDecoderConfig.from_encoder_decoder_configs(
        Wav2Vec2Config(), BertConfig(is_decoder=True, add_cross_attention=True)))  # the defaults are the base sizes
base_total = sum(p.numel() for p in base_pair.parameters())
base_cross = sum(p.numel() for n_, p in base_pair.named_parameters() if ".cross_attn" in n_)
print(f"new in our tiny pair: {new_share:.1%}; in wav2vec2-base + bert-base: cross-attention "
      f"{base_cross / 1e6:.1f} M of {base_total / 1e6:.0f} M parameters = {base_cross / base_total:.1%}"
      f"{'' if base_pair.enc_to_dec_proj is None else ' + a projection'}")
assert base_pair.enc_to_dec_proj is None and 0.10 < base_cross / base_total < 0.14
assert 0.10 < new_share < 0.14, f"the prose: about an eighth is new in the tiny pair too ({new_share:.1%})"

base_parts = {
    "encoder (pretrained)": sum(p.numel() for n_, p in base_pair.named_parameters() if n_.startswith("encoder.")),
    "decoder (pretrained)": sum(p.numel() for n_, p in base_pair.named_parameters()
                                if n_.startswith("decoder.") and ".cross_attn" not in n_),
    "cross-attention (new)": base_cross,
    "enc_to_dec_proj (new)": 0,  # equal widths (768): no projection
}
assert sum(base_parts.values()) == base_total

# Two bars of shares, so that a pair of 45 thousand and one of 232 million parameters read on one scale; below
# them, the real pair's tensors in the order the model holds them, each as wide as its parameter count: *where*
# the new glue sits, which no count says.
fig, (ax, ax_where) = plt.subplots(2, 1, figsize=(9, 3.8), layout="constrained", height_ratios=(2.6, 1))
colors = ["tab:blue", "tab:green", "tab:red", "tab:orange"]
for row, (label, counts) in enumerate((("our tiny pair", parts), ("wav2vec2-base\n+ bert-base", base_parts))):
    total, left = sum(counts.values()), 0.0
    for (name, count), color in zip(counts.items(), colors):
        share = count / total
        ax.barh(row, share, left=left, color=color, label=name if row == 0 else None)
        if share > 0.04:
            size = f"{count / 1e3:.1f} k" if count < 1e6 else f"{count / 1e6:.0f} M"
            ax.text(left + share / 2, row, f"{share:.0%}\n{size}", ha="center", va="center", fontsize=8,
                    color="white")
        left += share
left, new_stretches = 0, 0
for name, p in base_pair.named_parameters():  # module order: encoder, then each decoder layer in turn
    is_new = ".cross_attn" in name
    color = "tab:red" if is_new else "tab:blue" if name.startswith("encoder.") else "tab:green"
    ax_where.barh(0, p.numel() / base_total, left=left / base_total, color=color, height=1.0)
    new_stretches += is_new and ".cross_attn.q_proj.weight" in name
    left += p.numel()
assert new_stretches == base_pair.config.decoder.num_hidden_layers, "one new cross-attention per decoder layer"
ax_where.set_xlim(0, 1)
ax_where.set_yticks([])
ax_where.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
ax_where.set_xlabel("wav2vec2-base + bert-base, tensor by tensor in the model's order: the new cross-attention "
                    f"(red) sits in every one of the {new_stretches} decoder layers", fontsize=8)
ax.set_yticks([0, 1], ["our tiny pair", "wav2vec2-base\n+ bert-base"])
ax.invert_yaxis()
ax.set_xlim(0, 1)
ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
ax.set_xlabel("share of the parameters", fontsize=8)
ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
ax.set_title("a warm-started speech encoder-decoder: two checkpoints + the new glue (red, orange: newly "
             "initialised)", fontsize=9)
picture = os.path.join(OUT, "03_pretrained_and_new.png")
fig.savefig(picture, dpi=120)
plt.close(fig)
print("picture:", picture)
assert os.path.getsize(picture) > 0

# %% [markdown]
# ## 6. Save the joint model, load it back
#
# `save_pretrained` writes one folder: config.json (model_type "speech-encoder-decoder", with the two sub-configs
# nested), generation_config.json, and model.safetensors under transformers' parameter names. Our own names are
# cleaner (`q_proj`, `cross_attn`); the table in weights_convert/ translates both ways. From now on the model
# loads with `from_pretrained(folder)` in one piece, and nothing is "newly initialised" any more.

# %%
joint_dir = os.path.join(WORK, "tiny-wav2vec2-bert")
model.save_pretrained(joint_dir)
fe.save_pretrained(joint_dir)
tokenizer.save_pretrained(joint_dir)

ours = model.state_dict()
theirs = model.checkpoint_state_dict()
print("\nthe same tensor under two names:")
print("  ours:        decoder.layers.0.cross_attn.q_proj.weight")
print("  checkpoint:  decoder.bert.encoder.layer.0.crossattention.self.query.weight")
assert torch.equal(ours["decoder.layers.0.cross_attn.q_proj.weight"],
                   theirs["decoder.bert.encoder.layer.0.crossattention.self.query.weight"])

model.eval()
reloaded = SpeechEncoderDecoderModel.from_pretrained(joint_dir)
with torch.no_grad():
    logits = model(input_values, labels=labels).logits
    logits_reloaded = reloaded(input_values, labels=labels).logits
assert reloaded.load_report.initialized == [], "a saved joint model has every weight"
assert torch.equal(logits, logits_reloaded), "save + load changes nothing"
print("reloaded in minispeechseq: identical logits")

# %% [markdown]
# ## 7. The same folder in transformers
#
# The folder is a transformers checkpoint: `transformers.SpeechEncoderDecoderModel.from_pretrained(folder)` reads it
# (when transformers is installed; this library never needs it). Same weights, same input: the logits agree to
# floating-point rounding (1e-5).

# %%
try:
    import transformers
except ImportError:
    transformers = None
    print("\ntransformers is not installed: step 7 skipped.")
if transformers is not None:
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    reference = transformers.SpeechEncoderDecoderModel.from_pretrained(joint_dir).eval()
    with torch.no_grad():
        ref_logits = reference(input_values=input_values, labels=labels).logits
    diff = (logits - ref_logits).abs().max().item()
    print(f"\ntransformers' SpeechEncoderDecoderModel on the same folder: max |logits difference| = {diff:.2e}")
    assert diff <= 1e-5, f"our logits and transformers' differ by {diff:.2e} (> 1e-5)"

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change. Exercises 1 and 2 remove
# the projection, so the checks written for section 1's widths (section 3 on) stop the script with an
# AssertionError or AttributeError after the first print you need: that is the checks doing their job.
#
# 1. Make the decoder as wide as the encoder (hidden_size=32 in section 1). Observe: `enc_to_dec_proj` is gone
#    (the loader no longer reports it; section 3 prints `projection: None`), and the new parameters are the
#    cross-attention blocks alone (`model.decoder.load_report.initialized`).
# 2. Keep width 24 but set `cross_attention_hidden_size=32` in the decoder config. Observe: no projection either;
#    each cross-attention's k_proj / v_proj weight is (24, 32), reading the encoder's width directly.
# 3. Pass the whole `ids` (with [CLS]) as labels, as transformers' documentation does. Observe: the loss now has
#    one more target per sentence ([CLS] after [CLS]), learned quickly and useless when generating.
# 4. Count, in the real pair of section 5, what share of the parameters is new. Observe: a small share, all of it
#    cross-attention: warm-starting reuses nearly everything (Wang et al. 2021; Rothe et al. 2020 for text).
#
# ## References
#
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
# - Devlin, Chang, Lee, Toutanova (2019). BERT: Pre-training of Deep Bidirectional Transformers for Language
#   Understanding. NAACL 2019. arXiv:1810.04805
# - Radford, Wu, Child, Luan, Amodei, Sutskever (2019). Language Models are Unsupervised Multitask Learners.
#   OpenAI report (GPT-2)
# - Wang, Wu, Pino, Baevski, Auli, Conneau (2021). Large-Scale Self- and Semi-Supervised Learning for Speech
#   Translation. Interspeech 2021 (the warm-started wav2vec2 encoder + decoder that transformers' documentation cites)
# - Li et al. (2021). Multilingual Speech Translation with Efficient Finetuning of Pretrained Models. ACL 2021
#   (a pretrained wav2vec2 encoder joined to a pretrained text decoder, fine-tuning only a few parts)
# - Rothe, Narayan, Severyn (2020). Leveraging Pre-trained Checkpoints for Sequence Generation Tasks. TACL
#   (warm-starting encoder-decoders from BERT / GPT-2 checkpoints, text to text)
