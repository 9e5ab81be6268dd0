"""Word and character error rates: WER and CER.

    WER = (substitutions + deletions + insertions) / number of reference words,

summed over the whole corpus before dividing (not averaged per utterance), so long utterances weigh more: the
usual definition (NIST sclite, jiwer). CER is the same over characters, spaces included (jiwer's definition).

We use jiwer, a well-kept library, when it is installed (the `train` extra); otherwise the plain dynamic
program below, which tests check against jiwer.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    import jiwer
except ImportError:  # jiwer is an optional dependency (pip install minispeechseq[train])
    jiwer = None


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance: the fewest substitutions, deletions and insertions that turn one into the other."""
    # previous[j] = distance between reference[:i-1] and hypothesis[:j]; one row at a time, O(len(hypothesis)) memory.
    previous = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, start=1):
        current = [i]
        for j, h in enumerate(hypothesis, start=1):
            current.append(min(
                previous[j] + 1,  # delete r
                current[j - 1] + 1,  # insert h
                previous[j - 1] + (r != h),  # substitute (free when equal)
            ))
        previous = current
    return previous[-1]


def _check(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(references, str) or isinstance(hypotheses, str):
        references, hypotheses = [references], [hypotheses]
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"Got {len(references)} references but {len(hypotheses)} hypotheses; they must pair up.")
    if not references:
        raise ValueError("No references given: an error rate needs at least one reference text.")
    return references, hypotheses


def _normalize(text: str) -> str:
    return " ".join(text.split())  # runs of whitespace count as one separator, as in jiwer's default


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus WER (0.0 = perfect; can exceed 1.0 with many insertions)."""
    references, hypotheses = _check(references, hypotheses)
    references, hypotheses = [_normalize(t) for t in references], [_normalize(t) for t in hypotheses]
    words = sum(len(r.split()) for r in references)
    if words == 0:
        raise ValueError("The references hold no words; WER is undefined.")
    if jiwer is not None:
        return float(jiwer.wer(references, hypotheses))
    return sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses)) / words


def character_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus CER over characters, spaces included (whitespace runs count as one space)."""
    references, hypotheses = _check(references, hypotheses)
    references, hypotheses = [_normalize(t) for t in references], [_normalize(t) for t in hypotheses]
    chars = sum(len(r) for r in references)
    if chars == 0:
        raise ValueError("The references hold no characters; CER is undefined.")
    if jiwer is not None:
        return float(jiwer.cer(references, hypotheses))
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / chars
