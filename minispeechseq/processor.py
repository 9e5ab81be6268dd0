"""One object for both ends of a speech encoder-decoder: audio in (feature extractor), text out (tokenizer).

`Processor.from_pretrained(folder)` reads `preprocessor_config.json` and the tokenizer files from one folder, as
transformers' `Wav2Vec2Processor` does; `Wav2Vec2Processor` is an alias so its documentation's examples run.

For training, `processor(audio=waves, text=transcripts)` returns the features with `labels` = the transcripts'
token ids (transformers' Wav2Vec2Processor behaviour); for inference, `processor.batch_decode(generated_ids)`.

transformers' fine-tuning recipe works in two halves, and so does this: a dataset `map` calls the processor on one
example at a time (no padding, no tensors), and a data collator pads a batch of those with
`processor.pad(features)` / `processor.pad(labels=...)` (or `processor.feature_extractor.pad` and
`processor.tokenizer.pad`). With a wav2vec2 CTC checkpoint the tokenizer is a `Wav2Vec2CTCTokenizer`, and
`processor.batch_decode(logits.argmax(-1))` is the greedy CTC transcript.

Shape legend: B batch, L audio samples, S tokens.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Set
from typing import Any

from .audio import Wav2Vec2FeatureExtractor
from .batching import BatchFeature
from .files.resolve import PREPROCESSING_FILES, resolve_folder
from .tokenizer import TOKENIZER_OPTIONS, Tokenizer

# Which keyword arguments each half accepts, read from the signatures so the lists cannot drift from the code.
_AUDIO_KWARGS = set(inspect.signature(Wav2Vec2FeatureExtractor.__call__).parameters) - {"self", "raw_speech", "sampling_rate"}
_TEXT_KWARGS = set(inspect.signature(Tokenizer.__call__).parameters) - {"self", "text"}
_AUDIO_PAD_KWARGS = set(inspect.signature(Wav2Vec2FeatureExtractor.pad).parameters) - {"self", "processed_features"}
_TEXT_PAD_KWARGS = set(inspect.signature(Tokenizer.pad).parameters) - {"self", "encoded_inputs"}
# The feature extractor's preprocessor_config.json fields: from_pretrained overrides with these names go to it.
_EXTRACTOR_FIELDS = set(inspect.signature(Wav2Vec2FeatureExtractor.__init__).parameters) - {"self", "extra"}


class Processor:
    """A feature extractor and a tokenizer, saved and loaded together."""

    def __init__(self, feature_extractor: Wav2Vec2FeatureExtractor, tokenizer: Tokenizer) -> None:
        if not isinstance(feature_extractor, Wav2Vec2FeatureExtractor):
            raise ValueError(f"feature_extractor is a {type(feature_extractor).__name__}; expected a Wav2Vec2FeatureExtractor.")
        if not isinstance(tokenizer, Tokenizer):
            raise ValueError(f"tokenizer is a {type(tokenizer).__name__}; expected a minispeechseq Tokenizer.")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> Processor:
        """Read preprocessor_config.json and the tokenizer files (tokenizer.json or vocab files) from a folder, or
        from a hub id's cached snapshot (`revision`, `cache_dir`, `local_files_only` as in transformers).

        The folder is found once, so both halves come from the same snapshot; a half that is missing there is an
        error naming it, never a processor with one half.

        `overrides` replace values of the saved files, as transformers' kwargs do: a preprocessor_config.json field
        (`return_attention_mask=True`) goes to the feature extractor, a tokenizer option (`do_lower_case=True`,
        `pad_token=...`) to the tokenizer, and `padding_side` to both (transformers hands every kwarg to both
        halves, and each keeps what it knows). A name that neither takes is an error."""
        audio, text = _route(overrides, _EXTRACTOR_FIELDS, TOKENIZER_OPTIONS, "processor option")
        folder = resolve_folder(folder, what="processor folder", patterns=PREPROCESSING_FILES, revision=revision,
                                cache_dir=cache_dir, local_files_only=local_files_only)
        return cls(Wav2Vec2FeatureExtractor.from_pretrained(folder, **audio), Tokenizer.from_pretrained(folder, **text))

    @property
    def model_input_names(self) -> list[str]:
        """What a batch from this processor holds, by name: the feature extractor's inputs plus "labels" (as
        transformers' Wav2Vec2Processor; the first name is the one a collator pads, `model_input_names[0]`)."""
        return [*self.feature_extractor.model_input_names, "labels"]

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        self.feature_extractor.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    def __call__(self, audio: Any = None, sampling_rate: int | None = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        """audio -> features; text -> token ids; both -> the features with `labels` = the text's input_ids.

        Keyword arguments go to whichever half accepts them (padding, max_length, truncation and return_tensors to
        both, as transformers routes its shared kwargs). As in transformers, nothing is padded and no tensors are
        made unless asked: `padding=True, return_tensors="pt"` gives a batch a model reads.
        """
        if audio is None and text is None:
            raise ValueError("Give audio=..., text=..., or both; the processor got neither.")
        audio_kwargs, text_kwargs = _route(kwargs, _AUDIO_KWARGS, _TEXT_KWARGS, "processor argument")
        features = None if audio is None else self.feature_extractor(audio, sampling_rate=sampling_rate, **audio_kwargs)
        encodings = None if text is None else self.tokenizer(text, **text_kwargs)
        return _with_labels(features, encodings)

    def pad(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Pad a batch of unpadded examples, as transformers' Wav2Vec2Processor.pad (the data collator's call).

        - audio features, the first positional argument or `input_features=`: through `feature_extractor.pad`;
        - `labels=`: token ids (`[{"input_ids": [...]}, ...]`), through `tokenizer.pad`;
        - both: the padded features, with `labels` = the padded label ids. As in transformers, the label padding is
          the pad token; a training loop masks it with -100 where the labels' attention mask is 0.
        Keyword arguments go to whichever pad accepts them (padding, max_length, pad_to_multiple_of,
        return_attention_mask and return_tensors to both).
        """
        input_features = kwargs.pop("input_features", None)
        labels = kwargs.pop("labels", None)
        if args:
            input_features, args = args[0], args[1:]
        if input_features is None and labels is None:
            raise ValueError("processor.pad needs audio features (first argument or input_features=) or labels=.")
        audio_kwargs, text_kwargs = _route(kwargs, _AUDIO_PAD_KWARGS, _TEXT_PAD_KWARGS, "pad argument")
        features = None if input_features is None else self.feature_extractor.pad(input_features, *args, **audio_kwargs)
        encodings = None if labels is None else self.tokenizer.pad(labels, **text_kwargs)
        return _with_labels(features, encodings)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> list[str]:
        """The tokenizer's batch_decode: (B, S) ids -> B texts."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        """The tokenizer's decode: (S,) ids -> text."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def __repr__(self) -> str:
        return f"Processor({self.feature_extractor!r}, {self.tokenizer!r})"


def _route(kwargs: dict[str, Any], audio_names: Set[str], text_names: Set[str], what: str) -> tuple[dict, dict]:
    """Each keyword to the half (or both halves) that takes it, as transformers hands a processor's keywords to
    both halves and each keeps what it knows; a keyword that neither takes is an error, never silently dropped."""
    unknown = sorted(set(kwargs) - audio_names - text_names)
    if unknown:
        raise ValueError(f"Unknown {what}(s) {unknown}; the feature extractor takes {sorted(audio_names)} "
                         f"and the tokenizer {sorted(text_names)}.")
    return ({k: v for k, v in kwargs.items() if k in audio_names}, {k: v for k, v in kwargs.items() if k in text_names})


def _with_labels(features: BatchFeature | None, encodings: BatchFeature | None) -> BatchFeature:
    """Audio only, text only, or the features with `labels` = the token ids (transformers' Wav2Vec2Processor).
    Their padding (if any) is pad_token_id, which a training loop replaces by -100 where attention_mask is 0
    (transformers does not do it for you either)."""
    if encodings is None:
        return features
    if features is None:
        return encodings
    features["labels"] = encodings["input_ids"]
    return features


# transformers' name for the same thing, so `Wav2Vec2Processor.from_pretrained(folder)` from its docs runs.
Wav2Vec2Processor = Processor
