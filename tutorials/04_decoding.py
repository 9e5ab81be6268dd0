"""Tutorial 4: decoding, step by step.

A decoder gives, for a prefix of tokens, scores (logits) for the next token. Decoding turns those into a
sentence. We first play with a toy "language model" whose next-token distribution is a fixed table, so every
number can be checked by hand; then we run the very same functions on a tiny speech model.

The pieces (minispeechseq/generation/):
    logits processors  pure functions (tokens so far, scores) -> scores: forbid, force, reshape
    search             greedy / sample pick one token; BeamSearch keeps the K best prefixes
    loop               generate(): encode once, then decoder step -> processors -> search, until EOS
"""

import itertools
import math
import os

import torch

from minispeechseq.generation import (
    BeamSearch,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    greedy,
    sample,
)

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT", ".")

# ------------------------------------------------------------------------------------------------------------
# 1. A toy language model: vocabulary {<s>=0, </s>=1, "a"=2, "b"=3}; the next-token probabilities depend only
#    on the last token. Greedy decoding is myopic: after <s> it takes "a" (0.6) over "b" (0.4), but "a" is
#    followed by a flat, uncertain distribution, while "b" is almost surely followed by </s>.
# ------------------------------------------------------------------------------------------------------------
BOS, EOS, A, B = 0, 1, 2, 3
NAMES = ["<s>", "</s>", "a", "b"]
TABLE = torch.tensor(
    [
        [0.0, 0.0, 0.6, 0.4],  # after <s>
        [0.0, 1.0, 0.0, 0.0],  # after </s> (never used: sequences stop)
        [0.0, 0.34, 0.33, 0.33],  # after "a": unsure
        [0.0, 0.95, 0.03, 0.02],  # after "b": confident end
    ]
)


def toy_log_probs(prefixes: torch.Tensor) -> torch.Tensor:
    """(N, S) -> (N, V) log-probabilities of the next token."""
    return TABLE[prefixes[:, -1]].clamp_min(1e-9).log()


def sentence_log_prob(tokens: list[int]) -> float:
    return sum(math.log(TABLE[a, b]) for a, b in itertools.pairwise(tokens))


# Greedy: argmax at every step.
ids = torch.tensor([[BOS]])
while ids[0, -1] != EOS and ids.shape[1] < 4:
    ids = torch.cat([ids, greedy(toy_log_probs(ids))[:, None]], dim=1)
greedy_tokens = ids[0].tolist()
print("greedy:", " ".join(NAMES[t] for t in greedy_tokens), f"log p = {sentence_log_prob(greedy_tokens):.3f}")
assert greedy_tokens == [BOS, A, EOS]
# The better sentence that greedy missed:
best = [BOS, B, EOS]
assert sentence_log_prob(best) > sentence_log_prob(greedy_tokens)  # 0.4*0.95 = 0.38 > 0.6*0.34 = 0.204

# ------------------------------------------------------------------------------------------------------------
# 2. Beam search keeps the K best prefixes by summed log-probability. With K=2 it keeps "b" alive after the
#    first step and finds <s> b </s>. Finished sentences are ranked by score / length**length_penalty.
#    We drive `BeamSearch` by hand and draw the tree of what it kept at each step.
# ------------------------------------------------------------------------------------------------------------
beams = BeamSearch(torch.tensor([BOS]), num_beams=2, max_length=4, eos_token_id=[EOS], pad_token_id=EOS,
                   length_penalty=1.0, early_stopping=True)
print("\nbeam search, K=2 (running beams after each step):")
while not beams.done:
    beams.step(toy_log_probs(beams.running_ids()))
    for k in range(2):
        seq = beams.running[0, k, : beams.cur_len].tolist()
        print(f"  step {beams.cur_len - 1}  {'  ' * (beams.cur_len - 2)}└─ {' '.join(NAMES[t] for t in seq)}"
              f"   (sum log p = {beams.running_scores[0, k]:.3f})")
sequences, scores = beams.finalize(num_return_sequences=2)
print("finished, best first:")
for seq, score in zip(sequences.tolist(), scores.tolist()):
    print(f"  {' '.join(NAMES[t] for t in seq)}   score = {score:.3f}")
