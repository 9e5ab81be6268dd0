"""Tutorial 02: attention, its masks, cross-attention to the audio, and the KV cache.

Run it:  pip install -e ".[tutorials]" && python tutorials/02_attention_and_cache.py
         (pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

A speech-to-text decoder does three things with attention:
1. each text token looks back at the tokens before it (causal self-attention),
2. each text token looks at the audio frames the encoder produced (cross-attention),
3. while generating, it does 1 and 2 for one new token at a time, reusing what it computed before (the KV cache).

We write each one out by hand first, then check that the library's `Attention` module does exactly the same.
Random weights serve for the plumbing (masks, shapes, the cache); for what cross-attention looks like once it has
learned something, the picture uses the trained bundled digits model.
Every step ends with an assert, so this file is also a test (tests/test_tutorials.py runs it).

Shape legend: B batch, S text tokens, T audio frames, D model width, H heads, hd head size (D / H).
"""

# %%
import math
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.attention import Attention, attend
from minispeechseq.cache import DecoderCache
from minispeechseq.decoders.bert import BertConfig, BertForCausalLM

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))

# %% [markdown]
# ## 1. Self-attention, written as plain math
#
# Every token asks a question (its query q), every token offers a label (its key k) and a content (its value v).
# A token's output is the average of all values, weighted by how well its query matches each key:
#
#     weights = softmax(Q Kᵀ / sqrt(hd))      out = weights · V
#
# With H heads, the width D is cut into H slices of hd = D / H, and each slice attends on its own.

# %%
B, S, D, H = 1, 6, 16, 2
hd = D // H
x = torch.randn(B, S, D)  # six token vectors

W_q, W_k, W_v = (torch.randn(D, D) / math.sqrt(D) for _ in range(3))
Q, K, V = x @ W_q, x @ W_k, x @ W_v  # (B, S, D) each


def split_heads(t: torch.Tensor) -> torch.Tensor:
    return t.view(B, -1, H, hd).transpose(1, 2)  # (B, S, D) -> (B, S, H, hd) -> (B, H, S, hd)


Q, K, V = split_heads(Q), split_heads(K), split_heads(V)
scores = Q @ K.transpose(-1, -2) / math.sqrt(hd)  # (B, H, S, S): row i = how much token i likes each token j
# The causal mask: token i may only look at tokens 0..i (when generating, later tokens do not exist yet).
causal = torch.ones(S, S, dtype=torch.bool).tril()  # (S, S), True = allowed
scores = scores.masked_fill(~causal, float("-inf"))  # exp(-inf) = 0: no weight on the future
weights = torch.softmax(scores, dim=-1)  # (B, H, S, S), each row sums to 1
out_by_hand = weights @ V  # (B, H, S, hd)
print("Q, K, V per head:", tuple(Q.shape), " scores/weights:", tuple(weights.shape), " output:", tuple(out_by_hand.shape))

assert torch.allclose(weights.sum(-1), torch.ones(B, H, S))
assert (weights[..., ~causal] == 0).all(), "no token may look at the future"

# %% [markdown]
# The library's `attend` takes the same Q, K, V and the *description* of the mask (causal=True), with a choice of
# backend: "eager" is the formula above; "sdpa" is PyTorch's fused `scaled_dot_product_attention`.

# %%
out_eager, weights_eager = attend(Q, K, V, causal=True, impl="eager", return_weights=True)
out_sdpa, _ = attend(Q, K, V, causal=True, impl="sdpa")
out_torch = F.scaled_dot_product_attention(Q, K, V, is_causal=True)
for name, out in [("attend eager", out_eager), ("attend sdpa", out_sdpa), ("torch SDPA", out_torch)]:
    print(f"{name:13s} vs by hand: max |diff| = {(out - out_by_hand).abs().max():.1e}")
    assert torch.allclose(out, out_by_hand, atol=1e-5)
assert torch.allclose(weights_eager, weights, atol=1e-6)

# %% [markdown]
# ### Why divide by sqrt(hd)?
#
# A score is a dot product of two hd-long vectors. If their entries are independent with mean 0 and variance 1,
# each of the hd products has variance 1, so the sum has variance hd (Vaswani et al. 2017, "Attention Is All You
# Need", footnote 4). With hd = 64 the scores spread over about ±8 to ±16, softmax puts nearly all the weight on
# one key (it saturates) and its gradient almost vanishes. Dividing by sqrt(hd) brings the variance back to ~1.

