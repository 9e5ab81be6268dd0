"""Tutorial 04: decoding, step by step: greedy, beam search as it really runs, length penalty, forcing, sampling.

Run it:  pip install -e ".[tutorials]" && python tutorials/04_decoding.py
         (pictures go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing)

A decoder gives, for a prefix of tokens, scores (logits) for the next token. Decoding turns those into a sentence.
We first use toy "language models" whose next-token distribution is a fixed table, so every number can be checked
by hand; then we run the very same functions on the trained digits model. The pieces (minispeechseq/generation/):

    logits processors  pure functions (tokens so far, scores) -> scores: forbid, force, reshape
    search             greedy / sample pick one token; BeamSearch keeps the K best prefixes
    loop               generate(): encode once, then decoder step -> processors -> search, until </s>

Shape legend: B utterances, K beams, N = B*K decoder rows, S tokens so far, V vocabulary, C = 2K candidates,
T encoder frames, D width.
"""

# %%
import csv
import itertools
import math
import os

import matplotlib.pyplot as plt
import torch

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel, load_audio
from minispeechseq.generation import (
    BeamSearch,
    ForceToken,
    Temperature,
    TopK,
    TopP,
    apply_processors,
    greedy,
    sample,
)
from minispeechseq.training.metrics import word_error_rate

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))

# %% [markdown]
# ## 1. Greedy decoding is myopic
#
# A toy language model: vocabulary {<s>=0, </s>=1, "a"=2, "b"=3}; the next-token probabilities depend only on the
# last token. After <s>, greedy takes "a" (0.6) over "b" (0.4), but "a" is followed by a flat, unsure distribution,
# while "b" is almost surely followed by </s>. The sentence greedy misses is the more probable one.

# %%
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


def toy_log_probs(prefixes: torch.Tensor, table: torch.Tensor = TABLE) -> torch.Tensor:
    """(N, S) -> (N, V) log-probabilities of the next token (probability 0 -> a very low finite score)."""
    return table[prefixes[:, -1]].clamp_min(1e-9).log()


def sentence_log_prob(tokens: list[int], table: torch.Tensor = TABLE) -> float:
    return sum(math.log(table[a, b]) for a, b in itertools.pairwise(tokens))


ids = torch.tensor([[BOS]])
while ids[0, -1] != EOS and ids.shape[1] < 4:
    ids = torch.cat([ids, greedy(toy_log_probs(ids))[:, None]], dim=1)
greedy_tokens = ids[0].tolist()
best = [BOS, B, EOS]
print("greedy:", " ".join(NAMES[t] for t in greedy_tokens), f" log p = {sentence_log_prob(greedy_tokens):.3f};",
      " better:", " ".join(NAMES[t] for t in best), f" log p = {sentence_log_prob(best):.3f}")
assert greedy_tokens == [BOS, A, EOS]
assert sentence_log_prob(best) > sentence_log_prob(greedy_tokens)  # 0.4*0.95 = 0.38 > 0.6*0.34 = 0.204

# %% [markdown]
# ## 2. Beam search as it really runs
#
# `BeamSearch` keeps K running prefixes per utterance, scored by their summed log-probability. One step:
#
# 1. every running beam proposes every token: K*V continuations, each scored parent score + log p(token);
# 2. the best C = 2K of them are the *candidates* (2K, so that even if K of them end now, K can go on);
# 3. candidates ending in </s> among the first K become *finished hypotheses*, ranked by the normalised score
#    sum log p / length^alpha (section 3); the best K candidates that did not end become the new running beams;
# 4. it stops when the best running beam, *scored as if it ended now* (its sum / its current length^alpha),
#    cannot beat the worst of the K finished hypotheses (transformers' default heuristic, `early_stopping=False`;
#    section 3 shows when that is not exact).
#
# We drive it by hand, recompute each step's candidates ourselves (and check them against what it kept), and
# draw the tree: grey = a candidate dropped, blue = kept running, green = finished (with its normalised score).

# %%
K = 2


