"""Text <-> token ids for the decoders (BERT WordPiece, GPT-2 / BART byte-level BPE), built on the `tokenizers` library.

`Tokenizer.from_pretrained(folder)` reads what a transformers checkpoint ships:
- `tokenizer.json`: the full `tokenizers` serialization (normalizer, pre-tokenizer, model, post-processor, decoder,
  added tokens). When present it is trusted as is: it is what transformers itself loads.
- otherwise the legacy files, from which we assemble the same pipeline transformers' tokenizer classes build:
  - `vocab.txt` (BERT): BertNormalizer (lowercase/strip accents per `do_lower_case`/`strip_accents`), BertPreTokenizer,
    WordPiece model and decoder, and the `[CLS] x [SEP]` template.
  - `vocab.json` + `merges.txt` (GPT-2, BART/RoBERTa): byte-level pre-tokenizer and decoder, BPE model; BART/RoBERTa
    add `<s> x </s>`, GPT-2 adds nothing (unless `add_bos_token`/`add_eos_token` say so).
  - `vocab.json` alone (wav2vec2 CTC checkpoints, transformers' `Wav2Vec2CTCTokenizer`): one id per character, spaces
    become the word delimiter `|`; its decode undoes CTC's frame-level repeats and blanks (`Wav2Vec2CTCTokenizer`).
- `tokenizer_config.json` / `special_tokens_map.json`: the special tokens (plain strings or AddedToken dicts), the
  tokenizer class (which decides the family and its default special tokens), `do_lower_case`, `padding_side`...

Shape legend: B batch (texts), S tokens.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, WordLevel, WordPiece

from .batching import BatchFeature, batch_columns, check_return_tensors, padding_strategy, stack_columns
from .files.readers import TOKENIZER_MAX_BYTES, check_regular_file, read_json, read_text
from .files.resolve import PREPROCESSING_FILES, resolve_folder

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# The special tokens each transformers tokenizer class assumes when its config does not name them
# (the defaults of BertTokenizer, GPT2Tokenizer and RobertaTokenizer.__init__, which BartTokenizer is).
FAMILY_DEFAULTS: dict[str, dict[str, str]] = {
    "bert": dict(unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]"),
    "gpt2": dict(unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>"),
    "roberta": dict(
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    ),
    # Wav2Vec2CTCTokenizer.__init__: the pad token is CTC's blank.
    "ctc": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"),
}

# The keyword arguments `from_pretrained(folder, **overrides)` takes: tokenizer_config.json keys, each with the
# meaning it has in that file (transformers passes them to the tokenizer class as the file's values would be).
# Those that shape the text pipeline only apply where we build it from the legacy files (with tokenizer.json the
# pipeline is fixed by that file); an override that would change nothing is an error, not a silent no-op.
COMMON_OPTIONS = (*SPECIAL_NAMES, "additional_special_tokens", "padding_side", "model_max_length",
                  "clean_up_tokenization_spaces")
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    "bert": ("do_lower_case", "strip_accents", "tokenize_chinese_chars"),
    "gpt2": ("add_prefix_space", "add_bos_token", "add_eos_token"),
    "roberta": ("add_prefix_space", "trim_offsets"),
    "ctc": ("do_lower_case", "word_delimiter_token", "replace_word_delimiter_char", "target_lang"),
}
TOKENIZER_OPTIONS = frozenset(COMMON_OPTIONS).union(*FAMILY_OPTIONS.values())

# transformers' model_max_length when a checkpoint sets none (int(1e30)): "no limit".
NO_MAX_LENGTH = int(1e30)

# What pad() fills each padded key with (transformers' _pad); the pad token id is filled in per tokenizer.
PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


# ============================================================================================ file reading
def _read_json(path: str) -> dict[str, Any]:
    """A tokenizer folder's optional JSON files: {} when absent (a FIFO or a device there is refused by read_json,
    not taken for absent)."""
    return read_json(path, os.path.basename(path)) if os.path.exists(path) else {}


def _read_backend(path: str) -> Backend:
    """tokenizer.json through the library's one file reader (a regular file, at most TOKENIZER_MAX_BYTES), then
    `tokenizers`; what it rejects becomes one ValueError naming the file, not a Rust error with a traceback."""
    text = read_text(path, TOKENIZER_FILE, TOKENIZER_MAX_BYTES)
    try:
        return Backend.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception carrying serde's message ("... at line 1 column 2")
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path} is not a tokenizer.json the tokenizers library can read ({reason}); "
                         "it may be damaged, or written by a newer tokenizers version.") from None


def _write_json(path: str, payload: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _as_added_token(value: Any, special: bool) -> AddedToken | None:
    """A special token as written in tokenizer_config.json: a string, or an AddedToken dict (`{"content": ...}`)."""
    if value is None:
        return None
    if isinstance(value, str):
        # Special tokens match the raw text, before normalization (transformers adds them with normalized=False).
        return AddedToken(value, special=special, normalized=False)
    if isinstance(value, dict) and "content" in value:
        return AddedToken(
            value["content"],
            single_word=value.get("single_word", False),
            lstrip=value.get("lstrip", False),
            rstrip=value.get("rstrip", False),
            normalized=value.get("normalized", not special),
            special=value.get("special", special),
        )
    raise ValueError(f"A special token is {value!r}; expected a string or an AddedToken dict with a 'content' key.")


def _family(tokenizer_class: str | None, folder: str) -> str | None:
    """Which transformers tokenizer class this folder was written for: 'bert', 'gpt2', 'roberta' (BART) or None."""
    name = (tokenizer_class or "").lower()
    if name.startswith("wav2vec2ctc"):
        return "ctc"
    if "bert" in name and "roberta" not in name:
        return "bert"
    if name.startswith(("bart", "roberta", "mbart")) and os.path.isfile(os.path.join(folder, "merges.txt")):
        return "roberta"
    if name.startswith("gpt2"):
        return "gpt2"
    if not name:  # no class named: the files tell
        if os.path.isfile(os.path.join(folder, "vocab.txt")):
            return "bert"
        if os.path.isfile(os.path.join(folder, "merges.txt")):
            return "gpt2"
        # vocab.json alone: older wav2vec2 CTC checkpoints (wav2vec2-base-960h) name no class; their config.json does.
        if os.path.isfile(os.path.join(folder, "vocab.json")) and not os.path.exists(os.path.join(folder, TOKENIZER_FILE)):
            return "ctc"
    return None


def _vocabulary_file(folder: str, name: str) -> str:
    """The path of a legacy vocabulary file that `tokenizers` opens itself (in Rust, where a FIFO's open() blocks for
    good): checked first by files/readers.py's rule, a regular file of at most TOKENIZER_MAX_BYTES."""
    path = os.path.join(folder, name)
    check_regular_file(path, name, TOKENIZER_MAX_BYTES)
    return path


