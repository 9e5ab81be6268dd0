"""Tutorial 13: how a speech encoder learns without labels. wav2vec 2.0's game of hide and seek, by hand.

Run it:  pip install -e ".[tutorials]" && python tutorials/13_learning_without_labels.py
         (the picture goes to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

Every warm-started speech-to-text model (tutorials 03, 06, 11) starts from a speech encoder that someone trained on
audio alone: thousands of hours, no transcripts. Tutorial 01 opened that encoder; this one shows the game it was
trained on (Baevski et al. 2020, arXiv:2006.11477). Spans of frames are hidden from the transformer, and for each
hidden frame it must pick the right answer out of a line-up: the frame's own conv features, *quantized* (snapped to
a codebook), against K distractors taken from other hidden frames of the same utterance.

    samples (B, L) --conv--> features (B, T, C) --quantizer--> q (B, T, d) --project_q--> targets (B, T, P)
                                  |
                                  +--projection, hide spans (masked_spec_embed), transformer--> c (B, T, D)
                                                                                 --project_hid--> guesses (B, T, P)
    loss = contrastive (pick the target out of the line-up) + alpha * diversity (use the whole codebook)

We (1) build a tiny random `Wav2Vec2ForPreTraining` and feed it four shipped recordings, (2) quantize by hand and
measure the codebook's perplexity, (3) see what the Gumbel softmax and its temperature do, (4) hide spans and draw
negatives, (5) compute both losses by hand, equal to the library's, (6) train it for a few seconds and draw one
hidden frame's line-up before and after. The model is minispeechseq/wav2vec2_pretraining.py, checked against
transformers' Wav2Vec2ForPreTraining in tests/test_pretraining.py.

Shape legend: B batch, L samples, T frames, C conv channels, D model width, G codebook groups, V codewords per group,
d codevector width, P the space where guesses and targets are compared, K negatives per hidden frame.
"""

# %%
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import minispeechseq
from minispeechseq import (
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForPreTraining,
    compute_mask_indices,
    load_audio,
    sample_negative_indices,
)

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small: a second thread costs more in waiting than it saves
SAMPLES = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled", "samples")

# %% [markdown]
# ## 1. A tiny model and four unlabelled recordings
#
# The conv stack has wav2vec2's hop (5 * 4 * 4 * 4 = 320 samples = 20 ms per frame) in 4 layers instead of 7; the
# transformer is 2 layers of width 32. The codebook: G = 2 groups of V = 16 codewords (facebook/wav2vec2-base has
# 2 groups of 320), so a frame's target is one of 16 * 16 = 256 combinations. K = 10 negatives per hidden frame
# (base: 100); kappa = 0.1 (the temperature of the line-up's softmax, as in base). Dropouts are 0 so that the
# by-hand checks below see exactly what the library computes. The recordings are the shipped digit samples; their
# transcripts are never read; each is cut to its first 1.25 s, to keep section 6 to seconds.

# %%
K = 10
config = Wav2Vec2Config(
    conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4), hidden_size=32,
    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.5, mask_time_length=5,
    num_codevector_groups=2, num_codevectors_per_group=16, codevector_dim=16, proj_codevector_dim=16,
    num_negatives=K, contrastive_logits_temperature=0.1, diversity_loss_weight=0.1,
)
model = Wav2Vec2ForPreTraining(config).eval()
G, V = config.num_codevector_groups, config.num_codevectors_per_group

names = ["000578.wav", "000660.wav", "001117.wav", "001484.wav"]
waves = [load_audio(os.path.join(SAMPLES, n))[:20_000] for n in names]  # at most 1.25 s each: seconds to train
batch = Wav2Vec2FeatureExtractor(do_normalize=True)(waves, sampling_rate=16000, padding=True,
                                                    return_attention_mask=True, return_tensors="pt")
