"""A speech encoder taught by unlabelled audio alone (`minispeechseq pretrain`; its options: tools/pretrain.py).

Two objectives for the same encoder (the `tiny` preset's wav2vec2 encoder, so that `minispeechseq train --preset
tiny --encoder-init DIR` starts from it as is). Both hide spans of frames from the transformer and ask it to say
something about what was hidden; they differ in what:

    wav2vec2  pick each hidden frame's own quantized conv features out of a line-up of distractors from the same
              utterance (contrastive loss), and use the codebook evenly (diversity loss):
              `Wav2Vec2ForPreTraining`, wav2vec2_pretraining.py (arXiv:2006.11477)
    hubert    name each hidden frame's cluster: the k-means cluster of its log-mel spectrum, fixed before
              training (HuBERT's first iteration, arXiv:2106.07447 section 3; HuBERT then re-clusters the
              model's own features, which this recipe does not)

The audio (`make_unlabelled_corpus`): espeak-ng reading random English words that are not digit names, in every
English voice and variant, plus real recordings (a Free Spoken Digit Dataset folder) without their labels. All of
it is kept in memory as one float32 array; each step crops random windows of it and adds a little noise, so no
input is ever digitally silent.

Like train.py, the loop checkpoints every --save-every steps and `--resume` continues exactly.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import random
import re
import shutil
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..audio import Wav2Vec2FeatureExtractor
from ..files.audiofile import load_audio
from ..files.checkpoint import torch_load
from ..files.readers import read_json
from ..wav2vec2 import Wav2Vec2Model
from ..wav2vec2_config import Wav2Vec2Config
from ..wav2vec2_pretraining import Wav2Vec2ForPreTraining, compute_mask_indices, sample_negative_indices
from .augment import add_noise, make_noise
from .data import SAMPLING_RATE
from .digits import DIGIT_WORDS, VARIANTS, DigitsRecipe, english_voices, synthesize_many
from .fsdd import SAMPLE_TAKES, read_fsdd
from .train import (
    PRESETS,
    TRAINER_STATE,
    checkpoints,
    make_optimizer,
    rng_state,
    seed_everything,
    set_rng_state,
    warmup_cosine,
)

OBJECTIVES = ("wav2vec2", "hubert")
CORPUS_AUDIO, CORPUS_INDEX = "audio.npy", "index.json"
METRICS_FILE = "metrics.jsonl"
# Words that are, or sound like, digit names: the unlabelled text must teach sounds, not the task's words.
_DIGIT_LIKE = set(DIGIT_WORDS) | {"oh", "o", "won", "to", "too", "for", "fore", "ate", "nein"}


# ================================================================================== the unlabelled corpus
def read_words(path: str | os.PathLike) -> list[str]:
    """Plain lowercase words (2-12 letters, no apostrophes or capitals) of a word list or any text, without the
    digit names and their homophones."""
    with open(path, encoding="utf-8", errors="replace") as f:
        found = re.findall(r"[A-Za-z']+", f.read())
    words = sorted({w for w in found if w.islower() and w.isalpha() and 2 <= len(w) <= 12} - _DIGIT_LIKE)
    if len(words) < 100:
        raise ValueError(f"{path} gives {len(words)} usable words (lowercase, 2-12 letters, not digit names); "
                         "pass a word list or a text with at least 100 (e.g. /usr/share/dict/words).")
    return words


def make_unlabelled_corpus(folder: str | os.PathLike, words_path: str | os.PathLike, sentences: int,
                           fsdd: str | os.PathLike | None = None, seed: int = 0, workers: int = 2) -> dict[str, Any]:
    """espeak-ng reading `sentences` strings of 3-10 random words (every English voice and variant, random
    speed / pitch / word gap), plus every FSDD recording but the bundled samples' takes, without labels.
    Written as folder/audio.npy (one float32 array at 16 kHz) and folder/index.json (where each piece starts);
    returns the index."""
    words, voices, ranges = read_words(words_path), english_voices(), DigitsRecipe()  # the digits corpus's ranges
    rng = random.Random(seed)
    groups = []  # 8 sentences per espeak-ng process (synthesize_many), one voice and setting per group
    for start in range(0, sentences, 8):
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(min(8, sentences - start))]
        voice = rng.choice(voices) + rng.choice(VARIANTS)
        groups.append((texts, voice, rng.randint(*ranges.speed_wpm), rng.randint(*ranges.pitch), rng.randint(*ranges.word_gap)))
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:  # espeak-ng runs as subprocesses
        synthetic = [w for ws in pool.map(lambda g: synthesize_many(*g), groups) for w in ws]
    pieces = [("espeak", w) for w in synthetic]
    if fsdd is not None:
        # A recording is one word (~0.4 s, about 10 frames): too short to hide spans in. Each speaker's takes,
        # shuffled, are joined 3-6 at a time with 100-400 ms gaps (the noise added at each step fills them).
        by_speaker: dict[str, list[np.ndarray]] = {}
        for r in read_fsdd(fsdd):
            if os.path.basename(r.path) not in SAMPLE_TAKES:
                by_speaker.setdefault(r.speaker, []).append(load_audio(r.path, SAMPLING_RATE))
        for _, takes in sorted(by_speaker.items()):
            rng.shuffle(takes)
            i = 0
            while i < len(takes):
                n = rng.randint(3, 6)
                group, i = takes[i:i + n], i + n
                gaps = [np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLING_RATE), np.float32) for _ in group]
                pieces.append(("fsdd", np.concatenate([x for take, gap in zip(group, gaps) for x in (take, gap)])))
    offsets = np.cumsum([0] + [len(w) for _, w in pieces]).tolist()
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, CORPUS_AUDIO), np.concatenate([w for _, w in pieces]).astype(np.float32))
    index = {"offsets": offsets, "sources": [s for s, _ in pieces], "words_file": os.fspath(words_path),
             "sentences": sentences, "fsdd": os.fspath(fsdd) if fsdd else None, "seed": seed,
             "hours": offsets[-1] / SAMPLING_RATE / 3600}
    with open(os.path.join(folder, CORPUS_INDEX), "w", encoding="utf-8") as f:
        json.dump(index, f)
    return index


class UnlabelledCorpus:
    """The corpus in memory; `batch` crops random windows of random pieces, adds noise and normalises."""

    def __init__(self, folder: str | os.PathLike):
        paths = [os.path.join(folder, name) for name in (CORPUS_AUDIO, CORPUS_INDEX)]
        if not all(os.path.exists(p) for p in paths):
            raise FileNotFoundError(f"{folder} is not an unlabelled corpus (no {CORPUS_AUDIO} / {CORPUS_INDEX}); "
                                    "make one with `minispeechseq pretrain --make-corpus ...`.")
        self.audio = np.load(paths[0], mmap_mode="r")
        self.index = read_json(paths[1], "the unlabelled corpus's index")
        self.offsets = self.index["offsets"]
        if self.offsets[-1] != len(self.audio):
            raise ValueError(f"{folder}: the index covers {self.offsets[-1]} samples but audio.npy holds "
                             f"{len(self.audio)}; remake the corpus.")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, i: int) -> np.ndarray:
        return np.asarray(self.audio[self.offsets[i]:self.offsets[i + 1]], dtype=np.float32)

    def batch(self, size: int, max_samples: int, rng: np.random.Generator,
              snr_db: tuple[float, float] = (20.0, 50.0)) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) normalised samples and (B, L) attention mask: `size` random pieces, each cropped to at most
        `max_samples` at a random offset, with white or pink noise at a random SNR, zero mean and unit variance."""
        waves = []
        for i in rng.integers(0, len(self), size):
            wave = self.piece(int(i))
            if len(wave) > max_samples:
                start = int(rng.integers(0, len(wave) - max_samples + 1))
                wave = wave[start:start + max_samples]
            noise = make_noise(str(rng.choice(["white", "pink"])), len(wave), rng)
            wave = add_noise(wave, noise, float(rng.uniform(*snr_db)))
            waves.append((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7))
        longest = max(len(w) for w in waves)
        samples, mask = torch.zeros(size, longest), torch.zeros(size, longest, dtype=torch.long)
        for b, wave in enumerate(waves):
            samples[b, :len(wave)], mask[b, :len(wave)] = torch.from_numpy(wave), 1
        return samples, mask