def _build_wordpiece(folder: str, config: dict[str, Any], unk_token: str) -> Backend:
    """BERT's pipeline from vocab.txt, as transformers' BertTokenizer assembles it."""
    backend = Backend(WordPiece.from_file(_vocabulary_file(folder, "vocab.txt"), unk_token=unk_token))
    lowercase = config.get("do_lower_case", True)
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        # None means "follow lowercase", as in the original BERT (uncased models strip accents, cased keep them).
        strip_accents=config.get("strip_accents"),
        lowercase=lowercase,
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _build_byte_level_bpe(folder: str, config: dict[str, Any]) -> Backend:
    """GPT-2 / RoBERTa / BART's pipeline from vocab.json + merges.txt: BPE over bytes mapped to printable characters."""
    model = BPE.from_file(_vocabulary_file(folder, "vocab.json"), _vocabulary_file(folder, "merges.txt"))
    backend = Backend(model)
    # add_prefix_space=False: GPT-2 sees "Hello" and " Hello" as different words; the checkpoints were trained so.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=config.get("add_prefix_space", False))
    backend.decoder = decoders.ByteLevel()
    return backend


class _Uppercase:
    """A `tokenizers` normalizer step that uppercases. The library has Lowercase but no Uppercase, and
    Wav2Vec2CTCTokenizer's `do_lower_case` means "the vocabulary is uppercase: uppercase the text"."""

    def normalize(self, normalized: Any) -> None:
        normalized.uppercase()


def _ctc_normalizer(config: dict[str, Any]) -> normalizers.Normalizer:
    """What Wav2Vec2CTCTokenizer._tokenize does to the text between added tokens: uppercase it (do_lower_case),
    then spaces -> the word delimiter. Only spaces: a tab is a character like any other (unk, mostly)."""
    steps = [normalizers.Replace(" ", config.get("word_delimiter_token", "|"))]
    if config.get("do_lower_case", False):
        steps.insert(0, normalizers.Normalizer.custom(_Uppercase()))
    return normalizers.Sequence(steps)