x, sample_mask = batch.input_values, batch.attention_mask  # (B, L), (B, L)
B = x.shape[0]
T = int(model.encoder.output_lengths(torch.tensor(x.shape[1])))
frames = model.encoder.frame_attention_mask(T, sample_mask).bool()  # (B, T): True on real frames, not padding
print(f"{model.num_parameters()} parameters; batch {tuple(x.shape)} -> {T} frames; real frames per utterance: "
      f"{frames.sum(-1).tolist()}")
assert frames.shape == (B, T) and frames.sum(-1).tolist() == [
    int(model.encoder.output_lengths(torch.tensor(len(w)))) for w in waves]

# %% [markdown]
# ## 2. The quantizer, by hand, and the codebook's perplexity
#
# The quantizer reads the conv features (B, T, C) and, for each frame and each group, scores the V codewords with
# one Linear (C -> G V logits); it picks the best one per group and concatenates the picks: (B, T, d), d = G * d/G.
# So a frame becomes one of V^G discrete "units", a learned alphabet of sounds, and the transformer must guess the
# unit of each hidden frame. In eval mode the pick is a plain argmax; we redo it with indexing and compare.
#
# How much of the codebook is used is measured by the *perplexity*: average the one-hot picks over the hidden
# frames (a distribution over V codewords per group), take exp(entropy) per group, add the groups. It is G V when
# every codeword is picked equally often and G when each group always picks the same one.

# %%
g = torch.Generator().manual_seed(0)
hidden = compute_mask_indices((B, T), config.mask_time_prob, config.mask_time_length, attention_mask=frames,
                              min_masks=2, generator=g)  # (B, T) bool; section 4 looks at it
with torch.no_grad():
    features = model.encoder(x, attention_mask=sample_mask).extract_features  # (B, T, C)
    q_library, perplexity_library = model.quantizer(features, hidden)  # (B, T, d), ()
    logits = model.quantizer.proj(features).view(B * T, G, V)  # (B T, G, V)
    picks = logits.argmax(dim=-1)  # (B T, G): one codeword per group
    codewords = model.quantizer.codevectors  # (G, V, d/G)
    q_hand = torch.cat([codewords[grp, picks[:, grp]] for grp in range(G)], dim=-1).view(B, T, -1)  # (B, T, d)

    one_hot = F.one_hot(picks, V).float()[hidden.view(-1)]  # (hidden frames, G, V)
    use = one_hot.mean(dim=0)  # (G, V): how often each codeword is picked
    entropy = -(use * torch.log(use.clamp_min(1e-30))).sum(dim=-1)  # (G,); 0 log 0 counts as 0
    perplexity_hand = entropy.exp().sum()

q_gap = (q_hand - q_library).abs().max().item()
p_gap = abs(perplexity_hand.item() - perplexity_library.item())
print(f"quantized frames by hand vs library: max |diff| = {q_gap:.1e} (tolerance 1e-6)")
print(f"perplexity by hand {perplexity_hand:.3f}, library {perplexity_library:.3f}: |diff| = {p_gap:.1e} "
      f"(tolerance 1e-4); the range is {G} (one codeword per group) to {G * V} (all used evenly)")
print(f"distinct (group 0, group 1) units among {int(hidden.sum())} hidden frames: "
      f"{len(set(map(tuple, picks[hidden.view(-1)].tolist())))} of {V ** G} possible")
assert q_gap <= 1e-6, q_gap
assert p_gap <= 1e-4, p_gap
assert G <= perplexity_library <= G * V

