"""Batches of model inputs, shared by the feature extractor (audio.py) and the tokenizer: `BatchFeature`, the
padding argument as transformers reads it, and a batch's columns stacked into arrays or tensors.

Shape legend: B batch, L the length of one example's row (audio samples or token ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


# ================================================================================================ BatchFeature
class BatchFeature(dict):
    """A dict of model inputs that also reads as attributes (`out.input_values`), like transformers' BatchFeature."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"This batch has no {name!r}; it holds {sorted(self)}.") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def to(self, device: str | torch.device) -> BatchFeature:
        """Move every tensor to `device` (other values are left as they are); returns self, as transformers does."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


# ================================================================================ padding and batching
def padding_strategy(padding: bool | str) -> str:
    """transformers' padding argument -> "longest", "max_length" or "do_not_pad"."""
    if padding is True or padding == "longest":
        return "longest"
    if padding == "max_length":
        return "max_length"
    if padding is False or padding == "do_not_pad":
        return "do_not_pad"
    raise ValueError(f"padding={padding!r}; expected True/'longest', 'max_length', or False/'do_not_pad'.")


def check_return_tensors(return_tensors: str | None) -> None:
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors={return_tensors!r}; expected 'pt', 'np' or None.")


def check_mask_values(mask: np.ndarray | torch.Tensor) -> None:
    """The mask rule: an attention mask holds 1 for a real sample and 0 for padding, nothing else (bool masks and
    float 0.0/1.0 are fine). A 0.5 or a 2 is no answer to "is this sample real?": an int cast would silently turn
    0.5 into 0, and transformers sums the mask as given, so a 2 counts as two samples, a misreading we name."""
    values = mask.unique().tolist() if isinstance(mask, torch.Tensor) else np.unique(mask).tolist()
    odd = [v for v in values if v not in (0, 1)]
    if odd:
        raise ValueError(f"attention_mask holds {odd[0]!r}; expected 1 for real samples and 0 for padding only.")


# The keys the extractor's and the tokenizer's pad() pad; any other key of a batch passes through as it is.
PADDED_KEYS = ("input_values", "input_ids", "attention_mask")


def batch_columns(batch: Any, main: str, what: str) -> dict[str, list]:
    """A collator's batch, either a list of examples (dicts) or a dict of per-example lists, as a dict of lists.

    `main` is the key the batch must hold (input_values / input_ids); `what` names the caller in errors."""
    if isinstance(batch, (list, tuple)):
        if batch and not all(isinstance(example, Mapping) for example in batch):
            raise ValueError(f"{what} got a list of {type(batch[0]).__name__}; expected a list of dicts "
                             f"(one per example, each with {main!r}) or a dict of lists.")
        if not batch:
            return {main: []}
        missing = [i for i, example in enumerate(batch) if set(example) != set(batch[0])]
        if missing:
            raise ValueError(f"{what}: example {missing[0]} has keys {sorted(batch[missing[0]])} but example 0 has "
                             f"{sorted(batch[0])}; every example needs the same keys.")
        columns = {key: [example[key] for example in batch] for key in batch[0]}
    elif isinstance(batch, Mapping):
        columns = dict(batch)
    else:
        raise ValueError(f"{what} got a {type(batch).__name__}; expected a list of dicts or a dict of lists.")
    if main not in columns:
        raise ValueError(f"{what} needs {main!r} in every example; it got the keys {sorted(columns)}.")
    rows = columns[main]
    if isinstance(rows, (torch.Tensor, np.ndarray)) and rows.ndim == 2:
        columns[main] = list(rows)  # an already batched (B, L) array: its rows
    elif not isinstance(rows, (list, tuple)) or (len(rows) and np.ndim(rows[0]) == 0):
        raise ValueError(f"{what} takes a batch, but {main!r} holds one example (a sequence of numbers); "
                         f"wrap it in a list: {what}([example]).")
    sizes = {key: len(value) for key, value in columns.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"{what}: the keys hold different numbers of examples {sizes}; expected one per example.")
    return columns


def stack_columns(columns: dict[str, list], return_tensors: str, *, ragged_ok: bool,
                  hint: str = "padding=True") -> BatchFeature:
    """Each key's per-example rows as one (B, ...) numpy array or tensor.

    Rows of different lengths cannot stack. For tensors (`ragged_ok=False`) that is an error naming the key, as in
    transformers; otherwise the key stays a list of arrays (where transformers builds a numpy array of objects).
    `hint` says how the padded keys (input_values / input_ids, their mask) get equal lengths."""
    out = BatchFeature()
    for key, rows in columns.items():
        arrays = [r.detach().cpu().numpy() if isinstance(r, torch.Tensor) else np.asarray(r) for r in rows]
        if len({a.shape for a in arrays}) > 1:
            if not ragged_ok:
                lengths = [a.shape[0] if a.ndim else 0 for a in arrays]
                fix = hint if key in PADDED_KEYS else "pad that key first (labels: processor.pad(labels=...))"
                raise ValueError(f"{key!r} has rows of different lengths {lengths}; return_tensors={return_tensors!r} "
                                 f"needs equal lengths: {fix}, or return_tensors=None.")
            out[key] = arrays
            continue
        stacked = np.stack(arrays)  # (B, ...)
        if return_tensors == "pt":
            if stacked.dtype.kind not in "biuf":
                raise ValueError(f"{key!r} holds {stacked.dtype} values, which cannot become a tensor; "
                                 "drop that key before padding, or ask for return_tensors='np'.")
            out[key] = torch.from_numpy(stacked)
        else:
            out[key] = stacked
    return out
