"""`python -m minispeechseq ...` is the `minispeechseq` command."""

import sys

from .cli import main

sys.exit(main())
