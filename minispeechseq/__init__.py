"""minispeechseq: a readable, from-scratch speech encoder-decoder (wav2vec2/HuBERT -> BERT/GPT-2/BART/Speech2Text2).

The public names mirror transformers, so its documentation's examples run with `minispeechseq` in their place.
"""

__version__ = "0.1.0"

from .attention import ATTN_IMPLEMENTATIONS, Attention, attend  # noqa: F401
from .cache import CrossAttentionCache, DecoderCache, SelfAttentionCache  # noqa: F401
