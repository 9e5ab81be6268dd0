"""The forms that exist for speed give what the plain forms give.

- Shared cross-attention keys/values (`DecoderCache.share_cross_attention(g)`): the g beams of an utterance
  attend as g queries to one copy of the encoder's keys/values. Reference: the same layer with one copy per row
  (an ungrouped cache), which shares no code path with the grouped fold.
- `layers.linear` (the few-row form (W xᵀ)ᵀ used by every decoder Linear): reference F.linear, and a float64
  product for the gradients.
- `layers.dropout` (the CPU mask drawn from random integers): F.dropout's contract, checked by statistics.
- `layers.Conv1d` (the feature encoder's conv, backward pass as matrix products): float64 F.conv1d's gradients.

Comparisons print the measured max-abs difference (`pytest -s`).

Shape legend: B utterances, g rows per utterance (beams), N = B·g rows, S tokens, T frames, D width, H heads.
"""

import pytest
import torch

from minispeechseq.attention import Attention
from minispeechseq.cache import DecoderCache
from minispeechseq.layers import FEW_ROWS, Linear
from tests.utils import ATOL_FP32, assert_close

BACKENDS = ("eager", "sdpa")


def _cross_layer(impl: str) -> Attention:
    torch.manual_seed(0)
    attn = Attention(16, 4, kv_dim=24).eval()
    attn.impl = impl
    return attn


@pytest.mark.parametrize("impl", BACKENDS)
def test_grouped_cross_attention_equals_one_copy_per_row(impl):
    """B=2 utterances x g=3 beams; utterance 1 has 4 padded frames. Two steps: the first sets the cache."""
    attn = _cross_layer(impl)
    B, g, T = 2, 3, 10
    frames = torch.randn(B, T, 24)
    frame_mask = torch.ones(B, T, dtype=torch.long)
    frame_mask[1, 6:] = 0
    rows = torch.arange(B).repeat_interleave(g)  # (N,) utterance of each row
    grouped, plain = DecoderCache(1), DecoderCache(1)
    grouped.share_cross_attention(g)
    with torch.no_grad():
        for step in range(2):
            x = torch.randn(B * g, 1, 16)  # (N, 1, D): a different query per beam
            out_g, w_g = attn(x, frames[rows], key_padding_mask=frame_mask[rows], cache=grouped.cross_attn[0],
                              output_attentions=impl == "eager")
            out_p, w_p = attn(x, frames[rows], key_padding_mask=frame_mask[rows], cache=plain.cross_attn[0],
                              output_attentions=impl == "eager")
            diff = assert_close(out_g, out_p, ATOL_FP32, f"{impl} step {step}: grouped vs per-row cross-attention")
            print(f"\n{impl} step {step}: grouped cross-attention max diff = {diff:.2e}")
            if impl == "eager":
                assert_close(w_g, w_p, ATOL_FP32, f"step {step}: grouped vs per-row attention weights")
    assert grouped.cross_attn[0].k.shape[0] == B, "grouped keys should be stored once per utterance"
    assert plain.cross_attn[0].k.shape[0] == B * g


def test_reorder_of_shared_cross_keys_gives_one_row_per_decoder_row():
    attn = _cross_layer("sdpa")
    frames = torch.randn(2, 5, 24)
    cache = DecoderCache(1)
    cache.share_cross_attention(2)
    with torch.no_grad():
        attn(torch.randn(4, 1, 16), frames.repeat_interleave(2, dim=0), cache=cache.cross_attn[0])
    k = cache.cross_attn[0].k.clone()  # (2, H, T, hd)
    cache.reorder(torch.tensor([3, 0, 1, 2]), cross=True)
    assert torch.equal(cache.cross_attn[0].k, k[[1, 0, 0, 1]]), "rows (3, 0, 1, 2) belong to utterances (1, 0, 0, 1)"
    assert cache.cross_attn[0].rows_per_source == 1


