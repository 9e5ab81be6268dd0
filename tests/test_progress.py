"""The progress line of `minispeechseq transcribe` (issue 27, item 4): one updating line on a terminal, at most one
line per 30 s in a log."""

import io

from minispeechseq.tools.progress import LOG_EVERY_S, ProgressLine


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_line_rewritten_in_place():
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, interactive=True, clock=clock)
    for done in range(1, 101):
        line.update(f"x: {done}/100 chunks")
    line.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("x: 100/100 chunks\n"), repr(text[-60:])
    assert text.count("\r") == 100


def test_a_shorter_text_wipes_the_longer_one_before_it():
    out = io.StringIO()
    line = ProgressLine(out, interactive=True, clock=Clock())
    line.update("a long first text")
    line.update("short")
    assert out.getvalue().endswith("\rshort" + " " * (len("a long first text") - len("short")))


def test_a_log_gets_at_most_one_line_per_30_seconds():
    """200 s of work, an update every second (a 200 s recording in 1 s chunks): 6 lines, not 200."""
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, interactive=False, clock=clock)
    for second in range(1, 201):
        clock.now = float(second)
        line.update(f"{second}/200")
    line.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 200 // int(LOG_EVERY_S), lines
    assert lines[0] == "30/200"


def test_a_stream_that_is_no_terminal_is_treated_as_a_log():
    assert ProgressLine(io.StringIO()).interactive is False
