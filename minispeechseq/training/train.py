"""Train a speech encoder-decoder: the loop behind `minispeechseq train` (its options: tools/train.py).

One optimizer step, top to bottom (the loop in `train`):
    take `grad_accum` batches -> forward (bf16 autocast on CUDA; the loss in fp32) -> backward, each micro-batch's
    loss weighted by its share of the step's label tokens -> clip the gradient norm -> AdamW -> learning rate schedule
    (linear warmup, then cosine decay).

Around it: evaluation every N steps (validation loss, and WER/CER of greedy transcripts), a progress line on stderr,
metrics appended to `OUT/metrics.jsonl`, and checkpoints `OUT/checkpoint-STEP/` in transformers' layout
(config.json, model.safetensors, tokenizer and preprocessor_config.json) plus `trainer_state.pt`, the rest of what
`--resume` needs to continue *exactly*: optimizer, scheduler, every RNG, the step, and the position in the data.
A run killed at any moment and resumed gives the same losses as one never interrupted.

Several GPUs or machines: launch with torchrun (e.g. `torchrun --nproc_per_node 4 -m minispeechseq.tools.train
...`); each process takes its share of every global batch and DistributedDataParallel averages the gradients.

Shape legend: B batch, L audio samples, S label tokens.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..audio import Wav2Vec2FeatureExtractor
from ..files.checkpoint import atomic_save, torch_load
from ..decoders.gpt2 import GPT2Config
from ..speech_encoder_decoder import (
    SpeechEncoderDecoderConfig,
    SpeechEncoderDecoderModel,
    decoder_classes,
    encoder_classes,
    read_config_json,
)
from ..tokenizer import Tokenizer
from ..wav2vec2 import Wav2Vec2Model
from ..wav2vec2_config import Wav2Vec2Config
from .augment import VoiceAugmentation
from .data import (
    Augmentation,
    BatchesDataset,
    BucketBatchSampler,
    Collator,
    ManifestDataset,
    rank_share,
)
from .metrics import character_error_rate, word_error_rate

TRAINER_STATE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"


# ============================================================================================== presets
def _tiny() -> tuple[dict[str, Any], dict[str, Any]]:
    """The bundled spoken-digits model (~1.8 M parameters; 1.93 % test WER, its MODEL_CARD.md). Its positional conv
    is as wide as an utterance (128 frames of 40 ms): with kernel 16 and everything else the same, the recipe stayed
    at 92.5 % validation WER at step 1,500 against 31.1 % (tutorials/results/README.md, one seed per arm)."""
    encoder = {
        # Conv front end: strides 10*4*4*4 = 640 samples = one frame per 40 ms at 16 kHz (wav2vec2: 20 ms); a
        # spoken digit then spans ~8 frames. Each kernel >= its stride, so no sample is skipped; receptive field
        # 680 samples. Layer norm on every conv layer ("layer"), so padding never enters the statistics.
        "conv_dim": (32, 64, 128, 144), "conv_kernel": (10, 8, 4, 4), "conv_stride": (10, 4, 4, 4),
        "conv_bias": True, "feat_extract_norm": "layer",
        "hidden_size": 144, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 576,
        # The encoder's only position signal: a grouped conv over 128 frames = 5.1 s, the longest utterance.
        "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16,
        "do_stable_layer_norm": True,  # pre-LN layers: stable at a learning rate of 2e-3 from scratch
        "hidden_dropout": 0.1, "activation_dropout": 0.0, "attention_dropout": 0.1, "feat_proj_dropout": 0.0,
        "layerdrop": 0.0,  # 4 layers are too few to skip any
        # SpecAugment, short spans: 2 frames = 80 ms, less than one digit.
        "apply_spec_augment": True, "mask_time_prob": 0.05, "mask_time_length": 2, "mask_time_min_masks": 1,
    }
    decoder = {"n_embd": 144, "n_layer": 2, "n_head": 4, "n_inner": 288, "n_positions": 32,
               "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
    return encoder, decoder


def _debug() -> tuple[dict[str, Any], dict[str, Any]]:
    """~19 k parameters, for tests: the loop's mechanics, not its results."""
    encoder = {
        "conv_dim": (16, 24), "conv_kernel": (10, 8), "conv_stride": (10, 8), "conv_bias": True, "feat_extract_norm": "layer",
        "hidden_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 48,
        "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4, "do_stable_layer_norm": True,
        "hidden_dropout": 0.1, "activation_dropout": 0.1, "attention_dropout": 0.1, "feat_proj_dropout": 0.1, "layerdrop": 0.0,
        "apply_spec_augment": True, "mask_time_prob": 0.1, "mask_time_length": 2, "mask_time_min_masks": 1,
    }
    decoder = {"n_embd": 24, "n_layer": 1, "n_head": 2, "n_inner": 48, "n_positions": 32,
               "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}
    return encoder, decoder


PRESETS = {"tiny": _tiny, "debug": _debug}

# Every dropout probability of every supported encoder / decoder config (for --dropout).
_DROPOUT_FIELDS = ("hidden_dropout", "activation_dropout", "attention_dropout", "feat_proj_dropout",  # wav2vec2
                   "resid_pdrop", "embd_pdrop", "attn_pdrop",  # GPT-2
                   "dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")  # BART, S2T2 / BERT


def config_overrides(args: argparse.Namespace, encoder_type: str = "wav2vec2",
                     decoder_type: str = "gpt2") -> dict[str, dict[str, Any]]:
    """{"encoder": {field: value}, "decoder": {...}} from --dropout and --no-spec-augment, only for fields the
    configs have. Applied before the model is built, since nn.Dropout reads its probability once."""
    enc_fields = {f.name for f in dataclasses.fields(encoder_classes(encoder_type)[0])}
    dec_fields = {f.name for f in dataclasses.fields(decoder_classes(decoder_type)[0])}
    out: dict[str, dict[str, Any]] = {"encoder": {}, "decoder": {}}
    if args.dropout is not None:
        out["encoder"] = {k: args.dropout for k in _DROPOUT_FIELDS if k in enc_fields}
        out["decoder"] = {k: args.dropout for k in _DROPOUT_FIELDS if k in dec_fields}
    if args.no_spec_augment:
        out["encoder"]["apply_spec_augment"] = False
    out["encoder"].update(spec_augment_overrides(args))
    return out


_SPEC_AUGMENT_FIELDS = ("mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length")


def spec_augment_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The SpecAugment fields given on the command line (--mask-time-prob ...), read by the encoder at each
    forward, so they also apply to a model loaded with --init."""
    return {name: getattr(args, name) for name in _SPEC_AUGMENT_FIELDS if getattr(args, name, None) is not None}


def make_augmentation(args: argparse.Namespace) -> Augmentation | VoiceAugmentation | None:
    """None with --no-augment; `VoiceAugmentation` when any of its options is given; else the plain one."""
    if args.no_augment:
        return None
    voice = {name: getattr(args, name) for name in ("speed_p", "formant_p", "reverb_p", "band_p", "eq_p")
             if getattr(args, name) is not None}
    if args.snr_db is not None:
        voice["snr_db"] = tuple(args.snr_db)
    if args.noise_types is not None:
        voice["noise_types"] = tuple(t.strip() for t in args.noise_types.split(",") if t.strip())
    return VoiceAugmentation(**voice) if voice else Augmentation()


def preset_model(name: str, tokenizer: Tokenizer, encoder: dict[str, Any] | None = None,
                 decoder: dict[str, Any] | None = None) -> SpeechEncoderDecoderModel:
    """A freshly initialised wav2vec2 + GPT-2 pair of the named preset, sized to `tokenizer`'s vocabulary;
    `encoder` / `decoder` override fields of the preset's configs."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; the presets are {', '.join(PRESETS)}.")
    enc, dec = PRESETS[name]()
    enc.update(encoder or {})
    dec.update(decoder or {})
    ids = token_ids(tokenizer)
    decoder_config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=ids["decoder_start_token_id"],
                                eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"], **dec)
    config = SpeechEncoderDecoderConfig.from_encoder_decoder_configs(Wav2Vec2Config(**enc), decoder_config, **ids)
    return SpeechEncoderDecoderModel(config=config)


# The fields that decide an encoder's tensors: a pretrained encoder fits a preset's only if all of them agree.
_ENCODER_SHAPE_FIELDS = ("conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "hidden_size",
                         "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_conv_pos_embeddings",
                         "num_conv_pos_embedding_groups", "do_stable_layer_norm")


def load_encoder_weights(model: SpeechEncoderDecoderModel, folder: str) -> None:
    """Start `model`'s encoder from a pretrained Wav2Vec2Model folder (e.g. `minispeechseq pretrain`'s encoder/),
    keeping the preset's own SpecAugment and dropout settings: only the weights come from `folder`."""
    pretrained = Wav2Vec2Model.from_pretrained(folder)
    def field(config: Any, name: str) -> Any:
        value = getattr(config, name)
        return tuple(value) if isinstance(value, list) else value  # config.json gives lists, presets tuples

    differ = [f"{name} {field(pretrained.config, name)} != {field(model.config.encoder, name)}"
              for name in _ENCODER_SHAPE_FIELDS if field(pretrained.config, name) != field(model.config.encoder, name)]
    if differ:
        raise ValueError(f"--encoder-init {folder}: its encoder is not the preset's shape ({'; '.join(differ)}).")
    state = pretrained.state_dict()
    if "masked_spec_embed" not in state:  # pretrained without masking: keep the preset's fresh mask vector
        state["masked_spec_embed"] = model.encoder.state_dict()["masked_spec_embed"]
    model.encoder.load_state_dict(state)


def token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """The three ids that tie the tokenizer to the model: decoding starts at <s> (BERT-style: [CLS]), ends at </s>
    ([SEP]), and <pad> fills decoder inputs where labels are -100."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if start is None or eos is None:
        raise ValueError(
            "The tokenizer names no start token (bos_token or cls_token) or no end token (eos_token or sep_token); "
            "set them in its tokenizer_config.json."
        )
    return {"decoder_start_token_id": start, "eos_token_id": eos, "pad_token_id": pad}


# ============================================================================================ schedule
def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier: linear from 0 to 1 over `warmup_steps`, then half a cosine down to `min_ratio`.
    A warmup lets AdamW's second-moment estimates settle before full-size steps (Vaswani et al. 2017, sec. 5.3)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norm gains (1-D tensors), whose scale carries no overfitting risk."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


# ========================================================================================= distributed
def env_int(name: str, default: int, low: int) -> int:
    """An integer environment variable (torchrun's), refused with its name when it is not one (e.g. 'inf')."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < low:
        raise ValueError(f"The environment variable {name}={raw!r} must be an integer >= {low} (torchrun sets it); "
                         "unset it for a single process.")
    return value


class Dist:
    """Rank and world size: from torchrun's environment variables, or one process."""

    def __init__(self, device: str):
        self.world_size = env_int("WORLD_SIZE", 1, low=1)
        self.rank = env_int("RANK", 0, low=0)
        self.local_rank = env_int("LOCAL_RANK", 0, low=0)
        if self.rank >= self.world_size:
            raise ValueError(f"RANK={self.rank} must be below WORLD_SIZE={self.world_size} (torchrun sets both).")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU.")
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device(device)
        if self.world_size > 1 and not dist.is_initialized():
            # nccl between GPUs; gloo on CPU (and in the tests).
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item()

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


# ========================================================================================= RNG state
def rng_state() -> dict[str, Any]:
    """Every random stream the step draws from: torch (dropout, SpecAugment), CUDA, numpy, Python."""
    # Plain tensors, lists and numbers only, so that resuming can load the file with torch.load(weights_only=True):
    # a trainer state from someone else's folder must not be able to run code (numpy's state holds an ndarray,
    # which would need the unsafe unpickler, so it is stored as a list).
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed)
    random.seed(seed)


# ========================================================================================= checkpoints
def checkpoints(out: str) -> list[tuple[int, str]]:
    """Complete checkpoints in `out`, by step (a folder appears only once complete: atomic_save renames it)."""
    found = []
    for path in glob.glob(os.path.join(out, "checkpoint-*")):
        match = re.fullmatch(r"checkpoint-(\d+)", os.path.basename(path))
        if match and os.path.isfile(os.path.join(path, TRAINER_STATE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(folder: str, model: SpeechEncoderDecoderModel, tokenizer: Tokenizer,
                    feature_extractor: Wav2Vec2FeatureExtractor, trainer_state: dict[str, Any] | None) -> None:
    """A transformers-layout model folder (+ trainer_state.pt when resuming should be possible), written atomically."""

    def write(tmp: str) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        feature_extractor.save_pretrained(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, os.path.join(tmp, TRAINER_STATE))

    atomic_save(folder, write)


TRAINER_STATE_KEYS = ("optimizer", "scheduler", "step", "epoch", "position", "rng")


def load_trainer_state(folder: str) -> dict[str, Any]:
    """`folder/trainer_state.pt`, refused in one line if damaged (a file truncated by a full disk, or not ours)."""
    path = os.path.join(folder, TRAINER_STATE)
    try:
        state = torch_load(path, "trainer state")
    except ValueError as e:
        raise ValueError(f"{e} Delete {folder} to resume from the checkpoint before it.") from None
    missing = [k for k in TRAINER_STATE_KEYS if k not in state] if isinstance(state, dict) else list(TRAINER_STATE_KEYS)
    if missing:
        raise ValueError(f"{path} is not a trainer state written by minispeechseq train (it lacks {missing}); "
                         f"delete {folder} to resume from the checkpoint before it.")
    return state


def check_finite_weights(model: nn.Module, step: int) -> None:
    """Refuse to save weights that a step overflowed to inf / NaN (a finite loss can still take such a step)."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"step {step}: {len(bad)} weight tensors hold inf or NaN (first: {bad[0]}); not saving them. "
                         "Lower --lr or --max-grad-norm.")


# ============================================================================================== logging
class Progress:
    """One stderr line, rewritten in place on a terminal (a new line every `every` steps elsewhere)."""

    def __init__(self, total_steps: int, every: int, enabled: bool):
        self.total, self.every, self.enabled = total_steps, every, enabled
        self.tty = sys.stderr.isatty()

    def update(self, step: int, text: str) -> None:
        if not self.enabled:
            return
        line = f"step {step}/{self.total} | {text}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(100))
            sys.stderr.flush()
        elif step % self.every == 0 or step == self.total:
            sys.stderr.write(line + "\n")

    def message(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(("\n" if self.tty else "") + text + "\n")
            sys.stderr.flush()


def append_metrics(path: str, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def drop_metrics_after(path: str, step: int) -> None:
    """On resume: forget the records of steps after the checkpoint (the killed run got further than it saved)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(path + ".tmp", path)


# ============================================================================================== the data
def batch_stream(dataset: ManifestDataset, sampler: BucketBatchSampler, collator: Collator, epoch: int, position: int,
                 rank: int, world_size: int, workers: int) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
    """(epoch, position after this batch, this rank's batch), forever, starting at batch `position` of `epoch`.
    Batches with fewer items than ranks are skipped (a rank would get nothing)."""
    while True:
        batches = [b for b in sampler.batches(epoch) if len(b) >= world_size]
        shares = [rank_share(b, rank, world_size) for b in batches[position:]]
        # A generator of its own: a DataLoader otherwise draws its workers' base seed from the global torch RNG,
        # which a resumed run (a loader opened mid-epoch, at another moment) would then be out of step with.
        loader = torch.utils.data.DataLoader(BatchesDataset(dataset, shares, collator, epoch), batch_size=None,
                                             shuffle=False, num_workers=workers,
                                             generator=torch.Generator().manual_seed(sampler.seed + epoch))
        for i, batch in enumerate(loader, start=position + 1):
            yield epoch, i, batch
        epoch, position = epoch + 1, 0


# ========================================================================================== evaluation
@torch.no_grad()
def evaluate(model: SpeechEncoderDecoderModel, dataset: ManifestDataset, collator: Collator, tokenizer: Tokenizer,
             batch_size: int, device: torch.device, autocast: Any, max_new_tokens: int) -> dict[str, float]:
    """Validation loss (token mean, teacher forced) and the WER / CER of greedy transcripts."""
    was_training = model.training
    model.eval()
    loss_sum, tokens = 0.0, 0
    references, hypotheses = [], []
    for batch_indices in BucketBatchSampler(dataset.lengths, batch_size, shuffle=False).batches(0):
        items = [dataset[i] for i in batch_indices]
        batch = {k: v.to(device) for k, v in collator(items).items()}
        with autocast():
            out = model(**batch)
            generated = model.generate(batch["input_values"], attention_mask=batch.get("attention_mask"),
                                       max_new_tokens=max_new_tokens)
        n = int((batch["labels"] != -100).sum())
        loss_sum, tokens = loss_sum + out.loss.item() * n, tokens + n
        references += [item["text"] for item in items]
        hypotheses += tokenizer.batch_decode(generated, skip_special_tokens=True)
    model.train(was_training)
    return {"valid_loss": loss_sum / tokens, "wer": word_error_rate(references, hypotheses),
            "cer": character_error_rate(references, hypotheses), "example": f"{references[0]!r} -> {hypotheses[0]!r}"}


# ============================================================================================ the loop
def train(args: argparse.Namespace) -> SpeechEncoderDecoderModel:
    d = Dist(args.device)
    out = args.out
    found = checkpoints(out) if os.path.isdir(out) else []
    if found and not args.resume:
        raise ValueError(f"{out} already holds checkpoints (last: {found[-1][1]}); pass --resume to continue that "
                         "run, or choose another --out.")
    if args.resume and not found and args.preset is None and args.encoder is None and args.init is None:
        raise ValueError(f"--resume: {out} holds no complete checkpoint (checkpoint-STEP/ with {TRAINER_STATE}) to "
                         "continue; to start a new run there, choose the model with --preset or --encoder/--decoder.")
    resume_from = found[-1][1] if (args.resume and found) else None
    seed_everything(args.seed)

    # ---------------------------------------------------------------- tokenizer, feature extractor, model
    if resume_from is not None:
        tokenizer = Tokenizer.from_pretrained(resume_from)
        feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(resume_from)
        model = SpeechEncoderDecoderModel.from_pretrained(resume_from)
    else:
        tokenizer_dir = args.tokenizer or (os.path.join(args.data, "tokenizer") if args.data else None)
        if tokenizer_dir is None and (args.decoder or args.init):
            tokenizer_dir = args.decoder or args.init  # a warm-started decoder brings its own tokenizer
        if tokenizer_dir is None:
            raise ValueError("No tokenizer: pass --tokenizer DIR (or --data DIR with a tokenizer/ inside it).")
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
        if args.preset:
            feature_extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)
            model = preset_model(args.preset, tokenizer, **config_overrides(args))
            if args.encoder_init:
                load_encoder_weights(model, args.encoder_init)
        elif args.init:
            # A whole trained pair as the starting point (e.g. the bundled synthetic-voices model), with a fresh
            # optimizer and schedule: fine-tuning, not --resume.
            feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(args.init)
            model = SpeechEncoderDecoderModel.from_pretrained(args.init)
            for name, value in spec_augment_overrides(args).items():
                setattr(model.config.encoder, name, value)
            if len(tokenizer) > model.get_input_embeddings().num_embeddings:
                raise ValueError(f"--init {args.init}: its decoder has {model.get_input_embeddings().num_embeddings} "
                                 f"embeddings but the tokenizer {len(tokenizer)} tokens; train with its own tokenizer.")
        else:
            enc_fe = os.path.join(args.encoder, "preprocessor_config.json")
            feature_extractor = (Wav2Vec2FeatureExtractor.from_pretrained(args.encoder) if os.path.exists(enc_fe)
                                 else Wav2Vec2FeatureExtractor(return_attention_mask=True))
            overrides = config_overrides(args, read_config_json(args.encoder)["model_type"],
                                         read_config_json(args.decoder)["model_type"])
            model = SpeechEncoderDecoderModel.from_encoder_decoder_pretrained(
                args.encoder, args.decoder, **token_ids(tokenizer),
                **{f"encoder_{k}": v for k, v in overrides["encoder"].items()},
                **{f"decoder_{k}": v for k, v in overrides["decoder"].items()})
            if model.get_input_embeddings().num_embeddings < len(tokenizer):
                raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the decoder only "
                                 f"{model.get_input_embeddings().num_embeddings} embeddings; use the decoder's own tokenizer.")
    model.train()
    if args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if args.freeze_encoder:
        for p in model.encoder.parameters():  # only the decoder (cross-attention included) learns
            p.requires_grad = False
    model.to(d.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    # ---------------------------------------------------------------- data
    if not args.data and not args.train_manifest:
        raise ValueError("No training data: pass --data DIR (with train.tsv and valid.tsv) or --train-manifest FILE.")
    train_set = ManifestDataset(args.train_manifest or os.path.join(args.data, "train.tsv"))
    valid_path = args.valid_manifest or (os.path.join(args.data, "valid.tsv") if args.data else None)
    valid_set = ManifestDataset(valid_path) if valid_path and os.path.exists(valid_path) else None
    if args.batch_size % d.world_size:
        raise ValueError(f"--batch-size {args.batch_size} (the global batch) must divide evenly among "
                         f"{d.world_size} processes.")
    sampler = BucketBatchSampler(train_set.lengths, args.batch_size, seed=args.seed,
                                 shortest_first=not args.no_shortest_first)
    augmentation = make_augmentation(args)
    train_collator = Collator(feature_extractor, tokenizer, augmentation, seed=args.seed)
    eval_collator = Collator(feature_extractor, tokenizer)

    # ---------------------------------------------------------------- optimizer, schedule, state
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 10)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, args.steps, args.min_lr_ratio))
    step, epoch, position = 0, 0, 0
    if resume_from is not None:
        state = load_trainer_state(resume_from)  # torch.load(weights_only=True): never runs code
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        set_rng_state(state["rng"][d.rank])
    ddp = None
    if d.world_size > 1:
        # find_unused_parameters: some parameters get no gradient in some steps (masked_spec_embed when
        # SpecAugment is off or masks nothing; layers skipped by layerdrop), which DDP otherwise treats as an error.
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None,
                                                  find_unused_parameters=True)
    bf16 = d.device.type == "cuda" and not args.no_bf16

    def autocast():
        # bf16 matmuls on CUDA; the model computes log-softmax and the loss in fp32 (see its forward).
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    metrics_path = os.path.join(out, METRICS_FILE)
    progress = Progress(args.steps, args.log_every, enabled=d.main and not args.quiet)
    if d.main:
        os.makedirs(out, exist_ok=True)
        if resume_from is not None:
            drop_metrics_after(metrics_path, step)
            progress.message(f"resuming from {resume_from} (step {step}, epoch {epoch}, batch {position})")
        elif os.path.exists(metrics_path):
            os.remove(metrics_path)
        progress.message(f"{trainable / 1e6:.2f} M trainable parameters; {len(train_set)} training utterances; "
                         f"{d.world_size} process(es) on {d.device}{' (bf16)' if bf16 else ''}")

    # ---------------------------------------------------------------- steps
    stream = batch_stream(train_set, sampler, train_collator, epoch, position, d.rank, d.world_size, args.workers)
    started, utterances = time.time(), 0
    while step < args.steps:
        micro = []
        for _ in range(args.grad_accum):
            epoch, position, batch = next(stream)
            micro.append({k: v.to(d.device) for k, v in batch.items()})
        # Every label token of the step weighs the same, across micro-batches and processes: each micro-batch's
        # mean loss is scaled by its share of all the step's tokens. DDP *averages* gradients over processes,
        # hence the factor world_size. A plain mean of means would overweight short transcripts.
        local_tokens = [int((b["labels"] != -100).sum()) for b in micro]
        total_tokens = d.sum(sum(local_tokens))
        step_loss = 0.0
        for i, (batch, n) in enumerate(zip(micro, local_tokens)):
            last = i == len(micro) - 1
            # Synchronise gradients once per step, on the last micro-batch.
            sync = contextlib.nullcontext() if (ddp is None or last) else ddp.no_sync()
            with sync, autocast():
                loss = (ddp or model)(**batch).loss
            (loss * (n / total_tokens) * d.world_size).backward()
            step_loss += loss.item() * n
        step_loss = d.sum(step_loss) / total_tokens
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm).item()
        # A NaN / inf loss or gradient poisons every weight at the optimizer step, and every checkpoint after it:
        # stop before that step (all processes see the same reduced values, so all stop together).
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            last = checkpoints(out)
            raise ValueError(
                f"step {step + 1}: the training loss is {step_loss} and the gradient norm {grad_norm}, not finite; "
                f"stopped without taking this step (last checkpoint: {last[-1][1] if last else 'none'}). Lower --lr "
                "or check the data."
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        utterances += d.world_size * sum(b["labels"].shape[0] for b in micro)
        elapsed = time.time() - started
        lr = scheduler.get_last_lr()[0]
        if d.main:
            progress.update(step, f"loss {step_loss:.4f} | lr {lr:.2e} | {utterances / elapsed:.1f} utt/s | "
                                  f"epoch {epoch} | {elapsed:.0f} s")
            if step % args.log_every == 0 or step == args.steps:
                append_metrics(metrics_path, {"step": step, "epoch": epoch, "loss": step_loss, "lr": lr,
                                              "grad_norm": grad_norm, "utt_per_s": utterances / elapsed})

        if valid_set is not None and (step % args.eval_every == 0 or step == args.steps):
            if d.main:
                result = evaluate(model, valid_set, eval_collator, tokenizer, args.batch_size, d.device, autocast,
                                  max_new_tokens=min(args.max_new_tokens, model.max_target_positions - 1))
                example = result.pop("example")
                append_metrics(metrics_path, {"step": step, **result})
                progress.message(f"step {step}: valid loss {result['valid_loss']:.4f}, WER {result['wer']:.2%}, "
                                 f"CER {result['cer']:.2%}; e.g. {example}")
            d.barrier()
        if step % args.save_every == 0 or step == args.steps:
            check_finite_weights(model, step)
            rngs = d.gather(rng_state())  # each process's own streams (dropout masks differ per process)
            if d.main:
                state = {"step": step, "epoch": epoch, "position": position, "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "rng": rngs, "world_size": d.world_size}
                save_checkpoint(os.path.join(out, f"checkpoint-{step}"), model, tokenizer, feature_extractor, state)
                for _, old in checkpoints(out)[: -args.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            d.barrier()

    if d.main:
        save_checkpoint(os.path.join(out, "final"), model, tokenizer, feature_extractor, None)
        progress.message(f"done: {step} steps in {time.time() - started:.0f} s; model in {os.path.join(out, 'final')}")
    if d.world_size > 1:
        dist.destroy_process_group()
    return model