def test_share_cross_attention_errors_are_sentences():
    cache = DecoderCache(1)
    with pytest.raises(ValueError, match="rows_per_source must be an int >= 1"):
        cache.share_cross_attention(0)
    cache.cross_attn[0].set(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    with pytest.raises(ValueError, match="before the cross-attention keys/values are set"):
        cache.share_cross_attention(2)
    attn = _cross_layer("sdpa")
    grouped = DecoderCache(1)
    grouped.share_cross_attention(3)
    with pytest.raises(ValueError, match="cannot be split into utterances of 3 rows"):
        attn(torch.randn(4, 1, 16), torch.randn(4, 5, 24), cache=grouped.cross_attn[0])


def test_bench_pair_runs_in_bfloat16(tmp_path):
    """`bench --dtype bfloat16`: both libraries load the pair in bf16 and run every workload (no timing asserted)."""
    from minispeechseq.bench import bench_pair

    results = bench_pair("gpt2", "tiny", 1, True, str(tmp_path / "gpt2"), torch.bfloat16)
    assert {"greedy", "beam", "sampling", "training"} <= {w for r in results for w in r["workload"].split()}
    assert all("ratio" in r for r in results), [r["workload"] for r in results if "ratio" not in r]


@pytest.mark.parametrize("shape", [(1, 5), (2, 7), (3, 1, 7), (4, 7), (2, 2, 7), (5, 7), (6, 1, 7), (0, 7)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_linear_equals_f_linear_for_every_row_count(shape, bias, threads, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # how many slices W is cut into
    """Up to FEW_ROWS rows take the sliced (W xᵀ)ᵀ form, the others F.linear; both must give F.linear's values,
    the same shape, a contiguous result and the same gradients. 9 output features do not split evenly over 2 or
    4 threads, so the leftover rows are covered too."""
    torch.manual_seed(0)
    layer = Linear(shape[-1], 9, bias=bias)
    x = torch.randn(shape, requires_grad=True)
    rows = x.numel() // shape[-1]
    out = layer(x)
    ref = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert out.shape == ref.shape and out.is_contiguous()
    if rows == 0:
        return  # an empty batch stays empty (F.linear's path)
    diff = assert_close(out, ref, ATOL_FP32, f"Linear vs F.linear at {rows} rows")
    print(f"\n{rows} rows, {torch.get_num_threads()} threads (few-row form: {rows <= FEW_ROWS}): max diff {diff:.2e}")
    (out * torch.arange(out.numel()).view(out.shape)).sum().backward()
    x64, w64 = x.detach().double().requires_grad_(), layer.weight.detach().double().requires_grad_()
    out64 = x64 @ w64.T
    (out64 * torch.arange(out64.numel()).view(out64.shape)).sum().backward()
    assert_close(x.grad, x64.grad.float(), 1e-4, "input gradient")
    assert_close(layer.weight.grad, w64.grad.float(), 1e-4, "weight gradient")


def test_linear_takes_strided_inputs():
    """A transposed or sliced input of 1-4 rows (not viewable as (rows, in)) gives F.linear's values."""
    torch.manual_seed(0)
    layer = Linear(5, 6)
    for x in (torch.randn(5, 2).T, torch.randn(2, 2, 5).transpose(0, 1), torch.randn(2, 5, 3)[..., 0]):
        assert_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), ATOL_FP32,
                     f"strided input of shape {tuple(x.shape)}")


def test_linear_keeps_nn_linear_parameters():
    """Same state_dict keys and shapes as nn.Linear, so checkpoints and converters do not see the difference."""
    ours, plain = Linear(4, 3), torch.nn.Linear(4, 3)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert isinstance(ours, torch.nn.Linear)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_statistics_and_gradient(p):
    """The CPU dropout draws its mask differently from F.dropout; what must hold is F.dropout's contract: each
    element zeroed with probability p (checked on 2**20 elements, within 5 standard deviations of the binomial
    count), the others scaled by exactly 1 / (1 - p), and the gradient through the same mask."""
    from minispeechseq.layers import dropout

    torch.manual_seed(0)
    n = 2**20
    x = (torch.rand(n) + 0.5).requires_grad_()  # no zeros of its own
    y = dropout(x, p, training=True)
    dropped = y == 0
    rate = dropped.float().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    print(f"\np={p}: dropped fraction {rate:.5f} (expected {p}, sigma {sigma:.1e})")
    assert abs(rate - p) < 5 * sigma, f"dropped fraction {rate:.5f}, expected {p} +- {5 * sigma:.1e}"
    kept = ~dropped
    assert torch.equal(y[kept], x[kept] * (1.0 / (1.0 - p))), "kept elements must be scaled by exactly 1 / (1 - p)"
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() * (1.0 / (1.0 - p))), "the gradient must go through the same mask"
    # Neighbours share one 64-bit random draw (two 32-bit halves): their drops must still be independent.
    both = (dropped[0::2] & dropped[1::2]).float().mean().item()
    pair_sigma = (p * p * (1 - p * p) / (n // 2)) ** 0.5
    assert abs(both - p * p) < 5 * pair_sigma, f"neighbours both dropped {both:.5f}, expected {p * p} +- {5 * pair_sigma:.1e}"


def test_dropout_keeps_only_a_bool_mask_for_backward():
    """Memory: like F.dropout, the backward pass keeps one byte per element (the mask), not a float copy."""
    from minispeechseq.layers import dropout

    saved = []

    def pack(t):
        saved.append((t.dtype, t.numel()))
        return t

    x = torch.randn(1000, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        dropout(x, 0.1, training=True)
    assert saved == [(torch.bool, 1000)], f"saved for backward: {saved}"


def test_dropout_keeps_shape_for_odd_sizes_and_strided_inputs():
    from minispeechseq.layers import dropout

    torch.manual_seed(0)
    for x in (torch.rand(3, 5, 7) + 0.5, (torch.rand(6, 5) + 0.5).T, torch.rand(1) + 0.5, torch.rand(0, 4)):
        y = dropout(x, 0.5, training=True)
        assert y.shape == x.shape
        kept = y != 0
        assert torch.equal(y[kept], x[kept] * 2.0), f"shape {tuple(x.shape)}: kept elements must be scaled by 2"


def test_dropout_edges_follow_f_dropout():
    from minispeechseq.layers import Dropout, dropout

    x = torch.randn(3, 4)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0, training=True) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1"):
        dropout(x, 1.5, training=True)
    assert dropout(x.bfloat16(), 0.5, training=True).dtype == torch.bfloat16  # F.dropout's path
    layer = Dropout(0.25)
    assert isinstance(layer, torch.nn.Dropout) and layer.p == 0.25 and not layer.state_dict()
    assert layer.eval()(x) is x


@pytest.mark.parametrize(
    "batch, c_in, length, kernel, stride",
    [(1, 1, 400, 10, 5), (2, 6, 53, 3, 2), (3, 5, 40, 2, 2), (1, 4, 9, 4, 1), (2, 3, 30, 5, 7), (1, 2, 3, 3, 2)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_backward_as_matmuls_equals_torch(batch, c_in, length, kernel, stride, bias):
    """`layers.Conv1d` computes its backward pass as two matrix products plus a scatter of the windows' gradients.
    Reference: float64 F.conv1d and its own autograd, for the input, weight and bias gradients. Covered: stride
    below, equal to and above the kernel (so windows overlap, touch, or skip samples), samples after the last
    window (which get no gradient), one output frame, batches, no bias, and a strided (transposed) input as the
    layer-norm feature encoder passes it."""
    from minispeechseq.layers import Conv1d

    torch.manual_seed(0)
    conv = Conv1d(c_in, 7, kernel, stride=stride, bias=bias)
    x = torch.randn(batch, length, c_in).transpose(1, 2).requires_grad_()  # (B, C_in, L), not contiguous
    out = conv(x)
    x64 = x.detach().double().requires_grad_()
    w64 = conv.weight.detach().double().requires_grad_()
    b64 = conv.bias.detach().double().requires_grad_() if bias else None
    ref = torch.nn.functional.conv1d(x64, w64, b64, stride=stride)
    assert out.shape == ref.shape
    assert_close(out, ref.float(), ATOL_FP32, "forward")
    probe = torch.randn(ref.shape, dtype=torch.float64)  # a gradient with no structure to hide behind
    (out * probe.float()).sum().backward()
    (ref * probe).sum().backward()
    diff = assert_close(x.grad, x64.grad.float(), 1e-5, "input gradient")
    assert_close(conv.weight.grad, w64.grad.float(), 1e-5, "weight gradient")
    if bias:
        assert_close(conv.bias.grad, b64.grad.float(), 1e-5, "bias gradient")
    print(f"\nconv1d backward (B={batch}, C_in={c_in}, L={length}, K={kernel}, stride={stride}): input grad diff {diff:.1e}")


def test_conv1d_takes_torch_path_where_the_matmul_backward_does_not_apply():
    """Frozen weights with a plain input, no grad mode, padding or groups: the ordinary F.conv1d runs (the
    matmul backward would have nothing to do or does not cover the case), with the same values."""
    from minispeechseq.layers import Conv1d, _Conv1dMatmulBackward

    torch.manual_seed(0)
    x = torch.randn(2, 4, 20)
    conv = Conv1d(4, 6, 3, stride=2)
    assert conv(x.requires_grad_()).grad_fn.name() == _Conv1dMatmulBackward.__name__ + "Backward"
    with torch.no_grad():
        assert conv(x).grad_fn is None
    conv.requires_grad_(False)
    assert conv(x.detach()).grad_fn is None
    conv.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 compute: torch's path, whose backward handles it
        y = conv(x.requires_grad_())
    assert y.dtype == torch.bfloat16 and "Matmul" not in y.grad_fn.name()
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    padded = Conv1d(4, 6, 3, padding=1, groups=2)
    assert_close(padded(x), torch.nn.functional.conv1d(x, padded.weight, padded.bias, padding=1, groups=2), ATOL_FP32,
                 "padded grouped conv")
    assert "Matmul" not in padded(x).grad_fn.name()
