"""minispeechseq: a readable, from-scratch speech encoder-decoder (wav2vec2/HuBERT -> BERT/GPT-2/BART/Speech2Text2).

The public names mirror transformers, so its documentation's examples run with `minispeechseq` in their place.
"""

__version__ = "0.1.0"

from .attention import ATTN_IMPLEMENTATIONS, Attention, attend  # noqa: F401
from .audio import AutoFeatureExtractor, Wav2Vec2FeatureExtractor, load_audio  # noqa: F401
from .batching import BatchFeature  # noqa: F401
from .cache import CrossAttentionCache, DecoderCache, SelfAttentionCache  # noqa: F401
from .ctc import HubertForCTC, Wav2Vec2ForCTC  # noqa: F401
from .decoders.bart import BartConfig, BartForCausalLM, MBartConfig, MBartForCausalLM  # noqa: F401
from .decoders.bert import BertConfig, BertForCausalLM, BertLMHeadModel  # noqa: F401
from .decoders.gpt2 import GPT2Config, GPT2LMHeadModel  # noqa: F401
from .decoders.speech2text2 import Speech2Text2Config, Speech2Text2ForCausalLM  # noqa: F401
from .generation import GenerationConfig  # noqa: F401
from .processor import Processor, Wav2Vec2Processor  # noqa: F401
from .recognition.quantize import Int8Linear, quantize  # noqa: F401
from .recognition.recognizer import TranscriptionError, transcribe  # noqa: F401
from .speech_encoder_decoder import (  # noqa: F401
    Seq2SeqLMOutput,
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
)
from .tokenizer import AutoTokenizer, Tokenizer, Wav2Vec2CTCTokenizer  # noqa: F401
from .wav2vec2 import HubertModel, Wav2Vec2Model  # noqa: F401
from .wav2vec2_config import HubertConfig, Wav2Vec2Config  # noqa: F401
from .wav2vec2_pretraining import (  # noqa: F401
    Wav2Vec2ForPreTraining,
    Wav2Vec2ForPreTrainingOutput,
    compute_mask_indices,
    sample_negative_indices,
)
