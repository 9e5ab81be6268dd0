"""What every minispeechseq model shares: loading, saving, initialising, and choosing the attention backend.

`from_pretrained(folder_or_hub_id)` finds its folder (files/resolve.py: a local folder wins, else the hub id's snapshot in
huggingface_hub's cache), then takes four steps, each visible:
    1. read config.json into the model's config dataclass;
    2. build the model (random weights);
    3. read the checkpoint's tensors and rename them to ours with the architecture's table in `weights_convert/`;
    4. copy them in, strictly: a missing, unexpected or mis-shaped tensor is an error that names it.
`save_pretrained(folder)` runs the table backwards, so transformers can load what we write.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from minispeechseq.weights_convert import converter_for

from .attention import check_attn_implementation, use_attn_implementation
from .files.checkpoint import SAFETENSORS, atomic_save, load_state_dict, save_state_dict
from .config import ConfigError
from .files.memory import check_fits
from .files.resolve import MODEL_FILES, resolve_folder

logger = logging.getLogger("minispeechseq")


def resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.replace("torch.", ""), None), torch.dtype):
        return getattr(torch, dtype.replace("torch.", ""))
    raise ValueError(f"dtype={dtype!r} is not a torch dtype; use e.g. torch.float32, torch.bfloat16 or 'float16'.")


# What `from_pretrained(quantization=name)` applies once the fp32 weights are in: name -> quantize(model, name).
# The base class only defines the table; the application fills it (recognition/quantize.py registers "int8" and
# "int8-all" when the package is imported), so the class every model inherits imports no application.
QUANTIZERS: dict[str, Callable[[nn.Module, str], nn.Module]] = {}


def check_quantization(quantization: str | None) -> None:
    if quantization is not None and quantization not in QUANTIZERS:
        raise ValueError(f"quantization must be one of {', '.join(map(repr, QUANTIZERS))} (or None), "
                         f"got {quantization!r}.")


def check_buildable(config: Any, check_memory: bool = True) -> None:
    """Before a model allocates anything: its config's fields (edited since it was made, perhaps), and whether its
    weights fit in memory at all (a config asking for a terabyte must fail in a second, not after swapping)."""
    if hasattr(config, "validate"):
        config.validate()
    if check_memory and hasattr(config, "approx_num_parameters"):
        count = config.approx_num_parameters()
        bytes_per = torch.get_default_dtype().itemsize  # models are built in it, then cast by from_pretrained
        try:
            check_fits(count * bytes_per, f"this {type(config).__name__} (about {count:,} parameters x {bytes_per} "
                       "bytes)", "check the sizes in its config (hidden_size, layers, vocab_size...)")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def load_converted(model: nn.Module, ours: dict[str, torch.Tensor], report: Any, converter: Any) -> None:
    """Copy converted tensors into `model`, strictly. Keys the converter's `may_initialize` allows may be missing
    (e.g. cross-attention when warm-starting from a plain language model): they keep their fresh init and
    are listed in `report.initialized`."""
    expected = model.state_dict()
    unexpected = sorted(report.unexpected + [k for k in ours if k not in expected])
    missing = [k for k in expected if k not in ours]
    refused = [k for k in missing if not converter.may_initialize(k)]
    mismatched = [
        f"{k}: checkpoint {tuple(ours[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in ours
        if k in expected and ours[k].shape != expected[k].shape
    ]
    problems = []
    if unexpected:
        problems.append(f"checkpoint tensors this model has no place for: {unexpected[:20]}")
    if refused:
        problems.append(f"tensors the model needs but the checkpoint lacks: {refused[:20]}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched[:20]}")
    if problems:
        more = " (lists cut at 20)" if max(len(unexpected), len(refused), len(mismatched)) > 20 else ""
        raise ValueError(
            f"The checkpoint does not fit {type(model).__name__} with this config: " + "; ".join(problems) + more
            + ". Check that config.json belongs to these weights and that the model type is right."
        )
    model.load_state_dict(ours, strict=False)
    report.initialized = sorted(set(report.initialized) | set(missing))


def log_report(name: str, report: Any) -> None:
    if report.skipped:
        logger.warning("%s: checkpoint tensors not used by this model (skipped): %s", name, report.skipped)
    if report.initialized:
        logger.warning(
            "%s: weights not in the checkpoint, newly initialised (train them before use): %s", name, report.initialized
        )
    for note in report.notes:
        logger.info("%s: %s", name, note)


class PreTrainedModel(nn.Module):
    """Base of every model: subclasses set `config_class`. The checkpoint converter is found by the config's
    model_type in weights_convert's table (`converter_for`): models never import their converters."""

    config_class: ClassVar[type]
    checkpoint_head: ClassVar[str | None] = None  # a task model's head ("ctc"), which picks its converter

    def __init__(self, config: Any, check_memory: bool = True):
        super().__init__()
        check_buildable(config, check_memory)
        self.config = config

    # ------------------------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default scheme: normal(0, initializer_range) weights, zero biases, unit norms."""
        std = getattr(self.config, "initializer_range", None) or getattr(self.config, "init_std", 0.02)
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)):
            if module.weight is not None:
                module.weight.fill_(1.0)
            if module.bias is not None:
                module.bias.zero_()

    def post_init(self) -> None:
        self.apply(self._init_weights)
        self.use_attn_implementation(getattr(self.config, "_attn_implementation", "sdpa"))

    # --------------------------------------------------------------------------------------- attention
    def set_attn_implementation(self, name: str) -> None:
        """Use "eager", "sdpa" or "flash" attention from now on, in every layer."""
        self.use_attn_implementation(check_attn_implementation(name))

    def use_attn_implementation(self, name: str) -> None:
        """set_attn_implementation for a name already checked (from_pretrained checks it once per load)."""
        use_attn_implementation(self, name)  # every Attention module inside, the halves of a pair included
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.attn_implementation = name  # so each half reports what its layers run

    # ------------------------------------------------------------------------------------ load and save
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        config: Any = None,
        attn_implementation: str = "sdpa",
        dtype: Any = None,
        device: Any = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        quantization: str | None = None,
        **config_overrides: Any,
    ):
        """`name_or_path`: a local folder, or a hub id found through huggingface_hub (`revision`, `cache_dir` and
        `local_files_only` as in transformers; see files/resolve.py). `quantization`: "int8" or "int8-all" for CPU
        inference (recognition/quantize.py, through QUANTIZERS), applied once the fp32 weights are in."""
        check_attn_implementation(attn_implementation)
        check_quantization(quantization)  # before any loading: a misspelt name costs nothing
        folder = resolve_folder(name_or_path, patterns=MODEL_FILES, revision=revision, cache_dir=cache_dir,
                                local_files_only=local_files_only)
        if config is None:
            config = cls.config_class.from_pretrained(folder)
        for k, v in config_overrides.items():
            if not hasattr(config, k):
                raise ValueError(f"{k!r} is not a field of {type(config).__name__}.")
            setattr(config, k, v)
        try:
            model = cls(config)  # checks the config and the memory it needs first (check_buildable)
        except ValueError as e:  # a config that cannot be built: name its file
            raise ConfigError(f"{os.path.join(os.fspath(folder), 'config.json')}: {e}") from None
        state = load_state_dict(folder)
        converter = cls.checkpoint_converter(config)
        ours, report = converter.to_ours(state, config)
        load_converted(model, ours, report, converter)
        log_report(f"{cls.__name__}.from_pretrained({os.fspath(name_or_path)!r})", report)
        model.load_report = report
        model.use_attn_implementation(attn_implementation)  # checked above
        model.eval()  # as in transformers: a loaded model starts in inference mode
        model = model.to(device=device, dtype=resolve_dtype(dtype))
        return QUANTIZERS[quantization](model, quantization) if quantization is not None else model

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under transformers' names."""
        return self.checkpoint_converter(self.config).to_checkpoint(self.state_dict(), self.config)

    @classmethod
    def checkpoint_converter(cls, config: Any) -> Any:
        """The converter of this model's checkpoints: by the config's model_type, and the task head if any."""
        return converter_for(config.model_type, cls.checkpoint_head)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write config.json + model.safetensors in transformers' layout, atomically."""
        state = self.checkpoint_state_dict()

        def write(tmp: str) -> None:
            self.config.save_pretrained(tmp)
            save_state_dict(state, os.path.join(tmp, SAFETENSORS))

        atomic_save(folder, write)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------------- outputs
class ModelOutput:
    """Base of the output dataclasses: attribute access, `out["name"]`, and `out[0]` for the first field
    that is set (transformers' convention, so `model(...)[0]` works as users expect)."""

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return getattr(self, key)
        return tuple(v for v in vars(self).values() if v is not None)[key]

    def keys(self) -> list[str]:
        return [k for k, v in vars(self).items() if v is not None]


@dataclass
class EncoderOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, T', D_out): after the adapter, if any
    extract_features: torch.Tensor | None = None  # (B, T, C): the conv feature encoder's output, normalised
    hidden_states: tuple[torch.Tensor, ...] | None = None  # input of each layer, then the final output
    attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, T, T) per layer, eager attention only


@dataclass
class DecoderOutput(ModelOutput):
    logits: torch.Tensor  # (B, S, V), or (B, logits_to_keep, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings, then each layer's output
    attentions: tuple[torch.Tensor, ...] | None = None  # self-attention weights per layer (eager only)
    cross_attentions: tuple[torch.Tensor, ...] | None = None  # (B, H, S, T) per layer (eager only)
    cache: Any = None  # the DecoderCache passed in, now holding this step's keys/values too
    loss: torch.Tensor | None = None
