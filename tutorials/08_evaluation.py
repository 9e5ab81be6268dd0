"""Tutorial 08: evaluation. Word and character error rates by hand, text normalisation, and an error analysis.

Run it:  pip install -e ".[tutorials]" && python tutorials/08_evaluation.py
         (the picture and a small test set go to $MINISPEECHSEQ_TUTORIAL_OUT, else tutorials/out/, made if missing;
         needs espeak-ng)

"How good is it?" for a recognizer means: how many words did it get wrong. We write the edit distance ourselves,
with the backtrace that sorts each error into a substitution (S), a deletion (D) or an insertion (I), check it
against jiwer (the library minispeechseq.training.metrics uses) and `minispeechseq evaluate`, see why texts must be
normalised before they are compared, and then look at the bundled model's actual errors, greedy and with beams.

    WER = (S + D + I) / N      N = words in the references, summed over the corpus before dividing
    CER = the same over characters (spaces included)

Shape legend: N reference words, M hypothesis words; the edit table is (N+1, M+1).
"""

# %%
import os
import re

import jiwer
import matplotlib.pyplot as plt
import soundfile
import torch

import minispeechseq
from minispeechseq import Processor, SpeechEncoderDecoderModel
from minispeechseq.recognition.recognizer import transcribe_batch
from minispeechseq.tools import cli
from minispeechseq.training.digits import recipe_utterances
from minispeechseq.training.metrics import character_error_rate, word_error_rate

