"""The training objectives of `audit harden`: one function per method, each a pure function of the network,
a batch and the method's settings, returning the loss to minimise and the batch's counts for the history.

Every method sees inputs in their natural bounds and normalises inside (``forward``: the audit's own
wrapper, ``audit.engine.wrapper.WrappedModel.normalise``), so the threat model of training is the one the
audit measures. The inner attacks run with the network in **eval mode** (no batch-norm statistics updated
by the attack's own forward passes, no dropout in the attack's gradient) and the parameter update in
**train mode**; the network's mode is switched here and nowhere else.

Random starts and noise are per example: a counter-based draw from ``example_seeds(seed, index, "harden",
method, epoch)`` (``audit.attacks.sweep.unit_start``), so a batch gives the same perturbation whatever the
batch size, and a resumed epoch the same as an uninterrupted one.

References:
- pgd: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
  Attacks", ICLR 2018. Inner maximisation by PGD with a random start, outer minimisation of the
  cross-entropy on the adversarial batch.
- trades: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, "Theoretically Principled Trade-off between Robustness
  and Accuracy", ICML 2019. Loss = CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL term by PGD
  from x + 0.001 * N(0, I).
- fast: Wong, Rice, Kolter, "Fast is better than free: Revisiting adversarial training", ICLR 2020. One
  FGSM step of 1.25 * eps from a uniform random start in the ball; prone to catastrophic overfitting,
  which the training loop watches for (``audit.harden.loop``).
- noise: Cohen, Rosenfeld, Kolter, "Certified Adversarial Robustness via Randomized Smoothing", ICML 2019:
  Gaussian data augmentation x + N(0, sigma^2 I) (clipped to the input bounds here, as the audit's
  Gaussian noise is).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from audit.attacks.losses import ce_log_space
from audit.attacks.rand import normal
from audit.attacks.sweep import unit_start
from audit.seeding import example_seeds

METHODS = ("pgd", "trades", "fast", "noise")

Forward = Callable[[torch.Tensor], torch.Tensor]  # inputs in natural bounds -> logits


@dataclass(frozen=True)
class Threat:
    """The training threat model: the ball and the inner attack's schedule."""

    norm: str  # linf | l2
    eps: float
    steps: int
    step: float  # absolute step in input units
    bounds: tuple[float, float] | None


@dataclass
class BatchOut:
    loss: torch.Tensor  # the mean loss to minimise
    robust_correct: int  # of the batch, on the perturbed inputs the update saw (adversarial or noisy)


def _project(adv: torch.Tensor, x: torch.Tensor, t: Threat) -> torch.Tensor:
    """Back into the eps-ball around x and into the input bounds."""
    d = adv - x
    if t.norm == "linf":
        d = d.clamp(-t.eps, t.eps)
    else:
        n = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        d = d * (t.eps / n).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    out = x + d
    return out.clamp(t.bounds[0], t.bounds[1]) if t.bounds is not None else out


def _ascent(g: torch.Tensor, t: Threat) -> torch.Tensor:
    """The steepest-ascent direction of size 1 for the norm (sign for Linf, unit L2 direction for L2)."""
    if t.norm == "linf":
        return g.sign()
    n = g.flatten(1).norm(dim=1).clamp_min(1e-12)
    return g / n.view(-1, *([1] * (g.dim() - 1)))


def random_start(x: torch.Tensor, index: np.ndarray, t: Threat, seed: int, *names: object) -> torch.Tensor:
    """x plus a per-example random point of the ball (uniform in the Linf cube; L2: a random direction at a
    uniform radius), projected into the bounds."""
    u = unit_start(example_seeds(seed, index, "harden", *names), tuple(x.shape[1:]), t.norm)
    return _project(x + t.eps * torch.from_numpy(u).to(x.device, x.dtype), x, t)


def gaussian_noise(x: torch.Tensor, index: np.ndarray, sigma: float, bounds: tuple[float, float] | None, seed: int,
                   *names: object) -> torch.Tensor:
    """x + sigma * N(0, I), a per-example counter-based draw, clipped to the bounds (as the audit's Gaussian
    noise is)."""
    g = normal(example_seeds(seed, index, "harden", *names), int(np.prod(x.shape[1:])))
    noisy = x + sigma * torch.from_numpy(g.astype(np.float32)).to(x.device).view_as(x)
    return noisy.clamp(bounds[0], bounds[1]) if bounds is not None else noisy


