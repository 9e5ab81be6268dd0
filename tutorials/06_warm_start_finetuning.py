"""Tutorial 06: warm-start fine-tuning of a pretrained speech encoder and a pretrained text decoder.

Run it:  pip install -e ".[tutorials]" && python tutorials/06_warm_start_finetuning.py
         (checkpoints go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

Warm-starting a speech encoder-decoder from two pretrained halves is how Wang et al. (2021) and Li et al. (2021)
built their speech translation models. This is what a user does on a GPU with real checkpoints; it mirrors the
"Training" example of transformers' SpeechEncoderDecoderModel documentation, which joins
`facebook/wav2vec2-base-960h` (an acoustic encoder) and `google-bert/bert-base-uncased` (a text model) and computes
a loss on one LibriSpeech utterance. We go on from there: a few optimizer steps on a handful of (audio, text) pairs,
save, reload, generate. The same code runs on this CPU with tiny stand-ins for the two checkpoints, written to
folders of the same names (no model hub here). On a GPU, two lines change what runs: bf16 autocast and gradient
checkpointing, shown where they go.

With the real checkpoints (~95 M + 110 M parameters, the cross-attention new), a real run needs thousands of steps
over hours of transcribed speech; `minispeechseq train --encoder DIR --decoder DIR --data DIR` is that loop.

Shape legend: B batch, N audio samples, T encoder frames, S label tokens, V vocabulary.
"""

# %%
import contextlib
import os
import shutil

import numpy as np
import torch

from minispeechseq import (
    AutoFeatureExtractor,
    AutoTokenizer,
    BertConfig,
    BertForCausalLM,
    Processor,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)
from minispeechseq.training.data import SAMPLING_RATE, Collator
from minispeechseq.training.train import make_optimizer, warmup_cosine

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
WORK = os.path.join(OUT, "06_checkpoints")
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))

# %% [markdown]
# ## 1. Stand-ins for the two pretrained checkpoints
#
# `wav2vec2-base-960h`: the base layout (post-LN layers, a group-norm conv front end), shrunk: width 32, 2 layers,
# a 4-layer conv stack with the real one's hop (5 * 4 * 4 * 4 = 320 samples = 20 ms per frame). Its feature
# extractor returns no attention mask, as the real one's does: group norm mixes every time step, padding included,
# so base checkpoints were trained on unpadded audio with no mask, and a padded batch is fed to them as zeros,
# unmasked (audio.py explains it; tutorial 09 measures it). (wav2vec2-base-960h is itself a *CTC* model, fine-tuned
# on LibriSpeech's 960 h; here only its encoder is used: tutorial 07 is about CTC.)
# `bert-base-uncased`: a BERT (is_decoder=False, no cross-attention) with a WordPiece vocab.
#
# Random weights, real layouts: the *loading* code below is the same for hub ids or real folders. The *training*
# settings of step 5 are not: they are chosen to make random stand-ins memorise four sentences in a second.

# %%
encoder_id, decoder_id = os.path.join(WORK, "wav2vec2-base-960h"), os.path.join(WORK, "bert-base-uncased")
WORDS = ["hello", "world", "speech", "to", "text", "the", "a", "model", "is", "small", "reads", "aloud"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]

