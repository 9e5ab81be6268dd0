"""Word timestamps from cross-attention: when was each word said?

A speech encoder-decoder writes a token while attending to the encoder frames it needs; in a trained model some
cross-attention heads look at the frames where that token is being said. Whisper reads word times off such
"alignment heads" (openai/whisper, `timing.py`); the same works for any SpeechEncoderDecoderModel:

    1. run the decoder once more over the generated tokens, teacher-forced, with eager attention, and keep the
       cross-attention maps: (layers, B, H, S, T), row t = the query that predicted token t + 1;
    2. keep the alignment heads: `generation_config.alignment_heads` ([[layer, head], ...]) when the checkpoint
       names them, else the heads that look most like an alignment on this audio (`head_scores`);
    3. normalise each frame's column over the tokens (z-score), median-filter along time, average the heads;
    4. dynamic time warping (DTW) finds the monotonic path through tokens × frames that collects the most
       attention; a token starts where the path first reaches its row;
    5. frame j is heard at (j · samples_per_frame + receptive_field / 2) / sampling_rate seconds: the centre of
       the samples that frame saw (the feature encoder's real stride and receptive field); with the waveform at
       hand, the boundaries between words then move into its pauses (`refine_with_sound`);
    6. tokens are merged into words (WordPiece `##` continues a word; byte-level BPE `Ġ` and SentencePiece `▁`
       start one; a word-level vocabulary has one word per token). A word ends where the next token starts; the
       last word ends where the end-of-sequence token starts.

Shape legend: B utterances, L layers, H heads, S tokens, T frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers.models import BPE, Unigram

from .pauses import HOP_S, sounds_and_power

MEDIAN_FILTER_WIDTH = 7  # frames, as whisper (an odd number)


@dataclass
class Word:
    word: str
    start: float  # seconds from the start of the audio given
    end: float

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3)}


# ------------------------------------------------------------------------------------------ attention maps
@torch.no_grad()
def cross_attention_maps(model: Any, encoder_outputs: Any, attention_mask: torch.Tensor | None,
                         sequences: torch.Tensor) -> torch.Tensor:
    """Teacher-forced cross-attention of `sequences` (B, S) over the encoder frames: (L, B, H, S, T)."""
    previous = model.attn_implementation
    model.set_attn_implementation("eager")  # the only backend that returns attention weights
    try:
        out = model(attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=sequences,
                    output_attentions=True)
    finally:
        model.set_attn_implementation(previous)
    return torch.stack(out.cross_attentions).float()  # (L, B, H, S, T)


def head_scores(maps: torch.Tensor, rows: int, frames: int) -> torch.Tensor:
    """How much each head's map (L, H, S, T) of one utterance looks like an alignment: (L, H) in [0, 1].

    The product of two measured properties over the `rows` token rows and `frames` real frames:
    - peaked: the mean, over tokens, of the largest weight a token gives one frame (1 = all on one frame);
    - advancing: the fraction of consecutive tokens whose attention centre (the weighted mean frame) moves at
      least half a frame forwards. Speech is said in order, so an alignment head walks forwards through the
      audio; a head that stays on one place (the first frames, a pause) is no clock, however peaked.
    """
    m = maps[:, :, :rows, :frames]
    m = m / m.sum(-1, keepdim=True).clamp_min(1e-9)  # weights over real frames only
    peaked = m.max(-1).values.mean(-1)  # (L, H)
    centre = (m * torch.arange(frames, dtype=m.dtype)).sum(-1)  # (L, H, rows)
    advancing = (centre.diff(dim=-1) > 0.5).float().mean(-1) if rows > 1 else torch.ones_like(peaked)
    return peaked * advancing


def choose_alignment_heads(scores: torch.Tensor, keep: float = 0.8) -> list[list[int]]:
    """The heads within `keep` of the best score (L, H): [[layer, head], ...], the best first."""
    scores = torch.nan_to_num(scores, nan=0.0)  # a map of NaNs (a broken model) is no alignment
    best = scores.max().item()
    chosen = [(scores[i, h].item(), i, h) for i in range(scores.shape[0]) for h in range(scores.shape[1])
              if scores[i, h].item() >= keep * best]
    return [[i, h] for _, i, h in sorted(chosen, reverse=True)]


# ------------------------------------------------------------------------------------------------- DTW
def median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    """Median over a sliding window of `width` along the last dimension, edges reflected."""
    if width <= 1 or x.shape[-1] < width:
        return x
    flat = x.reshape(-1, 1, x.shape[-1])  # (rows, 1, T): reflect-padding works on 3-D input
    padded = F.pad(flat, (width // 2, width // 2), mode="reflect")
    return padded.unfold(-1, width, 1).median(-1).values.reshape(x.shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from (0, 0) to (S-1, T-1) through cost (S, T), moving one step down, right or
    diagonally: (token index, frame index) along the path."""
    S, T = cost.shape
    total = np.full((S + 1, T + 1), np.inf)
    total[0, 0] = 0.0
    came = np.zeros((S + 1, T + 1), dtype=np.int8)  # 0 diagonal, 1 from above (new token, same frame), 2 from left
    for i in range(1, S + 1):
        for j in range(1, T + 1):
            options = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            k = int(np.argmin(options))
            total[i, j] = cost[i - 1, j - 1] + options[k]
            came[i, j] = k
    i, j, path = S, T, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        k = came[i, j]
        i, j = (i - 1, j - 1) if k == 0 else (i - 1, j) if k == 1 else (i, j - 1)
    path.reverse()
    tokens, frames = zip(*path)
    return np.array(tokens), np.array(frames)


