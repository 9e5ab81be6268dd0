"""What every command of `minispeechseq` shares: the error policy, and argument types that refuse bad values.

The policy (README, API.md): any failure reaches the user as ONE line on stderr and a non-zero exit status;
`--debug` (anywhere on the command line) prints the traceback as well. Errors we expect (a bad argument, a missing
file, a config that does not fit) are sentences raised as ValueError / OSError / CLIError; anything else is a bug
of ours and says so ("internal error"), still in one line. Each command (tools/cli.py, and the programs `train`,
`evaluate`, `data` that also run as `python -m ...`) goes through `run_command`, so the policy lives here only.

Argument types: `--lr inf` or `--max-grad-norm -1` must fail when the command line is read, with argparse's own
one-line message, not steps later. `number(...)` builds such a type from a range, so each option states its range
where it is declared.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_HELP = "on an error, print the traceback too (it may come before or after the subcommand)"


class CLIError(Exception):
    """An error to print as one line, without a traceback."""


class UsageError(CLIError):
    """A command line argparse rejects (exit status 2, as argparse's own)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (the message and where to find help), not usage + message."""

    def error(self, message: str):  # argparse's hook; it must not return
        raise UsageError(f"{message} (see {self.prog} --help)")


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv without --debug, whether it was there): the flag is global, before or after the subcommand."""
    argv = list(argv)
    return [a for a in argv if a != DEBUG_FLAG], DEBUG_FLAG in argv


def one_line(error: BaseException) -> str:
    # Some errors carry several lines (a DataLoader worker's includes its traceback): the policy is one line.
    return " ".join(str(error).split()) or type(error).__name__


def run_command(prog: str, body: Callable[[], int], debug: bool) -> int:
    """Run a command's body under the error policy; its exit status, or 1 (2 for a bad command line)."""
    try:
        status = body()
        sys.stdout.flush()  # here, where a closed pipe is caught, not in Python's exit-time flush
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `minispeechseq inspect ... | head`: the reader left. Not an error of ours; point stdout at /dev/null so
        # that Python's exit-time flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program killed by it
    except SystemExit:
        raise
    except (CLIError, ValueError, OSError) as e:  # refusals, written for the user
        report(prog, one_line(e), e, debug)
        return 2 if isinstance(e, UsageError) else 1
    except MemoryError as e:
        report(prog, "out of memory (run with --debug for the traceback)", e, debug)
        return 1
    except Exception as e:  # a bug of ours: still one line, and how to see more
        report(prog, f"internal error: {type(e).__name__}: {one_line(e)} (run with --debug for the traceback)", e,
               debug)
        return 1


def report(prog: str, message: str, error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error)
    print(f"{prog}: error: {message}", file=sys.stderr)


# ------------------------------------------------------------------------------------------ argument types
def number(kind: type = float, *, low: float | None = None, high: float | None = None, low_open: bool = False,
           ) -> Callable[[str], float | int]:
    """An argparse `type`: a finite int or float within [low, high] (low excluded with `low_open`)."""
    expected = "an integer" if kind is int else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"<= {high:g}")
    expected += (" " + " and ".join(bounds)) if bounds else ""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {expected}") from None
        ok = math.isfinite(value) and (low is None or value > low or (value == low and not low_open))
        if not ok or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {expected}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


POSITIVE_INT = number(int, low=1)
COUNT = number(int, low=0)
POSITIVE = number(float, low=0, low_open=True)
NON_NEGATIVE = number(float, low=0)
PROBABILITY = number(float, low=0, high=1)