# %%
q_rand, k_rand = torch.randn(10_000, 64), torch.randn(10_000, 64)  # 10,000 (query, key) pairs, hd = 64
dots = (q_rand * k_rand).sum(-1)  # (10000,)
print(f"variance of q·k with hd = 64: {dots.var():.1f}; after / sqrt(64): {(dots / 8).var():.2f}")
assert 55 < dots.var() < 73 and 0.85 < (dots / 8).var() < 1.15
score_rows = (torch.randn(1000, 8, 64) @ torch.randn(1000, 64, 1)).squeeze(-1)  # 8 keys · 1 query, 1000 times
top_raw = torch.softmax(score_rows, -1).max(-1).values.mean()
top_scaled = torch.softmax(score_rows / 8, -1).max(-1).values.mean()
print(f"mean largest weight over 8 keys: unscaled {top_raw:.2f}, scaled {top_scaled:.2f}")
assert top_raw > 0.8 and top_scaled < 0.6, "unscaled softmax nearly picks one key; scaled keeps a spread"

# %% [markdown]
# ### Merging the heads and the output projection
#
# Each head returned (B, H, S, hd). The heads are put side by side again, (B, S, H·hd) = (B, S, D), and one more
# D x D matrix W_o mixes what the heads found. That is the whole attention layer:
#
#     y = concat(head_1, ..., head_H) · W_o
#
# The library's `Attention` module holds W_q, W_k, W_v, W_o as four `nn.Linear` layers (`q_proj`, `k_proj`,
# `v_proj`, `out_proj`). `nn.Linear` computes x · weightᵀ, so our matrices go in transposed.

# %%
W_o = torch.randn(D, D) / math.sqrt(D)
merged = out_by_hand.transpose(1, 2).reshape(B, S, H * hd)  # (B, H, S, hd) -> (B, S, H, hd) -> (B, S, D)
y_by_hand = merged @ W_o  # (B, S, D)

full = Attention(D, H, bias=False)
with torch.no_grad():
    for linear, W in [(full.q_proj, W_q), (full.k_proj, W_k), (full.v_proj, W_v), (full.out_proj, W_o)]:
        linear.weight.copy_(W.T)  # nn.Linear stores (out, in)
y_library, _ = full(x, causal=True)  # (B, S, D)
print(f"Attention module vs by hand (heads merged, out_proj applied): "
      f"max |diff| = {(y_library - y_by_hand).abs().max():.1e}")
assert y_library.shape == (B, S, D)
assert torch.allclose(y_library, y_by_hand, atol=1e-5)

# %% [markdown]
# ## 2. What the masks look like
#
# A batch holds sentences of different lengths, padded to the longest. The padding mask says which keys are
# real (1) and which are padding (0); a padded key must get zero weight. The causal mask and the padding mask
# combine with AND. Below, sentence 1 has 4 real tokens and 2 padded ones (right padding).

# %%
x2 = torch.randn(2, S, D)
padding_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # (B, S), 1 = real token
layer = Attention(D, H)  # q_proj, k_proj, v_proj, out_proj as above, now random and with biases
layer.impl = "eager"  # the only backend that returns the weights
_, w = layer(x2, key_padding_mask=padding_mask, causal=True, output_attentions=True)  # w (B, H, S, S)

combined = causal & padding_mask[1].bool()[None, :]  # (S, S) for sentence 1
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8), layout="constrained")
panels = [
    (causal, "causal mask\n(row = query, column = key)"),
    (padding_mask[1].bool()[None, :].expand(S, S), "padding mask, sentence 1\n(keys 4, 5 are padding)"),
    (combined, "causal AND padding"),
    (w[1, 0].detach(), "attention weights\n(sentence 1, head 0)"),
]
for ax, (img, title) in zip(axes, panels):
    image = ax.imshow(img.float().numpy(), cmap="viridis", vmin=0, vmax=1)  # one scale: 0 = blocked / no weight
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_xticks(range(S))
    ax.set_yticks(range(S))
fig.colorbar(image, ax=axes, label="1 = allowed (masks), weight (right)", shrink=0.8)
fig.savefig(os.path.join(OUT, "02_masks.png"), dpi=120)
plt.close(fig)
print("saved", os.path.join(OUT, "02_masks.png"))

assert (w[1][:, ~combined] == 0).all(), "masked positions get exactly zero weight"
assert torch.allclose(w.sum(-1), torch.ones(2, H, S), atol=1e-6), "each row of weights sums to 1"