# ========================================================================== hubert: k-means cluster targets
def mel_filterbank(n_mels: int, n_fft: int, rate: int, low_hz: float = 20.0, high_hz: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1): triangles evenly spaced on the mel scale, each peaking at 1 (HTK's mel formula)."""
    def mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    high_hz = high_hz or rate / 2
    edges_mel = torch.linspace(float(mel(torch.tensor(low_hz))), float(mel(torch.tensor(high_hz))), n_mels + 2)
    edges_hz = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)  # (n_mels + 2,)
    bins = torch.linspace(0, rate / 2, n_fft // 2 + 1)  # (F,) the frequency of each FFT bin
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins - lower) / (centre - lower)
    falling = (upper - bins) / (upper - centre)
    return rising.minimum(falling).clamp(min=0.0)


class ClusterTargets(nn.Module):
    """One cluster id per encoder frame: log-mel spectrum of the frame's window -> nearest of K centroids.

    The windows are the conv feature encoder's own frames (hop = product of the conv strides, 640 samples = 40 ms
    for the tiny preset), so target t belongs to output frame t. Per-utterance mean normalisation (CMN) first, so
    a microphone's colouring does not decide the cluster."""

    def __init__(self, hop: int, num_clusters: int = 100, n_fft: int = 1024, n_mels: int = 40):
        super().__init__()
        self.hop, self.n_fft = hop, n_fft
        self.register_buffer("filters", mel_filterbank(n_mels, n_fft, SAMPLING_RATE))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.register_buffer("centroids", torch.zeros(num_clusters, n_mels))

    def features(self, samples: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, L) -> (B, frames, n_mels) log-mel, one row per encoder frame (windows centred on each frame)."""
        pad = (self.n_fft - self.hop) // 2
        padded = F.pad(samples, (pad, self.n_fft))
        spectrum = torch.stft(padded, self.n_fft, self.hop, window=self.window, center=False,
                              return_complex=True).abs().pow(2)  # (B, F, frames')
        logmel = (self.filters @ spectrum[..., :frames] + 1e-6).log().transpose(1, 2)  # (B, frames, n_mels)
        return logmel - logmel.mean(dim=1, keepdim=True)

    @torch.no_grad()
    def fit(self, rows: torch.Tensor, iterations: int = 25, seed: int = 0) -> float:
        """Lloyd's k-means on (N, n_mels) rows; k-means++ seeding. Returns the mean squared distance at the end."""
        g = torch.Generator().manual_seed(seed)
        K = len(self.centroids)
        centroids = rows[torch.randint(len(rows), (1,), generator=g)]
        while len(centroids) < K:  # k-means++: each new seed drawn in proportion to its squared distance
            nearest = torch.cdist(rows, centroids).min(dim=1).values.pow(2)
            centroids = torch.cat([centroids, rows[torch.multinomial(nearest, 1, generator=g)]])
        for _ in range(iterations):
            assign = torch.cdist(rows, centroids).argmin(dim=1)
            sums = torch.zeros_like(centroids).index_add_(0, assign, rows)
            counts = torch.bincount(assign, minlength=K).clamp(min=1)[:, None]
            centroids = torch.where(counts > 0, sums / counts, centroids)
        self.centroids.copy_(centroids)
        return float(torch.cdist(rows, centroids).min(dim=1).values.pow(2).mean())

    @torch.no_grad()
    def forward(self, samples: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, L) -> (B, frames) cluster ids."""
        feats = self.features(samples, frames)
        return torch.cdist(feats, self.centroids[None].expand(len(feats), -1, -1)).argmin(dim=-1)


class MaskedClusterPrediction(nn.Module):
    """HuBERT-style head: the encoder's output at each hidden frame -> logits over the K clusters (a linear layer;
    HuBERT scores cosine similarity with learned cluster embeddings, the same thing up to normalisation)."""

    def __init__(self, config: Wav2Vec2Config, num_clusters: int):
        super().__init__()
        self.encoder = Wav2Vec2Model(config)
        self.head = nn.Linear(config.hidden_size, num_clusters)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor, mask_time_indices: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over the hidden frames, and the share of them named right."""
        hidden = self.encoder(input_values, attention_mask=attention_mask,
                              mask_time_indices=mask_time_indices).last_hidden_state  # (B, T, D)
        logits = self.head(hidden[mask_time_indices])  # (M, K)
        answer = targets[mask_time_indices]
        return F.cross_entropy(logits, answer, reduction="sum"), (logits.argmax(-1) == answer).float().mean()