# %% [markdown]
# ## 3. The Gumbel softmax, and its temperature
#
# An argmax has no gradient: the quantizer's Linear could never learn which codeword to pick. wav2vec 2.0 uses the
# Gumbel softmax (Jang, Gu, Poole 2017, arXiv:1611.01144). Two facts make it work:
#
# - **Gumbel-max**: add independent Gumbel noise g = -log(-log u), u ~ U(0, 1), to the logits and take the argmax:
#   codeword v comes out with probability softmax(logits)_v exactly. A noisy argmax is a sample from the softmax.
#   We check it on one frame's 16 logits with 20,000 draws.
# - **Straight-through**: in training the forward pass uses the hard one-hot pick, and the backward pass uses the
#   gradient of the soft version softmax((logits + g) / tau), written `hard - soft.detach() + soft`: equal to `hard`
#   in value, with `soft`'s gradient. The temperature tau sets how soft that version is: at tau = 2 the soft
#   probabilities are spread (every codeword gets gradient), at 0.5 they are close to the one-hot pick. wav2vec 2.0
#   decays tau from 2 to 0.5 over training (fairseq: max(2 * 0.999995^step, 0.5)); `model.set_gumbel_temperature`
#   sets it.

# %%
frame_logits = logits[0, 0]  # (V,) group 0 of frame 0
draws = 20_000
u = torch.rand(draws, V, generator=g)
gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))  # (draws, V)
counts = torch.bincount((frame_logits + gumbel).argmax(dim=-1), minlength=V).float()
freq_gap = (counts / draws - frame_logits.softmax(-1)).abs().max().item()
print(f"\nGumbel-max: argmax frequencies vs softmax over {draws} draws: max |diff| = {freq_gap:.4f} (tolerance 0.015, "
      f"about 4 standard errors)")
assert freq_gap < 0.015, freq_gap

peak = {}
for tau in (2.0, 1.0, 0.5):
    soft = ((logits + gumbel[:B * T, None]) / tau).softmax(dim=-1)  # (B T, G, V)
    peak[tau] = soft.max(dim=-1).values.mean().item()  # the soft choice's largest probability, on average
print("average largest soft probability at tau = 2, 1, 0.5:", ", ".join(f"{p:.2f}" for p in peak.values()))
assert peak[2.0] < peak[1.0] < peak[0.5], peak

# Straight-through, in the library's training mode: the forward pass picks whole codewords, and yet the Linear
# that scores them receives a gradient.
model.train()
model.quantizer.proj.weight.grad = None
q_train, _ = model.quantizer(features, hidden)  # (B, T, d)
q_train.sum().backward()
slices = q_train.detach().view(B * T, G, 1, -1)  # (B T, G, 1, d/G)
nearest = (slices - codewords.detach()[None]).abs().amax(dim=-1).min(dim=-1).values.max().item()
grad = model.quantizer.proj.weight.grad.abs().max().item()
print(f"training mode: every slice is a codeword (max |diff| to the nearest {nearest:.1e}, tolerance 1e-6); "
      f"the scoring Linear's gradient is nonzero (max {grad:.2e})")
assert nearest <= 1e-6 and grad > 0
model.zero_grad()
model.eval()

# %% [markdown]
# ## 4. Hide spans, draw negatives
#
# `compute_mask_indices` picks span starts so that about `mask_time_prob` of each utterance's real frames would be
# covered, then hides `mask_time_length` frames from each start (base: 0.65 and 10, so about half the frames are
# hidden, since spans overlap). The hidden frames' inputs to the transformer become one learned vector,
# `masked_spec_embed`; the quantizer still reads their true conv features: those are the answers.
#
# `sample_negative_indices` gives each hidden frame K distractors: other hidden frames of the *same* utterance,
# drawn uniformly with replacement, never the frame itself. Same utterance, so the speaker and the microphone cannot
# give the answer away; the transformer must tell this moment from other moments of the same voice. The indices
# point into the flattened (B T) batch, so utterance b's frames are b T .. b T + T - 1.

