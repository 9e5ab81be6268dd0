"""Run every tutorial, time it, and copy its pictures into tutorials/pictures/ (committed, so a reader sees them).
It also draws the one picture no tutorial computes: the whole model, each box labelled with the file that
implements it (pictures/model_architecture.png, shown in tutorial 00 and the index).

Run it:  python tutorials/make_pictures.py            (the model picture, then all tutorials)
         python tutorials/make_pictures.py 04 07      (the ones whose names start with these numbers)
         python tutorials/make_pictures.py model      (the model picture alone)

Each tutorial runs in a fresh process with MINISPEECHSEQ_TUTORIAL_OUT set to a temporary folder, as the test suite
runs it; the runtimes printed at the end are the ones tutorials/README.md quotes.
"""

import glob
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PICTURES = os.path.join(HERE, "pictures")
ARCHITECTURE = os.path.join(PICTURES, "model_architecture.png")

# The model's path, as boxes: (x, y) centre in axis units, text, the files that implement it, colour.
# Encoder on the top row, left to right; decoder and generation on the bottom row, left to right.
ENCODER, BRIDGE, DECODER, GENERATION, IO = "#dbe9f6", "#dff2df", "#fde7cf", "#ece2f5", "#f2f2f2"
BOXES = {
    "audio": (1.0, 3.4, "waveform\n16 kHz samples (B, L)", "audio.py: load_audio,\nWav2Vec2FeatureExtractor", IO),
    "conv": (3.35, 3.4, "conv feature encoder\n7 strided convs: a frame\nper 20 ms (bundled: 4, 40 ms)",
             "wav2vec2.py:\nFeatureEncoder", ENCODER),
    "proj": (5.7, 3.4, "feature projection\n+ positional conv\n(B, T, D_enc)",
             "wav2vec2.py:\nFeatureProjection,\nPositionalConvEmbedding", ENCODER),
    "enc": (8.05, 3.4, "transformer encoder x N\nself-attention over all\nframes + feed-forward",
            "wav2vec2.py:\nEncoderLayer\nattention.py: Attention", ENCODER),
    "bridge": (10.4, 3.4, "enc_to_dec_proj\n(only if D_enc != D_dec)\nmemory (B, T, D_dec)",
               "speech_encoder_decoder.py", BRIDGE),
    "tokens": (1.0, 0.6, "tokens so far\n(B, S)", "starts from\ndecoder_start_token_id", IO),
    "embed": (3.35, 0.6, "token + position\nembeddings", "decoders/gpt2.py,\nbert.py, bart.py,\nspeech2text2.py", DECODER),
    "dec": (5.7, 0.6, "decoder layer x N\ncausal self-attention\ncross-attention -> memory\nfeed-forward",
            "attention.py: Attention\n(self and cross)\ncache.py: KV cache", DECODER),
    "head": (8.05, 0.6, "LM head\nlogits (B, S, V)", "decoders/base.py:\nCausalLMDecoder", DECODER),
    "gen": (10.4, 0.6, "next token\nlogits processors ->\ngreedy / beam / sample",
            "generation/\nlogits_process.py,\nsearch.py, loop.py", GENERATION),
}


