"""The forms that exist for speed give what the plain forms give.

Shared cross-attention keys/values: the g beams of an utterance (g adjacent decoder rows) read one encoder row;
their keys/values are computed and cached once, and `Attention` stacks the g rows' queries (`fold_rows`).
Reference: the same layer fed one copy of the encoder row per decoder row, which folds nothing (g = 1).

Comparisons print the measured max-abs difference (`pytest -s`).

Shape legend: B utterances, g rows per utterance (beams), N = B·g rows, S tokens, T frames, D width, H heads.
"""

import pytest
import torch

from minispeechseq.attention import Attention, fold_rows, unfold_rows
from minispeechseq.cache import DecoderCache
from tests.utils import ATOL_FP32, assert_close

BACKENDS = ("eager", "sdpa")


def _cross_layer(impl: str) -> Attention:
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=24).eval()
    attn.impl = impl
    return attn


@pytest.mark.parametrize("impl", BACKENDS)
@pytest.mark.parametrize("queries", [1, 3])
def test_grouped_cross_attention_equals_one_copy_per_row(impl, queries):
    """B=2 utterances x g=3 beams; utterance 1 has 4 padded frames. Two steps: the first sets the cache."""
    attn = _cross_layer(impl)
    B, g, T = 2, 3, 10
    frames = torch.randn(B, T, 24)
    frame_mask = torch.ones(B, T, dtype=torch.long)
    frame_mask[1, 6:] = 0
    rows = torch.arange(B).repeat_interleave(g)  # (N,) utterance of each row
    grouped, plain = DecoderCache(1), DecoderCache(1)
    with torch.no_grad():
        for step in range(2):
            x = torch.randn(B * g, queries, 16)  # (N, S, D): different queries per beam
            out_g, w_g = attn(x, frames, key_padding_mask=frame_mask, cache=grouped.cross_attn[0],
                              output_attentions=impl == "eager")
            out_p, w_p = attn(x, frames[rows], key_padding_mask=frame_mask[rows], cache=plain.cross_attn[0],
                              output_attentions=impl == "eager")
            diff = assert_close(out_g, out_p, ATOL_FP32, f"{impl} step {step}: grouped vs per-row cross-attention")
            print(f"\n{impl} step {step}: grouped cross-attention max diff = {diff:.2e}")
            if impl == "eager":
                assert w_g.shape == (B * g, 4, queries, T)
                assert_close(w_g, w_p, ATOL_FP32, f"step {step}: grouped vs per-row attention weights")
    assert grouped.cross_attn[0].k.shape[0] == B, "grouped keys should be stored once per utterance"
    assert plain.cross_attn[0].k.shape[0] == B * g


def test_fold_and_unfold_rows_are_inverse_and_keep_rows_adjacent():
    x = torch.arange(2 * 3 * 4 * 5).view(6, 4, 5)  # (B·g, S, D) with g = 3
    folded = fold_rows(x, 3)
    assert folded.shape == (2, 12, 5)
    assert torch.equal(folded[1, 4:8], x[4]), "row 4 (utterance 1, beam 1) should be queries 4..7 of utterance 1"
    assert torch.equal(unfold_rows(folded, 3), x)


def test_reorder_of_shared_cross_keys_gives_one_row_per_decoder_row():
    attn = _cross_layer("sdpa")
    frames = torch.randn(2, 5, 24)
    cache = DecoderCache(1)
    with torch.no_grad():
        attn(torch.randn(4, 1, 16), frames, cache=cache.cross_attn[0])
        cache.self_attn[0].update(torch.randn(4, 4, 1, 4), torch.randn(4, 4, 1, 4))  # 4 decoder rows
    k = cache.cross_attn[0].k.clone()  # (2, H, T, hd)
    cache.reorder(torch.tensor([3, 0, 1, 2]), cross=True)
    assert torch.equal(cache.cross_attn[0].k, k[[1, 0, 0, 1]]), "rows (3, 0, 1, 2) belong to utterances (1, 0, 0, 1)"


def test_expand_of_shared_cross_keys_keeps_each_row_on_its_utterance():
    cache = DecoderCache(1)
    k = torch.randn(2, 1, 3, 4)  # 2 utterances
    cache.cross_attn[0].set(k, k)
    cache.self_attn[0].update(torch.randn(4, 1, 2, 4), torch.randn(4, 1, 2, 4))  # 2 beams each
    cache.expand(3)  # 12 decoder rows: row r reads utterance r // 6
    stored = cache.cross_attn[0].k
    group = 12 // stored.shape[0]
    assert all(torch.equal(stored[r // group], k[r // 6]) for r in range(12))


def test_rows_that_do_not_share_encoder_rows_evenly_are_an_error():
    attn = _cross_layer("sdpa")
    with pytest.raises(ValueError, match="4 decoder rows cannot share 3 encoder rows"):
        attn(torch.randn(4, 1, 16), torch.randn(3, 5, 24))
    with pytest.raises(ValueError, match="mask has 4 rows but the encoder keys have 2"):
        attn(torch.randn(4, 1, 16), torch.randn(2, 5, 24), key_padding_mask=torch.ones(4, 5))


def test_bench_pair_runs_in_bfloat16(tmp_path):
    """`bench --dtype bfloat16`: both libraries load the pair in bf16 and run every workload (no timing asserted)."""
    from minispeechseq.tools.bench import bench_pair

    results = bench_pair("gpt2", "tiny", 1, True, str(tmp_path / "gpt2"), torch.bfloat16)
    assert {"greedy", "beam", "sampling", "training"} <= {w for r in results for w in r["workload"].split()}
    assert all("ratio" in r for r in results), [r["workload"] for r in results if "ratio" not in r]
