"""SpeechEncoderDecoderModel: a speech encoder and a text decoder, joined by cross-attention.

    waveform (B, L) ──encoder──> frames (B, T, D_enc) ──[enc_to_dec_proj]──> memory (B, T, D_dec)
    tokens   (B, S) ──decoder (causal self-attention, cross-attention to memory)──> logits (B, S, V)

The encoder is wav2vec2 or HuBERT; the decoder is BERT, GPT-2, BART, mBART or Speech2Text2, each a causal
language model whose layers also attend to the encoder output. Nothing here is specific to one pair: this file
only composes them, adds the optional projection, computes the loss, and hands generation to `generation/`.

Shape legend: B batch, L audio samples, T encoder frames, S decoder tokens, D width, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from minispeechseq.weights_convert.core import ConversionReport

from .files.checkpoint import SAFETENSORS, atomic_save, save_state_dict
from .config import CONFIG_NAME, ConfigError, ConfigMixin, extra_field
from .files.readers import read_json
from .decoders.bart import BartForCausalLM, MBartForCausalLM
from .decoders.bert import BertForCausalLM
from .decoders.gpt2 import GPT2LMHeadModel
from .decoders.speech2text2 import Speech2Text2ForCausalLM
from .generation import GenerationConfig, compute_transition_scores, generate
from .layers import causal_lm_loss, check_positions, check_vocabulary
from .modeling import ModelOutput, PreTrainedModel, check_attn_implementation, logger, resolve_dtype
from .files.resolve import HUB_KWARGS, MODEL_FILES, resolve_folder
from .wav2vec2 import HubertModel, Wav2Vec2Model

# The halves this model can join, by the model_type their config.json names.
ENCODERS: dict[str, type] = {cls.config_class.model_type: cls for cls in (Wav2Vec2Model, HubertModel)}
DECODERS: dict[str, type] = {
    cls.config_class.model_type: cls
    for cls in (BertForCausalLM, GPT2LMHeadModel, BartForCausalLM, MBartForCausalLM, Speech2Text2ForCausalLM)
}


def _lookup(table: dict[str, type], model_type: str | None, role: str) -> tuple[type, type]:
    if model_type not in table:
        raise ValueError(
            f"model_type={model_type!r} is not supported as the {role}; supported {role}s: {', '.join(table)}."
        )
    model_class = table[model_type]
    return model_class.config_class, model_class


def encoder_classes(model_type: str | None) -> tuple[type, type]:
    """(config class, model class) of the encoder whose config.json says `model_type`."""
    return _lookup(ENCODERS, model_type, "encoder")


def decoder_classes(model_type: str | None) -> tuple[type, type]:
    """(config class, model class) of the decoder whose config.json says `model_type`."""
    return _lookup(DECODERS, model_type, "decoder")


def read_config_json(folder: str) -> dict[str, Any]:
    return read_json(os.path.join(folder, CONFIG_NAME), "transformers config.json")


# ---------------------------------------------------------------------------------------------- config
@dataclass
class SpeechEncoderDecoderConfig(ConfigMixin):
    """The two sub-configs plus the token ids that tie them together (transformers' config.json layout:
    `model_type: speech-encoder-decoder`, nested `encoder` and `decoder` dicts with their own `model_type`)."""

    model_type: ClassVar[str] = "speech-encoder-decoder"

    encoder: Any = None  # a Wav2Vec2Config / HubertConfig
    decoder: Any = None  # a BertConfig / GPT2Config / BartConfig / MBartConfig / Speech2Text2Config
    decoder_start_token_id: int | None = None  # the first decoder input (BERT: [CLS]; BART: </s>)
    pad_token_id: int | None = None  # replaces -100 in shifted labels; pads finished generations
    eos_token_id: int | None = None
    is_encoder_decoder: bool = True
    tie_word_embeddings: bool = False  # encoder and decoder never share embeddings
    extra: dict = extra_field()

    def __post_init__(self) -> None:
        for half, classes in (("encoder", encoder_classes), ("decoder", decoder_classes)):
            value = getattr(self, half)
            if isinstance(value, dict):
                try:
                    value = classes(value.get("model_type"))[0].from_dict(value)
                except ValueError as e:  # the field inside the half, named from the top: "decoder.n_head"
                    raise ConfigError(f"{half}.{e}") from None
            setattr(self, half, value)
        super().__post_init__()

    def validate(self) -> None:
        """The token ids here, then each half (a config edited after it was made is checked again on build)."""
        super().validate()
        for half in ("encoder", "decoder"):
            value = getattr(self, half)
            if not isinstance(value, ConfigMixin):
                raise ConfigError(f"{half} must be a config (a JSON object with a model_type), got {value!r}.")
            try:
                value.validate()
            except ConfigError as e:
                raise ConfigError(f"{half}.{e}") from None

    def approx_num_parameters(self) -> int:
        enc, dec = self.encoder, self.decoder
        width = getattr(enc, "output_hidden_size", None) or enc.hidden_size
        has_projection = width != dec.hidden_size and getattr(dec, "cross_attention_hidden_size", None) is None
        projection = width * dec.hidden_size if has_projection else 0  # enc_to_dec_proj
        return enc.approx_num_parameters() + dec.approx_num_parameters() + projection

    @classmethod
    def from_dict(cls, d: dict[str, Any], **overrides: Any) -> "SpeechEncoderDecoderConfig":
        if not isinstance(d, dict) or "encoder" not in d or "decoder" not in d:
            raise ValueError(
                "A speech-encoder-decoder config needs nested 'encoder' and 'decoder' configs "
                f"(got keys {sorted(d) if isinstance(d, dict) else type(d).__name__})."
            )
        return super().from_dict(d, **overrides)

    @classmethod
    def from_encoder_decoder_configs(cls, encoder_config: Any, decoder_config: Any, **kwargs: Any):
        """Join two configs. The decoder becomes a decoder with cross-attention (is_decoder, add_cross_attention)."""
        encoder_classes(getattr(encoder_config, "model_type", None))  # fail early on an unsupported pair
        decoder_classes(getattr(decoder_config, "model_type", None))
        decoder_config.is_decoder = True
        decoder_config.add_cross_attention = True
        return cls(encoder=encoder_config, decoder=decoder_config, **kwargs)


# ---------------------------------------------------------------------------------------------- output
@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean cross-entropy over labels != -100
    logits: torch.Tensor | None = None  # (B, S, V)
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, T, D_dec): after enc_to_dec_proj, as transformers
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    encoder_attentions: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[torch.Tensor, ...] | None = None
    cross_attentions: tuple[torch.Tensor, ...] | None = None


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Teacher forcing: the decoder reads [start, y0, ..., y_{S-2}] and must predict [y0, ..., y_{S-1}].
    Ignored label positions (-100) become pad tokens in the input."""
    shifted = labels.new_full(labels.shape, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == -100, pad_token_id)


