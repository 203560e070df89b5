"""Random perturbations: noise robustness, and random noise of an attack's size (a validity check).

Noise kinds (x' is clipped to the input bounds when the recipe sets them):

- gaussian:    x' = x + level * z,            z ~ N(0, 1) per input value (level is the std);
- uniform:     x' = x + level * (2u - 1),     u ~ U[0, 1) (level is the half-width);
- salt_pepper: each input value is replaced, with probability ``level``, by the upper bound ("salt") or
               the lower bound ("pepper"), each with probability 1/2 (needs input bounds).

Draw ``d`` of example i uses the counter-based stream ``example_seeds(seed, [index_i], "noise", kind, d)``
(``audit.attacks.rand``), so draws do not depend on batch size. The same unit draw is used at every level
(common random numbers): the levels differ only in size, which makes the accuracy-vs-noise curve smooth
and, for salt-and-pepper, the corrupted sets nested across levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from audit.attacks.config import Eps
from audit.attacks.rand import normal, uniform01
from audit.seeding import example_seeds


def _unit(kind: str, seeds: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    d = int(np.prod(shape))
    full = (len(seeds),) + tuple(shape)
    if kind == "gaussian":
        return normal(seeds, d).astype(np.float32).reshape(full), None
    if kind == "uniform":
        return (2.0 * uniform01(seeds, d) - 1.0).astype(np.float32).reshape(full), None
    which = uniform01(seeds, d).reshape(full)
    salt = uniform01(seeds, d, offset=1).reshape(full) < 0.5
    return which, salt


def perturb(kind: str, x: torch.Tensor, level: float, unit: np.ndarray, salt: np.ndarray | None,
            bounds: tuple[float, float] | None, scale: torch.Tensor | None = None) -> torch.Tensor:
    """The noisy copy of ``x``. ``scale`` (the tabular threat model, ``audit.attacks.threat``): the unit
    of ``level`` per input value, 0 where a value is never perturbed (salt-and-pepper leaves those too)."""
    if kind == "salt_pepper":
        assert bounds is not None
        hit = torch.from_numpy(unit < level).to(x.device)
        if scale is not None:
            hit = hit & (scale.to(x.device) > 0)
        s = torch.from_numpy(salt).to(x.device)
        val = torch.where(s, torch.full_like(x, bounds[1]), torch.full_like(x, bounds[0]))
        return torch.where(hit, val, x)
    z = torch.from_numpy(unit).to(x)
    out = x + level * (z if scale is None else z * scale.to(x))
    return out.clamp(bounds[0], bounds[1]) if bounds is not None else out


def noise_correct(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, index: np.ndarray, kind: str,
                  levels: list[Eps], draws: int, seed: int, bounds: tuple[float, float] | None,
                  device: torch.device, batch_size: int, progress: Any = None,
                  scale: torch.Tensor | None = None, measured: dict[str, float] | None = None) -> np.ndarray:
    """(n, L) int: how many of the ``draws`` noisy copies of each example the model classifies correctly,
    per level. ``measured["max_frozen_change"]``, when given: the largest change measured on a value the
    threat model ``scale`` freezes (must stay 0)."""
    from audit.attacks.sweep import frozen_change

    n = len(x)
    out = np.zeros((n, len(levels)), dtype=np.int64)
    bar = progress(total=n * draws, desc=f"noise-{kind}") if progress else None
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            xb = torch.from_numpy(x[sl]).to(device)
            yb = torch.from_numpy(y[sl]).to(device)
            for d in range(draws):
                unit, salt = _unit(kind, example_seeds(seed, index[sl], "noise", kind, d), tuple(x.shape[1:]))
                for j, lv in enumerate(levels):
                    xn = perturb(kind, xb, lv.value, unit, salt, bounds, scale)
                    if measured is not None and scale is not None:
                        measured["max_frozen_change"] = max(measured.get("max_frozen_change", 0.0),
                                                            frozen_change(xn, xb, scale))
                    pred = model(xn).argmax(1)
                    out[sl, j] += (pred == yb).cpu().numpy()
                if bar is not None:
                    bar.update(len(xb))
    if bar is not None:
        bar.close()
    return out


def random_ball_correct(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, index: np.ndarray, norm: str,
                        eps: list[Eps], seed: int, bounds: tuple[float, float] | None, device: torch.device,
                        batch_size: int, scale: torch.Tensor | None = None) -> np.ndarray:
    """(n, E) bool: still correct under one random perturbation of exactly the attack's size (before
    clipping to the bounds): a random corner of the Linf ball (+-eps per value), or a random direction
    of L2 length eps. An attack must do at least as well as this. With a threat-model ``scale``: in its
    units (+-eps * scale_j per feature; an L2 direction over the perturbed features, times scale), frozen
    features untouched."""
    n = len(x)
    out = np.zeros((n, len(eps)), dtype=bool)
    d = int(np.prod(x.shape[1:]))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            seeds = example_seeds(seed, index[sl], "random-ball", norm)
            if norm == "linf":
                u = np.where(uniform01(seeds, d) < 0.5, -1.0, 1.0)
            else:
                g = normal(seeds, d)
                if scale is not None:  # a direction among the perturbed features only
                    g = g * (scale.reshape(1, -1).cpu().numpy() > 0)
                u = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
            ut = torch.from_numpy(u.astype(np.float32).reshape(x[sl].shape)).to(device)
            if scale is not None:
                ut = ut * scale.to(ut)
            xb = torch.from_numpy(x[sl]).to(device)
            yb = torch.from_numpy(y[sl]).to(device)
            for j, e in enumerate(eps):
                xn = xb + e.value * ut
                if bounds is not None:
                    xn = xn.clamp(bounds[0], bounds[1])
                out[sl, j] = (model(xn).argmax(1) == yb).cpu().numpy()
    return out