def _build_ctc(vocab: dict[str, int], config: dict[str, Any], tokens: dict[str, AddedToken | None]) -> Backend:
    """wav2vec2's CTC vocabulary (vocab.json), tokenized as transformers' Wav2Vec2CTCTokenizer does.

    Every character is one token (`list(text)` there): a WordLevel model over single-character pieces, unknown
    characters -> unk. Multi-character vocabulary entries (`<pad>`, `<s>`, ...) are added tokens, matched whole in
    the raw text with the whitespace around them stripped (transformers adds them with lstrip=rstrip=True), and
    never normalized: `<pad>` stays `<pad>` under do_lower_case, as there, where they are split off before
    `_tokenize` uppercases. Checked against transformers on random strings (tests/test_ctc_tokenizer.py).
    """
    unk = tokens["unk_token"].content if tokens["unk_token"] is not None else None
    backend = Backend(WordLevel(vocab, unk_token=unk))
    backend.normalizer = _ctc_normalizer(config)
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    delimiter = config.get("word_delimiter_token", "|")
    # The named special tokens and the delimiter count as special (transformers' all_special_tokens has them all).
    special = {t.content for t in tokens.values() if t is not None} | {delimiter}
    recorded = {entry["content"]: (int(i), entry) for i, entry in (config.get("added_tokens_decoder") or {}).items()}
    # The vocabulary's multi-character entries, plus the delimiter so that it is matched whole and marked special.
    for content, index in sorted(vocab.items(), key=lambda kv: kv[1]):
        if len(content) > 1 or content == delimiter:
            entry = recorded.get(content, (index, {"content": content, "lstrip": len(content) > 1,
                                                   "rstrip": len(content) > 1}))[1]
            token = _as_added_token({**entry, "normalized": False, "special": content in special}, special=True)
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
    # Tokens the file lists beyond the vocabulary (a bos/eos that vocab.json lacks, added tokens) keep their ids.
    for content, (index, entry) in sorted(recorded.items(), key=lambda kv: kv[1][0]):
        if content not in vocab:
            token = _as_added_token({**entry, "special": entry.get("special", False) or content in special}, special=True)
            (backend.add_special_tokens if token.special else backend.add_tokens)([token])
            if backend.token_to_id(content) != index:
                raise ValueError(f"tokenizer_config.json gives {content!r} the id {index}, but after vocab.json "
                                 f"it gets {backend.token_to_id(content)}; the two files do not belong together.")
    return backend