# ============================================================================================== the model
def encoder_config(args: argparse.Namespace) -> Wav2Vec2Config:
    """The tiny preset's encoder, with the masking and quantizer fields pretraining reads."""
    fields = PRESETS["tiny"]()[0]
    fields.update(mask_time_prob=args.mask_prob, mask_time_length=args.mask_length, mask_time_min_masks=2,
                  num_codevector_groups=2, num_codevectors_per_group=args.codevectors, codevector_dim=128,
                  proj_codevector_dim=64, num_negatives=args.negatives, diversity_loss_weight=0.1,
                  contrastive_logits_temperature=0.1, feat_quantizer_dropout=0.0)
    return Wav2Vec2Config(**fields)


def gumbel_temperature(step: int, total: int, high: float = 2.0, low: float = 0.5) -> float:
    """Decays geometrically from `high` to `low` over the run (transformers' example decays per step by a fixed
    factor towards a floor; over a fixed budget that is this curve)."""
    return high * (low / high) ** (step / max(1, total))


# =============================================================================================== the loop
def save_encoder(folder: str, encoder: Wav2Vec2Model) -> None:
    """The encoder alone, as a Wav2Vec2Model folder (transformers' Wav2Vec2Model loads it), with the feature
    extractor a fine-tune should use."""
    encoder.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True).save_pretrained(folder)


