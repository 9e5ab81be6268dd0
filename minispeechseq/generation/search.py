"""Search strategies: which token(s) to keep, given the processed scores of the next token.

- `greedy`: the argmax, row by row. Myopic: it never gives up a good token now for a better sentence later.
- `sample`: one draw from softmax(scores); temperature / top-k / top-p have already reshaped the scores.
- `BeamSearch`: keep the `num_beams` best partial sentences (by summed log-probability) per utterance; a
  sentence that ends (EOS or max length) moves to a list of finished hypotheses, ranked by its
  length-penalized score. The bookkeeping follows transformers' vectorized beam search step by step
  (`generation/utils.py: _beam_search` and helpers), so the same scores give the same tokens: every
  utterance and beam is a row of a tensor, with no Python loop over hypotheses.

Shape legend: B utterances, K beams, V vocabulary, P prompt (start token included), L max_length (prompt
included), C = 2K candidates, N = B*K rows.
"""

from __future__ import annotations

import torch

# Scores that must lose every comparison but stay finite (adding -inf could give nan); transformers uses the same.
NEG = -1.0e9


def greedy(scores: torch.Tensor) -> torch.Tensor:
    """(N, V) -> (N,) the best token of each row."""
    return scores.argmax(dim=-1)


def sample(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, V) -> (N,) one token per row drawn from softmax(scores). Same generator state => same tokens."""
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select along dim 1 (the beam axis): x (B, K, ...), index (B, J) -> (B, J, ...)."""
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


