"""The KV cache: storage that grows correctly, beam reorder/expand semantics, and decoding with a cache giving
exactly what the full forward gives.

The reference for every cached computation is the same layer run once over the whole sequence (no cache),
a path that shares no state with the cache. Comparisons print the measured max-abs difference (`pytest -s`).

Shape legend: B batch (× beams), H heads, S tokens, T encoder frames, hd head size, D model width.
"""

import pytest
import torch
from torch import nn

from minispeechseq.attention import Attention
from minispeechseq.cache import CrossAttentionCache, DecoderCache, SelfAttentionCache
from tests.utils import ATOL_FP32, assert_close

BACKENDS = ("eager", "sdpa")


# ---------------------------------------------------------------------------------------------------------------
# SelfAttentionCache storage
# ---------------------------------------------------------------------------------------------------------------
def test_growing_one_step_at_a_time_equals_concatenation():
    """150 single-token steps cross the 64-token chunk boundary twice; every step returns exactly the concatenation."""
    torch.manual_seed(0)
    cache = SelfAttentionCache()
    ks, vs, allocations, last_ptr = [], [], 0, None
    for step in range(1, 151):
        k, v = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)  # (B, H, 1, hd)
        ks.append(k)
        vs.append(v)
        k_all, v_all = cache.update(k, v)
        assert cache.length == step
        assert torch.equal(k_all, torch.cat(ks, dim=2)), f"keys differ from the concatenation after {step} steps"
        assert torch.equal(v_all, torch.cat(vs, dim=2)), f"values differ from the concatenation after {step} steps"
        assert torch.equal(cache.k, k_all) and torch.equal(cache.v, v_all)
        # The storage (private, looked at here only to check the promise of chunked preallocation) is replaced
        # only when a chunk fills up, not at every step.
        if cache._k.data_ptr() != last_ptr:
            allocations, last_ptr = allocations + 1, cache._k.data_ptr()
    expected = -(-150 // SelfAttentionCache.chunk)  # ceil(150 / 64) = 3
    assert allocations == expected, f"storage was allocated {allocations} times for 150 steps, expected {expected}"


def test_growing_by_chunks_of_several_tokens():
    """A prefill of 70 tokens, then 1 or 5 at a time, across the 128 boundary."""
    torch.manual_seed(1)
    cache = SelfAttentionCache()
    ks, vs = [], []
    for s in [70, 1, 5, 5, 50, 1, 5]:
        k, v = torch.randn(1, 2, s, 4), torch.randn(1, 2, s, 4)
        ks.append(k)
        vs.append(v)
        k_all, v_all = cache.update(k, v)
        assert torch.equal(k_all, torch.cat(ks, 2)) and torch.equal(v_all, torch.cat(vs, 2)), f"after +{s} tokens"
    assert cache.length == 137


# ---------------------------------------------------------------------------------------------------------------
# DecoderCache: reorder (beam search) and expand (several sequences per utterance)
# ---------------------------------------------------------------------------------------------------------------
def filled_cache(B=3, layers=2, steps=5, T=4) -> tuple[DecoderCache, list[torch.Tensor], list[torch.Tensor]]:
    """A cache whose row b holds values that identify b, so reordering can be read off."""
    cache = DecoderCache(layers)
    self_k, cross_k = [], []
    for i in range(layers):
        k = torch.randn(B, 2, steps, 4)
        cache.self_attn[i].update(k, k + 100)
        ck = torch.randn(B, 2, T, 4)
        cache.cross_attn[i].set(ck, ck + 100)
        self_k.append(k)
        cross_k.append(ck)
    return cache, self_k, cross_k


def test_reorder_moves_self_attention_rows_only_by_default():
    torch.manual_seed(2)
    cache, self_k, cross_k = filled_cache()
    index = torch.tensor([2, 0, 0])
    cache.reorder(index)
    for i in range(2):
        assert torch.equal(cache.self_attn[i].k, self_k[i][index]), f"layer {i} self keys not reordered"
        assert torch.equal(cache.self_attn[i].v, self_k[i][index] + 100), f"layer {i} self values not reordered"
        assert torch.equal(cache.cross_attn[i].k, cross_k[i]), "cross keys moved although cross=False"
    assert cache.seq_len == 5

    cache.reorder(torch.tensor([1, 2, 0]), cross=True)
    for i in range(2):
        assert torch.equal(cache.cross_attn[i].k, cross_k[i][[1, 2, 0]]), f"layer {i} cross keys not reordered"
        assert torch.equal(cache.cross_attn[i].v, cross_k[i][[1, 2, 0]] + 100)


def test_rows_copied_by_reorder_grow_independently():
    """Two beams with the same parent share a past but must not share storage: appending differs per row."""
    torch.manual_seed(3)
    cache, self_k, _ = filled_cache(B=2, layers=1)
    cache.reorder(torch.tensor([0, 0]))
    new = torch.randn(2, 2, 1, 4)
    k_all, _ = cache.self_attn[0].update(new, new)
    expected = torch.cat([self_k[0][[0, 0]], new], dim=2)
    assert torch.equal(k_all, expected), "appending after a reorder with a repeated parent mixed up the rows"
    assert cache.seq_len == 6


def test_expand_repeats_each_row_adjacently():
    torch.manual_seed(4)
    cache, self_k, cross_k = filled_cache(B=2)
    cache.expand(3)
    index = torch.tensor([0, 0, 0, 1, 1, 1])
    for i in range(2):
        assert torch.equal(cache.self_attn[i].k, self_k[i][index]), f"layer {i}: self keys not expanded"
        assert torch.equal(cache.cross_attn[i].k, cross_k[i][index]), f"layer {i}: cross keys not expanded"
    assert cache.seq_len == 5
    cache.expand(1)  # no-op
    assert cache.self_attn[0].k.shape[0] == 6


def test_expand_and_reorder_of_an_empty_cache_are_no_ops():
    cache = DecoderCache(2)
    cache.expand(4)
    cache.reorder(torch.tensor([0, 0]), cross=True)
    assert cache.seq_len == 0 and not cache.cross_attn[0].is_set


# ---------------------------------------------------------------------------------------------------------------
# One Attention layer decoded step by step equals its full causal forward
# ---------------------------------------------------------------------------------------------------------------
def make_layer(dim=16, heads=4, kv_dim=None, seed=0, impl="sdpa") -> Attention:
    torch.manual_seed(seed)
    attn = Attention(dim, heads, kv_dim=kv_dim).eval()
    attn.impl = impl
    return attn


def pad_mask(B: int, S: int, kind: str | None) -> torch.Tensor | None:
    if kind is None:
        return None
    pad = torch.ones(B, S, dtype=torch.long)  # row 1 has 3 padded tokens, the other rows none
    if kind == "left":
        pad[1, :3] = 0
    else:
        pad[1, -3:] = 0
    return pad


@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 1, 1, 1, 1], [2, 2, 2, 3]], ids=["steps", "prefill", "pairs"])
@pytest.mark.parametrize("padding", [None, "left", "right"])
@pytest.mark.parametrize("impl", BACKENDS)
def test_self_attention_with_cache_equals_full_forward(impl, padding, chunks):
    attn = make_layer(impl=impl)
    B, S = 3, sum(chunks)
    x = torch.randn(B, S, 16)
    pad = pad_mask(B, S, padding)
    with torch.no_grad():
        full, _ = attn(x, key_padding_mask=pad, causal=True)
        cache, outs, p = SelfAttentionCache(), [], 0
        for s in chunks:
            step_pad = None if pad is None else pad[:, : p + s]  # the mask covers past and new keys
            out, _ = attn(x[:, p : p + s], key_padding_mask=step_pad, causal=True, cache=cache)
            outs.append(out)
            p += s
    cached = torch.cat(outs, dim=1)
    if pad is not None:
        # Only real tokens are compared. A padded query at the start of a left-padded row sees no key at all, and
        # such a row averages *every* key it is offered (transformers' convention, see test_attention.py): all S
        # keys in the full forward, only the past in a cached step. Nobody reads those positions: real queries
        # never attend to padded keys.
        real = pad.bool()
        cached, full = cached[real], full[real]
    diff = assert_close(cached, full, ATOL_FP32, f"{impl} cached {chunks} vs full, padding={padding}")
    print(f"\n{impl:5s} padding={padding!s:5s} chunks={chunks}: max |cached - full| = {diff:.2e}")


