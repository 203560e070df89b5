"""Input gradients of the losses the attacks optimise, measured on the examples they attack.

A gradient attack is blind on an example where the gradient of every loss it uses is exactly zero (it
cannot take a first step) or not finite (its steps become NaN). ``loss_gradient_stats`` measures, per
loss, which examples are in that state; the robustness suite turns that into the
``gradients_not_masked`` check for each attack.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from audit.attacks.losses import PER_EXAMPLE


# The targeted margin towards the closest class, at the clean input, is the margin itself.
PROXY = {"targeted": "margin"}


def loss_input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Gradient of one per-example loss (``audit.attacks.losses.PER_EXAMPLE``, or "targeted", measured as
    the margin towards the closest class) with respect to the input, one row per example: the gradient an
    attack that maximises that loss starts from. Zeros where the model cuts the output off from the input
    (a detach, a non-torch step), as the attacks themselves see it."""
    xr = x.clone().detach().requires_grad_(True)
    z = model(xr)
    total = PER_EXAMPLE[PROXY.get(loss, loss)](z, y).sum()
    if not total.requires_grad:
        return torch.zeros_like(xr)
    g = torch.autograd.grad(total, xr, allow_unused=True)[0]
    return torch.zeros_like(xr) if g is None else g.detach()


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def loss_gradient_stats(model: nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device, batch_size: int,
                        losses: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per loss: boolean arrays ``zero`` (the whole input gradient is exactly 0) and ``nonfinite`` (some
    entry is NaN or inf), and ``l1`` (the gradient's L1 norm, NaN where it is not finite), one entry per
    example; and the median L1 norm of the finite gradients."""
    out: dict[str, dict[str, Any]] = {}
    for loss in dict.fromkeys(losses):
        zero, nonfinite, l1 = [], [], []
        for start in range(0, len(x), batch_size):
            xb = torch.from_numpy(x[start:start + batch_size]).to(device)
            yb = torch.from_numpy(y[start:start + batch_size]).to(device)
            g = loss_input_gradients(model, xb, yb, loss).reshape(len(xb), -1)
            fin = torch.isfinite(g).all(dim=1)
            nonfinite.append((~fin).cpu().numpy())
            zero.append(((g == 0).all(dim=1) & fin).cpu().numpy())
            l1.append(torch.where(fin, g.abs().sum(dim=1), torch.nan).cpu().numpy())
        per = _cat(l1, np.float32)
        norms = per[np.isfinite(per)]
        out[loss] = {"zero": _cat(zero, bool), "nonfinite": _cat(nonfinite, bool), "l1": per,
                     "median_l1": float(np.median(norms)) if len(norms) else float("nan")}
    return out


__all__ = ["loss_gradient_stats", "loss_input_gradients"]