class BeamSearch:
    """Beam state for B utterances: running beams and finished hypotheses, as (B, K, ...) tensors.

    Usage: feed `beams.running_ids()` to the decoder (with a cache, only its last column), then
    `parents = beams.step(log_probs)` once per decoding step (log_probs (N, V), processed), and reorder the
    cache with `parents`; stop when `beams.done`; then `beams.finalize(n)`.

    do_sample=True is beam sampling (transformers' `do_sample=True, num_beams>1`): the 2K candidates of a step are
    drawn from softmax(beam score + log-prob) instead of taken as the top 2K; the rest is the same bookkeeping.
    """

    def __init__(
        self,
        prompt: torch.Tensor,  # (B, P) each utterance's decoder prompt (at least the start token), or (B,) start tokens
        num_beams: int,
        max_length: int,
        eos_token_id: list[int],
        pad_token_id: int,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        do_sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        prompt = prompt[:, None] if prompt.dim() == 1 else prompt  # (B,) start tokens -> (B, 1)
        B, P = prompt.shape
        K, device = num_beams, prompt.device
        self.B, self.K, self.max_length = B, K, max_length
        self.eos = torch.tensor(eos_token_id, dtype=torch.long, device=device)
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.do_sample, self.generator = do_sample, generator
        self.prompt_len = self.cur_len = P  # lengths count generated tokens after the prompt
        # Per step keep 2K candidates (more with several EOS ids): even if K of them end now, K can go on.
        self.num_candidates = max(2, 1 + len(eos_token_id)) * K
        self.running = torch.full((B, K, max_length), pad_token_id, dtype=torch.long, device=device)
        self.running[:, :, :P] = prompt[:, None, :]
        # For each generated token, the decoder row (b·K + beam) whose scores it was chosen from; -1 = none.
        self.running_rows = torch.full((B, K, max_length - P), -1, dtype=torch.long, device=device)
        # Only beam 0 is alive at first: the K beams are identical, and expanding all of them would fill the
        # beam with K copies of the same continuation.
        self.running_scores = torch.zeros(B, K, device=device)
        self.running_scores[:, 1:] = NEG
        self.finished = self.running.clone()
        self.finished_rows = self.running_rows.clone()
        self.finished_scores = torch.full((B, K), NEG, device=device)
        self.finished_len = torch.full((B, K), self.prompt_len, dtype=torch.long, device=device)
        self.is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
        # Per utterance: can a running beam still beat the worst finished hypothesis? (see _may_improve)
        self.may_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
        self.done = False

    def running_ids(self) -> torch.Tensor:
        """(N, S) the running beams so far: what the processors look at."""
        return self.running[:, :, : self.cur_len].reshape(self.B * self.K, self.cur_len)

    def step(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Extend the beams by one token. log_probs (N, V) are processed log-probabilities of the next token.
        Returns (N,) the flat row each new running beam continues: reorder the self-attention cache with it."""
        B, K, t = self.B, self.K, self.cur_len
        V = log_probs.shape[-1]
        total = (log_probs.view(B, K, V) + self.running_scores[:, :, None]).view(B, K * V)  # (B, K*V)

        # 1. 2K (beam, token) continuations over all beams of an utterance: the best, or a sample.
        if self.do_sample:
            flat = torch.multinomial(total.softmax(dim=-1), self.num_candidates, generator=self.generator)  # (B, C)
            cand_scores = total.gather(1, flat)
        else:
            cand_scores, flat = torch.topk(total, k=self.num_candidates)  # (B, C) each
        cand_parent, cand_token = flat // V, flat % V  # (B, C) each
        cand_seqs = _take(self.running, cand_parent)  # (B, C, L)
        cand_seqs[:, :, t] = cand_token
        cand_rows = _take(self.running_rows, cand_parent)  # (B, C, L - P)
        cand_rows[:, :, t - self.prompt_len] = cand_parent + torch.arange(B, device=flat.device)[:, None] * K
        ended = cand_token[..., None].eq(self.eos).any(-1) | (t + 1 >= self.max_length)  # (B, C)

        # 2. The best K that did not end keep running.
        alive_scores = cand_scores + ended.float() * NEG
        keep = torch.topk(alive_scores, k=K).indices  # (B, K)
        self.running = _take(cand_seqs, keep)
        self.running_rows = _take(cand_rows, keep)
        self.running_scores = _take(alive_scores, keep)
        parents = _take(cand_parent, keep) + torch.arange(B, device=keep.device)[:, None] * K  # (B, K) flat rows

        # 3. Candidates that ended among the first K join the finished hypotheses if they rank in the top K there.
        self._add_finished(cand_seqs, cand_rows, cand_scores, ended)

        self.cur_len = t + 1
        self._update_may_improve()
        # Stop when no utterance can improve, or (early_stopping=True) every utterance has K finished
        # hypotheses, or no candidate could continue (max_length reached).
        all_full = bool(self.is_finished.all()) and self.early_stopping is True
        self.done = not bool(self.may_improve.any()) or all_full or bool(ended.all())
        return parents.view(-1)

    def _add_finished(self, cand_seqs: torch.Tensor, cand_rows: torch.Tensor, cand_scores: torch.Tensor,
                      ended: torch.Tensor) -> None:
        K, new_len = self.K, self.cur_len + 1
        # Only the first K candidates may finish: the other K are spares so that K beams can keep running.
        in_top_k = torch.arange(ended.shape[1], device=ended.device) < K
        just_finished = ended & in_top_k  # (B, C)
        # Length penalty over generated tokens (EOS included, prompt not): score / len ** alpha.
        # The several additions of NEG, in this order, reproduce transformers' float arithmetic exactly.
        scores = cand_scores / ((new_len - self.prompt_len) ** self.length_penalty)
        full = self.is_finished.all(dim=-1, keepdim=True) & (self.early_stopping is True)  # (B, 1)
        scores = scores + full.float() * NEG
        scores = scores + (~self.may_improve).float() * NEG
        scores = scores + (~just_finished).float() * NEG

        merged_scores = torch.cat([self.finished_scores, scores], dim=1)  # (B, K + C)
        best = torch.topk(merged_scores, k=K).indices  # (B, K)
        cand_len = torch.full_like(cand_scores, new_len, dtype=torch.long)
        self.finished = _take(torch.cat([self.finished, cand_seqs], dim=1), best)
        self.finished_rows = _take(torch.cat([self.finished_rows, cand_rows], dim=1), best)
        self.finished_scores = _take(merged_scores, best)
        self.finished_len = _take(torch.cat([self.finished_len, cand_len], dim=1), best)
        self.is_finished = _take(torch.cat([self.is_finished, just_finished], dim=1), best)

    def _update_may_improve(self) -> None:
        """Could the best running beam still beat the worst finished hypothesis? transformers' heuristic:
        assume it ends now (early_stopping False / True), or at max_length when early_stopping="never" and a
        positive length penalty rewards length. Once False for an utterance it stays False."""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_len = self.max_length - self.prompt_len
        else:
            best_len = self.cur_len - self.prompt_len
        best_running = self.running_scores[:, :1] / (best_len**self.length_penalty)  # (B, 1)
        worst_finished = torch.where(
            self.is_finished, self.finished_scores.min(dim=1, keepdim=True).values, torch.full_like(self.finished_scores, NEG)
        )  # (B, K): NEG where a slot is still empty
        self.may_improve = self.may_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)

    def finalize(self, num_return_sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The best `num_return_sequences` finished hypotheses per utterance, best first: sequences (B*n, S) cut
        to the longest of them (shorter ones padded), and their scores (B*n,)."""
        n = num_return_sequences
        seqs = self.finished[:, :n].reshape(self.B * n, -1)  # (B*n, L)
        scores = self.finished_scores[:, :n].reshape(-1)
        return seqs[:, : self._returned_length(n)], scores

    def beam_indices(self, num_return_sequences: int) -> torch.Tensor:
        """(B*n, S - P) for the hypotheses `finalize` returns: the decoder row each generated token was chosen
        from (its utterance's b·K + beam at that step), -1 after the hypothesis ended (transformers' beam_indices)."""
        n = num_return_sequences
        rows = self.finished_rows[:, :n].reshape(self.B * n, -1)  # (B*n, L - P)
        return rows[:, : self._returned_length(n) - self.prompt_len]

    def _returned_length(self, n: int) -> int:
        return int(self.finished_len[:, :n].max())