# %% [markdown]
# Rows 4 and 5 of sentence 1 are padded *queries*: they still attend to the real tokens 0..3 and produce some
# output, which nobody reads (the loss and the generated text ignore padded positions).
#
# ## 3. Cross-attention: the text looks at the audio
#
# This is the whole difference between self- and cross-attention, in the library as in "The Annotated
# Transformer" (`src_attn(x, memory, memory)`):
#
#     self_attn(x)           queries, keys and values all come from the text tokens x
#     cross_attn(x, frames)  queries come from the text tokens x; keys and values come from the audio frames
#
# The audio frames come from the speech encoder (wav2vec2, one frame per 20 ms). Its width may differ from the
# decoder's: `kv_dim` is the width of the frames. There is no causal mask here: every token may look at the
# whole utterance. Only padded frames (a shorter utterance in the batch) are masked.

# %%
T, D_enc = 20, 24
frames = torch.randn(2, T, D_enc)  # (B, T, D_enc): the encoder's output for two utterances
frame_mask = torch.ones(2, T, dtype=torch.long)
frame_mask[1, 14:] = 0  # utterance 1 is shorter: frames 14..19 are padding

cross_attn = Attention(D, H, kv_dim=D_enc)
cross_attn.impl = "eager"
tokens = torch.randn(2, S, D)  # (B, S, D): the decoder's text tokens
y, cross_w = cross_attn(tokens, frames, key_padding_mask=frame_mask, output_attentions=True)
print("text tokens", tuple(tokens.shape), "+ audio frames", tuple(frames.shape), "->", tuple(y.shape),
      "; cross-attention weights", tuple(cross_w.shape), "(B, H, S, T)")
assert y.shape == (2, S, D) and cross_w.shape == (2, H, S, T)
assert cross_attn.k_proj.in_features == D_enc, "keys are made from the frames, so k_proj reads width D_enc"

# What a padded frame contains cannot matter:
frames_noisy = frames.clone()
frames_noisy[1, 14:] = 1000.0
y_noisy, _ = cross_attn(tokens, frames_noisy, key_padding_mask=frame_mask)
assert torch.allclose(y, y_noisy, atol=1e-5)

top = float(cross_w[:, 0].detach().max())  # one colour scale for both panels, so they compare
fig, axes = plt.subplots(1, 2, figsize=(11, 3), layout="constrained")
for b, ax in enumerate(axes):
    image = ax.imshow(cross_w[b, 0].detach().numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=top,
                      interpolation="nearest")
    ax.set_title(f"random weights: utterance {b}, head 0" + (" (frames 14+ padded: weight 0)" if b else ""), fontsize=9)
    ax.set_xlabel("audio frame")
    ax.set_ylabel("text token")
    ax.set_xticks(range(0, T, 2))
    ax.set_yticks(range(S))
fig.colorbar(image, ax=axes, label="attention weight")
fig.savefig(os.path.join(OUT, "02_cross_attention_masked.png"), dpi=120)
plt.close(fig)
print("saved", os.path.join(OUT, "02_cross_attention_masked.png"))

# The library's backends agree on cross-attention too:
cross_attn.impl = "sdpa"
y_sdpa, _ = cross_attn(tokens, frames, key_padding_mask=frame_mask)
print(f"cross-attention sdpa vs eager: max |diff| = {(y_sdpa - y).abs().max():.1e}")
assert torch.allclose(y_sdpa, y, atol=1e-5)

# %% [markdown]
# Random weights spread attention almost evenly: nothing to see but the mask. A trained model is different. The
# bundled digits model (a GPT-2 decoder, 2 layers of 4 heads) transcribing a shipped recording: each head of its
# last layer, one colour scale for all four. Every head reads the digits left to right, one bright spot per word
# (the checks below count them); where `</s>` looks, each head decides for itself.

# %%
PACKAGE = os.path.dirname(minispeechseq.__file__)
digits = SpeechEncoderDecoderModel.from_pretrained(os.path.join(PACKAGE, "bundled", "digits"), attn_implementation="eager")
processor = Processor.from_pretrained(os.path.join(PACKAGE, "bundled", "digits"))
speech = processor(load_audio(os.path.join(PACKAGE, "bundled", "samples", "002521.wav")), sampling_rate=16000,
                   return_tensors="pt")
with torch.no_grad():
    said = digits.generate(speech.input_values, attention_mask=speech.attention_mask)  # (1, S)
    heads = digits(speech.input_values, attention_mask=speech.attention_mask, decoder_input_ids=said[:, :-1],
                   output_attentions=True).cross_attentions[-1][0]  # last layer: (H, S, T)
