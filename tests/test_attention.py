"""The one attention module, every backend fed the same inputs and compared with two references.

References, neither of them our code:
- `reference_attention`: the formula softmax(q kᵀ · scale) v written out in float64, with the mask built by
  plain loops from its definition (key j is visible to query i when it is a real key and, if causal,
  j <= Sk - Sq + i: queries are the *last* Sq positions, as in a decoding step with a KV cache).
- `torch.nn.MultiheadAttention` with our weights copied in (unmasked, key padding and causal cases).

Each comparison prints the measured max-abs difference (`pytest -s` shows them), in the manner of nanochat's
tests/test_attention_fallback.py. The flash backend runs only on CUDA; on CPU we check that it refuses clearly.

Shape legend: B batch, H heads, Sq query length, Sk key length, hd head size, D model width.
"""

import pytest
import torch
from torch import nn

from minispeechseq.attention import (
    ATTN_IMPLEMENTATIONS,
    Attention,
    attend,
    set_attn_implementation,
)
from tests.utils import ATOL_BACKENDS, ATOL_BF16, ATOL_FP32, assert_close, max_abs, requires_cuda

# Mean over many dropout draws vs the eval output: the standard error of the mean is ~7e-3 for these sizes,
# the max over all entries ~3e-2; 8e-2 is far from a false alarm and far below the ~0.5 a missing 1/(1-p)
# rescaling would produce.
ATOL_DROPOUT_MEAN = 8e-2

CPU_BACKENDS = ("eager", "sdpa")


# ---------------------------------------------------------------------------------------------------------------
# The independent reference
# ---------------------------------------------------------------------------------------------------------------
def reference_mask(pad: torch.Tensor | None, causal: bool, B: int, Sq: int, Sk: int) -> torch.Tensor:
    """allowed[b, i, j]: may query i of sequence b look at key j? Built by loops, straight from the definition."""
    allowed = torch.ones(B, Sq, Sk, dtype=torch.bool)
    for b in range(B):
        for i in range(Sq):
            for j in range(Sk):
                if pad is not None and not pad[b, j]:
                    allowed[b, i, j] = False
                if causal and j > Sk - Sq + i:
                    allowed[b, i, j] = False
    return allowed


def reference_attention(q, k, v, pad=None, causal=False, scale=None):
    """Float64 softmax attention. A query with no visible key averages all values uniformly: that is the
    convention of transformers (its mask adds the most negative finite number, so softmax sees a flat row),
    and the one our backends promise instead of NaN."""
    B, _, Sq, hd = q.shape
    Sk = k.shape[2]
    scale = hd**-0.5 if scale is None else scale
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale  # (B, H, Sq, Sk)
    allowed = reference_mask(pad, causal, B, Sq, Sk)[:, None].expand_as(scores)  # (B, H, Sq, Sk)
    row_max = scores.masked_fill(~allowed, float("-inf")).amax(-1, keepdim=True).clamp_min(-1e300)
    e = torch.exp(scores - row_max) * allowed
    total = e.sum(-1, keepdim=True)
    weights = torch.where(total > 0, e / total.clamp_min(1e-300), torch.full_like(e, 1.0 / Sk))
    return torch.einsum("bhqk,bhkd->bhqd", weights, v), weights


def module_reference(attn: Attention, x, source=None, pad=None, causal=False):
    """The whole Attention layer from its weights, in float64 (projections, heads, reference attention, merge)."""
    def proj(lin, t):
        return t.double() @ lin.weight.double().T + lin.bias.double()

    def heads(t):  # (B, S, D) -> (B, H, S, hd)
        return t.view(t.shape[0], t.shape[1], attn.num_heads, -1).transpose(1, 2)

    src = x if source is None else source
    q, k, v = heads(proj(attn.q_proj, x)), heads(proj(attn.k_proj, src)), heads(proj(attn.v_proj, src))
    out, weights = reference_attention(q, k, v, pad, causal, attn.scale)
    out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # (B, H, Sq, hd) -> (B, Sq, D)
    return proj(attn.out_proj, out), weights


