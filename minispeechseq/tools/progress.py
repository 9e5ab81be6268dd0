"""A progress line for long jobs: one line that updates itself on a terminal, a few lines in a log.

On a terminal the line is rewritten in place (a carriage return, then the new text padded over the old), so a
200 s recording shows one line however many chunks it has. Written to a file or a pipe (a log, a CI job), a
carriage return would leave every update on one endless line, so there a line is written at most every
LOG_EVERY_S seconds: a short job says nothing, a long one says now and then that it is alive.

    line = ProgressLine(sys.stderr)
    for done in range(1, total + 1):
        ...
        line.update(f"{done}/{total} chunks")
    line.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

LOG_EVERY_S = 30.0


class ProgressLine:
    def __init__(self, stream: TextIO, interactive: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        isatty = getattr(stream, "isatty", None)
        self.interactive = bool(isatty and isatty()) if interactive is None else interactive
        self.started = self.logged = clock()  # a log's first line comes LOG_EVERY_S after the start
        self.width = 0  # characters of the line on the terminal now (0: none)

    def update(self, text: str) -> None:
        if self.interactive:
            self.stream.write("\r" + text + " " * max(0, self.width - len(text)))  # spaces wipe a longer old line
            self.width = len(text)
        elif self.clock() - self.logged >= LOG_EVERY_S:
            self.logged = self.clock()
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()

    def close(self) -> None:
        """End the terminal's line, so that what is printed next starts on a line of its own."""
        if self.interactive and self.width:
            self.stream.write("\n")
            self.stream.flush()
        self.width = 0