assert sequences[0, :3].tolist() == best
assert abs(scores[0].item() - sentence_log_prob(best) / 2) < 1e-6  # 2 generated tokens, length_penalty 1

# ------------------------------------------------------------------------------------------------------------
# 3. Sampling: draw from softmax(scores). Temperature rescales the logits (T<1 sharper, T>1 flatter); top-k
#    keeps the k best tokens; top-p keeps the smallest set of best tokens whose mass reaches p. They are applied
#    in that order (transformers' order). We plot each distribution and check it against its definition.
# ------------------------------------------------------------------------------------------------------------
logits = torch.tensor([[3.0, 2.2, 1.8, 1.0, 0.5, 0.0, -0.5, -1.5, -2.0, -3.0]])
settings = {
    "plain": [],
    "T = 0.5": [Temperature(0.5)],
    "T = 2.0": [Temperature(2.0)],
    "top-k = 3": [TopK(3)],
    "top-p = 0.8": [TopP(0.8)],
}
dists = {name: apply_processors(ps, None, logits).softmax(-1)[0] for name, ps in settings.items()}
p = logits.softmax(-1)[0]
assert torch.allclose(dists["T = 0.5"], (logits / 0.5).softmax(-1)[0])
assert (dists["top-k = 3"] > 0).sum() == 3
assert torch.allclose(dists["top-k = 3"][:3], p[:3] / p[:3].sum())
kept = int((dists["top-p = 0.8"] > 0).sum())
assert p[: kept - 1].sum() < 0.8 <= p[:kept].sum()  # the smallest prefix of the sorted tokens reaching 0.8
# Same generator seed, same draws; top-k = 1 is greedy.
draws = sample(logits.expand(1000, -1), torch.Generator().manual_seed(0))
assert torch.equal(draws, sample(logits.expand(1000, -1), torch.Generator().manual_seed(0)))
assert bool((sample(TopK(1)(None, logits.expand(50, -1))) == greedy(logits)).all())
print("\nfrequency of token 0 in 1000 plain draws:", (draws == 0).float().mean().item(), f"(p = {p[0]:.3f})")

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, len(dists), figsize=(3 * len(dists), 2.6), sharey=True)
for ax, (name, d) in zip(axes, dists.items()):
    ax.bar(range(len(d)), d.numpy(), color="tab:blue")
    ax.set_title(name)
    ax.set_xlabel("token")
axes[0].set_ylabel("probability")
fig.tight_layout()
path = os.path.join(OUT, "04_sampling_distributions.png")
fig.savefig(path, dpi=80)
plt.close(fig)
assert os.path.getsize(path) > 0
print("plot:", path)

# ------------------------------------------------------------------------------------------------------------
# 4. The same functions on a tiny (random) speech model: `model.generate` is `generate(model, ...)`, the loop
#    above with a real decoder, a KV cache, and a beam bookkeeping that reorders that cache.
# ------------------------------------------------------------------------------------------------------------
from minispeechseq import (
    GPT2Config,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    Wav2Vec2Config,
)

torch.manual_seed(0)
encoder = Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24,
                         conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2)
decoder = GPT2Config(vocab_size=12, n_embd=24, n_layer=2, n_head=2, n_positions=64, add_cross_attention=True,
                     is_decoder=True)
config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
config.decoder_start_token_id, config.eos_token_id, config.pad_token_id = 1, 2, 3
model = SpeechEncoderDecoderModel(config=config).eval()
audio = torch.randn(2, 1200)

tokens = model.generate(audio, max_new_tokens=8)
print("\ngreedy on a tiny random speech model:\n", tokens)
assert tokens.shape[0] == 2 and tokens.shape[1] <= 9 and bool((tokens[:, 0] == 1).all())
beams_out = model.generate(audio, max_new_tokens=8, num_beams=3, num_return_sequences=2, return_dict=True)
print("beam search, 2 best of 3 beams per utterance:\n", beams_out.sequences, "\nscores", beams_out.sequences_scores)
assert beams_out.sequences.shape[0] == 4
# The KV cache is an optimisation only: recomputing the whole prefix at every step gives the same tokens.
assert torch.equal(model.generate(audio, max_new_tokens=8, use_cache=False), tokens)
