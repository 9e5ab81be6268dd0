"""Choose a model's alignment heads (the cross-attention heads word timestamps follow) the way the model card says:
`timestamps.head_scores` (peaked x advancing) averaged over the first 60 utterances of a held-out manifest, then
`timestamps.choose_alignment_heads`. Prints each head's mean score and the chosen heads; with --write, stores them
in MODEL/generation_config.json.

    python tutorials/results/voices/alignment_heads.py MODEL MANIFEST [--write]
"""

import sys

import torch

from minispeechseq import GenerationConfig, Processor, SpeechEncoderDecoderModel
from minispeechseq.recognition.timestamps import (
    choose_alignment_heads,
    cross_attention_maps,
    head_scores,
)
from minispeechseq.training.data import SAMPLING_RATE, ManifestDataset


@torch.no_grad()
def mean_head_scores(model, processor, manifest: str, count: int = 60) -> torch.Tensor:
    """Each cross-attention head's score (L, H), averaged over the first `count` utterances of `manifest`."""
    dataset = ManifestDataset(manifest)
    scores = []
    for i in range(min(count, len(dataset))):
        x = processor(dataset[i]["audio"], sampling_rate=SAMPLING_RATE, return_tensors="pt")
        encoder_outputs = model.get_encoder()(x.input_values)
        sequences = model.generate(encoder_outputs=encoder_outputs)
        maps = cross_attention_maps(model, encoder_outputs, None, sequences)  # (L, 1, H, S, T)
        rows = sequences.shape[1] - 1  # every generated token, the EOS included
        scores.append(head_scores(maps[:, 0, :, :rows], rows, maps.shape[-1]))
    return torch.stack(scores).mean(0)


def main() -> int:
    model_dir, manifest = sys.argv[1:3]
    model = SpeechEncoderDecoderModel.from_pretrained(model_dir).eval()
    mean = mean_head_scores(model, Processor.from_pretrained(model_dir), manifest)
    for layer, row in enumerate(mean.tolist()):
        print(f"layer {layer}: " + ", ".join(f"{s:.2f}" for s in row))
    heads = choose_alignment_heads(mean)
    print("alignment_heads:", heads)
    if "--write" in sys.argv:
        config = GenerationConfig.from_pretrained(model_dir)
        config.alignment_heads = heads
        config.save_pretrained(model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