def pretrain(args: argparse.Namespace) -> nn.Module:
    if args.make_corpus:
        index = make_unlabelled_corpus(args.corpus, args.words, args.sentences, args.fsdd, args.seed, args.workers)
        print(f"corpus: {len(index['sources'])} pieces, {index['hours']:.2f} h, in {args.corpus}", flush=True)
    corpus = UnlabelledCorpus(args.corpus)
    found = checkpoints(args.out)
    if found and not args.resume:
        raise ValueError(f"{args.out} already holds checkpoints (last: {found[-1][1]}); pass --resume, or another --out.")
    seed_everything(args.seed)
    config = encoder_config(args)
    hop = math.prod(config.conv_stride)
    targets = None
    if args.objective == "wav2vec2":
        model: nn.Module = Wav2Vec2ForPreTraining(config)
        encoder = model.encoder
    else:
        model = MaskedClusterPrediction(config, args.clusters)
        encoder = model.encoder
        targets = ClusterTargets(hop, args.clusters)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    warmup = max(1, args.steps // 12)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, args.steps))
    step, data_rng = 0, np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    metrics_path = os.path.join(args.out, METRICS_FILE)
    if found and args.resume:
        state = torch_load(os.path.join(found[-1][1], TRAINER_STATE), "a pretraining state")  # never runs code
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        set_rng_state(state["rng"])
        data_rng.bit_generator.state = state["data_rng"]
        if targets is not None:
            targets.load_state_dict(state["targets"])
        print(f"resuming from {found[-1][1]} (step {step})", flush=True)
    else:
        if os.path.exists(metrics_path):
            os.remove(metrics_path)
        if targets is not None:
            # k-means on the log-mel frames of a sample of crops (the same noise and normalisation as training).
            rows = []
            for _ in range(args.kmeans_batches):
                samples, mask = corpus.batch(args.batch_size, args.max_samples, data_rng)
                frames = int(encoder.output_lengths(torch.tensor(samples.shape[1])))
                valid = encoder.frame_attention_mask(frames, mask).bool()
                rows.append(targets.features(samples, frames)[valid])
            rows = torch.cat(rows)
            inertia = targets.fit(rows, seed=args.seed)
            print(f"k-means: {args.clusters} clusters of {len(rows)} log-mel frames, mean squared distance "
                  f"{inertia:.3f}", flush=True)

    model.train()
    params = sum(p.numel() for p in encoder.parameters())
    print(f"{args.objective}: encoder {params / 1e6:.2f} M parameters; corpus {len(corpus)} pieces "
          f"({corpus.index['hours']:.2f} h); {args.steps} steps of {args.batch_size} crops <= "
          f"{args.max_samples / SAMPLING_RATE:.1f} s", flush=True)
    started = time.time()
    time_limit = args.max_minutes * 60 if args.max_minutes else math.inf
    while step < args.steps:
        samples, mask = corpus.batch(args.batch_size, args.max_samples, data_rng)
        frames = int(encoder.output_lengths(torch.tensor(samples.shape[1])))
        frame_mask = encoder.frame_attention_mask(frames, mask)
        hidden = compute_mask_indices((len(samples), frames), args.mask_prob, args.mask_length,
                                      attention_mask=frame_mask, min_masks=2).bool()
        hidden &= frame_mask.bool()
        record: dict[str, Any] = {}
        if args.objective == "wav2vec2":
            model.set_gumbel_temperature(gumbel_temperature(step, args.steps))
            negatives = sample_negative_indices((len(samples), frames), args.negatives, hidden)
            out = model(samples, attention_mask=mask, mask_time_indices=hidden, sampled_negative_indices=negatives)
            loss = out.loss / hidden.sum()
            record.update(contrastive=out.contrastive_loss.item() / int(hidden.sum()),
                          diversity=out.diversity_loss.item() / int(hidden.sum()),
                          perplexity=out.codevector_perplexity.item())
        else:
            summed, accuracy = model(samples, mask, hidden, targets(samples, frames))
            loss = summed / hidden.sum()
            record.update(accuracy=accuracy.item())
        loss.backward()
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm))
        if not (math.isfinite(loss.item()) and math.isfinite(grad_norm)):
            raise ValueError(f"step {step + 1}: loss {loss.item()}, gradient norm {grad_norm}: not finite; stopped "
                             "before the step. Lower --lr.")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step += 1
        elapsed = time.time() - started
        if step % args.log_every == 0 or step == args.steps:
            record = {"step": step, "loss": loss.item(), **record, "lr": scheduler.get_last_lr()[0],
                      "grad_norm": grad_norm, "elapsed_s": round(elapsed, 1)}
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if not args.quiet:
                print(" | ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()),
                      flush=True)
        out_of_time = elapsed > time_limit
        if step % args.save_every == 0 or step == args.steps or out_of_time:
            folder = os.path.join(args.out, f"checkpoint-{step}")
            tmp = folder + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rng_state(),
                     "data_rng": data_rng.bit_generator.state,
                     "targets": targets.state_dict() if targets is not None else None}
            torch.save(state, os.path.join(tmp, TRAINER_STATE))
            shutil.rmtree(folder, ignore_errors=True)  # a checkpoint of this step from an earlier, cut run
            os.replace(tmp, folder)  # the new checkpoint appears whole, or not at all
            for _, old in checkpoints(args.out)[:-2]:
                shutil.rmtree(old, ignore_errors=True)
        if out_of_time:
            print(f"stopped at step {step}: --max-minutes {args.max_minutes} reached", flush=True)
            break

    save_encoder(os.path.join(args.out, "encoder"), encoder)
    if args.objective == "wav2vec2":
        model.save_pretrained(os.path.join(args.out, "pretraining"))  # the whole objective, for transformers too
    print(f"done: {step} steps in {time.time() - started:.0f} s; encoder in {os.path.join(args.out, 'encoder')}",
          flush=True)
    return model