OUT = os.environ.get("MINISPEECHSEQ_TUTORIAL_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(min(2, os.cpu_count() or 1))

# %% [markdown]
# ## 1. The edit distance, with its backtrace
#
# (Levenshtein 1966's edit distance, over words.) d[i][j] = the fewest edits turning the first i reference words
# into the first j hypothesis words. Each cell comes from its left (an insertion), its top (a deletion) or its
# diagonal (a match, or a substitution). Walking back from the corner says which edits were made.


# %%
def align(ref: list[str], hyp: list[str]) -> list[tuple[str, str | None, str | None]]:
    """The cheapest alignment as (op, ref word, hyp word) with op in "=" (match), "S", "D", "I"."""
    N, M = len(ref), len(hyp)
    d = [[0] * (M + 1) for _ in range(N + 1)]  # (N+1, M+1)
    for i in range(N + 1):
        d[i][0] = i  # i deletions
    for j in range(M + 1):
        d[0][j] = j  # j insertions
    for i in range(1, N + 1):
        for j in range(1, M + 1):
            diagonal = d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            d[i][j] = min(diagonal, d[i - 1][j] + 1, d[i][j - 1] + 1)
    ops, i, j = [], N, M
    while i > 0 or j > 0:  # walk back; prefer the diagonal, as jiwer does, so ties resolve the same way
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("=" if ref[i - 1] == hyp[j - 1] else "S", ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            ops.append(("D", ref[i - 1], None))
            i -= 1
        else:
            ops.append(("I", None, hyp[j - 1]))
            j -= 1
    return ops[::-1]


def counts(refs: list[str], hyps: list[str], units=str.split) -> dict[str, int]:
    """S, D, I, matches and N over a corpus; `units` cuts a text into words (str.split) or characters (list)."""
    total = {"S": 0, "D": 0, "I": 0, "=": 0, "N": 0}
    for r, h in zip(refs, hyps):
        for op, _, _ in align(units(r), units(h)):
            total[op] += 1
        total["N"] += len(units(r))
    return total


def show(ref: str, hyp: str) -> str:
    ops = align(ref.split(), hyp.split())
    width = [max(len(r or "*"), len(h or "*")) for _, r, h in ops]
    return "\n".join(["REF: " + " ".join((r or "*").ljust(w) for (_, r, _), w in zip(ops, width)),
                      "HYP: " + " ".join((h or "*").ljust(w) for (_, _, h), w in zip(ops, width)),
                      "     " + " ".join((op if op != "=" else "").ljust(w) for (op, _, _), w in zip(ops, width))])


print(show("two three four", "three three four"))
print(show("seven seven five one five", "seven seven five one five five"))
print(show("one one nine eight nine zero five", "one one nine nine zero zero five"))
c = counts(["one one nine eight nine zero five"], ["one one nine nine zero zero five"])
# Two substitutions (cost 2) tie with a deletion + an insertion (also 2); ties go to the diagonal (substitution).
assert (c["S"], c["D"], c["I"]) == (2, 0, 0), "the tie should have gone to two substitutions"

# %% [markdown]
# The third line shows why an alignment is a *choice*: "eight nine zero" -> "nine zero zero" is two
# substitutions (cost 2), or one deletion and one insertion (also cost 2). Both are cheapest; the WER is the same
# either way, the S/D/I split is not. Tools break such ties by a fixed rule; ours prefers the diagonal, as jiwer.
#
# ## 2. The same with jiwer, and WER vs CER

# %%
refs = ["two three four", "seven seven five one five", "one one nine eight nine zero five", "six"]
hyps = ["three three four", "seven seven five one five five", "one one nine nine zero zero five", "six"]
ours = counts(refs, hyps)
theirs = jiwer.process_words(refs, hyps)
wer_by_hand = (ours["S"] + ours["D"] + ours["I"]) / ours["N"]
print(f"by hand: S={ours['S']} D={ours['D']} I={ours['I']} N={ours['N']} -> WER {wer_by_hand:.2%}; "
      f"jiwer: S={theirs.substitutions} D={theirs.deletions} I={theirs.insertions} -> WER {theirs.wer:.2%}")
assert (ours["S"], ours["D"], ours["I"]) == (theirs.substitutions, theirs.deletions, theirs.insertions)
assert abs(wer_by_hand - word_error_rate(refs, hyps)) < 1e-12

chars = counts(refs, hyps, units=list)  # the same alignment over characters, spaces included
cer_by_hand = (chars["S"] + chars["D"] + chars["I"]) / chars["N"]
print(f"CER by hand {cer_by_hand:.2%}, minispeechseq.training.metrics {character_error_rate(refs, hyps):.2%}")
assert abs(cer_by_hand - character_error_rate(refs, hyps)) < 1e-12
two_three = counts(["two three four"], ["three three four"], units=list)
print(f"'two three four' -> 'three three four': 1 word of 3 wrong (WER 33 %), "
      f"{two_three['S'] + two_three['D'] + two_three['I']} character edits of {two_three['N']} (CER "
      f"{character_error_rate('two three four', 'three three four'):.0%})")
# One wrong word costs a whole word in WER but only its differing letters in CER.

# %% [markdown]
# ## 3. Normalise before you compare
#
# The bundled model writes lower-case digit words; a human transcript may say "Five, two!" or "5 2". Compared as
# they are, each is 100 % wrong. A normaliser maps both sides to one form first: lower case, no punctuation,
# single spaces, and (for this task) numerals spelled out. Real English normalisers (Whisper's, for instance) also
# handle numbers, spellings and contractions; pick one, and always report which.

# %%
SPELLED = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def normalise(text: str) -> str:
    text = text.lower()
    text = re.sub(r"\d", lambda m: f" {SPELLED[int(m.group())]} ", text)  # "52" -> " five  two "
    text = re.sub(r"[^\w\s']", " ", text)  # punctuation -> space
    return " ".join(text.split())


human = ["Five, two!", "5 2", "Seven-nine  nine two."]
model_says = ["five two", "five two", "seven nine nine two"]
raw, fixed = word_error_rate(human, model_says), word_error_rate([normalise(t) for t in human], model_says)
print(f"WER as written: {raw:.0%}; after normalising the references: {fixed:.0%}")
assert raw > 0.5 and fixed == 0.0

# %% [markdown]
# ## 4. The bundled model's errors on 100 test utterances
#
# The shipped 8 synthetic samples are all transcribed right (tutorial 00), which says little. We render the first 100
# utterances of the corpus's *test split* exactly as the recipe does (espeak-ng, 8 utterances per call, same
# voices and settings: the shipped samples are among them, equal to the sample up to int16 rounding), transcribe
# them greedily and with 4 beams, and sort every error.

# %%
waves, references = recipe_utterances("test", 100)  # rendered as `minispeechseq data` renders the corpus

MODEL = os.path.join(os.path.dirname(minispeechseq.__file__), "bundled", "digits")
model = SpeechEncoderDecoderModel.from_pretrained(MODEL).eval()
processor = Processor.from_pretrained(MODEL)
results = {beams: transcribe_batch(model, processor, waves, batch_size=16, num_beams=beams) for beams in (1, 4)}
table = {}
for beams, hyps in results.items():
    c = counts(references, hyps)
    table[beams] = {**c, "WER": word_error_rate(references, hyps), "CER": character_error_rate(references, hyps),
                    "wrong": sum(r != h for r, h in zip(references, hyps))}
print(f"\n{len(references)} test utterances, {table[1]['N']} words\n")
print("| decoding | WER | CER | S | D | I | utterances wrong |\n|---|---|---|---|---|---|---|")
for beams, row in table.items():
    print(f"| {'greedy' if beams == 1 else f'beam, {beams}'} | {row['WER']:.2%} | {row['CER']:.2%} | {row['S']} | "
          f"{row['D']} | {row['I']} | {row['wrong']} |")
for beams, row in table.items():
    assert abs((row["S"] + row["D"] + row["I"]) / row["N"] - row["WER"]) < 1e-12
assert table[1]["WER"] < 0.05, "the model card's figure is 2.6 % over all 400; these 100 should be near it"

print("\nthe greedy errors:")
errors = [(r, h) for r, h in zip(references, results[1]) if r != h]
for r, h in errors:
    print(show(r, h), "\n")
assert table[1]["S"] > 0 and table[1]["I"] > 0, "this model makes both kinds of mistakes here"

# %% [markdown]
# What the errors say. Substitutions swap one digit for another, often for a neighbour's ("two three" -> "three
# three"); an insertion repeats a word ("seven seven"), the looping a decoder can do and CTC cannot (tutorial 07);
# a deletion drops words, here two in a row from an eight-digit string, the longest the corpus has. Every error
# sits in a string of 3 digits or more. And 4 beams change almost nothing: for a model this sure of itself,
# greedy's path is nearly always the best-scoring one (tutorial 04 shows the scores), so beam search costs time and
# buys about one utterance in a hundred.

# %%
changed = sum(g != b for g, b in zip(results[1], results[4]))
print(f"utterances where 4 beams and greedy disagree: {changed}")
assert changed <= 2 and table[1]["D"] > 0, "the prose above describes this run; update it if this changes"
assert all(len(r.split()) >= 3 for r, _ in errors), "the prose: every error in a string of 3 digits or more"
wrong_lengths = [len(r.split()) for r, _ in errors]
print(f"digits per wrong utterance: {sorted(wrong_lengths)}")
assert min(wrong_lengths) >= 3

# The table counts the errors; the picture says where they are. The corpus's strings hold 1 to 8 digits: the WER of
# each length, greedy, labelled with its errors and its words. A handful of errors in 435 words shows no trend
# between 4 and 8 digits. Every error sits in a string of 4 digits or more; the 1-3 digit strings hold only 53
# words, where the overall rate predicts about one error, so their zeros are no proof that short strings are safe.
lengths = sorted({len(r.split()) for r in references})
per_length = {n: counts([r for r in references if len(r.split()) == n],
                        [h for r, h in zip(references, results[1]) if len(r.split()) == n]) for n in lengths}
wer_by_length = [100 * (c["S"] + c["D"] + c["I"]) / c["N"] for c in per_length.values()]
fig, ax = plt.subplots(figsize=(6, 3.2), layout="constrained")
bars = ax.bar(lengths, wer_by_length, color="tab:blue")
for bar, c in zip(bars, per_length.values()):
    ax.annotate(f"{c['S'] + c['D'] + c['I']}/{c['N']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center", va="bottom", fontsize=7, textcoords="offset points", xytext=(0, 2))
ax.axhline(100 * table[1]["WER"], color="grey", ls=":", lw=1, label=f"all lengths: {table[1]['WER']:.2%}")
ax.set_xticks(lengths)
ax.margins(y=0.12)  # room for the labels above the tallest bar
ax.set_xlabel("digits in the reference string")
ax.set_ylabel("WER (%), greedy; labels: errors / words")
ax.set_title(f"where the errors are: {len(references)} test utterances by length", fontsize=10)
ax.legend(fontsize=8)
assert all(w == 0 for n, w in zip(lengths, wer_by_length) if n < 3), "the prose: no error below 3 digits"
path = os.path.join(OUT, "08_errors_by_length.png")
fig.savefig(path, dpi=120)
plt.close(fig)
print("picture:", path)

# %% [markdown]
# ## 5. The same numbers from the command line
#
# `minispeechseq evaluate MODEL --manifest FILE` reads a manifest (`audio_path<TAB>transcript` per line), transcribes
# it in batches with the same `transcribe_batch` and prints WER and CER. We write our 100 utterances as one.
# Its WER should be the greedy one of section 4 (the model's generation config asks for greedy search); the files
# are int16 (PCM_16) while the waves above were float, the same audio up to rounding, so it may differ by a word.
# tests/test_tutorial_cli_agreement.py checks that the command prints what the library computes.

# %%
folder = os.path.join(OUT, "08_test_set")
os.makedirs(os.path.join(folder, "wavs"), exist_ok=True)
with open(os.path.join(folder, "test.tsv"), "w", encoding="utf-8") as f:
    for k, (wave, text) in enumerate(zip(waves, references)):
        soundfile.write(os.path.join(folder, "wavs", f"{k:03d}.wav"), wave, 16000, subtype="PCM_16")
        f.write(f"wavs/{k:03d}.wav\t{text}\n")
print(f"minispeechseq evaluate {MODEL} --manifest {os.path.join(folder, 'test.tsv')} --show-errors 0")
status = cli.main(["evaluate", MODEL, "--manifest", os.path.join(folder, "test.tsv"), "--show-errors", "0"])
assert status == 0
print(f"(the library, section 4: WER {table[1]['WER']:.2%} greedy)")

# %% [markdown]
# ## Exercises
#
# Each says what to change and what you should see; run the file again after each change.
#
# 1. By hand, then with `align`: reference "eight nine zero", hypothesis "eight nine". Observe one deletion and a
#    WER of 1/3.
# 2. Reference "one", hypothesis "nine". Observe: 1 word error (WER 100 %) but 2 character edits in 3 characters
#    (CER 2/3): CER gives partial credit to a near miss.
# 3. Compare "Eight, nine!" with "eight nine" with and without the normaliser of section 3. Observe 100 % WER
#    before, 0 % after: punctuation and case are not recognition errors.
# 4. Write out the table d for "eight nine zero" -> "nine zero zero" (4 x 4) and trace every cheapest path back
#    from the corner. Observe two of cost 2: two substitutions, or a deletion then an insertion; `align` takes the
#    first because it prefers the diagonal.
#
# ## References
#
# - Levenshtein (1966). Binary codes capable of correcting deletions, insertions, and reversals. Soviet
#   Physics Doklady 10(8) (the edit distance)
