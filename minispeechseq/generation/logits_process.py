"""Logit processors: pure functions of (tokens so far, next-token scores) -> new scores.

Each one changes the scores of the next token to forbid, force or reshape something, and nothing else: no
state, no in-place writes, so any of them can be tested alone on random logits. `build_processors` lines them
up in transformers' order, which matters (e.g. the repetition penalty must see raw scores; top-p must see
temperature-scaled ones):

    repetition penalty -> no-repeat n-gram -> bad words -> min length -> forced BOS -> forced EOS -> suppress
    (sampling only:)   -> temperature -> top-k -> top-p

Greedy and sampling apply them to logits; beam search applies them to log-probabilities (transformers does
the same), which is why "forbidden" is always -inf and "forced" is "-inf everywhere else, 0 here".

Shape legend: N rows (batch x beams), S tokens so far (start token included), V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ..layers import check_vocabulary
from .config import GenerationConfig

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (input_ids (N, S), scores (N, V)) -> (N, V)


def _ids(token_ids: int | Sequence[int] | None) -> list[int]:
    if token_ids is None:
        return []
    return [token_ids] if isinstance(token_ids, int) else list(token_ids)


def _vocab_mask(scores: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """(V,) bool, True at `token_ids`."""
    mask = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
    mask[torch.tensor(token_ids, dtype=torch.long, device=scores.device)] = True
    return mask


class RepetitionPenalty:
    """CTRL (Keskar et al. 2019): make every token already in the sequence less likely.

    A positive score is divided by the penalty and a negative one multiplied, so both move down. The start
    token counts as "seen", as in transformers for encoder-decoders.
    """

    def __init__(self, penalty: float) -> None:
        if not penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {penalty}.")
        self.penalty = float(penalty)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = torch.gather(scores, 1, input_ids)  # (N, S)
        penalized = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, input_ids, penalized)


class NoRepeatNGram:
    """Forbid the token that would complete an n-gram already present in the sequence (Paulus et al. 2017)."""

    def __init__(self, ngram_size: int) -> None:
        if not (isinstance(ngram_size, int) and ngram_size > 0):
            raise ValueError(f"no_repeat_ngram_size must be a positive int (0 = off), got {ngram_size!r}.")
        self.n = ngram_size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _N, S = input_ids.shape
        if S < self.n:
            return scores
        # The next token completes the n-gram (last n-1 tokens, next). Every earlier window whose first n-1
        # tokens equal that suffix bans its own last token.
        suffix = input_ids[:, S - self.n + 1 :]  # (N, n-1)
        windows = input_ids.unfold(1, self.n, 1)  # (N, S-n+1, n)
        hit = (windows[:, :, :-1] == suffix[:, None, :]).all(dim=-1)  # (N, S-n+1)
        banned = torch.zeros_like(scores, dtype=torch.bool)
        rows, cols = hit.nonzero(as_tuple=True)
        banned[rows, windows[rows, cols, -1]] = True
        return scores.masked_fill(banned, -math.inf)


class NoBadWords:
    """Never generate any of `bad_words_ids` (token sequences): ban a sequence's last token when the tokens
    before it are the end of the row. A single-token bad word equal to an EOS id is dropped, as in
    transformers, so generation can always end."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | None = None) -> None:
        if not (
            isinstance(bad_words_ids, list)
            and bad_words_ids
            and all(isinstance(w, list) and w and all(isinstance(t, int) and t >= 0 for t in w) for w in bad_words_ids)
        ):
            raise ValueError(
                f"bad_words_ids must be a non-empty list of non-empty lists of token ids (ints >= 0), got {bad_words_ids!r}."
            )
        eos = _ids(eos_token_id)
        self.words = [w for w in bad_words_ids if not (len(w) == 1 and w[0] in eos)]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        check_vocabulary([t for w in self.words for t in w], scores.shape[-1], "bad_words_ids")
        banned = torch.zeros_like(scores, dtype=torch.bool)
        for word in self.words:
            *prefix, last = word
            if not prefix:
                banned[:, last] = True
            elif len(prefix) <= input_ids.shape[1]:
                ends_with_prefix = (input_ids[:, -len(prefix) :] == torch.tensor(prefix, device=input_ids.device)).all(-1)
                banned[:, last] |= ends_with_prefix
        return scores.masked_fill(banned, -math.inf)


