"""Word and character error rates, on cases computed by hand."""

import os
import subprocess
import sys

import pytest

from minispeechseq.training import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout, not an installed copy


def test_word_error_rate_by_hand():
    wer = metrics.word_error_rate
    assert wer(["one two three four"], ["one two tree four"]) == pytest.approx(1 / 4)  # one substitution
    assert wer("one two", "one two") == 0.0  # a single pair may be given as two strings
    assert wer(["one"], ["one two three"]) == pytest.approx(2.0)  # two insertions over one word: above 1
    assert wer(["one two", ""], ["one two", "three"]) == pytest.approx(1 / 2)  # an empty reference: insertions count
    # 1 substitution + 1 deletion + 1 insertion + 4 deletions over 10 words.
    refs = ["one two three", "four five", "six", "seven eight nine zero"]
    hyps = ["one too three", "four", "six six", ""]
    assert wer(refs, hyps) == pytest.approx(7 / 10)
    # Corpus level: 1 error over 1 + 9 words is 0.1, where the mean of per-utterance rates would be 0.5.
    assert wer(["one", "two three four five six seven eight nine zero"],
               ["two", "two three four five six seven eight nine zero"]) == pytest.approx(1 / 10)
    assert wer(["  one   two "], ["one\ttwo"]) == 0.0  # whitespace runs are one separator


def test_character_error_rate_by_hand():
    cer = metrics.character_error_rate
    assert cer(["kitten"], ["sitting"]) == pytest.approx(3 / 6)  # 2 substitutions + 1 insertion over 6 characters
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)  # the space is a character
    assert cer(["one  two "], ["one two"]) == 0.0  # a double space is still one
    assert cer(["ab", "cdef"], ["ab", "cdxf"]) == pytest.approx(1 / 6)  # summed over the corpus


def test_without_jiwer_the_training_commands_say_what_to_install():
    # sys.modules[name] = None makes `import jiwer` fail as if it were not installed.
    code = ("import sys; sys.modules['jiwer'] = None; from minispeechseq.tools.cli import main; "
            "sys.exit(main(['evaluate', 'some-model']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "minispeechseq: error: `evaluate` is not available: Word and character error rates need jiwer: "
        "pip install 'minispeechseq[train]'"], done.stderr


def test_error_rate_input_errors():
    with pytest.raises(ValueError, match="pair up"):
        metrics.word_error_rate(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no words"):
        metrics.word_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="no characters"):
        metrics.character_error_rate([" "], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        metrics.word_error_rate([], [])
