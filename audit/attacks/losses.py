"""The losses the gradient attacks maximise, written so that a confident model cannot hide its gradient.

Why not ``F.cross_entropy``. For one example with logits z and label y, cross-entropy is
CE = -log p_y, and its gradient with respect to the logits is p - e_y. When the model is confident, p_y
rounds to 1 in float32 and every other p_j underflows to 0 (a logit margin above about 100 does it; a
logistic regression trained with little regularisation, or any network whose logits are scaled up,
gets there), so the gradient is *exactly* zero and FGSM/PGD cannot move: robustness is overstated with
nothing to show for it. Even before the underflow, p_y - 1 rounds to 0 once the margin passes about 17,
which drops the e_y term and turns the gradient's direction.

``ce``: the same objective in log space. Write L = logsumexp_{j != y} z_j - z_y. Then
CE = log(1 + exp(L)) = softplus(L), a strictly increasing function of L, so maximising L maximises CE
per example, and grad CE = sigmoid(L) * grad L. Since sigmoid(L) = 1 - p_y > 0, grad L has exactly the
direction of the cross-entropy gradient, (w - e_y) in logit space with w the softmax over the classes
other than y; only the factor 1 - p_y, the one that underflows, is gone. FGSM and PGD use only the
direction of the gradient (its sign, or its L2 normalisation), so with ``ce`` they take precisely the
steps exact-arithmetic cross-entropy would take.

``margin``: the Carlini-Wagner margin (Carlini & Wagner, "Towards Evaluating the Robustness of Neural
Networks", 2017): max_{j != y} z_j - z_y. It is positive exactly when the example is misclassified, does
not saturate at all, and its gradient direction does not change when the logits are scaled. AutoAttack's
DLR loss (Croce & Hein, 2020) is this margin divided by a logit spread D, which makes it scale-invariant
too, but its gradient grad m / D - m grad D / D^2 has another direction; we use the plain margin, which is
simpler, works for two classes (DLR needs three), and is what the targeted loss below generalises.

Both are summed over the batch: each example's gradient is its own (the model is in eval mode).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSSES = ("ce", "margin", "targeted")
LOSS_DOC = {
    "ce": "cross-entropy maximised in log space (logsumexp of the other logits minus the true logit: the exact "
          "direction of the cross-entropy gradient, without the factor 1 - p_y that underflows in float32)",
    "margin": "Carlini-Wagner margin: largest other logit minus the true logit",
    "targeted": "margin towards each of the `targets` classes with the highest clean logits in turn (one run "
                "per target; MultiTargeted, Gowal et al. 2019)",
}


def _others(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The logits with the true class set to -inf (its gradient through this path is zero)."""
    return z.scatter(1, y[:, None], float("-inf"))


def ce_log_space(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: logsumexp_{j != y} z_j - z_y (see the module docstring; CE = softplus of it)."""
    return torch.logsumexp(_others(z, y), dim=1) - z.gather(1, y[:, None]).squeeze(1)


def margin(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: max_{j != y} z_j - z_y (positive iff misclassified, ties aside)."""
    return _others(z, y).amax(dim=1) - z.gather(1, y[:, None]).squeeze(1)


def targeted_margin(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per example: z_t - z_y, the margin towards one chosen class t (Gowal et al., "An Alternative
    Surrogate Loss for PGD-based Adversarial Testing", 2019: MultiTargeted). An untargeted loss follows the
    class that is closest now; the class that is easiest to reach within eps can be another one (for a
    linear model every pairwise margin is linear, and only the right target reaches its exact minimum)."""
    return z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)


def top_targets(z: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k classes other than y with the highest logits, best first: shape (n, min(k, classes - 1))."""
    return _others(z, y).topk(min(k, z.shape[1] - 1), dim=1).indices


def float32_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy as torch computes it (what torchattacks' APGD-CE optimises): only to measure
    how often its gradient vanishes, never used by our attacks."""
    return F.cross_entropy(z, y, reduction="none")


PER_EXAMPLE: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_log_space, "margin": margin, "float32_ce": float32_ce}


def loss_sum(name: str, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return PER_EXAMPLE[name](z, y).sum()


__all__ = ["LOSSES", "LOSS_DOC", "PER_EXAMPLE", "ce_log_space", "float32_ce", "loss_sum", "margin", "targeted_margin",
           "top_targets"]