def _read_ctc_vocab(folder: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """vocab.json as read, and the {token: id} table in it: the file itself, or with one vocabulary per language
    (MMS: {lang: {token: id}}) the one `target_lang` picks."""
    vocab = read_json(os.path.join(folder, "vocab.json"), "vocab.json")
    nested = bool(vocab) and all(isinstance(v, dict) for v in vocab.values())
    target_lang = config.get("target_lang")
    if target_lang is not None:
        if not nested or target_lang not in vocab:
            choices = f"one of {sorted(vocab)}" if nested else "none: its vocabulary is not per language"
            raise ValueError(f"target_lang={target_lang!r} is not in {folder}/vocab.json ({choices}).")
        return vocab, vocab[target_lang]
    if nested:
        raise ValueError(f"{folder}/vocab.json holds one vocabulary per language; choose one with "
                         f"target_lang=... (one of {sorted(vocab)[:10]}{'...' if len(vocab) > 10 else ''}).")
    return vocab, vocab


# ================================================================================================ Tokenizer
class Tokenizer:
    """A `tokenizers.Tokenizer` plus the named special tokens and the padding/decoding rules of transformers."""

    # What __call__ returns (transformers' name); pad() makes an attention mask by default because it is here.
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(self, backend: Backend, special_tokens: dict[str, str | None], config: dict[str, Any] | None = None):
        self.backend = backend
        self.config = dict(config or {})  # tokenizer_config.json, kept so save_pretrained writes it back
        self._special = {name: special_tokens.get(name) for name in SPECIAL_NAMES}
        self.padding_side = self.config.get("padding_side", "right")
        if self.padding_side not in ("right", "left"):
            raise ValueError(f"padding_side={self.padding_side!r} in tokenizer_config.json; expected 'right' or 'left'.")
        self.model_max_length = int(self.config.get("model_max_length") or NO_MAX_LENGTH)
        # transformers 5 defaults this to False and never applies it to BPE (it would eat spaces before punctuation).
        self.clean_up_tokenization_spaces = bool(self.config.get("clean_up_tokenization_spaces", False))
        # We pad and truncate ourselves, per call: a tokenizer.json may carry fixed settings from training.
        self.backend.no_padding()
        self.backend.no_truncation()

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> Tokenizer:
        """Read a tokenizer folder, or a hub id's (`revision`, `cache_dir`, `local_files_only` as in transformers).

        `overrides` replace tokenizer_config.json values (`pad_token="<unk>"`, `do_lower_case=True`...), as
        transformers' from_pretrained kwargs do; one that does not apply to this folder's tokenizer is an error."""
        folder = resolve_folder(folder, what="tokenizer folder", patterns=PREPROCESSING_FILES, revision=revision,
                                cache_dir=cache_dir, local_files_only=local_files_only)
        config = _read_json(os.path.join(folder, TOKENIZER_CONFIG_FILE))
        special_map = _read_json(os.path.join(folder, SPECIAL_TOKENS_MAP_FILE))
        family = _family(config.get("tokenizer_class"), folder)
        if issubclass(cls, Wav2Vec2CTCTokenizer) and family != "ctc":
            raise ValueError(f"{folder} holds a {config.get('tokenizer_class') or family or 'non-CTC'} tokenizer, not a "
                             "Wav2Vec2CTCTokenizer (vocab.json alone); load it with Tokenizer.from_pretrained.")
        from_json = family != "ctc" and os.path.exists(os.path.join(folder, TOKENIZER_FILE))
        allowed = set(COMMON_OPTIONS) | (set() if from_json else set(FAMILY_OPTIONS.get(family, ())))
        not_allowed = sorted(set(overrides) - allowed)
        if not_allowed:
            built = "from tokenizer.json, whose text pipeline is fixed" if from_json else f"a {family or 'legacy'} tokenizer"
            raise ValueError(f"Tokenizer option(s) {not_allowed} do not apply to {folder} ({built}); "
                             f"it takes {sorted(allowed)}.")
        config.update(overrides)

        # Named special tokens: tokenizer_config.json first, then special_tokens_map.json, then the class default.
        tokens: dict[str, AddedToken | None] = {}
        for name in SPECIAL_NAMES:
            if name in config:
                value = config[name]
            elif name in special_map:
                value = special_map[name]
            else:
                value = FAMILY_DEFAULTS.get(family or "", {}).get(name)
            tokens[name] = _as_added_token(value, special=True)
        extra_specials = config.get("additional_special_tokens") or config.get("extra_special_tokens") or \
            special_map.get("additional_special_tokens") or []
        if isinstance(extra_specials, dict):  # transformers 5 may store {name: token}
            extra_specials = list(extra_specials.values())

        tokenizer_file = os.path.join(folder, TOKENIZER_FILE)
        legacy = not from_json
        if legacy and family is None and config.get("tokenizer_class"):
            # e.g. Speech2Text2Tokenizer ("@@" BPE) or MBart (sentencepiece): their legacy files are not byte-level BPE.
            raise ValueError(
                f"{folder} holds the legacy files of a {config['tokenizer_class']}, which minispeechseq only reads "
                "through tokenizer.json (legacy files are read for BERT, GPT-2, BART, RoBERTa and Wav2Vec2CTC)."
            )
        if family == "ctc":
            vocab_file, vocab = _read_ctc_vocab(folder, config)
            backend = _build_ctc(vocab, config, tokens)
        elif not legacy:
            backend = _read_backend(tokenizer_file)
        elif os.path.isfile(os.path.join(folder, "vocab.txt")):
            unk = tokens["unk_token"].content if tokens["unk_token"] else "[UNK]"
            backend = _build_wordpiece(folder, config, unk)
        elif os.path.isfile(os.path.join(folder, "vocab.json")) and os.path.isfile(os.path.join(folder, "merges.txt")):
            backend = _build_byte_level_bpe(folder, config)
        else:
            raise FileNotFoundError(
                f"{folder} has no tokenizer files: expected tokenizer.json, or vocab.txt (WordPiece), "
                "or vocab.json + merges.txt (byte-level BPE)."
            )

        if legacy and family != "ctc":  # (_build_ctc placed the CTC folder's added tokens itself)
            # Tokens the config lists by id (added_tokens_decoder) come first, so they keep their ids.
            decoder_entries = config.get("added_tokens_decoder") or {}
            for _, entry in sorted(decoder_entries.items(), key=lambda kv: int(kv[0])):
                token = _as_added_token(entry, special=bool(entry.get("special", False)))
                (backend.add_special_tokens if token.special else backend.add_tokens)([token])

        # Every named special token must be an added *special* token of the backend: then it is matched in raw text
        # before normalization, and skipped by decode(skip_special_tokens=True). A token already in the vocabulary keeps
        # its id; one that is not gets the next id (transformers does the same).
        known = {t.content for t in backend.get_added_tokens_decoder().values()}
        to_add = [t for t in tokens.values() if t is not None and t.content not in known]
        to_add += [t for t in (_as_added_token(x, special=True) for x in extra_specials) if t.content not in known]
        for token in to_add:
            token.special = True
            backend.add_special_tokens([token])

        names = {name: (t.content if t is not None else None) for name, t in tokens.items()}
        config = {**config, "tokenizer_class": config.get("tokenizer_class") or _CLASS[family]}
        if family == "ctc":  # no post-processor: transformers' CTC tokenizer adds no special tokens around the text
            return Wav2Vec2CTCTokenizer(backend, names, config=config, vocab_file=vocab_file)
        if legacy:
            backend.post_processor = _post_processor(family, config, tokens, backend)
        return cls(backend, names, config=config)

    # ------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json (readable by transformers too)."""
        folder = str(folder)
        os.makedirs(folder, exist_ok=True)
        self.backend.save(os.path.join(folder, TOKENIZER_FILE))
        self._save_configs(folder)

    def _save_configs(self, folder: str, **extra: Any) -> None:
        """tokenizer_config.json (the config we read, with the current special tokens and settings, plus `extra`)
        and special_tokens_map.json."""
        specials = {name: tok for name, tok in self._special.items() if tok is not None}
        config = {k: v for k, v in self.config.items() if k not in ("added_tokens_decoder", *SPECIAL_NAMES)}
        config.update(specials, padding_side=self.padding_side, clean_up_tokenization_spaces=self.clean_up_tokenization_spaces)
        config.update(extra)
        if self.model_max_length < NO_MAX_LENGTH:
            config["model_max_length"] = self.model_max_length
        for name, payload in ((TOKENIZER_CONFIG_FILE, config), (SPECIAL_TOKENS_MAP_FILE, specials)):
            _write_json(os.path.join(folder, name), payload)

    # ------------------------------------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens (transformers' `vocab_size`); `len(tok)` counts them too."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int] | None:
        """Token string(s) -> id(s); a token outside the vocabulary maps to the unk id (None without an unk token)."""
        if isinstance(tokens, str):
            found = self.backend.token_to_id(tokens)
            return found if found is not None else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> str | list[str] | None:
        if isinstance(ids, (int, np.integer)) or (isinstance(ids, torch.Tensor) and ids.ndim == 0):
            return self.backend.id_to_token(int(ids))
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in _as_id_list(ids) if int(i) not in special]

    @property
    def all_special_ids(self) -> list[int]:
        return [i for i, t in sorted(self.backend.get_added_tokens_decoder().items()) if t.special]

    # ------------------------------------------------------------------------------------------- encoding
    def __call__(
        self,
        text: str | Sequence[str],
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> BatchFeature:
        """Text(s) -> `input_ids` and `attention_mask` (1 = real token): lists, or (B, S) tensors with "pt"."""
        single = isinstance(text, str)
        texts = [text] if single else text
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}.")
        check_return_tensors(return_tensors)
        strategy = padding_strategy(padding)
        if strategy != "do_not_pad":
            self._check_pad_token()
        limit = max_length if max_length is not None else (self.model_max_length if self.model_max_length < NO_MAX_LENGTH else None)
        if (truncation or strategy == "max_length") and limit is None:
            raise ValueError(f"truncation={truncation}, padding={padding!r} needs max_length (in tokens).")

        if truncation:
            # tokenizers counts the special tokens inside max_length, as transformers does.
            self.backend.enable_truncation(limit)
        try:
            encodings = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        finally:
            self.backend.no_truncation()
        ids = [list(e.ids) for e in encodings]
        masks = [[1] * len(row) for row in ids]

        if strategy != "do_not_pad":
            target = max(len(row) for row in ids) if strategy == "longest" else limit
            for row, mask in zip(ids, masks):
                pad = max(target - len(row), 0)
                at = 0 if self.padding_side == "left" else len(row)
                row[at:at] = [self.pad_token_id] * pad
                mask[at:at] = [0] * pad

        out = BatchFeature()
        if return_tensors is None:
            out["input_ids"], out["attention_mask"] = (ids[0], masks[0]) if single else (ids, masks)
            return out
        if len({len(row) for row in ids}) > 1:
            raise ValueError(
                f"The texts have different token counts {[len(r) for r in ids]}; tensors need padding=True "
                "(or return_tensors=None)."
            )
        make = (lambda x: torch.tensor(x, dtype=torch.long)) if return_tensors == "pt" else (lambda x: np.array(x, dtype=np.int64))
        out["input_ids"], out["attention_mask"] = make(ids), make(masks)  # (B, S) each
        return out

    def _check_pad_token(self) -> None:
        if self.pad_token_id is None:
            raise ValueError(
                "Padding was asked for but this tokenizer has no pad token; set one (e.g. tokenizer.pad_token = "
                "tokenizer.eos_token) or call with padding=False."
            )

    def pad(
        self,
        encoded_inputs: Any,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Pad token ids made earlier (unpadded, one list per example) into one batch, as transformers' tokenizer.pad:
        the labels half of a fine-tuning collator.

        `encoded_inputs` is a list of dicts (`[{"input_ids": [...]}, ...]`) or a dict of lists. `input_ids` are
        padded with the pad token on `padding_side` (default: the tokenizer's); a given `attention_mask` is padded
        with 0, and one is made unless `return_attention_mask=False`. Other keys pass through unpadded.
        `return_tensors=None` keeps the input's kind: lists stay lists, tensors give tensors, arrays arrays.
        """
        check_return_tensors(return_tensors)
        strategy = padding_strategy(padding)
        side = padding_side or self.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side={side!r}; expected 'right' or 'left'.")
        columns = batch_columns(encoded_inputs, "input_ids", "pad")
        first = columns["input_ids"][0] if len(columns["input_ids"]) else None
        kind = return_tensors or ("pt" if isinstance(first, torch.Tensor) else "np" if isinstance(first, np.ndarray) else None)
        # Rows as Python lists from here on (tensors and arrays included), padded, then turned into `kind`.
        rows = {key: [_as_id_list(row) for row in values] for key, values in columns.items() if key in PAD_VALUES}
        if return_attention_mask is None:  # transformers' default: make one if the tokenizer's inputs include one
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in rows:
            rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]

        if strategy == "max_length" and max_length is None:
            if self.model_max_length >= NO_MAX_LENGTH:
                raise ValueError("padding='max_length' needs max_length (this tokenizer sets no model_max_length).")
            max_length = self.model_max_length
        if strategy != "do_not_pad" and rows["input_ids"]:
            self._check_pad_token()
            target = max(len(ids) for ids in rows["input_ids"]) if strategy == "longest" else max_length
            if pad_to_multiple_of:
                target = -(-target // pad_to_multiple_of) * pad_to_multiple_of
            fill = {**PAD_VALUES, "input_ids": self.pad_token_id}
            missing = [max(target - len(ids), 0) for ids in rows["input_ids"]]  # never shortens a row
            for key, values in rows.items():
                for i, n in enumerate(missing):
                    values[i] = [fill[key]] * n + values[i] if side == "left" else values[i] + [fill[key]] * n

        out = {**columns, **rows}
        if kind is None:
            return BatchFeature(out)
        return stack_columns(out, kind, ragged_ok=kind != "pt")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"encode takes one string, got {type(text).__name__}; use tokenizer(list_of_texts) for a batch.")
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).tokens)

    # ------------------------------------------------------------------------------------------- decoding
    def decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Ids (a list, a 1-D tensor or array, or one int) -> text."""
        ids = _as_id_list(ids)
        negative = [i for i in ids if i < 0]
        if negative:  # the tokenizers library raises a bare OverflowError on them
            hint = (" (-100 marks ignored label positions: replace it with pad_token_id first)"
                    if -100 in negative else "")
            raise ValueError(f"decode got negative token ids {sorted(set(negative))[:5]}; ids are >= 0{hint}.")
        text = self.backend.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # Like transformers 5, never for BPE: byte-level BPE keeps spaces exactly, and " ." -> "." would corrupt it.
        if clean and not isinstance(self.backend.model, BPE):
            text = _clean_up_tokenization(text)
        return text

    def batch_decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
                     **kwargs: Any) -> list[str]:
        """A (B, S) tensor/array or a list of id lists -> B texts. `kwargs` go to decode (the CTC tokenizer's
        `group_tokens`, `spaces_between_special_tokens`)."""
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            if ids.ndim != 2:
                raise ValueError(f"batch_decode expects (B, S) ids, got shape {tuple(ids.shape)}; use decode for one sequence.")
            ids = ids.tolist()
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces, **kwargs) for row in ids]

    def __repr__(self) -> str:
        return f"Tokenizer(class={self.config.get('tokenizer_class')}, vocab_size={self.vocab_size}, len={len(self)})"


