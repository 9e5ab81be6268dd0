"""The key/value cache of a decoder, as explicit objects passed through `forward` (no hooks).

When a decoder generates token t, the keys and values of tokens 0..t-1 have not changed, so each
self-attention layer keeps them (`SelfAttentionCache`) and only computes the new token's. Cross-attention
keys and values depend only on the encoder output, so they are computed once per utterance
(`CrossAttentionCache`) and reused at every step.

`DecoderCache` holds one of each per layer, and can be reordered along the batch (beam search keeps the
best beams, which may come from any parent beam) and expanded (several sequences per utterance).

Shape legend: B decoder rows (batch × beams), B_src encoder rows (utterances), H heads, S cached tokens,
T encoder frames, hd head size.
"""

from __future__ import annotations

import torch


class SelfAttentionCache:
    """Keys and values of the tokens seen so far by one self-attention layer, (B, H, S, hd) each.

    Storage is preallocated in chunks and written in place: growing by `torch.cat` would copy the whole
    cache at every step (quadratic in the length); here a copy happens only when a chunk fills up.
    """

    chunk = 64

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0

    @property
    def k(self) -> torch.Tensor:
        return self._k[:, :, : self.length]

    @property
    def v(self) -> torch.Tensor:
        return self._v[:, :, : self.length]

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's k, v (B, H, s, hd); return all keys and values so far (B, H, S + s, hd)."""
        new_len = self.length + k.shape[2]
        if self._k is None or new_len > self._k.shape[2]:
            capacity = (new_len + self.chunk - 1) // self.chunk * self.chunk
            B, H, _, hd = k.shape
            grown_k = k.new_empty(B, H, capacity, hd)
            grown_v = v.new_empty(B, H, capacity, hd)
            if self._k is not None:
                grown_k[:, :, : self.length] = self.k
                grown_v[:, :, : self.length] = self.v
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.length : new_len] = k
        self._v[:, :, self.length : new_len] = v
        self.length = new_len
        return self.k, self.v

    def reorder(self, index: torch.Tensor) -> None:
        if self._k is not None:
            self._k, self._v = self._k.index_select(0, index), self._v.index_select(0, index)


class CrossAttentionCache:
    """Keys and values of the encoder output for one cross-attention layer, (B_src, H, T, hd), set once.

    They are stored once per encoder row: in beam search the K beams of an utterance (B = B_src·K adjacent
    decoder rows) all read the same keys, and `Attention` stacks their queries instead of copying the keys.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def is_set(self) -> bool:
        return self.k is not None

    def set(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v

    def reorder(self, index: torch.Tensor, decoder_rows: int | None = None) -> None:
        """Keep decoder rows `index` (values < decoder_rows; None: one decoder row per stored row). The result
        has one row per entry of `index`."""
        if self.k is None:
            return
        # Decoder rows per stored row (the beams sharing an utterance): each stored row is first repeated for them.
        group = 1 if decoder_rows is None else decoder_rows // self.k.shape[0]
        self.k = self.k.repeat_interleave(group, dim=0).index_select(0, index)  # (len(index), H, T, hd)
        self.v = self.v.repeat_interleave(group, dim=0).index_select(0, index)

    def expand(self, n: int) -> None:
        """Repeat each stored row n times, adjacent (decoder rows B -> B·n keep reading their own utterance)."""
        if self.k is not None:
            self.k, self.v = self.k.repeat_interleave(n, dim=0), self.v.repeat_interleave(n, dim=0)


class DecoderCache:
    """Per-layer caches of a decoder: `self_attn[i]` and `cross_attn[i]` for layer i."""

    def __init__(self, num_layers: int) -> None:
        self.self_attn = [SelfAttentionCache() for _ in range(num_layers)]
        self.cross_attn = [CrossAttentionCache() for _ in range(num_layers)]

    @property
    def seq_len(self) -> int:
        """How many tokens are cached: the position of the next token."""
        return self.self_attn[0].length if self.self_attn else 0

    def reorder(self, index: torch.Tensor, cross: bool = False) -> None:
        """Keep rows `index` (LongTensor (B,)) of every self-attention cache, e.g. the parents of new beams.

        Cross-attention keys/values are identical for all beams of one utterance, so beam search, whose
        parents always belong to the same utterance, need not move them (cross=False). cross=True moves them
        too, for an order that mixes utterances.
        """
        rows = self._rows()
        for c in self.self_attn:
            c.reorder(index)
        if cross:
            for c in self.cross_attn:
                c.reorder(index, decoder_rows=rows)

    def expand(self, n: int) -> None:
        """Repeat every row n times in place (B -> B·n, each row's copies adjacent), caches of both kinds."""
        if n == 1:
            return
        rows = self._rows()
        if rows is not None:
            self.reorder(torch.arange(rows, device=self.self_attn[0]._k.device).repeat_interleave(n))
        for c in self.cross_attn:
            c.expand(n)

    def _rows(self) -> int | None:
        """The number of decoder rows, once a self-attention cache holds any."""
        first = self.self_attn[0]._k if self.self_attn else None
        return None if first is None else first.shape[0]