words = processor.tokenizer.convert_ids_to_tokens(said[0, 1:].tolist())
print("the bundled model heard:", " ".join(words), f"; last layer's cross-attention {tuple(heads.shape)} (H, S, T)")
assert heads.shape[:2] == (4, len(words)) and torch.allclose(heads.sum(-1), torch.ones(4, len(words)), atol=1e-5)
peaks = heads[:, :-1].argmax(-1)  # (H, S-1): the frame each digit's row weighs most, per head
print("frame of the strongest weight, per head and digit:", peaks.tolist())
assert all(p == sorted(p) for p in peaks.tolist()), "each head reads the digits in order"

fig, axes = plt.subplots(1, 4, figsize=(14, 2.8), layout="constrained", sharey=True)
for h, ax in enumerate(axes):
    image = ax.imshow(heads[h].numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"trained, last layer, head {h}", fontsize=9)
    ax.set_xlabel("audio frame (40 ms)")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
axes[0].set_yticks(range(len(words)), words)
fig.colorbar(image, ax=axes, label="attention weight")
fig.savefig(os.path.join(OUT, "02_cross_attention_trained.png"), dpi=120)
plt.close(fig)
print("saved", os.path.join(OUT, "02_cross_attention_trained.png"))

# %% [markdown]
# ## 4. The KV cache
#
# Generation produces one token per step. Without a cache, step t runs the decoder over all t tokens again,
# although the keys and values of tokens 0..t-2 are exactly what they were at the previous step (causal
# attention: earlier tokens never see later ones). And every step projects the same audio frames into the same
# cross-attention keys and values.
#
# With a `DecoderCache`, each layer keeps
# - `cache.self_attn[i]`: keys/values of the tokens so far; each step appends one token's,
# - `cache.cross_attn[i]`: keys/values of the audio frames, computed at the first step and reused after.
#
# A tiny decoder (2 layers of self-attention, cross-attention, feed-forward) makes the point.

# %%
class TinyDecoder(nn.Module):
    def __init__(self, vocab=50, dim=64, heads=4, enc_dim=D_enc, layers=2, max_len=128):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.self_attn = nn.ModuleList(Attention(dim, heads) for _ in range(layers))
        self.cross_attn = nn.ModuleList(Attention(dim, heads, kv_dim=enc_dim) for _ in range(layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)) for _ in range(layers)
        )
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids, frames, cache=None):
        past = 0 if cache is None else cache.seq_len  # with a cache, the new tokens come after `past` old ones
        x = self.embed(ids) + self.pos(torch.arange(past, past + ids.shape[1]))  # (B, S, dim)
        for i in range(len(self.self_attn)):
            x = x + self.self_attn[i](x, causal=True, cache=None if cache is None else cache.self_attn[i])[0]
            x = x + self.cross_attn[i](x, frames, cache=None if cache is None else cache.cross_attn[i])[0]
            x = x + self.mlp[i](x)
        return self.head(x)  # (B, S, vocab)


decoder = TinyDecoder().eval()
audio = torch.randn(1, 50, D_enc)  # one utterance, 50 frames (1 s of audio)
N = 32  # tokens to generate