# Named special tokens, as properties: `tok.pad_token` (a string or None) and `tok.pad_token_id` (an int or None).
def _special_property(name: str) -> property:
    def get(self: Tokenizer) -> str | None:
        return self._special[name]

    def set_(self: Tokenizer, value: str | None) -> None:
        if value is not None and self.backend.token_to_id(value) is None:
            self.backend.add_special_tokens([AddedToken(value, special=True, normalized=False)])
        self._special[name] = value

    return property(get, set_, doc=f"The {name.replace('_', ' ')} string, or None when this tokenizer has none.")


def _special_id_property(name: str) -> property:
    def get(self: Tokenizer) -> int | None:
        token = self._special[name]
        return None if token is None else self.backend.token_to_id(token)

    return property(get, doc=f"The id of the {name.replace('_', ' ')}, or None when this tokenizer has none.")


for _name in SPECIAL_NAMES:
    setattr(Tokenizer, _name, _special_property(_name))
    setattr(Tokenizer, _name + "_id", _special_id_property(_name))


# ================================================================================================ helpers
_CLASS = {"bert": "BertTokenizer", "gpt2": "GPT2Tokenizer", "roberta": "RobertaTokenizer", "ctc": "Wav2Vec2CTCTokenizer",
          None: None}


def _post_processor(family: str | None, config: dict[str, Any], tokens: dict[str, AddedToken | None], backend: Backend):
    """The special tokens each family wraps a sequence in (legacy files carry no post-processor)."""
    def ident(name: str) -> tuple[str, int]:
        if tokens[name] is None:
            raise ValueError(f"This {family} tokenizer needs a {name} in tokenizer_config.json to build its template.")
        return tokens[name].content, backend.token_to_id(tokens[name].content)

    if family == "bert":
        (cls, cls_id), (sep, sep_id) = ident("cls_token"), ident("sep_token")
        return processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )
    if family == "roberta":
        # <s> x </s> (pairs: <s> a </s></s> b </s>), as RobertaTokenizer, which BartTokenizer is in transformers.
        return processors.RobertaProcessing(
            ident("sep_token"), ident("cls_token"),
            trim_offsets=config.get("trim_offsets", True), add_prefix_space=config.get("add_prefix_space", False),
        )
    # GPT-2 adds nothing, unless its config asks for bos/eos (transformers' update_post_processor).
    parts, specials = ["$A:0"], []
    if config.get("add_bos_token", False) and tokens["bos_token"] is not None:
        parts.insert(0, f"{ident('bos_token')[0]}:0")
        specials.append(ident("bos_token"))
    if config.get("add_eos_token", False) and tokens["eos_token"] is not None:
        parts.append(f"{ident('eos_token')[0]}:0")
        specials.append(ident("eos_token"))
    return processors.TemplateProcessing(single=" ".join(parts), special_tokens=list(dict.fromkeys(specials)))