# ---------------------------------------------------------------------------------------------------------------
# Cases: (B, Sq, Sk, causal, padding); padding is "right", "left" or None, and covers the keys
# ---------------------------------------------------------------------------------------------------------------
def make_pad(B: int, Sk: int, kind: str | None) -> torch.Tensor | None:
    """Sequence b has Sk - 2b real keys (at least 1), at the end for left padding, at the start for right."""
    if kind is None:
        return None
    pad = torch.zeros(B, Sk, dtype=torch.long)
    for b in range(B):
        n = max(1, Sk - 2 * b - 1)
        if kind == "right":
            pad[b, :n] = 1
        else:
            pad[b, Sk - n :] = 1
    return pad


CASES = {
    "self": (2, 7, 7, False, None),
    "causal": (2, 7, 7, True, None),
    "right_pad": (3, 7, 7, False, "right"),
    "left_pad": (3, 7, 7, False, "left"),
    "causal_right_pad": (3, 7, 7, True, "right"),
    # Left padding and causal: the first queries of a padded sequence see no key at all (fully masked rows).
    "causal_left_pad": (3, 7, 7, True, "left"),
    "cross_pad": (2, 5, 9, False, "right"),
    # Fewer queries than keys: a chunk of new tokens after a cached prefix; query i sees keys up to Sk-Sq+i.
    "causal_sq_lt_sk": (2, 3, 8, True, None),
    "causal_sq_lt_sk_left_pad": (3, 3, 8, True, "left"),
    "causal_one_step": (2, 1, 6, True, "left"),
    # A batch of one with padding: the path where a causal mask could be taken for "no padding".
    "causal_right_pad_batch1": (1, 7, 7, True, "right"),
}

def backend_case_params():
    for name in CASES:
        for impl in CPU_BACKENDS:
            yield pytest.param(impl, name, id=f"{impl}-{name}")


def random_qkv(B, H, Sq, Sk, hd, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Sq, hd, generator=g)
    k = torch.randn(B, H, Sk, hd, generator=g)
    v = torch.randn(B, H, Sk, hd, generator=g)
    return (t.to(device=device, dtype=dtype) for t in (q, k, v))


@pytest.mark.parametrize("impl, case", list(backend_case_params()))
def test_backend_matches_reference(impl, case):
    B, Sq, Sk, causal, kind = CASES[case]
    q, k, v = random_qkv(B, 2, Sq, Sk, 8)
    pad = make_pad(B, Sk, kind)
    ref, _ = reference_attention(q, k, v, pad, causal)
    out, weights = attend(q, k, v, key_padding_mask=pad, causal=causal, impl=impl)
    assert weights is None, "weights must only be returned when asked for"
    diff = assert_close(out, ref, ATOL_FP32, f"{impl} vs reference, {case}")
    print(f"\n{impl:5s} {case:26s} max |ours - reference| = {diff:.2e}")


@pytest.mark.parametrize("case", [c for c in CASES if c != "causal_right_pad_batch1"])
def test_eager_and_sdpa_agree(case):
    B, Sq, Sk, causal, kind = CASES[case]
    q, k, v = random_qkv(B, 2, Sq, Sk, 8, seed=1)
    pad = make_pad(B, Sk, kind)
    eager, _ = attend(q, k, v, key_padding_mask=pad, causal=causal, impl="eager")
    sdpa, _ = attend(q, k, v, key_padding_mask=pad, causal=causal, impl="sdpa")
    diff = assert_close(sdpa, eager, ATOL_BACKENDS, f"sdpa vs eager, {case}")
    print(f"\nsdpa vs eager {case:26s} max diff = {diff:.2e}")