# %%
negatives = sample_negative_indices((B, T), K, hidden, generator=g)  # (B, T, K)
row = "".join("#" if h else ("." if f else " ") for h, f in zip(hidden[0].tolist(), frames[0].tolist()))
print(f"\nutterance 0, one character per 20 ms frame (# hidden, . visible):\n{row}")
shares = (hidden.sum(-1) / frames.sum(-1)).tolist()
print("hidden share of each utterance's real frames:", ", ".join(f"{s:.0%}" for s in shares))
t = int(hidden[0].nonzero()[len(hidden[0].nonzero()) // 2])  # a hidden frame in the middle of utterance 0
line_up = negatives[0, t].tolist()
print(f"hidden frame {t} of utterance 0: its {K} negatives are frames {line_up}")
assert all(0 <= i < T and hidden[0, i] and i != t for i in line_up), "negatives: other hidden frames, same utterance"
assert not hidden[~frames].any(), "no padded frame is ever hidden"

# %% [markdown]
# ## 5. The contrastive loss and the diversity loss, by hand
#
# For a hidden frame t, the transformer's guess c_t = project_hid(context_t) is compared with the line-up
# [target_t, target_neg1 .. target_negK] (each project_q(q)) by cosine similarity, divided by kappa = 0.1 (cosines
# lie in [-1, 1]; dividing by 0.1 lets the softmax become confident). The loss is cross-entropy with the right
# answer at index 0: -log softmax(similarities)[0], summed over the hidden frames (as fairseq and transformers do).
# One detail: a distractor whose target is *identical* to the answer (the same codewords: common while the
# codebook is little used) cannot be told apart from it, so it is removed from the line-up (its logit is -inf)
# instead of being counted as a mistake. The guesses of visible frames are computed but never scored.
#
# Left alone, that game has a cheat: map every frame to the same codeword and every distractor is identical to
# its answer, nothing is left in the line-up, loss 0. The diversity loss forbids it:
# (G V - perplexity) / (G V), here scaled by the number of hidden frames like the contrastive sum, added with
# weight alpha = 0.1. (Computed on the noiseless softmax in training, on the picks in eval.)

# %%
with torch.no_grad():
    out = model(x, attention_mask=sample_mask, mask_time_indices=hidden, sampled_negative_indices=negatives)
    guesses, targets = out.projected_states, out.projected_quantized_states  # (B, T, P) each
    P = targets.shape[-1]
    flat = targets.reshape(B * T, P)  # (B T, P): what the negative indices point into
    where = hidden.view(-1)  # (B T,) which frames are scored
    guess = guesses.reshape(B * T, P)[where]  # (N, P), N hidden frames
    answer = flat[where]  # (N, P)
    distractors = flat[negatives.view(B * T, K)[where]]  # (N, K, P)
    line = torch.cat([answer[:, None], distractors], dim=1)  # (N, 1 + K, P): the answer first
    similarity = F.cosine_similarity(guess[:, None], line, dim=-1) / config.contrastive_logits_temperature  # (N, 1+K)
    same_as_answer = (distractors == answer[:, None]).all(dim=-1)  # (N, K)
    similarity[:, 1:] = similarity[:, 1:].masked_fill(same_as_answer, -math.inf)
    contrastive_hand = -similarity.log_softmax(dim=-1)[:, 0].sum()
    N = int(where.sum())
    diversity_hand = (G * V - out.codevector_perplexity) / (G * V) * N
    loss_hand = contrastive_hand + config.diversity_loss_weight * diversity_hand

print(f"\n{N} hidden frames, {int(same_as_answer.sum())} of their {N * K} distractors identical to the answer")
for name, hand, lib in (("contrastive", contrastive_hand, out.contrastive_loss),
                        ("diversity", diversity_hand, out.diversity_loss), ("total", loss_hand, out.loss)):
    rel = abs(hand.item() - lib.item()) / max(1.0, abs(lib.item()))
    print(f"{name:12s} loss by hand {hand.item():9.4f}, library {lib.item():9.4f}: relative |diff| {rel:.1e} "
          "(tolerance 1e-5)")
    assert rel <= 1e-5, (name, rel)
print(f"per hidden frame: {out.contrastive_loss.item() / N:.3f}; guessing uniformly would give ln(1 + K) = "
      f"{math.log(1 + K):.3f} (random cosines divided by 0.1 can do worse than that)")


# %% [markdown]
# ## 6. A few seconds of pretraining, and one hidden frame's line-up
#
# 60 AdamW steps on the same four recordings, drawing new spans and new negatives every step (as pretraining
# does), with tau decayed from 2 to 0.5. Four utterances teach nothing general; the point is to watch the game
# being learned. We score before and after on the spans and negatives of section 4, and draw the line-up of the
# hidden frame t chosen there: the cosine similarity of the guess with its answer (red) and with each distractor.


# %%
def score() -> tuple[float, float, torch.Tensor]:
    """Contrastive loss per hidden frame, the share of hidden frames whose answer beats every distractor, and the
    cosine line-up of frame t, on the fixed spans and negatives of section 4 (eval mode: hard picks, no noise)."""
    model.eval()
    with torch.no_grad():
        o = model(x, attention_mask=sample_mask, mask_time_indices=hidden, sampled_negative_indices=negatives)
        c, q = o.projected_states, o.projected_quantized_states  # (B, T, P)
        cand = torch.cat([q.reshape(B * T, P)[None], q.reshape(B * T, P)[negatives.view(B * T, K).T]])  # (1+K, BT, P)
        cos = F.cosine_similarity(c.reshape(1, B * T, P), cand, dim=-1)  # (1 + K, B T)
        # ">=": a distractor identical to the answer ties with it and does not count against it, as in the loss.
        top = (cos[0] >= cos[1:].max(dim=0).values)[hidden.view(-1)].float().mean().item()
    return o.contrastive_loss.item() / N, top, cos[:, t]  # frame t of utterance 0 is row t of the flat batch


loss_before, top_before, cos_before = score()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
steps = 60
for step in range(steps):
    model.train()
    model.set_gumbel_temperature(max(2.0 * 0.25 ** (step / steps), 0.5))  # 2 -> 0.5
    spans = compute_mask_indices((B, T), config.mask_time_prob, config.mask_time_length, attention_mask=frames,
                                 min_masks=2, generator=g)
    o = model(x, attention_mask=sample_mask, mask_time_indices=spans,
              sampled_negative_indices=sample_negative_indices((B, T), K, spans, generator=g))
    optimizer.zero_grad()
    (o.loss / spans.sum()).backward()
    optimizer.step()
loss_after, top_after, cos_after = score()
perplexity_after = model(x, attention_mask=sample_mask, mask_time_indices=hidden).codevector_perplexity.item()
print(f"\ncontrastive loss per hidden frame: {loss_before:.3f} -> {loss_after:.3f} (chance ln(1 + K) = "
      f"{math.log(1 + K):.3f}); answer ranked first: {top_before:.0%} -> {top_after:.0%} of hidden frames "
      f"(chance 1 in {1 + K}); codebook perplexity now {perplexity_after:.1f} of {G * V}")
assert loss_after < min(loss_before, math.log(1 + K)), (loss_before, loss_after)
assert top_after > top_before, (top_before, top_after)

fig = plt.figure(figsize=(9, 5.2))
grid = fig.add_gridspec(2, 2, height_ratios=[1, 3])
strip = fig.add_subplot(grid[0, :])
strip.imshow(np.where(frames[0].numpy(), hidden[0].float().numpy(), np.nan)[None], aspect="auto", cmap="Greys", vmin=-0.5,
             vmax=1.5, extent=(-0.5, T - 0.5, 0, 1))
strip.scatter(line_up, [0.5] * K, marker="v", color="tab:blue", label=f"its {K} negatives (hidden frames too)")
strip.scatter([t], [0.5], marker="*", s=160, color="tab:red", label=f"hidden frame {t}")
strip.set_yticks([])
strip.set_xlabel("frame of utterance 0 (20 ms each; dark: hidden spans, light: visible)")
strip.legend(loc="upper right", fontsize=8, ncol=2, bbox_to_anchor=(1, 1.75))
for col, (cos, title) in enumerate(((cos_before, "random init"), (cos_after, f"after {steps} steps"))):
    ax = fig.add_subplot(grid[1, col])
    ax.bar(range(1 + K), cos.numpy(), color=["tab:red"] + ["tab:blue"] * K)
    ax.set_xticks(range(1 + K), ["answer"] + [str(i) for i in line_up], rotation=90, fontsize=8)
    prob = (cos / config.contrastive_logits_temperature).softmax(0)[0].item()
    ax.set_title(f"{title}: softmax(cos / 0.1) gives the answer {prob:.0%}", fontsize=9)
    ax.set_ylim(-1, 1)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("line-up (distractors named by their frame)")
    if col == 0:
        ax.set_ylabel("cosine(guess, candidate)")
fig.suptitle(f"one hidden frame's line-up: its guess against its own quantized features and {K} distractors",
             fontsize=10)
fig.tight_layout()
picture = os.path.join(OUT, "13_line_up.png")
fig.savefig(picture, dpi=120)
plt.close(fig)
print("picture:", picture)

# %% [markdown]
# ## 7. The other way: HuBERT
#
# HuBERT (Hsu et al. 2021, arXiv:2106.07447) keeps the network (the same conv stack and transformer; in
# transformers, `HubertModel` differs from `Wav2Vec2Model` in details only) and changes the game. Its targets
# come from outside the model: first k-means clusters of MFCC-like features computed from the audio (100 clusters
# in the paper's first round), later k-means clusters of the first model's own hidden layer (500 clusters). The
# transformer sees the audio with spans masked, as above, and predicts each masked frame's *cluster id* with a
# plain softmax over the clusters: classification, no line-up, no quantizer, no diversity loss, because the
# targets are fixed before training and cannot collapse. The price is the offline clustering, repeated per round.
#
# This project's own recipe for pretraining a small encoder this way, on unlabelled audio only, is the
# `minispeechseq pretrain` command.
#
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Set `diversity_loss_weight=0.0` in section 1. Observe: the codebook perplexity after training ends lower
#    (about 19 of 32 instead of about 23 when we tried it): nothing pushes the quantizer to use its codewords.
# 2. Set `num_codevectors_per_group=2`. Observe: many distractors are now identical to their answer (section 5
#    prints how many: about a quarter instead of 3 %) and leave the line-up, so the loss and the "ranked first"
#    share look better (0.75 and 76 % when we tried it) with a codebook of only 4 units to tell apart.
# 3. In section 3, draw the soft probabilities at tau = 0.1 and tau = 10. Observe: the largest one goes to 1
#    (the gradient vanishes for every codeword but the pick) and to 1/16 (every codeword gets the same push).
# 4. Set `mask_time_prob=0.9`. Observe: about two thirds of the frames are hidden (overlapping spans keep it below
#    0.9), each guess has less context to reason from, and the loss after training stays higher (1.7 against 1.3
#    when we tried it).
#
# ## References
#
# - Baevski, Zhou, Mohamed, Auli (2020). wav2vec 2.0: A Framework for Self-Supervised Learning of Speech
#   Representations. NeurIPS 2020. arXiv:2006.11477 (section 3: the quantizer, masking, the two losses)
# - Hsu, Bolte, Tsai, Lakhotia, Salakhutdinov, Mohamed (2021). HuBERT: Self-Supervised Speech Representation
#   Learning by Masked Prediction of Hidden Units. IEEE/ACM TASLP. arXiv:2106.07447
# - Jang, Gu, Poole (2017). Categorical Reparameterization with Gumbel-Softmax. ICLR 2017. arXiv:1611.01144
# - van den Oord, Li, Vinyals (2018). Representation Learning with Contrastive Predictive Coding.
#   arXiv:1807.03748 (CPC: the contrastive line-up, InfoNCE, that wav2vec 2.0's loss is)