class MinLength:
    """Forbid EOS while the sequence (start token included) is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id: int | list[int]) -> None:
        self.min_length = min_length
        self.eos = _ids(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] >= self.min_length:
            return scores
        return scores.masked_fill(_vocab_mask(scores, self.eos), -math.inf)


class ForceToken:
    """At sequence length `at_length`, allow only `token_ids` (score 0, every other token -inf).

    Forced BOS is `at_length=1` (the token after the start token: mBART's target language); forced EOS is
    `at_length=max_length-1` (the last token the loop will pick)."""

    def __init__(self, token_ids: int | list[int], at_length: int) -> None:
        self.token_ids = _ids(token_ids)
        self.at_length = at_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] != self.at_length:
            return scores
        return torch.full_like(scores, -math.inf).masked_fill(_vocab_mask(scores, self.token_ids), 0.0)


class SuppressTokens:
    """Never generate `token_ids`."""

    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = _ids(token_ids)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.token_ids:
            return scores
        return scores.masked_fill(_vocab_mask(scores, self.token_ids), -math.inf)


class Temperature:
    """Divide logits by T: T < 1 sharpens the distribution towards the argmax, T > 1 flattens it."""

    def __init__(self, temperature: float) -> None:
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(
                f"temperature must be > 0 when sampling, got {temperature!r}; for greedy decoding use do_sample=False."
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopK:
    """Keep the k highest scores; every token tied with the k-th one is kept too (transformers' rule)."""

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_k, int) and top_k > 0):
            raise ValueError(f"top_k must be a positive int (0 or None = off), got {top_k!r}.")
        self.k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        kth_best = torch.topk(scores, k).values[:, -1:]  # (N, 1)
        return scores.masked_fill(scores < kth_best, -math.inf)


class TopP:
    """Nucleus sampling (Holtzman et al. 2019): keep the most likely tokens until their mass reaches top_p.

    Computed from the bottom, as transformers does: sort ascending, drop every token whose cumulative mass
    (itself included) is <= 1 - top_p; the token that crosses the threshold stays."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1) -> None:
        if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1.0 = off), got {top_p!r}.")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ascending, order = torch.sort(scores, descending=False)  # (N, V) each
        mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = mass_below <= 1 - self.top_p
        drop_sorted[:, -self.min_tokens_to_keep :] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
        return scores.masked_fill(drop, -math.inf)


def apply_processors(processors: Sequence[Processor], input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    for process in processors:
        scores = process(input_ids, scores)
    return scores


def build_processors(config: GenerationConfig, max_length: int, min_length: int) -> list[Processor]:
    """The processors `config` asks for, in transformers' order. `max_length` / `min_length` are the resolved
    totals (start token included): `generate` folds max_new_tokens / min_new_tokens into them."""
    eos = _ids(config.eos_token_id)
    out: list[Processor] = []
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        out.append(RepetitionPenalty(config.repetition_penalty))
    if config.no_repeat_ngram_size:
        out.append(NoRepeatNGram(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        out.append(NoBadWords(config.bad_words_ids, eos))
    if min_length > 0 and eos:
        out.append(MinLength(min_length, eos))
    if config.forced_bos_token_id is not None:
        out.append(ForceToken(config.forced_bos_token_id, at_length=1))
    if config.forced_eos_token_id is not None:
        out.append(ForceToken(config.forced_eos_token_id, at_length=max_length - 1))
    if config.suppress_tokens:
        out.append(SuppressTokens(config.suppress_tokens))
    if config.do_sample:  # each processor checks its own value (temperature 0, top_p 1.5... are errors there)
        if config.temperature != 1.0:
            out.append(Temperature(config.temperature))
        if config.top_k:
            out.append(TopK(config.top_k))
        if config.top_p != 1.0:
            out.append(TopP(config.top_p))
    return out