@pytest.mark.parametrize("impl", CPU_BACKENDS)
def test_eager_weights_match_reference(impl):
    """Eager returns the weights; they are the reference's (rows sum to 1, masked keys get exactly 0)."""
    B, Sq, Sk, causal, kind = CASES["causal_right_pad"]
    q, k, v = random_qkv(B, 2, Sq, Sk, 8, seed=2)
    pad = make_pad(B, Sk, kind)
    _, ref_w = reference_attention(q, k, v, pad, causal)
    if impl != "eager":
        with pytest.raises(ValueError, match="eager"):
            attend(q, k, v, key_padding_mask=pad, causal=causal, impl=impl, return_weights=True)
        return
    _, w = attend(q, k, v, key_padding_mask=pad, causal=causal, impl=impl, return_weights=True)
    assert_close(w, ref_w, ATOL_FP32, "eager attention weights")
    allowed = reference_mask(pad, causal, B, Sq, Sk)[:, None].expand_as(w)
    assert (w[~allowed] == 0).all(), "a masked key received nonzero weight"


# ---------------------------------------------------------------------------------------------------------------
# The Attention layer: cross-attention with kv_dim != dim, and torch.nn.MultiheadAttention as a second reference
# ---------------------------------------------------------------------------------------------------------------
def make_layer(dim=16, heads=4, kv_dim=None, seed=0, **kw) -> Attention:
    torch.manual_seed(seed)
    attn = Attention(dim, heads, kv_dim=kv_dim, **kw).eval()
    with torch.no_grad():  # nonzero biases, so a bias that is dropped or misplaced shows
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj):
            lin.bias.normal_()
    return attn


@pytest.mark.parametrize("impl", CPU_BACKENDS)
def test_cross_attention_kv_dim_differs(impl):
    """Decoder tokens (width 16) attend to encoder frames of another width (24), with padded frames."""
    attn = make_layer(16, 4, kv_dim=24)
    attn.impl = impl
    x, frames = torch.randn(2, 5, 16), torch.randn(2, 11, 24)
    pad = make_pad(2, 11, "right")
    ref, _ = module_reference(attn, x, frames, pad)
    out, _ = attn(x, frames, key_padding_mask=pad)
    diff = assert_close(out, ref, ATOL_FP32, f"{impl} cross-attention (kv_dim 24 -> dim 16)")
    print(f"\n{impl} cross-attention kv_dim != dim: max diff = {diff:.2e}")
    # What a padded frame holds must not matter.
    frames2 = frames.clone()
    frames2[1, 9:] = 1e3
    out2, _ = attn(x, frames2, key_padding_mask=pad)
    assert_close(out2, out, ATOL_FP32, f"{impl} cross-attention output after changing padded frames")