def draw_architecture(path: str = ARCHITECTURE) -> None:
    """Waveform -> conv feature encoder -> transformer encoder -> cross-attention <- decoder -> tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

    fig, ax = plt.subplots(figsize=(13, 5.6))
    width, height = 2.05, 1.15
    for x, y, text, files, colour in BOXES.values():
        ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.04",
                                    facecolor=colour, edgecolor="0.35", lw=1))
        ax.text(x, y + 0.12, text, ha="center", va="center", fontsize=8)
        ax.text(x, y - height / 2 - 0.08, files, ha="center", va="top", fontsize=7.5, family="monospace",
                color="0.25")

    def arrow(a, b, text=None, **kw):
        style = {"arrowstyle": "-|>", "mutation_scale": 12, "lw": 1.3, "color": "0.2", **kw}
        ax.add_patch(FancyArrowPatch(a, b, **style))
        if text:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.1, text, ha="center", va="bottom", fontsize=7.5)

    for row in (("audio", "conv", "proj", "enc", "bridge"), ("tokens", "embed", "dec", "head", "gen")):
        for left, right in itertools.pairwise(row):
            (x0, y0), (x1, _) = BOXES[left][:2], BOXES[right][:2]
            arrow((x0 + width / 2 + 0.02, y0 + 0.12), (x1 - width / 2 - 0.02, y0 + 0.12))
    # The memory feeds every decoder layer's cross-attention: keys and values, computed once per utterance.
    bx, by = BOXES["bridge"][:2]
    dx, dy = BOXES["dec"][:2]
    arrow((bx - 0.3, by - height / 2 - 0.6), (dx + 0.45, dy + height / 2 + 0.06), color="tab:green", lw=1.8)
    ax.text(bx + 0.15, (by + dy) / 2 - 0.3, "cross-attention: keys and values\nfrom the memory, computed once\n"
            "per utterance, in every layer", ha="center", va="center", fontsize=8, color="tab:green")
    # The loop: the chosen token is appended to the tokens and the decoder runs again, until </s>.
    gx, gy = BOXES["gen"][:2]
    tx, ty = BOXES["tokens"][:2]
    low, left = ty - height / 2 - 0.72, tx - width / 2 - 0.25
    ax.plot([gx, gx, left, left], [gy - height / 2 - 0.55, low, low, ty + 0.12], color="tab:purple", lw=1.5)
    arrow((left, ty + 0.12), (tx - width / 2 - 0.02, ty + 0.12), color="tab:purple", lw=1.5)
    ax.text((gx + tx) / 2, low - 0.06, "append the chosen token and step again, until </s>; then "
            "tokenizer.py turns the ids into text", ha="center", va="top", fontsize=8, color="tab:purple")
    ax.legend(handles=[Patch(facecolor=c, edgecolor="0.35", label=label) for c, label in
                       ((ENCODER, "speech encoder (wav2vec2 / HuBERT)"), (BRIDGE, "the join"),
                        (DECODER, "text decoder (GPT-2, BERT, BART, Speech2Text2)"),
                        (GENERATION, "generation"), (IO, "inputs"))],
              loc="upper center", bbox_to_anchor=(0.5, 1.02), ncol=5, fontsize=8, frameon=False)
    ax.set_xlim(-0.4, 11.55)
    ax.set_ylim(-0.95, 4.35)
    ax.axis("off")
    ax.set_title("SpeechEncoderDecoderModel in minispeechseq: each box names the file under minispeechseq/ that "
                 "implements it", fontsize=10, pad=18)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"model picture: {path} ({os.path.getsize(path) // 1000} kB)")


def main(prefixes: list[str]) -> int:
    os.makedirs(PICTURES, exist_ok=True)
    if not prefixes or "model" in prefixes:
        draw_architecture()
        if prefixes == ["model"]:
            return 0
        prefixes = [p for p in prefixes if p != "model"]
    tutorials = sorted(glob.glob(os.path.join(HERE, "[0-9][0-9]_*.py")))
    if prefixes:
        tutorials = [t for t in tutorials if os.path.basename(t).startswith(tuple(prefixes))]
    times = {}
    for path in tutorials:
        name = os.path.basename(path)
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "MINISPEECHSEQ_TUTORIAL_OUT": out, "MPLBACKEND": "Agg"}
            start = time.perf_counter()
            result = subprocess.run([sys.executable, path], env=env, cwd=out, capture_output=True, text=True, check=False)
            times[name] = time.perf_counter() - start
            if result.returncode != 0:
                print(result.stdout[-2000:], result.stderr[-4000:], sep="\n")
                print(f"{name} failed (exit {result.returncode})")
                return 1
            for png in sorted(glob.glob(os.path.join(out, "*.png"))):
                shutil.copy(png, PICTURES)
                print(f"{name}: {os.path.basename(png)} ({os.path.getsize(png) // 1000} kB)")
    print("\n| tutorial | runtime |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.0f} s |")
    print(f"| all | {sum(times.values()):.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