# ---------------------------------------------------------------------------------------------------------------
# Cross-attention keys/values: computed once per utterance, reused at every step
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", BACKENDS)
def test_cross_attention_keys_values_computed_once(impl):
    attn = make_layer(16, 4, kv_dim=24, impl=impl)
    calls = {"k_proj": 0, "v_proj": 0}

    def count(name):
        def hook(module, inputs, output):
            calls[name] += 1
        return hook

    hooks = [getattr(attn, name).register_forward_hook(count(name)) for name in calls]
    frames = torch.randn(2, 10, 24)  # (B, T, kv_dim) encoder output
    frame_pad = torch.ones(2, 10, dtype=torch.long)
    frame_pad[0, 7:] = 0
    x = torch.randn(2, 6, 16)
    cache = CrossAttentionCache()
    with torch.no_grad():
        # A decoder passes the encoder output at every step; once the cache is set it is not projected again.
        cached = [attn(x[:, t : t + 1], frames, key_padding_mask=frame_pad, cache=cache)[0] for t in range(6)]
        assert calls == {"k_proj": 1, "v_proj": 1}, f"6 cached steps projected the frames {calls} times, expected once"
        for h in hooks:
            h.remove()
        full, _ = attn(x, frames, key_padding_mask=frame_pad)  # no cache: all 6 queries at once
    diff = assert_close(torch.cat(cached, dim=1), full, ATOL_FP32, f"{impl} cross-attention, cached steps vs full")
    print(f"\n{impl} cross-attention with cache: max diff = {diff:.2e}")
    assert cache.is_set and cache.k.shape == (2, 4, 10, 4)  # (B, H, T, hd)


