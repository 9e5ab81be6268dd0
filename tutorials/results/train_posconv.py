"""`minispeechseq train`, with the tiny preset's positional conv kernel set by the first argument.

    python tutorials/results/train_posconv.py KERNEL TRAIN_ARGS...

    e.g. python tutorials/results/train_posconv.py 16 --data DIGITS --out runs/k16 --steps 3000 --batch-size 16 \\
             --lr 2e-3 --eval-every 250 --save-every 250

The preset it registers, `tiny-kKERNEL`, is the tiny preset with `num_conv_pos_embeddings=KERNEL` and nothing else
changed, so two runs with the same TRAIN_ARGS differ in that one factor (the ablation of tutorial 14, section 7;
its commands and results are in README.md beside this file). With KERNEL 128 it builds exactly the tiny preset.
"""

import sys
from collections.abc import Callable
from typing import Any

from minispeechseq.tools import train as train_cli
from minispeechseq.training import train


def posconv_preset(kernel: int) -> Callable[[], tuple[dict[str, Any], dict[str, Any]]]:
    """The tiny preset with the positional conv over `kernel` frames (40 ms each) instead of 128."""

    def preset() -> tuple[dict[str, Any], dict[str, Any]]:
        encoder, decoder = train.PRESETS["tiny"]()
        encoder["num_conv_pos_embeddings"] = kernel
        return encoder, decoder

    return preset


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit() or int(argv[0]) < 1:
        print("train_posconv.py: error: the first argument is the positional conv kernel in frames (e.g. 16); the "
              "rest are `minispeechseq train` arguments.", file=sys.stderr)
        return 2
    kernel = int(argv[0])
    train.PRESETS[f"tiny-k{kernel}"] = posconv_preset(kernel)
    return train_cli.main(["--preset", f"tiny-k{kernel}", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