Wav2Vec2Model(Wav2Vec2Config(
    conv_dim=(16, 16, 16, 16), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4), hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
)).save_pretrained(encoder_id)
Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(encoder_id)
BertForCausalLM(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=32)).save_pretrained(decoder_id)
with open(os.path.join(decoder_id, "vocab.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(VOCAB) + "\n")
with open(os.path.join(decoder_id, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    f.write('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}\n')
assert os.path.isfile(os.path.join(encoder_id, "preprocessor_config.json"))

# %% [markdown]
# ## 2. The documentation's code, unchanged but for the import and the two ids
#
# `from_encoder_decoder_pretrained` loads both halves, turns BERT into a decoder (causal self-attention, new
# cross-attention) and, since both are 32 wide here, adds no projection (bert-base and wav2vec2-base are both 768
# wide: no projection there either). Two ids tie the tokenizer to the model: decoding starts at [CLS]
# (`decoder_start_token_id`), and [PAD] fills the decoder's inputs where labels are padded (`pad_token_id`). The
# documentation stops there; to *generate* we also need the id that ends a sentence: BERT's [SEP].

# %%
feature_extractor = AutoFeatureExtractor.from_pretrained(encoder_id)
tokenizer = AutoTokenizer.from_pretrained(decoder_id)
model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(encoder_id, decoder_id)
model.config.decoder_start_token_id = tokenizer.cls_token_id
model.config.pad_token_id = tokenizer.pad_token_id
model.config.eos_token_id = tokenizer.sep_token_id
new = model.decoder.load_report.initialized
print(f"{model.num_parameters()} parameters; newly initialised: {len(new)} cross-attention tensors; "
      f"enc_to_dec_proj: {model.enc_to_dec_proj}")
assert new and all(".cross_attn" in k for k in new)
assert model.enc_to_dec_proj is None  # equal widths

# %% [markdown]
# ## 3. Freeze the conv front end
#
# The conv feature encoder turns samples into frames; pretraining made it good at that, and its gradients are the
# most expensive ones (it runs at the full sample rate). Fine-tuning recipes (wav2vec2's paper, transformers'
# examples) freeze it: `freeze_feature_encoder()` sets requires_grad=False on its parameters.

# %%
model.freeze_feature_encoder()
frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
print(f"frozen: {len(frozen)} tensors, all in {sorted({n.split('.')[1] for n in frozen})}; trainable: {trainable}")
assert frozen and all(n.startswith("encoder.feature_encoder.") for n in frozen)

# %% [markdown]
# ## 4. A handful of (audio, text) pairs
#
# espeak-ng reads four sentences when it is installed; otherwise each word becomes a tone of its own pitch (not
# speech, but a mapping from sound to words all the same). The training collator of minispeechseq.training.data pads
# the audio (zeros, no mask, as this feature extractor says) and builds the labels: the sentence's tokens, then
# [SEP], padded with -100, which the loss ignores. No [CLS] in the labels: the model puts decoder_start_token_id =
# [CLS] in front of them itself (the documentation's example passes input_ids with [CLS] as labels, which teaches
# the model to predict [CLS] after [CLS]; harmless, but not what we want).

# %%
SENTENCES = ["hello world", "speech to text", "the model is small", "a model reads aloud"]


def tone_words(text: str) -> np.ndarray:
    """A stand-in for speech: each word a 0.15 s tone at a pitch of its own, with 50 ms pauses."""
    t = np.arange(int(0.15 * SAMPLING_RATE)) / SAMPLING_RATE
    pause = np.zeros(int(0.05 * SAMPLING_RATE))
    tones = [np.sin(2 * np.pi * (200 + 90 * WORDS.index(w)) * t) * np.hanning(t.size) for w in text.split()]
    return np.concatenate([piece for tone in tones for piece in (tone, pause)]).astype(np.float32)


audios = None
if shutil.which("espeak-ng"):
    from minispeechseq.training.digits import synthesize_many

    try:
        audios = synthesize_many(SENTENCES, voice="en-us", speed=220)
    except (OSError, ValueError):  # a broken espeak-ng install: fall back, as when it is missing
        audios = None
source = "espeak-ng" if audios is not None else "tone words (espeak-ng is not installed)"
if audios is None:
    audios = [tone_words(s) for s in SENTENCES]

collator = Collator(feature_extractor, tokenizer)
batch = collator([{"index": i, "audio": a, "text": s} for i, (a, s) in enumerate(zip(audios, SENTENCES))])
print(f"audio: {source}; input_values {tuple(batch['input_values'].shape)}, labels {tuple(batch['labels'].shape)}")
print("labels[0]:", batch["labels"][0].tolist(), "=", tokenizer.convert_ids_to_tokens(
    [t for t in batch["labels"][0].tolist() if t != -100]))
assert "attention_mask" not in batch  # a group-norm (base) checkpoint: zero padding, no mask
assert batch["labels"].shape[0] == len(SENTENCES)
assert (batch["labels"] == tokenizer.sep_token_id).sum() == len(SENTENCES)  # one [SEP] per sentence

# %% [markdown]
# ## 5. Fine-tune
#
# A plain loop: the training loop's AdamW (no weight decay on biases and norms) and its warmup + cosine schedule,
# gradient clipping, and the whole batch every step. On a GPU, two things are worth turning on:
#
# - `torch.autocast("cuda", dtype=torch.bfloat16)`: matmuls in bf16 on the tensor cores (the model keeps its
#   weights in fp32, and computes the loss in fp32 itself); activations take half the memory. No loss scaling is
#   needed, as bf16 has fp32's exponent range (fp16 has not).
# - `model.gradient_checkpointing_enable()`: layers recompute their activations during backward instead of
#   storing them: one more forward pass per step, for far less memory, hence longer audio or bigger batches.
#
# On this CPU both are off (bf16 on CPU is slow, and the model is tiny).

# %%
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model.to(device)
batch = {k: v.to(device) for k, v in batch.items()}
if device.type == "cuda":
    model.gradient_checkpointing_enable()


def autocast() -> contextlib.AbstractContextManager:
    # A fresh context per step, as training/train.py does: bf16 matmuls on CUDA, plain fp32 elsewhere.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def batch_loss(m: SpeechEncoderDecoderModel) -> float:
    """The batch's loss in eval mode (no dropout, no SpecAugment, no layerdrop), so values compare across steps."""
    m.eval()
    with torch.no_grad():
        return m(**batch).loss.item()


# For random stand-ins only. A learning rate of 1e-2 would wreck real pretrained weights in a few steps; fine-tuning
# recipes for wav2vec2 / BERT-sized models use rates of the order of 1e-5 to 1e-4, warmup over hundreds of steps,
# and thousands of steps over hours of speech.
STEPS, WARMUP, LR = 60, 5, 1e-2
optimizer = make_optimizer(model, lr=LR, weight_decay=0.01)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, WARMUP, STEPS))
before = batch_loss(model)
history = []
for step in range(STEPS):
    model.train()
    with autocast():
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    history.append(loss.item())
    if step == 0:  # the frozen front end never gets a gradient
        assert all(p.grad is None for p in model.encoder.feature_encoder.parameters())
after = batch_loss(model)
print("training loss every 5 steps:", [round(x, 3) for x in history[::5]])
print(f"loss on the batch (eval mode): {before:.3f} before, {after:.3f} after {STEPS} steps")
assert after < 0.5 * before, f"fine-tuning should at least halve the loss on its own batch: {before:.3f} -> {after:.3f}"

# %% [markdown]
# ## 6. Save, reload, transcribe
#
# One folder holds everything a user needs: the model (config.json, generation_config.json, model.safetensors, in
# transformers' layout) and the processor (preprocessor_config.json and the tokenizer files). Reloading it is
# the documentation's inference example: `from_pretrained`, `processor(...)`, `generate`, `batch_decode`. Four
# sentences and 60 steps make a model that has memorised its four sentences (overfitting is the point here: it
# shows every piece works, from the new cross-attention to the saved file), not one that can recognise anything else.

# %%
finetuned = os.path.join(WORK, "wav2vec2-bert-finetuned")
model.save_pretrained(finetuned)
Processor(feature_extractor, tokenizer).save_pretrained(finetuned)

model = SpeechEncoderDecoderModel.from_pretrained(finetuned)
processor = Processor.from_pretrained(finetuned)
assert model.load_report.initialized == []
assert abs(batch_loss(model.to(device)) - after) < 1e-5, "the reloaded model is the fine-tuned one"

inputs = processor(audios, sampling_rate=SAMPLING_RATE, padding=True, return_tensors="pt")
generated_ids = model.generate(inputs.input_values.to(device), max_new_tokens=8)
transcripts = processor.batch_decode(generated_ids, skip_special_tokens=True)
for said, heard in zip(SENTENCES, transcripts):
    print(f"  said {said!r:24} transcribed {heard!r}")
assert bool((generated_ids[:, 0] == tokenizer.cls_token_id).all())  # every transcript starts from [CLS]
assert transcripts == SENTENCES, f"the model should reproduce the sentences it was fine-tuned on: {transcripts}"

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Comment out `model.freeze_feature_encoder()`. Observe: the trainable parameter count rises by exactly the
#    conv front end's parameters (sum the `numel` of `model.encoder.feature_encoder` to check).
# 2. Print `scheduler.get_last_lr()` every 5 steps. Observe the learning rate climb linearly to 1e-2 over the 5
#    warmup steps, then fall along half a cosine to 0 at step 60 (`warmup_cosine`; warmup as in Vaswani et al.
#    2017, section 5.3).
#
# ## References
#
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477
# - Devlin, Chang, Lee, Toutanova (2019). BERT: Pre-training of Deep Bidirectional Transformers for Language
#   Understanding. NAACL 2019. arXiv:1810.04805
# - Wang, Wu, Pino, Baevski, Auli, Conneau (2021). Large-Scale Self- and Semi-Supervised Learning for Speech
#   Translation. Interspeech 2021 (the warm-started wav2vec2 encoder + decoder that transformers' documentation cites)
# - Li et al. (2021). Multilingual Speech Translation with Efficient Finetuning of Pretrained Models. ACL 2021
#   (a pretrained wav2vec2 encoder joined to a pretrained text decoder, fine-tuning only a few parts)
# - Rothe, Narayan, Severyn (2020). Leveraging Pre-trained Checkpoints for Sequence Generation Tasks. TACL
#   (warm-starting encoder-decoders from BERT / GPT-2 checkpoints, text to text)