def dtw_path(maps: torch.Tensor, heads: list[list[int]], rows: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """DTW through one utterance's maps (L, H, S, T) restricted to `rows` tokens and `frames` real frames:
    (token index, frame index) along the path."""
    weights = torch.stack([maps[layer, head, :rows, :frames] for layer, head in heads])  # (heads, rows, frames)
    # z-score each frame over the tokens, so that frames every token looks at (silence, a loud onset) do not win
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = (weights - mean) / std.clamp_min(1e-9)
    matrix = median_filter(weights, MEDIAN_FILTER_WIDTH).mean(0)  # (rows, frames)
    return dtw(-matrix.numpy().astype(np.float64))


# ----------------------------------------------------------------------------------- sound refinement
SNAP_SCALE_S = 0.5  # how far (seconds) a token boundary moves to reach a longer silence, per factor e of length
VALLEY_S = 0.05  # a boundary with no silence goes to the quietest 50 ms of the sound around it ...
VALLEY_REACH_S = 0.3  # ... within this of its DTW time
VALLEY_DB = 3.0  # ... spread over the frames within this of that quietest level
VALLEY_RISE_DB = 6.0  # ... and a dip: the sound rises this far above it on both sides
UNMATCHED = np.log(0.02) - 1.0  # the score of a boundary left in no silence: a 20 ms one 0.5 s away scores the same
MIN_SOUND_S = 0.1  # the first word starts on, and the last ends on, a sound at least this long (not a click)


def silence_scores(bounds: list[float], gaps: list[tuple[float, float]]) -> np.ndarray:
    """How well each silence suits each boundary: (boundaries, silences), log(its length) - |its distance from the
    boundary| / SNAP_SCALE_S (see refine_with_sound)."""
    return np.array([[np.log(max(e - a, 1e-3)) - abs((a + e) / 2 - t) / SNAP_SCALE_S for a, e in gaps]
                     for t in bounds])


def refine_with_sound(spans: list[tuple[float, float]], runs: list[tuple[float, float]],
                      power: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Move each boundary between consecutive tokens into a silence of the waveform, and the first start and
    last end onto the sound.

    DTW says which stretch of audio belongs to which token, but where two tokens' attention peaks are apart no token
    claims the frames between them, so its boundary can fall anywhere in that stretch (measured on the bundled
    model: a median of 150-180 ms early); the waveform says, within 10 ms, where sound stops and starts.
    Each of the n - 1 boundaries is matched to a different silence between runs of sound, in order, by dynamic
    programming: a silence scores log(its length) - |its distance from the boundary| / SNAP_SCALE_S, so a long
    pause a little further away beats the short closure inside a word ("ei_ght"). With fewer silences than
    boundaries (continuous speech, or a murmur of voices that filled a pause), each silence goes to the
    boundary it suits best (`match_some`) and the others keep their DTW times."""
    n = len(spans)
    if not runs or n == 0:
        return spans
    gaps = [(runs[i][1], runs[i + 1][0]) for i in range(len(runs) - 1)]  # silences between sounds
    bounds = [spans[k][1] for k in range(n - 1)]  # DTW's boundary after token k
    chosen: list[tuple[float, float] | None] = [None] * (n - 1)
    if 0 < len(bounds) <= len(gaps):
        score = silence_scores(bounds, gaps)  # (n - 1, gaps)
        # best[k, g]: the best total for boundaries 0..k with boundary k in silence g (strictly increasing g).
        best = np.full(score.shape, -np.inf)
        came = np.zeros(score.shape, dtype=np.int64)
        best[0] = score[0]
        for k in range(1, len(bounds)):
            prefix = np.maximum.accumulate(best[k - 1])  # the best of silences 0..g
            where = np.array([int(np.argmax(best[k - 1][: g + 1])) for g in range(len(gaps))])
            best[k, 1:] = prefix[:-1] + score[k, 1:]
            came[k, 1:] = where[:-1]
        g = int(np.argmax(best[-1]))
        for k in range(len(bounds) - 1, -1, -1):
            chosen[k] = gaps[g]
            g = came[k, g]
    elif len(bounds) > len(gaps) > 0:
        chosen = match_some(bounds, gaps)
    if power is not None and len(power) and None in chosen:
        chosen = into_valleys(chosen, bounds, power)
    # The ends of the utterance: where its first lasting sound begins and its last one stops (a click or a chance
    # peak of the noise is no word), unless that is past the first word's end / before the last word's start (the
    # model heard a word the detector did not).
    lasting = [r for r in runs if r[1] - r[0] >= MIN_SOUND_S] or runs
    first_end = chosen[0][0] if n > 1 and chosen[0] else spans[0][1]
    last_start = chosen[-1][1] if n > 1 and chosen[-1] else spans[-1][0]
    first, last = lasting[0][0], lasting[-1][1]
    starts = [min(first, first_end)] + [c[1] if c else bounds[k] for k, c in enumerate(chosen)]
    ends = [c[0] if c else bounds[k] for k, c in enumerate(chosen)] + [max(last, last_start)]
    return list(zip(starts, ends))


def into_valleys(chosen: list[tuple[float, float] | None], bounds: list[float],
                 power: np.ndarray) -> list[tuple[float, float] | None]:
    """Each boundary that found no silence (None in `chosen`) moved into a dip of the sound around it: where a
    murmur of voices filled the pause between two words, the waveform still dips there to the murmur's level. The
    level is the VALLEY_S moving average of the frame power (N,) in dB; the dip is its lowest point within
    VALLEY_REACH_S of the DTW boundary (and between its neighbours) that the sound rises above by VALLEY_RISE_DB on
    both sides, widened while within VALLEY_DB of it. With no such dip (words said without a break between them,
    or the quiet edge of a silence next door), the boundary keeps its DTW time: a window's lowest point at its edge
    is no dip, and moving there squeezed a word to nothing."""
    width = max(1, round(VALLEY_S / HOP_S))
    smooth = np.convolve(power, np.ones(width) / width, mode="same") if len(power) >= width else power  # (N,)
    out = list(chosen)
    for k, t in enumerate(bounds):
        if out[k] is not None:
            continue
        lo = max(t - VALLEY_REACH_S, out[k - 1][1] if k and out[k - 1] else bounds[k - 1] if k else 0.0)
        hi = min(t + VALLEY_REACH_S, out[k + 1][0] if k + 1 < len(out) and out[k + 1] else
                 bounds[k + 1] if k + 1 < len(bounds) else len(power) * HOP_S)
        a, b = max(0, int(lo / HOP_S)), min(len(smooth), int(hi / HOP_S) + 1)
        window = smooth[a:b]
        if len(window) < 3:
            continue
        rise_before = np.maximum.accumulate(window) - window  # how far the sound rose above each frame earlier ...
        rise_after = np.maximum.accumulate(window[::-1])[::-1] - window  # ... and later in the window
        dips = np.flatnonzero((rise_before >= VALLEY_RISE_DB) & (rise_after >= VALLEY_RISE_DB))
        if not len(dips):
            continue
        i = a + int(dips[np.argmin(window[dips])])
        first, last = i, i
        while first > a and smooth[first - 1] <= smooth[i] + VALLEY_DB:
            first -= 1
        while last + 1 < b and smooth[last + 1] <= smooth[i] + VALLEY_DB:
            last += 1
        out[k] = (first * HOP_S, (last + 1) * HOP_S)
    return out


def match_some(bounds: list[float], gaps: list[tuple[float, float]]) -> list[tuple[float, float] | None]:
    """Fewer silences than boundaries (two words ran together, or a murmur filled a pause): each silence is
    matched to at most one boundary, in order, scored as in `refine_with_sound`, and a boundary left without one
    (None) scores UNMATCHED, so only the boundaries that have a silence near them move into it."""
    score = silence_scores(bounds, gaps)  # (boundaries, gaps)
    B, G = score.shape
    best = np.full((B + 1, G + 1), -np.inf)  # best[k, g]: boundaries 0..k-1 placed, silences 0..g-1 used or passed
    best[0, :] = 0.0
    move = np.zeros((B + 1, G + 1), dtype=np.int8)  # 1: boundary k-1 in silence g-1, 2: k-1 unmatched, 3: g-1 unused
    for k in range(B + 1):
        for g in range(G + 1):
            if k == 0:
                move[k, g] = 3
                continue
            options = [(best[k - 1, g - 1] + score[k - 1, g - 1], 1) if g else (-np.inf, 1),
                       (best[k - 1, g] + UNMATCHED, 2), (best[k, g - 1], 3) if g else (-np.inf, 3)]
            best[k, g], move[k, g] = max(options)
    chosen: list[tuple[float, float] | None] = [None] * B
    k, g = B, G
    while k > 0:
        if move[k, g] == 1:
            chosen[k - 1] = gaps[g - 1]
            k, g = k - 1, g - 1
        elif move[k, g] == 2:
            k -= 1
        else:
            g -= 1
    return chosen


def well_formed(spans: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """The spans made valid whatever produced them: 0 <= start <= end <= duration, each word starting no earlier
    than the one before it ends (a model that heard the audio wrongly can make DTW and the pauses disagree)."""
    out, after = [], 0.0
    for start, end in spans:
        start = min(max(start, after), duration)
        end = min(max(end, start), duration)
        out.append((start, end))
        after = end
    return out


# ------------------------------------------------------------------------------------------------- words
def starts_new_word(tokenizer: Any, token: str, first: bool) -> bool:
    """Whether `token` begins a word, by the tokenizer's convention (see the module docstring)."""
    if first:
        return True
    if token.startswith("##"):
        return False
    if token.startswith(("Ġ", "▁")):
        return True
    model = getattr(getattr(tokenizer, "backend", None), "model", None)
    return not isinstance(model, (BPE, Unigram))  # BPE pieces without a marker continue the word


def words_of_row(tokenizer: Any, ids: list[int], spans: list[tuple[float, float]]) -> list[Word]:
    """Merge the generated tokens `ids`, each with its (start, end) in seconds, into words."""
    groups: list[list[int]] = []
    tokens = tokenizer.convert_ids_to_tokens(ids)
    for k, token in enumerate(tokens):
        if starts_new_word(tokenizer, token, first=not groups):
            groups.append([])
        groups[-1].append(k)
    words = []
    for group in groups:
        text = tokenizer.decode([ids[k] for k in group], skip_special_tokens=True).strip()
        start, end = spans[group[0]][0], max(spans[k][1] for k in group)
        if text:
            words.append(Word(text, start, max(end, start)))
    return words


@torch.no_grad()
def word_timestamps(model: Any, tokenizer: Any, encoder_outputs: Any, attention_mask: torch.Tensor | None,
                    sequences: torch.Tensor, prompt_length: int = 1,
                    alignment_heads: list[list[int]] | None = None, sampling_rate: int = 16000,
                    audio: list[np.ndarray] | None = None) -> list[list[Word]]:
    """Words with start and end times (seconds) for each row of `sequences` (B, S), generated from this audio.
    `audio`: each row's waveform, to tighten the times to where sound starts and stops (`refine_with_sound`)."""
    maps = cross_attention_maps(model, encoder_outputs, attention_mask, sequences)  # (L, B, H, S, T)
    encoder = model.encoder
    T = maps.shape[-1]
    if audio is not None:  # the frames each row's own samples made (a batch without mask is zero-padded)
        real_frames = [min(T, int(encoder.output_lengths(torch.tensor(len(a))))) for a in audio]
    elif attention_mask is not None:
        real_frames = encoder.frame_attention_mask(T, attention_mask).sum(-1).tolist()
    else:
        real_frames = [T] * sequences.shape[0]
    hop, field = encoder.samples_per_frame, encoder.receptive_field
    special = set(tokenizer.all_special_ids)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    heads = alignment_heads or getattr(model.generation_config, "alignment_heads", None)
    out = []
    for b in range(sequences.shape[0]):
        generated = sequences[b, prompt_length:].tolist()
        ended = next((k for k, t in enumerate(generated) if t in eos), None)
        text_ids = generated[:ended] if ended is not None else generated
        if not any(t not in special for t in text_ids):
            out.append([])
            continue
        # Row prompt_length - 1 + k is the query that predicted generated token k; with an EOS its row is kept
        # too: where the EOS starts is where the last word ends.
        rows = len(text_ids) + (ended is not None)
        first_row = prompt_length - 1
        out.append(words_of_maps(tokenizer, maps[:, b, :, first_row:first_row + rows], text_ids, real_frames[b],
                                 heads, hop, field, sampling_rate, None if audio is None else audio[b]))
    return out


def words_of_maps(tokenizer: Any, maps: torch.Tensor, text_ids: list[int], frames: int,
                  heads: list[list[int]] | None, hop: int, field: int, sampling_rate: int,
                  audio: np.ndarray | None = None) -> list[Word]:
    """One utterance's words from its cross-attention maps (L, H, rows, T): a row per token of `text_ids`, plus
    the end-of-sequence token's row when generation ended (its start is the last word's end). `frames` of the T
    are real audio, each `hop` samples apart and seeing `field` samples; `audio`, when given, refines the times.
    Whatever the maps hold, the words come back well formed: 0 <= start <= end <= duration, in time order."""
    special = set(tokenizer.all_special_ids)
    rows, frames = maps.shape[2], max(1, min(int(frames), maps.shape[-1]))
    chosen = heads or choose_alignment_heads(head_scores(maps, rows, frames))
    token_idx, frame_idx = dtw_path(maps, chosen, rows, frames)
    frame_times = (np.arange(frames) * hop + field / 2) / sampling_rate  # the centre of each frame
    starts = frame_times[frame_idx[np.searchsorted(token_idx, np.arange(rows))]]  # where the path enters a row
    ends = np.append(starts[1:], (frames * hop + field / 2) / sampling_rate)
    keep = [k for k, t in enumerate(text_ids) if t not in special]  # the EOS row only served as an end
    words = words_of_row(tokenizer, [text_ids[k] for k in keep], [(float(starts[k]), float(ends[k])) for k in keep])
    spans = [(w.start, w.end) for w in words]
    if audio is not None:  # word boundaries (not those inside a word) move into the waveform's pauses
        spans = refine_with_sound(spans, *sounds_and_power(audio, sampling_rate))
        duration = len(audio) / sampling_rate
    else:  # the samples the real frames saw
        duration = ((frames - 1) * hop + field) / sampling_rate
    return [Word(w.word, a, e) for w, (a, e) in zip(words, well_formed(spans, duration))]
