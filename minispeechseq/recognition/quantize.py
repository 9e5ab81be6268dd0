"""int8 inference on the CPU: fewer bytes per weight, so a decoding step streams less memory.

A greedy decoding step multiplies one row of activations by every decoder weight: the time goes into reading the
weights from memory, not into arithmetic. Stored as int8 instead of fp32, each weight is a quarter of the bytes.

    quantize(model, "int8")       the decoder's Linear layers and its LM head
    quantize(model, "int8-all")   every Linear layer, the encoder's too (its convolutions stay fp32: see below)

also `SpeechEncoderDecoderModel.from_pretrained(folder, quantization="int8")` and
`minispeechseq transcribe --quantize int8`. The model files do not change: each `nn.Linear` is swapped for an
`Int8Linear` built from it.

What an Int8Linear computes (dynamic quantization, as in torch's `quantize_dynamic`):
- weights: int8, one scale per output row (symmetric, scale = max |w_row| / 127), fixed when the model is quantized;
- activations: quantized to 8 bits at each call from their own range, multiplied in integers with int32
  accumulation, and scaled back to fp32, where the bias is added. fbgemm's x86 kernels (AVX2 and AVX-512) do
  this through `torch.ops.quantized.linear_dynamic`.
- `reduce_range`: activations use 7 of their 8 bits. On CPUs without VNNI (AVX2) the int8 dot product sums pairs
  into int16, which can saturate; 7-bit activations keep a large layer's output error several times smaller.
  torch's quantize_dynamic makes the same choice.

Why this kernel: on one row of activations, fbgemm's dynamic int8 product beat fp32 on the LM head and on a whole
greedy step, where torchao's int8 configurations and `torch._weight_int8pack_mm` did not (the figures, per CPU,
are in the README's "Performance" section; `python -m minispeechseq.tools.bench --int8-kernels` measures them
again). torch marks its `torch.ao.quantization` Python flow deprecated (we do not use it) and the creation of
qint8 tensors too (we make one per layer, only to hand it to fbgemm's packing): that one warning is silenced
where it is raised; if a later torch removes these ops, `quantize` says so in one line.

The encoder's convolutions (the feature encoder and the positional convolution) stay fp32: torch has no dynamic
int8 convolution (static int8 would need calibration data); int8-all's gain is in the Linear layers.

Tied LM heads (GPT-2, BERT, BART: the head *is* the token embedding matrix): the head gets its own int8 copy and the
embedding keeps the fp32 matrix, so looking up a token stays exact; the tie is not used after quantization
(inference only: nothing trains the shared matrix any more).

A quantized model is for inference on the CPU: it cannot be saved (`state_dict` and `save_pretrained` refuse in
one line: int8 weights are no checkpoint format transformers reads; save the fp32 model, load it again and
quantize), nor moved to a GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from ..modeling import QUANTIZERS, check_quantization

QUANTIZATIONS = ("int8", "int8-all")


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A (out, in) weight -> int8 (out, in) and one fp32 scale per row, symmetric: the largest |w| of each row maps
    to 127, and weight ~= int8 * scale[:, None]. A zero row gets scale 1 (any scale reproduces zeros)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127  # (out,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def replace_linears(module: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    """Swap every nn.Linear inside `module` for make(linear), in place."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:  # exactly nn.Linear: a subclass may compute something else
                setattr(parent, name, make(child))


class Int8Linear(nn.Module):
    """An nn.Linear with int8 weights (one fp32 scale per output row) and fp32 bias, run by fbgemm's dynamic int8
    matrix product. Same call as nn.Linear: (..., in_features) -> (..., out_features), fp32 in and out."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        qint, scale = quantize_rows(linear.weight)  # (out, in) int8, (out,) fp32
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.has_bias = bias is not None
        try:
            with warnings.catch_warnings():
                # torch 2.13 warns that creating qint8 tensors is deprecated (pytorch issue 184982); this one exists
                # only to be packed into fbgemm's layout below, and the warning would only worry a user.
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                qweight = torch._make_per_channel_quantized_tensor(qint, scale.double(),
                                                                   torch.zeros_like(scale, dtype=torch.long), 0)
            # fbgemm's packed weights: not a tensor, so not a parameter or a buffer (see _save_to_state_dict).
            self.packed = torch.ops.quantized.linear_prepack(qweight, bias)
        except (RuntimeError, AttributeError) as e:
            raise RuntimeError(f"torch {torch.__version__} cannot build int8 Linear layers here "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no message'}); "
                               "run the model in float32.") from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise ValueError(f"This int8 layer runs on the CPU in float32, but got a {x.dtype} tensor on "
                             f"{x.device}; keep a quantized model and its inputs on the CPU in float32.")
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True)  # (..., out)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The int8 weight as it multiplies, dequantized to fp32 (out, in), and the fp32 bias (or None)."""
        qweight, bias = torch.ops.quantized.linear_unpack(self.packed)
        return qweight.dequantize(), bias

    def nbytes(self) -> int:
        """Bytes one product reads: the int8 weight, its fp32 scales and the fp32 bias."""
        return self.in_features * self.out_features + 4 * self.out_features * (2 if self.has_bias else 1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights (per-row scales)"

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # nn.Module's hook, called by state_dict()
        raise RuntimeError("This model was quantized to int8 for CPU inference and cannot be saved (int8 weights are "
                           "no checkpoint format); save the model before quantizing it, or load it again from its "
                           "folder without quantization.")


def quantize(model: nn.Module, quantization: str = "int8") -> nn.Module:
    """Swap the model's nn.Linear layers for Int8Linear, in place; returns the model.

    "int8": the decoder's (`model.decoder`) Linear layers and LM head; "int8-all": every Linear layer of the model.
    The model must be float32 on the CPU. Quantizing twice is harmless (an Int8Linear is no longer an nn.Linear)."""
    if quantization is None:
        raise ValueError(f"quantization must be one of {', '.join(map(repr, QUANTIZATIONS))}, got None.")
    check_quantization(quantization)
    params = list(model.parameters())
    if any(p.device.type != "cpu" for p in params) or any(p.dtype != torch.float32 for p in params if p.is_floating_point()):
        where = {f"{p.dtype} on {p.device}" for p in params} - {"torch.float32 on cpu"}
        raise ValueError(f"int8 quantization needs a float32 model on the CPU (fbgemm's kernels), but this one has "
                         f"{', '.join(sorted(where))}; leave dtype and device at their defaults (float32, CPU).")
    part = model
    if quantization == "int8":
        part = getattr(model, "decoder", None)
        if not isinstance(part, nn.Module):
            raise ValueError(f"quantization='int8' quantizes a decoder, and this {type(model).__name__} has none; "
                             "use 'int8-all' to quantize all of its Linear layers.")
    replace_linears(part, Int8Linear)
    # What the model now is, for a reader (and the bench): "int8-all" stays so after a later "int8".
    model.quantization = "int8-all" if "int8-all" in (quantization, getattr(model, "quantization", None)) else "int8"
    return model


for _name in QUANTIZATIONS:  # what from_pretrained(quantization=...) applies (modeling.py's table)
    QUANTIZERS[_name] = quantize