def _ce_update(net: nn.Module, forward: Forward, inputs: torch.Tensor, y: torch.Tensor,
               autocast: Callable[[], object], param_grads: Callable[[bool], None]) -> BatchOut:
    """The update of pgd, fast and noise: cross-entropy on the perturbed batch, in train mode."""
    net.train()
    param_grads(True)
    with autocast():
        logits = forward(inputs)
        loss = F.cross_entropy(logits.float(), y)
    with torch.no_grad():
        return BatchOut(loss, int((logits.argmax(1) == y).sum()))


def pgd_attack(forward: Forward, x: torch.Tensor, y: torch.Tensor, index: np.ndarray, t: Threat, seed: int,
               *names: object) -> torch.Tensor:
    """PGD on the cross-entropy (maximised in log space, ``audit.attacks.losses.ce_log_space``: its
    gradient keeps the cross-entropy's direction where a confident softmax would round it to zero), from a
    per-example random start, ``t.steps`` steps of ``t.step``. The caller puts the network in eval mode."""
    adv = random_start(x, index, t, seed, *names)
    for _ in range(t.steps):
        adv.requires_grad_(True)
        loss = ce_log_space(forward(adv).float(), y).sum()
        (g,) = torch.autograd.grad(loss, adv)
        adv = _project(adv.detach() + t.step * _ascent(g, t), x, t)
    return adv.detach()


def _trades_attack(forward: Forward, x: torch.Tensor, p_clean: torch.Tensor, index: np.ndarray, t: Threat,
                   seed: int, *names: object) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on KL(p(x) || p(x')) from x + 0.001 * N(0, I) (per example)."""
    g0 = normal(example_seeds(seed, index, "harden", *names), int(np.prod(x.shape[1:])))
    adv = _project(x + 0.001 * torch.from_numpy(g0.astype(np.float32)).to(x.device).view_as(x), x, t)
    for _ in range(t.steps):
        adv.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(forward(adv).float(), dim=1), p_clean, reduction="sum")
        (g,) = torch.autograd.grad(kl, adv)
        adv = _project(adv.detach() + t.step * _ascent(g, t), x, t)
    return adv.detach()


def batch_loss(method: str, net: nn.Module, forward: Forward, x: torch.Tensor, y: torch.Tensor, index: np.ndarray,
               t: Threat, seed: int, epoch: int, beta: float, sigma: float,
               autocast: Callable[[], object], param_grads: Callable[[bool], None]) -> BatchOut:
    """The method's loss on one batch. ``net`` is switched to eval for the attack and to train for the
    update, and ``param_grads(False)`` / ``param_grads(True)`` turn the parameters' gradients off for the
    attack (it needs input gradients only: the weight backward is skipped) and on for the update.
    ``autocast()`` is the mixed-precision context of the update (a null context without AMP). The inner
    attacks run in full precision (an fp16 attack gradient can underflow)."""
    if method in ("pgd", "fast"):
        net.eval()
        param_grads(False)
        if method == "pgd":
            adv = pgd_attack(forward, x, y, index, t, seed, "pgd", epoch)
        else:  # one FGSM step of 1.25 eps from a uniform random start (Wong et al. 2020)
            fast = Threat(t.norm, t.eps, 1, 1.25 * t.eps, t.bounds)
            adv = pgd_attack(forward, x, y, index, fast, seed, "fast", epoch)
        return _ce_update(net, forward, adv, y, autocast, param_grads)
    if method == "trades":
        net.eval()
        param_grads(False)
        with torch.no_grad():
            p_clean = F.softmax(forward(x).float(), dim=1)
        adv = _trades_attack(forward, x, p_clean, index, t, seed, "trades", epoch)
        net.train()
        param_grads(True)
        with autocast():
            logits = forward(x)
            logits_adv = forward(adv)
            natural = F.cross_entropy(logits.float(), y)
            robust_kl = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits.float(), dim=1),
                                 reduction="batchmean")
            loss = natural + beta * robust_kl
        with torch.no_grad():
            return BatchOut(loss, int((logits_adv.argmax(1) == y).sum()))
    if method == "noise":
        noisy = gaussian_noise(x, index, sigma, t.bounds, seed, "noise", epoch)
        return _ce_update(net, forward, noisy, y, autocast, param_grads)
    raise ValueError(f"unknown method {method!r}")