# ---------------------------------------------------------------------------------------------------------------
# A small decoder stack (self-attention, then cross-attention, per layer) driven through a DecoderCache
# ---------------------------------------------------------------------------------------------------------------
class TinyDecoder(nn.Module):
    """Just enough of a decoder to pass a DecoderCache through several layers, as the real decoders do."""

    def __init__(self, layers=2, dim=16, heads=4, kv_dim=24, impl="sdpa"):
        super().__init__()
        torch.manual_seed(7)
        self.self_attn = nn.ModuleList(Attention(dim, heads) for _ in range(layers))
        self.cross_attn = nn.ModuleList(Attention(dim, heads, kv_dim=kv_dim) for _ in range(layers))
        for m in self.modules():
            if isinstance(m, Attention):
                m.impl = impl
        self.eval()

    def forward(self, x, frames, mask=None, frame_mask=None, cache: DecoderCache | None = None):
        for i, (sa, ca) in enumerate(zip(self.self_attn, self.cross_attn)):
            x = x + sa(x, key_padding_mask=mask, causal=True, cache=None if cache is None else cache.self_attn[i])[0]
            x = x + ca(x, frames, key_padding_mask=frame_mask, cache=None if cache is None else cache.cross_attn[i])[0]
        return x


def decode_steps(model, x, frames, frame_mask, cache, start, mask=None):
    outs = []
    for t in range(start, start + x.shape[1]):
        step_mask = None if mask is None else mask[:, : t + 1]
        outs.append(model(x[:, t - start : t - start + 1], frames, step_mask, frame_mask, cache))
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("impl", BACKENDS)
def test_decoder_cache_through_layers_equals_full_forward(impl):
    model = TinyDecoder(impl=impl)
    x, frames = torch.randn(2, 8, 16), torch.randn(2, 10, 24)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :2] = 0  # left-padded prompt
    frame_mask = torch.ones(2, 10, dtype=torch.long)
    frame_mask[1, 6:] = 0
    with torch.no_grad():
        full = model(x, frames, mask, frame_mask)
        cache = DecoderCache(2)
        cached = decode_steps(model, x, frames, frame_mask, cache, 0, mask)
    assert cache.seq_len == 8
    real = mask.bool()  # padded positions are not compared (see test_self_attention_with_cache_equals_full_forward)
    diff = assert_close(cached[real], full[real], ATOL_FP32, f"{impl} 2-layer decoder, DecoderCache vs full")
    print(f"\n{impl} 2-layer decoder with DecoderCache: max diff = {diff:.2e}")


@pytest.mark.parametrize("impl", BACKENDS)
def test_decoding_after_beam_reorder_equals_full_forward_of_reordered_sequences(impl):
    """Three beams of one utterance: after 4 steps beams (2, 0, 0) survive, and decoding goes on 3 more steps."""
    model = TinyDecoder(impl=impl)
    frames = torch.randn(1, 10, 24).expand(3, -1, -1)  # one utterance, so its cross K/V are the same for all beams
    prefix, suffix = torch.randn(3, 4, 16), torch.randn(3, 3, 16)
    parents = torch.tensor([2, 0, 0])
    with torch.no_grad():
        cache = DecoderCache(2)
        decode_steps(model, prefix, frames, None, cache, 0)
        cache.reorder(parents)
        cached = decode_steps(model, suffix, frames, None, cache, 4)
        full = model(torch.cat([prefix[parents], suffix], dim=1), frames)[:, 4:]
    diff = assert_close(cached, full, ATOL_FP32, f"{impl} decoding after reorder vs full forward")
    print(f"\n{impl} after beam reorder: max diff = {diff:.2e}")


@pytest.mark.parametrize("impl", BACKENDS)
def test_decoding_after_expand_equals_full_forward_of_repeated_sequences(impl):
    """Two utterances, a shared prefix each, then 3 continuations per utterance (num_return_sequences=3)."""
    model = TinyDecoder(impl=impl)
    frames = torch.randn(2, 10, 24)
    prefix, suffix = torch.randn(2, 3, 16), torch.randn(6, 2, 16)
    with torch.no_grad():
        cache = DecoderCache(2)
        decode_steps(model, prefix, frames, None, cache, 0)
        cache.expand(3)
        rep = torch.arange(2).repeat_interleave(3)  # rows (0, 0, 0, 1, 1, 1)
        cached = decode_steps(model, suffix, frames[rep], None, cache, 3)
        full = model(torch.cat([prefix[rep], suffix], dim=1), frames[rep])[:, 3:]
    diff = assert_close(cached, full, ATOL_FP32, f"{impl} decoding after expand vs full forward")
    print(f"\n{impl} after expand(3): max diff = {diff:.2e}")