def greedy(use_cache: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    ids = torch.tensor([[1]])  # the start token
    cache = DecoderCache(len(decoder.self_attn)) if use_cache else None
    all_logits = []
    for _ in range(N):
        # With a cache, feed only the newest token; without, feed everything so far.
        logits = decoder(ids[:, -1:], audio, cache) if use_cache else decoder(ids, audio)
        all_logits.append(logits[:, -1])
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids, all_logits


# %% [markdown]
# Both loops must produce the same tokens. And what does the cache save? While generating, forward hooks count
# the multiply-adds of every `nn.Linear` (projections, feed-forward, head: they dominate at this size), and a
# clock times both loops.

# %%
macs = {"n": 0}


def count_macs(module, inputs, output):
    rows = inputs[0].numel() // module.in_features  # tokens (or frames) that went through this layer
    macs["n"] += rows * module.in_features * module.out_features


hooks = [m.register_forward_hook(count_macs) for m in decoder.modules() if isinstance(m, nn.Linear)]
runs = {}
with torch.no_grad():
    for use_cache in (False, True):
        macs["n"] = 0
        start = time.perf_counter()
        ids, logits = greedy(use_cache)
        runs[use_cache] = (ids, logits, macs["n"], time.perf_counter() - start)
for h in hooks:
    h.remove()
(ids_full, logits_full, macs_full, t_full), (ids_cached, logits_cached, macs_cached, t_cached) = runs[False], runs[True]

diff = max((a - b).abs().max().item() for a, b in zip(logits_full, logits_cached))
print(f"greedy, {N} tokens: identical tokens = {torch.equal(ids_full, ids_cached)}, "
      f"max |logits diff| over all steps = {diff:.1e}")
assert torch.equal(ids_full, ids_cached)
assert diff < 1e-4

print(f"{N} steps without cache: {macs_full / 1e6:7.1f} M multiply-adds, {t_full * 1e3:7.1f} ms")
print(f"{N} steps with cache:    {macs_cached / 1e6:7.1f} M multiply-adds, {t_cached * 1e3:7.1f} ms")
print(f"the cache does {macs_full / macs_cached:.0f}x fewer multiply-adds; the clock says {t_full / t_cached:.1f}x")

# %% [markdown]
# Why the clock shows less than the count: at this toy size a decoder step costs mostly fixed overhead (Python,
# and dozens of tiny tensor operations whose launch costs more than their arithmetic), and the cache does not
# remove any of that: both loops make the same number of calls. The multiply-adds, which the cache does remove,
# are a small part of each step here. In a real model they are most of it (bert-base as a decoder reads about
# 123 M weights per token: counted below from its shapes), and the gap grows with N: without a cache step t redoes
# all t tokens and re-projects the audio, quadratic in N instead of linear.

# %%
assert macs_full > 10 * macs_cached

# Weights a bert-base decoder reads for each new token, with the cache: every layer's self-attention and
# feed-forward, cross-attention's q and out projections (its k and v of the audio are computed once per utterance,
# then cached), and the LM head (a dense layer, then the 30522 x 768 matrix tied to the token embeddings, read whole
# to score every word). Built on the "meta" device: shapes only, no memory.
with torch.device("meta"):
    bert_base = BertForCausalLM(BertConfig(is_decoder=True, add_cross_attention=True))  # the defaults: bert-base
read = {"self-attention + feed-forward": 0, "cross-attention q, out": 0, "LM head": 0}
for name, p in bert_base.named_parameters():
    if p.dim() != 2 or name.startswith(("embed_positions", "embed_token_types")):
        continue  # biases and norms are small; a position or type embedding is one row per token
    if ".cross_attn.k_proj." in name or ".cross_attn.v_proj." in name:
        continue  # once per utterance, not per token
    part = "cross-attention q, out" if ".cross_attn." in name else (
        "self-attention + feed-forward" if name.startswith("layers.") else "LM head")
    read[part] += p.numel()
print("bert-base as a decoder, weights read per token: " + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in read.items())
      + f"; {sum(read.values()) / 1e6:.0f} M in all")
assert 115e6 < sum(read.values()) < 130e6

# %% [markdown]
# ## 5. The same, with a real decoder of the library
#
# `BertForCausalLM` (a BERT decoder with cross-attention, as in transformers' BertLMHeadModel) takes a
# `DecoderCache` from `model.new_cache()`. A tiny random one, decoding 8 tokens one at a time, gives the
# same logits as one forward pass over the whole sequence.

# %%
config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, is_decoder=True, add_cross_attention=True,
                    cross_attention_hidden_size=D_enc, max_position_embeddings=64)
bert = BertForCausalLM(config).eval()
ids = torch.randint(1, 60, (1, 8))
with torch.no_grad():
    full_logits = bert(ids, encoder_hidden_states=audio).logits  # (1, 8, V)
    cache = bert.new_cache()
    step_logits = torch.cat(
        [bert(ids[:, t : t + 1], encoder_hidden_states=audio, cache=cache).logits for t in range(8)], dim=1
    )
print(f"BertForCausalLM, 8 cached steps vs one full pass: max |logits diff| = "
      f"{(step_logits - full_logits).abs().max():.1e}")
assert cache.seq_len == 8
assert torch.allclose(step_logits, full_logits, atol=1e-4)

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Merge the heads without the transpose: `out_by_hand.reshape(B, S, D)`. Observe: the shapes fit and nothing
#    complains, but the check against the `Attention` module fails. The reshape interleaves positions with heads;
#    only an equality test catches that kind of bug.
# 2. In the 1/sqrt(hd) cell, use hd = 256 and 16 keys. Observe: the unscaled variance is ~256 and the largest
#    unscaled weight is even closer to 1 (one key takes everything), while the scaled variance stays ~1.
# 3. In section 4, generate 64 tokens instead of 32. Observe: the multiply-add ratio between no cache and cache
#    grows (without a cache step t redoes all t tokens, so the work grows like N^2; with one, like N), while the
#    clock ratio moves far less: on a model this small each step's fixed overhead dominates.
#
# ## References
#
# - Vaswani et al. (2017). Attention Is All You Need. NeurIPS 2017. arXiv:1706.03762