# ----------------------------------------------------------------------------------------------- model
class SpeechEncoderDecoderModel(PreTrainedModel):
    config_class = SpeechEncoderDecoderConfig

    def __init__(self, config: SpeechEncoderDecoderConfig | None = None, encoder: nn.Module | None = None,
                 decoder: nn.Module | None = None):
        if config is None:
            if encoder is None or decoder is None:
                raise ValueError("SpeechEncoderDecoderModel needs a config, or both an encoder and a decoder.")
            config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        if not isinstance(config, SpeechEncoderDecoderConfig):
            raise ValueError(f"config must be a SpeechEncoderDecoderConfig, got {type(config).__name__}.")
        # The memory check of the whole pair only when both halves are new: given halves are already allocated.
        super().__init__(config, check_memory=encoder is None and decoder is None)
        self.encoder = encoder if encoder is not None else encoder_classes(config.encoder.model_type)[1](config.encoder)
        self.decoder = decoder if decoder is not None else decoder_classes(config.decoder.model_type)[1](config.decoder)
        # One config object per half: the sub-models read the same ones the user edits through model.config.
        self.encoder.config, self.decoder.config = config.encoder, config.decoder

        enc_size, dec_size = self.encoder.output_size, self.decoder.hidden_size
        cross_size = getattr(config.decoder, "cross_attention_hidden_size", None)
        if cross_size is not None and cross_size != enc_size:
            raise ValueError(
                f"The decoder's cross_attention_hidden_size ({cross_size}) must equal the encoder's output size "
                f"({enc_size}), since cross-attention reads the encoder output directly."
            )
        self.enc_to_dec_proj = None
        if enc_size != dec_size and cross_size is None:
            # Deliberate difference: transformers sizes this Linear from the encoder's `hidden_size`, which
            # crashes when the adapter changes the output size (output_hidden_size). We use the real output size.
            self.enc_to_dec_proj = nn.Linear(enc_size, dec_size)
            self._init_weights(self.enc_to_dec_proj)
        self._generation_config = None
        self.use_attn_implementation(getattr(self.decoder, "attn_implementation", "sdpa"))  # the half's, already checked

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Only the projection is ours to initialise; each half initialises itself. transformers uses the
        # decoder's initializer_range here (the "text config" of the pair).
        std = getattr(self.config.decoder, "initializer_range", None) or getattr(self.config.decoder, "init_std", 0.02)
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            module.bias.zero_()

    # ------------------------------------------------------------------------------------- properties
    @property
    def max_target_positions(self) -> int:
        """How many tokens the decoder has positions for (its `max_positions`; transformers' name, from Speech2Text2)."""
        return self.decoder.max_positions

    @property
    def generation_config(self) -> GenerationConfig:
        """The generation defaults: generation_config.json when the checkpoint has one (or one you set),
        else built from the config's token ids each time, so edits to model.config are seen."""
        if self._generation_config is not None:
            return self._generation_config
        ids = {k: getattr(self.config, k) for k in ("decoder_start_token_id", "pad_token_id", "eos_token_id")}
        for k in ("bos_token_id", "forced_bos_token_id", "forced_eos_token_id"):
            if getattr(self.config.decoder, k, None) is not None:
                ids[k] = getattr(self.config.decoder, k)
        if ids["eos_token_id"] is None:
            ids["eos_token_id"] = getattr(self.config.decoder, "eos_token_id", None)
        return GenerationConfig(**{k: v for k, v in ids.items() if v is not None})

    @generation_config.setter
    def generation_config(self, value) -> None:
        self._generation_config = value

    def freeze_feature_encoder(self) -> None:
        """Stop gradients into the conv feature encoder (works for HuBERT too; transformers raises there)."""
        self.encoder.freeze_feature_encoder()

    def gradient_checkpointing_enable(self) -> None:
        self.encoder.gradient_checkpointing_enable()
        if hasattr(self.decoder, "gradient_checkpointing_enable"):
            self.decoder.gradient_checkpointing_enable()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.get_input_embeddings()

    def get_encoder(self) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    # ---------------------------------------------------------------------------------------- forward
    def encode(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        encoder_outputs: Any = None,
        **encoder_kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Audio -> the memory the decoder attends to: (B, T, D_dec or cross size), frame mask (B, T) or None.
        With `encoder_outputs` (what `model.get_encoder()(input_values)` returned, or a tuple whose first item is
        its last hidden state), the encoder is not run again; `attention_mask` (B, L) still gives the frame mask."""
        memory, frame_mask, _ = self._encode(input_values, attention_mask, encoder_outputs, **encoder_kwargs)
        return memory, frame_mask

    def _encode(self, input_values, attention_mask, encoder_outputs=None, **encoder_kwargs):
        if encoder_outputs is None:
            if input_values is None:
                raise ValueError("Give the audio (input_values) or the encoder's output (encoder_outputs).")
            encoder_outputs = self.encoder(input_values, attention_mask=attention_mask, **encoder_kwargs)
        memory = encoder_outputs[0]  # (B, T, D_enc): last_hidden_state, also of a plain tuple
        if self.enc_to_dec_proj is not None:
            memory = self.enc_to_dec_proj(memory)  # (B, T, D_dec)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.encoder.frame_attention_mask(memory.shape[1], attention_mask)  # (B, T)
        return memory, frame_mask, encoder_outputs

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        encoder_outputs: Any = None,
    ) -> Seq2SeqLMOutput:
        """Teacher-forced forward. With `labels` (B, S) and no decoder_input_ids, the decoder reads the labels
        shifted right behind `decoder_start_token_id`, and `loss` is the cross-entropy over labels != -100.
        `encoder_outputs` (as in transformers) reuses an encoder run instead of `input_values`."""
        if input_values is None and encoder_outputs is None:
            raise ValueError("forward() needs the audio (input_values) or the encoder's output (encoder_outputs).")
        audio_batch = input_values.shape[0] if input_values is not None else encoder_outputs[0].shape[0]
        if labels is not None:
            self._check_labels(labels, audio_batch)
            if decoder_input_ids is None:
                decoder_input_ids = shift_tokens_right(
                    labels, self.config.pad_token_id, self.config.decoder_start_token_id
                )
        if decoder_input_ids is None:
            raise ValueError("forward() needs decoder_input_ids or labels (the text side of the pair).")
        if decoder_input_ids.shape[0] != audio_batch:
            raise ValueError(
                f"The batch sizes differ: {audio_batch} audio inputs but {decoder_input_ids.shape[0]} decoder sequences."
            )
        memory, frame_mask, enc = self._encode(
            input_values, attention_mask, encoder_outputs,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
        )
        dec = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=memory,
            encoder_attention_mask=frame_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        # The decoder read the labels shifted right, so logits[:, t] is scored against labels[:, t] (no shift).
        loss = causal_lm_loss(dec.logits, labels, shift=False) if labels is not None else None
        return Seq2SeqLMOutput(
            loss=loss,
            logits=dec.logits,
            encoder_last_hidden_state=memory,
            encoder_hidden_states=getattr(enc, "hidden_states", None),
            encoder_attentions=getattr(enc, "attentions", None),
            decoder_hidden_states=dec.hidden_states,
            decoder_attentions=dec.attentions,
            cross_attentions=dec.cross_attentions,
        )

    def _check_labels(self, labels: torch.Tensor, audio_batch: int) -> None:
        missing = [k for k in ("decoder_start_token_id", "pad_token_id") if getattr(self.config, k) is None]
        if missing:
            raise ValueError(
                f"Training with labels needs model.config.{' and model.config.'.join(missing)} to be set "
                "(e.g. model.config.decoder_start_token_id = tokenizer.cls_token_id; "
                "model.config.pad_token_id = tokenizer.pad_token_id)."
            )
        if self.config.eos_token_id is not None and self.config.pad_token_id == self.config.eos_token_id:
            warnings.warn(
                "pad_token_id equals eos_token_id: padded label positions (-100) are ignored, but decoder inputs "
                "padded with that id look like end-of-sequence, and a model trained so may never learn to stop.",
                stacklevel=3,
            )
        if labels.dim() != 2 or labels.shape[0] != audio_batch:
            raise ValueError(
                f"labels must be (batch, tokens) with the audio's batch size {audio_batch}, "
                f"got shape {tuple(labels.shape)}."
            )
        check_vocabulary(labels, self.config.decoder.vocab_size, "labels", "use -100 for ignored positions",
                         ignore=-100)
        check_positions(labels.shape[1], self.max_target_positions, "labels", "shorten or split the transcripts")

    # --------------------------------------------------------------------------------------- generate
    @torch.no_grad()
    def generate(self, input_values: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 generation_config: Any = None, **kwargs: Any):
        """Autoregressive decoding (greedy, beam search or sampling): see minispeechseq/generation/."""
        return generate(self, input_values, attention_mask=attention_mask, generation_config=generation_config,
                        **kwargs)

    def compute_transition_scores(self, sequences: torch.Tensor, scores: tuple[torch.Tensor, ...],
                                  beam_indices: torch.Tensor | None = None,
                                  normalize_logits: bool = False) -> torch.Tensor:
        """The score of each generated token, from `generate(..., return_dict_in_generate=True, output_scores=True)`:
        (rows, generated tokens). See generation/outputs.py."""
        return compute_transition_scores(sequences, scores, beam_indices, normalize_logits)

    # ----------------------------------------------------------------------------------- load and save
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        **kwargs: Any) -> "SpeechEncoderDecoderModel":
        """A local folder or a hub id (`revision`, `cache_dir`, `local_files_only` as in transformers); the other
        kwargs are PreTrainedModel.from_pretrained's (attn_implementation, dtype, device, config fields)."""
        folder = resolve_folder(name_or_path, patterns=MODEL_FILES, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        d = read_config_json(folder)
        if d.get("model_type") != SpeechEncoderDecoderConfig.model_type:
            raise ValueError(
                f"{name_or_path} holds a model_type={d.get('model_type')!r} checkpoint, not a speech-encoder-decoder "
                "one. For two separate halves use SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(encoder, decoder)."
            )
        model = super().from_pretrained(folder, **kwargs)
        gen_path = os.path.join(folder, "generation_config.json")
        if os.path.exists(gen_path):
            model.generation_config = GenerationConfig.from_pretrained(folder)
        return model

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_pretrained_model_name_or_path: str | os.PathLike,
        decoder_pretrained_model_name_or_path: str | os.PathLike,
        *,
        attn_implementation: str = "sdpa",
        dtype: Any = None,
        device: Any = None,
        **kwargs: Any,
    ) -> "SpeechEncoderDecoderModel":
        """Warm-start: a pretrained speech encoder + a pretrained text model (whose cross-attention, absent from
        a plain language model, is freshly initialised and listed in a log message).

        Each half is a local folder or a hub id. As in transformers, `encoder_revision=`, `encoder_cache_dir=`,
        `encoder_local_files_only=` (and the `decoder_` ones) choose how each is found; other
        `encoder_<field>=...` / `decoder_<field>=...` override fields of the two configs, and the remaining kwargs
        set fields of the joint config (decoder_start_token_id, pad_token_id, eos_token_id)."""
        check_attn_implementation(attn_implementation)
        top_fields = {f.name for f in dataclasses.fields(SpeechEncoderDecoderConfig)}
        top = {k: kwargs.pop(k) for k in list(kwargs) if k in top_fields}
        enc_over = {k[len("encoder_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("encoder_")}
        dec_over = {k[len("decoder_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("decoder_")}
        enc_hub = {k: enc_over.pop(k) for k in HUB_KWARGS if k in enc_over}  # how to find it, not config fields
        dec_hub = {k: dec_over.pop(k) for k in HUB_KWARGS if k in dec_over}
        if kwargs:
            raise ValueError(
                f"Unknown arguments {sorted(kwargs)}: use encoder_<field> / decoder_<field> for the sub-configs, "
                f"or one of {sorted(top_fields - {'encoder', 'decoder', 'extra'})}."
            )

        # Both halves are found before either is loaded: a missing decoder fails at once, not after the encoder.
        enc_folder = resolve_folder(encoder_pretrained_model_name_or_path, what="encoder checkpoint folder",
                                    patterns=MODEL_FILES, **enc_hub)
        dec_folder = resolve_folder(decoder_pretrained_model_name_or_path, what="decoder checkpoint folder",
                                    patterns=MODEL_FILES, **dec_hub)

        enc_config_cls, enc_cls = encoder_classes(read_config_json(enc_folder).get("model_type"))
        enc_config = enc_config_cls.from_pretrained(enc_folder)
        encoder = enc_cls.from_pretrained(enc_folder, config=_override(enc_config, enc_over, "encoder"),
                                          attn_implementation=attn_implementation)

        dec_config_cls, dec_cls = decoder_classes(read_config_json(dec_folder).get("model_type"))
        dec_config = dec_config_cls.from_pretrained(dec_folder)
        if not (dec_config.is_decoder and dec_config.add_cross_attention):
            logger.info("Making %s a decoder with cross-attention (is_decoder, add_cross_attention).", dec_folder)
        dec_config.is_decoder, dec_config.add_cross_attention = True, True
        decoder = dec_cls.from_pretrained(dec_folder, config=_override(dec_config, dec_over, "decoder"),
                                          attn_implementation=attn_implementation)

        config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(encoder.config, decoder.config, **top)
        model = cls(config=config, encoder=encoder, decoder=decoder)
        # One report for the pair, like from_pretrained's: the halves' reports, plus the projection (always new).
        report = ConversionReport()
        report.merge(encoder.load_report, prefix_ours="encoder.")
        report.merge(decoder.load_report, prefix_ours="decoder.")
        if model.enc_to_dec_proj is not None:
            report.initialized += ["enc_to_dec_proj.weight", "enc_to_dec_proj.bias"]
            logger.warning("enc_to_dec_proj (%d -> %d) is new: the encoder and decoder widths differ.",
                           model.enc_to_dec_proj.in_features, model.enc_to_dec_proj.out_features)
        model.load_report = report
        model.use_attn_implementation(attn_implementation)  # checked above
        model.eval()
        return model.to(device=device, dtype=resolve_dtype(dtype))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """config.json, generation_config.json and model.safetensors in transformers' layout, atomically."""
        state = self.checkpoint_state_dict()
        gen = self.generation_config

        def write(tmp: str) -> None:
            self.config.save_pretrained(tmp)
            gen.save_pretrained(tmp)
            save_state_dict(state, os.path.join(tmp, SAFETENSORS))

        atomic_save(folder, write)


def _override(config: Any, overrides: dict[str, Any], role: str) -> Any:
    for k, v in overrides.items():
        if not hasattr(config, k):
            raise ValueError(f"{role}_{k}: {type(config).__name__} has no field {k!r}.")
        setattr(config, k, v)
    return config

