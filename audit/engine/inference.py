"""The batched clean pass that fills the per-example table's core columns."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from audit.engine.data import Dataset
from audit.engine.precision import fp32_decisions
from audit.engine.table import ExampleTable
from audit.engine.wrapper import WrappedModel
from audit.errors import DataError


def predict_logits(model: WrappedModel, x: np.ndarray, device: torch.device, batch_size: int,
                   progress: Callable[..., Any] | None = None, desc: str = "inference") -> np.ndarray:
    """Logits for every row of ``x`` (float32, n x K), in batches, without autograd."""
    n = len(x)
    out: list[np.ndarray] = []
    bar = progress(total=n, desc=desc) if progress else None
    with torch.inference_mode(), fp32_decisions():
        for start in range(0, n, batch_size):
            xb = torch.from_numpy(x[start:start + batch_size]).to(device, non_blocking=True)
            out.append(model(xb).float().cpu().numpy())
            if bar is not None:
                bar.update(len(xb))
    if bar is not None:
        bar.close()
    return np.concatenate(out, axis=0)


def probe_model(model: WrappedModel, data: Dataset, device: torch.device, num_classes: int) -> None:
    """Run two examples through the model first so that a shape mismatch is a clear input error (exit 2)
    rather than a traceback in the middle of a suite."""
    xb = torch.from_numpy(data.x[:2]).to(device)
    try:
        with torch.inference_mode():
            out = model(xb)
    except Exception as e:
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:240]
        encoded = data.meta.get("categories_from_file")
        hint = (f"; the csv's one-hot columns come from its own categories "
                f"({'; '.join(f'{k}: {len(v)}' for k, v in encoded.items())}), so a category the training file "
                "had and this file lacks changes the width: pin them with [data] categorical = { column = [...] }"
                if encoded else "")
        raise DataError(f"the model rejects inputs of shape {tuple(data.x.shape[1:])} (per example): "
                        f"{type(e).__name__}: {msg}. Set [model] input_shape or check the data{hint}") from e
    if not isinstance(out, torch.Tensor):
        raise DataError(f"the model returned {type(out).__name__}, expected a tensor of logits")
    if out.dim() != 2 or out.shape[1] != num_classes:
        raise DataError(f"the model returned outputs of shape {tuple(out.shape)} for a batch of {len(xb)}; "
                        f"expected ({len(xb)}, {num_classes}) logits ([model] num_classes = {num_classes})")


def build_table(data: Dataset, logits: np.ndarray) -> ExampleTable:
    table = ExampleTable()
    table.add("index", data.index)
    table.add("label", data.y)
    table.add("logits", logits.astype(np.float32))
    table.add("pred", logits.argmax(axis=1).astype(np.int64))
    probs = table.probs
    table.add("confidence", probs.max(axis=1))
    for attr, (codes, cats) in data.groups.items():
        table.add(f"group:{attr}", codes)
        table.categories[attr] = list(cats)
    return table


def looks_like_probabilities(logits: np.ndarray, tol: float = 1e-4) -> bool:
    """True when every row is in [0, 1] and sums to 1: the model ends in a softmax. Attacks and
    calibration need logits (a softmax output flattens gradients and double-softmaxes probabilities)."""
    z = logits.astype(np.float64)
    return bool(np.all(z >= -tol) and np.all(z <= 1 + tol) and np.allclose(z.sum(axis=1), 1.0, atol=1e-3))


def looks_like_log_probabilities(logits: np.ndarray) -> bool:
    """True when exp(rows) sum to 1: the model ends in log_softmax. Harmless for argmax and attacks."""
    z = logits.astype(np.float64)
    return bool(np.all(z <= 1e-6) and np.allclose(np.exp(z).sum(axis=1), 1.0, atol=1e-3))
