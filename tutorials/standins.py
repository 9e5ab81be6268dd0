"""Tiny stand-in checkpoints for the tutorials: a wav2vec2 encoder and a BERT text model, random, in the layout of
real ones (config.json + model.safetensors, a feature extractor or a WordPiece tokenizer beside them).

There is no model hub on the machines the tutorials run on, so 03 and 11 (and 06, warm-starting) write these
instead of downloading wav2vec2-base and bert-base; the loading code that reads them is the same either way. The
sizes are keyword arguments of transformers' config names, so the same numbers build minispeechseq's configs and
transformers' (`Wav2Vec2Config(**TINY_WAV2VEC2)` in either library), and a tutorial can compare the two.

Not a tutorial (no number in its name, so the test suite does not run it): a tutorial imports it after putting its
own folder on sys.path.
"""

from __future__ import annotations

import os

from minispeechseq import (
    BertConfig,
    BertForCausalLM,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

# wav2vec2's hop in 4 conv layers instead of 7 (5 * 4 * 4 * 4 = 320 samples = 20 ms per frame), width 32, 2 layers.
TINY_WAV2VEC2 = dict(
    conv_dim=(16, 16, 16, 16), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4), hidden_size=32,
    num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's, in its usual order: [PAD] is id 0


def tiny_bert(vocab_size: int, hidden_size: int = 32, **more: object) -> dict:
    """A 2-layer BERT's sizes; `more` adds or overrides fields (is_decoder=True, add_cross_attention=True...)."""
    return dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=2 * hidden_size, max_position_embeddings=64, **more)


def write_wav2vec2(folder: str, **feature_extractor_options: object) -> Wav2Vec2Config:
    """A random wav2vec2 encoder and its feature extractor (normalising, as wav2vec2-base's), saved to `folder`."""
    config = Wav2Vec2Config(**TINY_WAV2VEC2)
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, **feature_extractor_options).save_pretrained(folder)
    return config


def write_bert(folder: str, words: list[str], hidden_size: int = 32, subwords: bool = False) -> BertConfig:
    """A random BERT as a real checkpoint is one (is_decoder=False, no cross-attention) and its WordPiece vocabulary:
    the special tokens, `words`, the letters, and with `subwords` the continuation pieces ##a..##z too."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [*SPECIAL_TOKENS, *words, *letters, *((f"##{c}" for c in letters) if subwords else ())]
    config = BertConfig(**tiny_bert(len(vocab), hidden_size))
    BertForCausalLM(config).save_pretrained(folder)
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        f.write('{"tokenizer_class": "BertTokenizer", "do_lower_case": true}\n')
    return config