def torch_mha_from(attn: Attention, dim: int, kv_dim: int | None = None) -> nn.MultiheadAttention:
    """nn.MultiheadAttention holding the same weights: q/k/v stacked into in_proj (or kept apart for kdim)."""
    mha = nn.MultiheadAttention(dim, attn.num_heads, batch_first=True, kdim=kv_dim, vdim=kv_dim).eval()
    with torch.no_grad():
        if kv_dim is None:
            mha.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        else:
            mha.q_proj_weight.copy_(attn.q_proj.weight)
            mha.k_proj_weight.copy_(attn.k_proj.weight)
            mha.v_proj_weight.copy_(attn.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        mha.out_proj.weight.copy_(attn.out_proj.weight)
        mha.out_proj.bias.copy_(attn.out_proj.bias)
    return mha


# No fully masked rows here: torch's MultiheadAttention returns NaN for those, we return a uniform average.
MHA_CASES = {
    "unmasked": (False, None, None),
    "right_pad": (False, "right", None),
    "left_pad": (False, "left", None),
    "causal": (True, None, None),
    "causal_right_pad": (True, "right", None),
    "cross_kv_dim_pad": (False, "right", 24),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
@pytest.mark.parametrize("impl", CPU_BACKENDS)
def test_matches_torch_multihead_attention(impl, case):
    causal, kind, kv_dim = MHA_CASES[case]
    attn = make_layer(16, 4, kv_dim=kv_dim, seed=3)
    attn.impl = impl
    mha = torch_mha_from(attn, 16, kv_dim)
    B, S = 3, 6
    x = torch.randn(B, S, 16)
    source = None if kv_dim is None else torch.randn(B, 8, kv_dim)
    kv = x if source is None else source
    pad = make_pad(B, kv.shape[1], kind)
    with torch.no_grad():
        ref, ref_w = mha(
            x, kv, kv,
            key_padding_mask=None if pad is None else ~pad.bool(),  # torch: True = ignore this key
            attn_mask=torch.ones(S, S, dtype=torch.bool).triu(1) if causal else None,  # True = masked
            need_weights=True, average_attn_weights=False,
        )
        out, w = attn(x, source, key_padding_mask=pad, causal=causal, output_attentions=impl == "eager")
    diff = assert_close(out, ref, ATOL_FP32, f"{impl} vs nn.MultiheadAttention, {case}")
    print(f"\n{impl:5s} vs nn.MultiheadAttention {case:18s} max diff = {diff:.2e}")
    if impl == "eager":
        assert_close(w, ref_w, ATOL_FP32, f"eager weights vs nn.MultiheadAttention weights, {case}")


# ---------------------------------------------------------------------------------------------------------------
# Fully masked rows: finite, and the uniform average of the values (transformers' convention), in fp32 and bf16
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", CPU_BACKENDS)
@pytest.mark.parametrize("causal", [False, True], ids=["all_keys_padded", "causal_left_pad"])
def test_fully_masked_rows_are_finite(impl, dtype, causal):
    B, S = 2, 6
    q, k, v = random_qkv(B, 2, S, S, 8, dtype=dtype, seed=4)
    if causal:  # left padding: queries 0..2 of sequence 0 see only padded keys
        pad = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    else:  # an empty sequence: every query of sequence 0 sees nothing
        pad = torch.tensor([[0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    out, _ = attend(q, k, v, key_padding_mask=pad, causal=causal, impl=impl)
    assert out.dtype == dtype
    assert torch.isfinite(out).all(), f"{impl} {dtype}: non-finite output for a fully masked row"
    ref, _ = reference_attention(q, k, v, pad, causal)
    atol = ATOL_FP32 if dtype == torch.float32 else ATOL_BF16
    diff = assert_close(out, ref, atol, f"{impl} {dtype} with fully masked rows")
    print(f"\n{impl:5s} {dtype!s:15s} fully masked rows ({'causal' if causal else 'padded'}): max diff = {diff:.2e}")


# ---------------------------------------------------------------------------------------------------------------
# Dropout: only in training, and unbiased (its mean over many draws is the eval output)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", CPU_BACKENDS)
def test_dropout_only_in_training(impl):
    attn = make_layer(8, 2, dropout=0.5, seed=5)
    attn.impl = impl
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        attn.eval()
        ref, _ = module_reference(attn, x, causal=True)
        eval1, _ = attn(x, causal=True)
        eval2, _ = attn(x, causal=True)
        assert torch.equal(eval1, eval2), f"{impl}: eval mode is not deterministic"
        assert_close(eval1, ref, ATOL_FP32, f"{impl} eval output with dropout=0.5 set")

        attn.train()
        train1, _ = attn(x, causal=True)
        train2, _ = attn(x, causal=True)
        assert max_abs(train1, train2) > 1e-3, f"{impl}: two training passes gave the same output (no dropout?)"
        assert max_abs(train1, eval1) > 1e-3, f"{impl}: training output equals eval output (no dropout?)"
        # Many draws at once (a batch of copies): dropout rescales by 1/(1-p), so the mean is the eval output.
        torch.manual_seed(0)
        many, _ = attn(x.expand(4000, -1, -1), causal=True)
    diff = assert_close(many.mean(0, keepdim=True), eval1, ATOL_DROPOUT_MEAN, f"{impl} mean of 4000 dropout draws")
    print(f"\n{impl} dropout: |mean of 4000 training draws - eval| = {diff:.2e}")


# ---------------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["sdpa", "flash"])
def test_output_attentions_needs_eager(impl):
    attn = make_layer(8, 2)
    attn.impl = impl
    with pytest.raises(ValueError, match="only computed by attn_implementation='eager'"):
        attn(torch.randn(1, 4, 8), output_attentions=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_flash_on_cpu_raises(dtype):
    """Never a silent fallback: the error names what flash needs (CUDA, fp16/bf16) and the alternative."""
    q, k, v = random_qkv(1, 2, 4, 4, 8, dtype=dtype)
    with pytest.raises(ValueError, match=r"needs a CUDA device and float16/bfloat16.*sdpa"):
        attend(q, k, v, impl="flash")
    attn = make_layer(8, 2).to(dtype)
    set_attn_implementation(attn, "flash")
    with pytest.raises(ValueError, match="CUDA"):
        attn(torch.randn(1, 4, 8, dtype=dtype))


def test_unknown_backend_raises():
    q, k, v = random_qkv(1, 2, 4, 4, 8)
    with pytest.raises(ValueError, match=r"'flash2'.*eager, sdpa, flash"):
        attend(q, k, v, impl="flash2")
    attn = make_layer(8, 2)
    with pytest.raises(ValueError, match=r"'Eager'.*choose one of"):
        set_attn_implementation(attn, "Eager")
    assert attn.impl == "sdpa", "a rejected backend name must leave the module unchanged"
    assert ATTN_IMPLEMENTATIONS == ("eager", "sdpa", "flash")


def test_mask_length_mismatch_raises():
    q, k, v = random_qkv(2, 2, 1, 5, 8)
    with pytest.raises(ValueError, match="one entry per key"):
        attend(q, k, v, key_padding_mask=torch.ones(2, 4), causal=True, impl="eager")


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, 4)


# ---------------------------------------------------------------------------------------------------------------
# CUDA: flash (and the other backends) in bf16 against the float64 reference
# ---------------------------------------------------------------------------------------------------------------
def _has_flash_attn_package() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True



CUDA_CASES = {
    "self": (2, 16, 16, False, None),
    "causal": (2, 16, 16, True, None),
    "right_pad": (3, 16, 16, False, "right"),
    "causal_right_pad": (3, 16, 16, True, "right"),
    "left_pad": (3, 16, 16, False, "left"),
    "causal_left_pad": (3, 16, 16, True, "left"),
    "cross_pad": (2, 5, 16, False, "right"),
    "causal_one_step": (2, 1, 16, True, "right"),
}


def cuda_params():
    for impl in ATTN_IMPLEMENTATIONS:
        for name in CUDA_CASES:
            yield pytest.param(impl, name, marks=[requires_cuda], id=f"{impl}-{name}")


@pytest.mark.parametrize("impl, case", list(cuda_params()))
def test_backends_on_cuda_bf16(impl, case):
    B, Sq, Sk, causal, kind = CUDA_CASES[case]
    q, k, v = random_qkv(B, 4, Sq, Sk, 32, dtype=torch.bfloat16, device="cuda", seed=6)
    pad = make_pad(B, Sk, kind)
    ref, _ = reference_attention(q.cpu(), k.cpu(), v.cpu(), pad, causal)
    out, _ = attend(q, k, v, key_padding_mask=None if pad is None else pad.cuda(), causal=causal, impl=impl)
    out = out.float().cpu()
    if impl == "flash" and causal and pad is not None and Sq == Sk:
        # Flash drops padded queries in causal self-attention (their outputs are zeros): compare the real ones.
        real = pad.bool()[:, None, :, None].expand_as(out)  # (B, 1, Sq, 1) -> (B, H, Sq, hd)
        assert (out[~real] == 0).all(), "flash: padded queries should give zeros"
        out, ref = out[real], ref.float()[real]
    diff = assert_close(out, ref, ATOL_BF16, f"{impl} bf16 on CUDA vs reference, {case}")
    print(f"\n{impl:5s} cuda bf16 {case:18s} max diff = {diff:.2e}")


@requires_cuda
def test_flash_fp32_on_cuda_raises():
    q, k, v = random_qkv(1, 2, 4, 4, 32, device="cuda")
    with pytest.raises(ValueError, match="float16/bfloat16"):
        attend(q, k, v, impl="flash")
