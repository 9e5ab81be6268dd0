"""Word and character error rates: WER and CER.

    WER = (substitutions + deletions + insertions) / number of reference words,

summed over the whole corpus before dividing (not averaged per utterance), so long utterances weigh more: the
usual definition (NIST sclite, jiwer). CER is the same over characters, spaces included (jiwer's definition).

The edit distances come from jiwer, a well-kept library made for exactly this; here we only fix the definitions
(whitespace, corpus-level sums) and check the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    import jiwer
except ImportError:  # jiwer is an optional dependency: only training and evaluation import this module
    raise ImportError("Word and character error rates need jiwer: pip install 'minispeechseq[train]'") from None


def _check(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> tuple[list[str], list[str]]:
    """Both as lists of whitespace-normalised texts, paired one to one."""
    if isinstance(references, str) or isinstance(hypotheses, str):
        references, hypotheses = [references], [hypotheses]
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"Got {len(references)} references but {len(hypotheses)} hypotheses; they must pair up.")
    if not references:
        raise ValueError("No references given: an error rate needs at least one reference text.")
    # Runs of whitespace count as one separator, and none at the ends: jiwer's WER does this itself, its CER
    # does not (it would count a double space as a character to delete).
    return [" ".join(t.split()) for t in references], [" ".join(t.split()) for t in hypotheses]


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus WER (0.0 = perfect; can exceed 1.0 with many insertions)."""
    references, hypotheses = _check(references, hypotheses)
    if sum(len(r.split()) for r in references) == 0:
        raise ValueError("The references hold no words; WER is undefined.")
    return float(jiwer.wer(references, hypotheses))


def character_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus CER over characters, spaces included (whitespace runs count as one space)."""
    references, hypotheses = _check(references, hypotheses)
    if sum(len(r) for r in references) == 0:
        raise ValueError("The references hold no characters; CER is undefined.")
    return float(jiwer.cer(references, hypotheses))
