"""`python -m minispeechseq ...` is the `minispeechseq` command."""

import sys

from .tools.cli import main

sys.exit(main())