def _as_id_list(ids: Any) -> list[int]:
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        if ids.ndim > 1:
            raise ValueError(f"decode expects one sequence of ids, got shape {tuple(ids.shape)}; use batch_decode.")
        return [int(i) for i in ids.reshape(-1).tolist()]
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        raise ValueError("decode expects one sequence of ids, got a list of lists; use batch_decode.")
    return [int(i) for i in ids]


def _clean_up_tokenization(text: str) -> str:
    """transformers' clean_up_tokenization: glue punctuation and English contractions back to the word before."""
    for spaced, glued in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, glued)
    return text


# ================================================================================================ CTC
class Wav2Vec2CTCTokenizer(Tokenizer):
    """transformers' Wav2Vec2CTCTokenizer: characters in; out, the text of a CTC model's frame-level ids.

    A CTC model (ctc.py) emits one id per audio frame (20 ms): a character, the word delimiter `|`, or the blank,
    which is the pad token. The greedy transcript is what `decode` makes of the per-frame argmax ids:
    1. a token held over several frames is one token (`group_tokens=True`): "HHEE" -> "HE";
    2. blanks are dropped *after* that, so a blank between two equal letters keeps both: "L<pad>L" -> "LL";
    3. the delimiter becomes `replace_word_delimiter_char` (a space), and the ends are stripped.
    Encoding is the other way, one id per character (see _build_ctc); `do_lower_case` uppercases the text going in
    (the vocabulary is uppercase) and lowercases the text coming out.
    """

    def __init__(self, backend: Backend, special_tokens: dict[str, str | None], config: dict[str, Any] | None = None,
                 vocab_file: dict[str, Any] | None = None) -> None:
        super().__init__(backend, special_tokens, config)
        # vocab.json as read (one table, or one per language), written back as it was by save_pretrained.
        self.vocab_file = dict(vocab_file if vocab_file is not None else backend.get_vocab(with_added_tokens=False))
        self.replace_word_delimiter_char = self.config.get("replace_word_delimiter_char", " ")
        self.do_lower_case = bool(self.config.get("do_lower_case", False))

    @property
    def word_delimiter_token(self) -> str:
        """The token that stands for a space ("|"); fixed when the tokenizer is built (the normalizer uses it)."""
        return self.config.get("word_delimiter_token", "|")

    @property
    def word_delimiter_token_id(self) -> int | None:
        return self.backend.token_to_id(self.word_delimiter_token)

    def decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               group_tokens: bool = True, spaces_between_special_tokens: bool = False) -> str:
        """CTC ids (one per frame) -> text, as transformers' Wav2Vec2CTCTokenizer.decode (steps in the class doc).

        `group_tokens=False` keeps every frame's token (only blanks are dropped); `spaces_between_special_tokens`
        joins the characters with spaces (transformers' name: it applies to every token)."""
        # An id outside the vocabulary (-100 included) reads as the unk token, as in transformers.
        tokens = [(self.backend.id_to_token(i) if i >= 0 else None) or self.unk_token for i in _as_id_list(ids)]
        if skip_special_tokens:
            # The delimiter is special but kept. transformers drops the special tokens *before* merging repeats, so
            # the blank goes too and no longer separates a double letter: "HEL<pad>LO" gives "HELO" (its own test
            # expects it). For CTC output keep the default, skip_special_tokens=False, as transformers' docs do.
            special = set(self.convert_ids_to_tokens(self.all_special_ids)) - {self.word_delimiter_token}
            tokens = [t for t in tokens if t not in special]
        if group_tokens:
            tokens = [token for token, _ in itertools.groupby(tokens)]  # "HHEE" -> "HE"
        chars = [self.replace_word_delimiter_char if t == self.word_delimiter_token else t
                 for t in tokens if t != self.pad_token]  # blanks out, after grouping
        text = (" " if spaces_between_special_tokens else "").join(chars).strip()
        if self.do_lower_case:
            text = text.lower()
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean else text

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """vocab.json + tokenizer_config.json + special_tokens_map.json: the layout of every wav2vec2 CTC checkpoint,
        which transformers' Wav2Vec2CTCTokenizer reads (it has no tokenizer.json)."""
        folder = str(folder)
        os.makedirs(folder, exist_ok=True)
        _write_json(os.path.join(folder, "vocab.json"), self.vocab_file)
        added = {str(i): dict(content=t.content, lstrip=t.lstrip, rstrip=t.rstrip, normalized=t.normalized,
                              single_word=t.single_word, special=t.special)
                 for i, t in sorted(self.backend.get_added_tokens_decoder().items())}
        self._save_configs(folder, added_tokens_decoder=added, do_lower_case=self.do_lower_case,
                           word_delimiter_token=self.word_delimiter_token,
                           replace_word_delimiter_char=self.replace_word_delimiter_char)

    # The uppercase step of do_lower_case is a Python normalizer, which `tokenizers` cannot serialize; DataLoader
    # workers started with "spawn" pickle the collator and the processor in it. So the backend travels without
    # that step (a JSON string) and gets it back on arrival.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        normalizer = self.backend.normalizer
        self.backend.normalizer = normalizers.Replace(" ", self.word_delimiter_token)
        try:
            state["backend"] = self.backend.to_str()
        finally:
            self.backend.normalizer = normalizer
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["backend"] = Backend.from_str(state["backend"])
        state["backend"].normalizer = _ctc_normalizer(state["config"])
        self.__dict__.update(state)


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(folder_or_hub_id)`, as in transformers' docs; every family loads into `Tokenizer`
    (a CTC vocabulary into its subclass `Wav2Vec2CTCTokenizer`)."""

    @staticmethod
    def from_pretrained(folder: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **overrides: Any) -> Tokenizer:
        return Tokenizer.from_pretrained(folder, revision=revision, cache_dir=cache_dir,
                                         local_files_only=local_files_only, **overrides)