def run_beam_search(table: torch.Tensor, length_penalty: float, max_length: int = 5):
    """Beam search over a toy table, recording each step's candidates and what became of them."""
    beams = BeamSearch(torch.tensor([BOS]), num_beams=K, max_length=max_length, eos_token_id=[EOS], pad_token_id=EOS,
                       length_penalty=length_penalty)
    steps = []
    while not beams.done:
        prefixes = beams.running_ids()  # (K, S)
        log_probs = toy_log_probs(prefixes, table)  # (K, V)
        total = (beams.running_scores[0, :, None] + log_probs).view(-1)  # (K*V,) score of every continuation
        scores, flat = total.topk(beams.num_candidates)  # (C,): the candidates
        V = log_probs.shape[1]
        candidates = [(tuple(prefixes[f // V].tolist()) + (int(f % V),), float(sc)) for sc, f in zip(scores, flat)]
        beams.step(log_probs)
        running = {tuple(beams.running[0, k, : beams.cur_len].tolist()) for k in range(K)}
        finished = {tuple(beams.finished[0, k, : beams.finished_len[0, k]].tolist()): float(beams.finished_scores[0, k])
                    for k in range(K) if beams.is_finished[0, k]}
        kept_live = [c for c, _ in candidates if c[-1] != EOS and len(c) < max_length][:K]
        if kept_live:  # (at max_length every candidate ends, and the running beams are left as they were)
            assert running == set(kept_live), "the running beams are the K best candidates that did not end"
        running = running if kept_live else set()
        steps.append([(seq, sc, "running" if seq in running else "finished" if seq in finished else "dropped",
                       finished.get(seq)) for seq, sc in candidates])
    sequences, final_scores = beams.finalize(num_return_sequences=K)
    return steps, sequences, final_scores


steps, sequences, final_scores = run_beam_search(TABLE, length_penalty=1.0)
for t, step in enumerate(steps, 1):
    print(f"step {t}: " + "; ".join(f"{' '.join(NAMES[i] for i in seq[1:])} {sc:.2f} {status}"
                                     for seq, sc, status, _ in step))
print("finished, best first:", [(" ".join(NAMES[i] for i in seq), round(float(v), 3))
                                for seq, v in zip(sequences.tolist(), final_scores)])
assert sequences[0, :3].tolist() == best, "beam search finds the sentence greedy missed"
assert abs(final_scores[0].item() - sentence_log_prob(best) / 2) < 1e-6  # 2 generated tokens, alpha = 1


def draw_tree(steps: list, ax: plt.Axes, title: str) -> None:
    """One column per step; each candidate a node joined to its parent; colour = what became of it."""
    colour = {"running": "tab:blue", "finished": "tab:green", "dropped": "lightgrey"}
    y_of = {(BOS,): 0.0}
    ax.scatter([0], [0], color="black", zorder=3)
    ax.annotate("<s>", (0, 0), textcoords="offset points", xytext=(-8, 8), fontsize=8)
    for t, step in enumerate(steps, 1):
        for row, (seq, score, status, normalised) in enumerate(step):
            y = (len(step) - 1) / 2 - row  # best candidate on top
            y_of[seq] = y
            ax.plot([t - 1, t], [y_of[seq[:-1]], y], color=colour[status], lw=1.5, zorder=1)
            ax.scatter([t], [y], color=colour[status], s=40, zorder=3)
            label = f"{NAMES[seq[-1]]}  {score:.2f}"
            if normalised is not None:
                label += f"  -> {normalised:.3f}"
            ax.annotate(label, (t, y), textcoords="offset points", xytext=(6, -3), fontsize=8, color="black")
    for status, c in colour.items():
        ax.plot([], [], color=c, lw=3, label={"running": "kept running", "finished": "finished (-> score / length^α)",
                                               "dropped": "candidate dropped"}[status])
    ax.set_xticks(range(len(steps) + 1))
    ax.set_xlim(-0.3, len(steps) + 0.9)
    ax.set_yticks([])
    ax.set_xlabel("step (tokens generated); each node: token, summed log p of its prefix")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)


# %% [markdown]
# ## 3. Length penalty: what "length" is, and which sign of alpha favours what
#
# A finished hypothesis is ranked by score = (sum of its log-probabilities) / length^alpha, where *length* counts
# the generated tokens, </s> included, the start token not (transformers' `length_penalty`). The sum is negative
# and grows more negative with every token, so:
#
# - alpha = 0: the raw sum; every extra token costs, so short hypotheses are favoured;
# - alpha = 1 (the default): the average log-probability per token; length is neutral-ish;
# - alpha > 0 larger: dividing a negative sum by a larger number favours *longer* hypotheses; alpha < 0 favours
#   shorter ones still more than alpha = 0.
#
# A second toy where it decides the winner: "b </s>" has log p = ln 0.48 + ln 0.6 = -1.245 (2 tokens), "a c </s>"
# has ln 0.52 + ln 0.65 + ln 0.69 = -1.456 (3 tokens). By the sum the short one wins; per token the long one does.

# %%
C = 4  # a fifth token, "c"
NAMES.append("c")
TABLE2 = torch.tensor(
    [
        [0.0, 0.0, 0.52, 0.48, 0.0],  # after <s>
        [0.0, 1.0, 0.0, 0.0, 0.0],  # after </s>
        [0.0, 0.05, 0.15, 0.15, 0.65],  # after "a": "c" likely
        [0.0, 0.6, 0.2, 0.1, 0.1],  # after "b": </s> likely
        [0.0, 0.69, 0.11, 0.1, 0.1],  # after "c": </s> likely
    ]
)
short, long_ = [BOS, B, EOS], [BOS, A, C, EOS]
winners, trees = {}, {}
for alpha in (-1.0, 0.0, 1.0, 2.0):
    trees[alpha], seqs, scores = run_beam_search(TABLE2, length_penalty=alpha)
    winners[alpha] = [t for t in seqs[0].tolist()[: seqs[0].tolist().index(EOS) + 1]]
    print(f"length_penalty alpha = {alpha:+.0f}: winner {' '.join(NAMES[t] for t in winners[alpha][1:])}"
          f" (score {scores[0]:.3f})")
assert abs(sentence_log_prob(short, TABLE2) - (-1.245)) < 1e-3 and abs(sentence_log_prob(long_, TABLE2) - (-1.456)) < 1e-3
assert winners[-1.0] == winners[0.0] == short and winners[1.0] == winners[2.0] == long_

fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
draw_tree(steps, axes[0], "toy 1, K = 2, alpha = 1: beam search keeps 'b' and finds 'b </s>'")
draw_tree(trees[1.0], axes[1], "toy 2, K = 2, alpha = 1: 'a c </s>' (-1.456 / 3) beats 'b </s>' (-1.245 / 2)")
path = os.path.join(OUT, "04_beam_search_tree.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)

# %% [markdown]
# ### When may beam search stop? The heuristic and the exact rule
#
# Toy 1 stopped after step 2: both finished slots were full, and the best running beam ("a b" and "a a" tie at
# summed log p -1.62) would score -1.62 / 2 = -0.81 if it ended now, below the worst finished -0.795. That "if it ended now" is
# the library's rule (transformers' `early_stopping=False`, `BeamSearch._update_may_improve`). It is exact when
# alpha <= 0: every further token lowers the sum and does not shrink the divisor. With alpha > 0 it is a guess:
# a longer hypothesis divides by a larger length^alpha, so confident extra tokens can *raise* its score. The exact
# rule bounds the best running beam by its sum / L^alpha, with L the most tokens it may still reach (max_length
# minus the prompt): its sum can only fall, and its length cannot exceed L. That is `early_stopping="never"`,
# which keeps searching until the bound says stop.
#
# A tiny case where they differ (K = 1, alpha = 1): after <s>, </s> has p 0.7 and "a" 0.3; after "a", "b" then
# "c" then </s> are each almost sure (0.99). At step 1 the empty sentence finishes with ln 0.7 / 1 = -0.357 and "a"
# runs with ln 0.3 = -1.204; ended now, it would score -1.204 < -0.357, so the heuristic stops. But "a b c </s>"
# scores (ln 0.3 + 3 ln 0.99) / 4 = -0.309, better; the exact rule's bound -1.204 / 4 = -0.301 > -0.357 finds it.

# %%
TABLE3 = torch.tensor(
    [
        [0.0, 0.7, 0.3, 0.0, 0.0],  # after <s>: end now, or "a"
        [0.0, 1.0, 0.0, 0.0, 0.0],  # after </s>
        [0.0, 0.01, 0.0, 0.99, 0.0],  # after "a": "b"
        [0.0, 0.01, 0.0, 0.0, 0.99],  # after "b": "c"
        [0.0, 0.99, 0.01, 0.0, 0.0],  # after "c": </s>
    ]
)


def beam_winner(table: torch.Tensor, early_stopping: bool | str) -> tuple[list[int], float, int]:
    """The best finished hypothesis of a K = 1, alpha = 1 beam search, its score, and the steps it ran."""
    beams = BeamSearch(torch.tensor([BOS]), num_beams=1, max_length=5, eos_token_id=[EOS], pad_token_id=EOS,
                       length_penalty=1.0, early_stopping=early_stopping)
    n_steps = 0
    while not beams.done:
        beams.step(toy_log_probs(beams.running_ids(), table))
        n_steps += 1
    seqs, scores = beams.finalize(num_return_sequences=1)
    seq = seqs[0].tolist()
    return seq[: seq.index(EOS) + 1], float(scores[0]), n_steps


for rule in (False, "never"):
    seq, score, n_steps = beam_winner(TABLE3, rule)
    print(f"early_stopping={rule!r:8}: stopped after {n_steps} step(s), winner {' '.join(NAMES[t] for t in seq[1:])!r}"
          f" score {score:.3f}")
heuristic, exact = beam_winner(TABLE3, False), beam_winner(TABLE3, "never")
assert heuristic[0] == [BOS, EOS] and heuristic[2] == 1, "ended now, 'a' looks hopeless: stop after one step"
assert exact[0] == [BOS, A, B, C, EOS] and exact[1] > heuristic[1], "the exact rule finds the better, longer one"
assert abs(exact[1] - sentence_log_prob([BOS, A, B, C, EOS], TABLE3) / 4) < 1e-6
assert abs(heuristic[1] - math.log(0.7)) < 1e-6

# %% [markdown]
# ## 4. `parents`: how the KV cache follows the beams, on the trained model
#
# With a real decoder, each running beam has its keys and values in the cache (tutorial 02). After a step, new beam k
# continues old beam `parents[k]`, so row k of every self-attention cache must become row `parents[k]`:
# `cache.reorder(parents)`. (The cross-attention cache holds the audio, the same for every beam of an utterance,
# and stays.) We run beam search on the bundled digits model by hand, and at every step check the cached logits
# against a fresh pass over each beam's whole prefix. Then once more *without* the reorder, to see it break: the
# logits go wrong (the transcript may survive it, as it does here: this model is very sure of its digits, but
# a model that is less sure would be derailed).

# %%
PACKAGE = os.path.dirname(minispeechseq.__file__)
model = SpeechEncoderDecoderModel.from_pretrained(os.path.join(PACKAGE, "bundled", "digits")).eval()
processor = Processor.from_pretrained(os.path.join(PACKAGE, "bundled", "digits"))
tok = processor.tokenizer
SAMPLES = os.path.join(PACKAGE, "bundled", "samples")
with open(os.path.join(SAMPLES, "transcripts.tsv"), encoding="utf-8") as f:
    transcripts = dict(csv.reader(f, delimiter="\t"))
speech = processor(load_audio(os.path.join(SAMPLES, "002476.wav")), sampling_rate=16000, return_tensors="pt")
BEAMS, MAX_LENGTH = 3, 12


def beam_search_by_hand(reorder: bool) -> tuple[torch.Tensor, float]:
    """Returns the best sequence and the largest gap between cached and fresh logits over all steps."""
    with torch.no_grad():
        memory, frame_mask = model.encode(speech.input_values, speech.attention_mask)  # (1, T, D), (1, T)
        beams = BeamSearch(torch.tensor([model.config.decoder_start_token_id]), num_beams=BEAMS, max_length=MAX_LENGTH,
                           eos_token_id=[model.config.eos_token_id], pad_token_id=model.config.pad_token_id)
        cache, worst = model.decoder.new_cache(), 0.0
        while not beams.done:
            prefixes = beams.running_ids()  # (K, S)
            feed = prefixes[:, cache.seq_len:]  # only the newest token once the cache holds the rest
            # The K beams all read the one row of `memory`: the decoder folds them onto it (attention.py).
            logits = model.decoder(feed, encoder_hidden_states=memory, encoder_attention_mask=frame_mask,
                                   cache=cache, logits_to_keep=1).logits[:, -1]  # (K, V)
            fresh = model.decoder(prefixes, encoder_hidden_states=memory, encoder_attention_mask=frame_mask,
                                  cache=model.decoder.new_cache(), logits_to_keep=1).logits[:, -1]
            worst = max(worst, float((logits - fresh).abs().max()))
            parents = beams.step(logits.log_softmax(-1))  # (K,) the row each new beam continues
            if reorder:
                cache.reorder(parents)
        sequences, _ = beams.finalize(1)
    return sequences[0], worst


by_hand, gap = beam_search_by_hand(reorder=True)
library = model.generate(speech.input_values, attention_mask=speech.attention_mask, num_beams=BEAMS,
                         max_length=MAX_LENGTH)[0]
print(f"by hand: {tok.decode(by_hand, skip_special_tokens=True)!r}; cached vs fresh logits: max |diff| = {gap:.1e}; "
      f"model.generate: {tok.decode(library, skip_special_tokens=True)!r}")
assert gap < 1e-4 and torch.equal(by_hand[: len(library)], library)
broken, broken_gap = beam_search_by_hand(reorder=False)
print(f"without cache.reorder(parents): max |diff| = {broken_gap:.1e}, transcript "
      f"{tok.decode(broken, skip_special_tokens=True)!r}")
assert broken_gap > 1e-2, "a beam reading another beam's cached keys computes the wrong logits"

# %% [markdown]
# ## 5. A forcing processor
#
# Logit processors are pure functions (tokens so far, scores) -> scores. `ForceToken` allows only one token at one
# position (score 0, every other token -inf): what `forced_bos_token_id` does (mBART's target-language token). Here
# we force the first word of the digits model to be "seven", on a recording of "zero two seven four seven": the
# decoder then goes on from a word that was not said, conditioned on it.

# %%
seven = tok.convert_tokens_to_ids("seven")
scores = torch.randn(1, len(tok))
forced = ForceToken(seven, at_length=1)(torch.tensor([[model.config.decoder_start_token_id]]), scores)  # (1, V)
assert forced.argmax(-1).item() == seven and torch.isinf(forced).sum() == len(tok) - 1
plain_text = processor.batch_decode(model.generate(speech.input_values, attention_mask=speech.attention_mask),
                                    skip_special_tokens=True)[0].strip()
forced_ids = model.generate(speech.input_values, attention_mask=speech.attention_mask, forced_bos_token_id=seven)
forced_text = processor.batch_decode(forced_ids, skip_special_tokens=True)[0].strip()
print(f"said {transcripts['002476.wav']!r}; greedy {plain_text!r}; with 'seven' forced first: {forced_text!r}")
assert plain_text == transcripts["002476.wav"] and forced_text.split()[0] == "seven"

# %% [markdown]
# ## 6. Sampling: temperature, top-k, top-p
#
# Draw the next token from softmax(scores) instead of taking the best. Temperature divides the logits (T < 1
# sharper, T > 1 flatter); top-k keeps the k best tokens; top-p (nucleus sampling, Holtzman et al. 2020) keeps the
# smallest set of best tokens whose mass reaches p (applied in that order, as in transformers). Top-k keeps a fixed
# *number* of tokens; top-p adapts to the *shape*: on a peaked distribution it keeps one token, on a flat one many.
# Two distributions show it.

# %%
peaked = torch.tensor([[6.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5]])
flat = torch.tensor([[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]])
settings = {"plain": [], "T = 0.5": [Temperature(0.5)], "T = 2": [Temperature(2.0)], "top-k = 3": [TopK(3)],
            "top-p = 0.8": [TopP(0.8)]}
dists = {(shape, name): apply_processors(ps, None, logits).softmax(-1)[0]
         for shape, logits in (("peaked", peaked), ("flat", flat)) for name, ps in settings.items()}
kept = {key: int((d > 0).sum()) for key, d in dists.items()}
print("tokens kept:", {f"{shape} {name}": n for (shape, name), n in kept.items() if name.startswith("top")})
for shape, logits in (("peaked", peaked), ("flat", flat)):
    p = logits.softmax(-1)[0]
    n = kept[(shape, "top-p = 0.8")]
    assert p[: n - 1].sum() < 0.8 <= p[:n].sum()  # the smallest prefix of the sorted tokens reaching 0.8
    assert kept[(shape, "top-k = 3")] == 3
    assert torch.allclose(dists[(shape, "T = 0.5")], (logits / 0.5).softmax(-1)[0])
assert kept[("peaked", "top-p = 0.8")] == 1 and kept[("flat", "top-p = 0.8")] > 3
# Same generator seed, same draws; top-k = 1 is greedy.
draws = sample(flat.expand(1000, -1), torch.Generator().manual_seed(0))
assert torch.equal(draws, sample(flat.expand(1000, -1), torch.Generator().manual_seed(0)))
assert bool((sample(TopK(1)(None, flat.expand(50, -1))) == greedy(flat)).all())

fig, axes = plt.subplots(2, len(settings), figsize=(14, 5), sharey=True, layout="constrained")
for row, shape in enumerate(("peaked", "flat")):
    for ax, name in zip(axes[row], settings):
        d = dists[(shape, name)]
        ax.bar(range(len(d)), d.numpy(), color=["tab:blue" if v > 0 else "lightgrey" for v in d.tolist()])
        ax.set_title(f"{shape}, {name}: {kept[(shape, name)]} kept", fontsize=9)
        ax.set_xticks(range(len(d)))
    axes[row, 0].set_ylabel("probability")
for ax in axes[1]:
    ax.set_xlabel("token (best first)")
path = os.path.join(OUT, "04_sampling_distributions.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)

# %% [markdown]
# ## 7. Greedy against beam search on the trained model
#
# The 8 shipped recordings, greedy and 4 beams: the transcripts, the WER, and each transcript's length-normalised
# log-probability (sum of log p over the generated tokens / their number, alpha = 1). Beam search looks for a
# higher score; here it finds nothing better: the model is so sure of each digit (log p close to 0 per token)
# that greedy's path already is the best one, and both tie on every sample. Whether a higher score is a better
# transcript is another question: tutorial 08 measures it on 100 test utterances (there, 4 beams change one
# transcript in a hundred).

# %%
names = sorted(n for n in transcripts if not n.startswith("fsdd_"))  # the real voices (fsdd_*) are tutorial 12's
assert len(names) == 8
rows = []
with torch.no_grad():
    for name in names:
        x = processor(load_audio(os.path.join(SAMPLES, name)), sampling_rate=16000, return_tensors="pt")
        g = model.generate(x.input_values, attention_mask=x.attention_mask, return_dict_in_generate=True,
                           output_scores=True)
        token_log_probs = model.compute_transition_scores(g.sequences, g.scores, normalize_logits=True)[0]  # (S-1,)
        b = model.generate(x.input_values, attention_mask=x.attention_mask, num_beams=4, return_dict_in_generate=True)
        rows.append((name, tok.decode(g.sequences[0], skip_special_tokens=True).strip(), float(token_log_probs.mean()),
                     tok.decode(b.sequences[0], skip_special_tokens=True).strip(), float(b.sequences_scores[0])))
print(f"{'file':11} {'greedy':34} {'score':>7}   {'beam (4)':34} {'score':>7}")
for name, gt, gs, bt, bs in rows:
    print(f"{name:11} {gt:34} {gs:7.4f}   {bt:34} {bs:7.4f}")
refs = [transcripts[n] for n in names]
wer_greedy, wer_beam = word_error_rate(refs, [r[1] for r in rows]), word_error_rate(refs, [r[3] for r in rows])
print(f"\n| decoding | WER on the 8 samples |\n|---|---|\n| greedy | {wer_greedy:.1%} |\n| beam, 4 | {wer_beam:.1%} |")
assert all(bs >= gs - 1e-5 for _, _, gs, _, bs in rows), "beam search never scores below greedy here"
assert all(gt == bt and abs(gs - bs) < 1e-4 for _, gt, gs, bt, bs in rows), "and ties with it on every sample"
assert wer_greedy == wer_beam, "tied transcripts, tied WER"

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. Run toy 1's beam search with K = 1. Observe: it returns greedy's "a </s>": one beam is greedy decoding.
# 2. On toy 2, try length_penalty 0.38 and 0.39. Observe: the winner flips between them, at
#    alpha = ln(1.456 / 1.245) / ln(3 / 2) ~ 0.386, where both hypotheses' normalised scores are equal.
# 3. In the stop-rule toy, make the first row (</s> 0.8, "a" 0.2). Observe: both rules now return the empty
#    sentence after one step: the exact bound ln 0.2 / 4 = -0.40 cannot beat ln 0.8 = -0.22.
# 4. Apply Temperature(2.0) before TopP(0.8) to the peaked distribution of section 6. Observe: top-p keeps more
#    tokens than at temperature 1 (4 instead of 1). Flattening moves mass to the tail, so more tokens are needed to
#    reach p; top-k keeps its 3 whatever the temperature.
#
# ## References
#
# - Holtzman, Buys, Du, Forbes, Choi (2020). The Curious Case of Neural Text Degeneration. ICLR 2020
#   (nucleus, i.e. top-p, sampling; why maximising likelihood with beam search makes bland, repetitive text)
# - Vaswani et al. (2017). Attention Is All You Need. NeurIPS 2017. arXiv:1706.03762
