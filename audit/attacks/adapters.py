"""torchattacks adapters: the attacks run on our WrappedModel (normalisation inside it, inputs in their
natural bounds), never through torchattacks' ``set_normalization_used``.

Why subclasses. torchattacks' FGSM/PGD/PGDL2 clamp to [0, 1], assume 4-D images (PGDL2), average the loss
over the batch, return only the last iterate, and draw PGD's random start from the global RNG, which
makes an example's result depend on which other examples share its batch. Our subclasses keep the
torchattacks ``Attack`` machinery (``__call__``, model-mode handling, ``get_logits``, targeted modes) and
override ``forward`` so that:

- the random start is supplied per example (``audit.attacks.rand``, seeded by the master seed and the
  example's global index): results do not depend on batch size or order;
- the loss is summed, so each example's gradient is its own (a mean scales it by 1/batch);
- inputs stay in the recipe's bounds (or are unbounded), for any input rank;
- an example counts as broken if any iterate is misclassified, and broken examples leave the batch
  (early stop): the misclassified iterate is inside the ball, so this is a valid, and stronger and
  cheaper, attack than keeping only the last iterate.

AutoAttack runs its torchattacks components (APGD, APGDT, FAB, Square) one after another on the
survivors with every setting explicit (``audit.attacks.config.AUTOATTACK_PRESETS``). Those components draw
their randomness from torch's global RNG after ``torch.manual_seed(seed)``; we fork the RNG around them
(the caller's RNG state is untouched) and seed each fixed chunk of examples from the master seed and the
chunk's first global index (see ``audit.attacks.sweep``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torchattacks
from torch import nn

from audit.attacks.losses import PER_EXAMPLE, loss_sum, targeted_margin


def _flat_norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    f = d.reshape(len(d), -1)
    return f.abs().amax(dim=1) if norm == "linf" else f.norm(p=2, dim=1)


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


def _input_grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """d loss / d x; zeros when the model cuts the input off from autograd (the gradient-masking check
    reports that, instead of the attack crashing)."""
    if not loss.requires_grad:
        return torch.zeros_like(x)
    g = torch.autograd.grad(loss, x, allow_unused=True)[0]
    return torch.zeros_like(x) if g is None else g


class Counter:
    """Rows through forward and backward passes (a batch of 64 counts 64)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def to_json(self) -> dict[str, int]:
        return {"forward_rows": self.forward, "backward_rows": self.backward}


class FGSMAttack(torchattacks.FGSM):
    """FGSM (Goodfellow et al., 2015) inside ``bounds``: x' = clip(x + eps * sign(grad_x CE(f(x), y))), with
    the cross-entropy gradient's direction computed in log space (``audit.attacks.losses``) so that it does
    not vanish on confident examples.

    ``grad_sign`` computes the sign once; ``at`` applies it for any eps (the gradient is taken at the clean
    input, so it does not depend on eps: one gradient serves a whole epsilon sweep).
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, bounds: tuple[float, float] | None = (0.0, 1.0),
                 counter: Counter | None = None, scale: torch.Tensor | None = None):
        super().__init__(model, eps=eps)
        self.bounds = bounds
        self.counter = counter or Counter()
        # per input value: the unit of eps there, 0 = never perturbed (``audit.attacks.threat``); None: 1
        self.scale = scale

    def grad_sign(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.clone().detach().requires_grad_(True)
        logits = self.get_logits(x)
        loss = loss_sum("ce", logits, labels)  # log-space CE: cross-entropy's direction, never underflowing
        grad = _input_grad(loss, x)
        self.counter.forward += len(x)
        self.counter.backward += len(x)
        return grad.sign()

    def at(self, images: torch.Tensor, sign: torch.Tensor, eps: float) -> torch.Tensor:
        adv = images + eps * (sign if self.scale is None else sign * self.scale.to(sign))
        if self.bounds is not None:
            adv = adv.clamp(self.bounds[0], self.bounds[1])
        return adv.detach()

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # torchattacks API
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        return self.at(images, self.grad_sign(images, labels), self.eps)


class PGDAttack(torchattacks.PGD):
    """PGD (Madry et al., 2018), Linf (sign steps, box projection) or L2 (normalised steps, ball
    projection, as torchattacks.PGDL2), inside ``bounds``, with a supplied per-example random start.

    ``loss`` is one of ``audit.attacks.losses.LOSSES`` (log-space cross-entropy, the CW margin, or
    "targeted": the margin towards ``target`` given to ``forward``), or "float32_ce" (tests, benchmarks).
    ``alpha`` is one step size, or one per step (a schedule, ``audit.attacks.config.step_schedule``).

    ``forward(images, labels, start)`` returns ``(adv, found)``: ``start`` is a unit draw shaped like the
    images (``eps * start`` is the initial perturbation; None: no random start); ``found[i]`` says an
    iterate fooled the model, and then ``adv[i]`` is that iterate, else the last iterate.
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float | Sequence[float] = 2 / 255,
                 steps: int = 10, norm: str = "linf", random_start: bool = True,
                 bounds: tuple[float, float] | None = (0.0, 1.0), early_stop: bool = True,
                 counter: Counter | None = None, loss: str = "ce", scale: torch.Tensor | None = None):
        alphas = [float(alpha)] * steps if isinstance(alpha, (int, float)) else [float(a) for a in alpha]
        if len(alphas) != steps:
            raise ValueError(f"{len(alphas)} step sizes for {steps} steps")
        super().__init__(model, eps=eps, alpha=alphas[0], steps=steps, random_start=random_start)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if loss not in PER_EXAMPLE and loss != "targeted":  # the recipe offers LOSSES; float32_ce is for tests
            raise ValueError(f"loss must be one of {tuple(PER_EXAMPLE) + ('targeted',)}, got {loss!r}")
        self.alphas = alphas
        self.loss = loss
        self.attack = "PGD" if norm == "linf" else "PGDL2"
        self.norm = norm
        self.bounds = bounds
        self.early_stop = early_stop
        self.counter = counter or Counter()
        self.supported_mode = ["default"]
        # per input value (shaped like one example): the unit of eps there, 0 = never perturbed
        # (``audit.attacks.threat``). The attack runs on u = delta / scale: Linf steps of alpha * sign(grad)
        # in u are alpha * scale * sign(grad) in x; L2 steps follow grad_u = scale * grad_x; projections
        # bound ||u||. None: scale 1 everywhere (images), the plain attack.
        self.scale = scale

    def _box(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Linf: the ball intersected with the bounds, as per-value [low, high] (one clamp per step)."""
        if self.norm != "linf":
            return None
        r = self.eps if self.scale is None else self.eps * self.scale.to(x0)
        lo, hi = x0 - r, x0 + r
        if self.bounds is not None:
            lo.clamp_(min=self.bounds[0])
            hi.clamp_(max=self.bounds[1])
        return lo, hi

    def _project(self, adv: torch.Tensor, x0: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        if box is not None:
            return torch.clamp(adv, box[0], box[1])
        delta = adv - x0
        if self.scale is None:
            n = delta.reshape(len(delta), -1).norm(p=2, dim=1)
        else:  # the norm in declared units, over the perturbed values; frozen values back to x0 exactly
            s = self.scale.to(delta)
            delta = torch.where(s > 0, delta, torch.zeros_like(delta))
            n = (delta / torch.where(s > 0, s, torch.ones_like(s))).reshape(len(delta), -1).norm(p=2, dim=1)
        factor = torch.clamp(self.eps / torch.clamp(n, min=1e-12), max=1.0)
        adv = x0 + delta * _view(factor, delta)
        if self.bounds is not None:
            adv = adv.clamp(self.bounds[0], self.bounds[1])
        return adv

    def _step(self, adv: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        if self.norm == "linf":
            if self.scale is not None:
                return adv.add_(grad.sign_().mul_(self.scale.to(grad)), alpha=alpha)
            return adv.add_(grad.sign_(), alpha=alpha)
        if self.scale is not None:  # steepest ascent in u = delta / scale: grad_u = scale * grad_x
            grad = grad * self.scale.to(grad)
        # normalise by the largest entry first: a tiny gradient (1e-30) keeps its direction instead of
        # squaring to 0 in the norm
        scale = grad.reshape(len(grad), -1).abs().amax(dim=1).clamp(min=1e-30)
        grad = grad / _view(scale, grad)
        g = grad.reshape(len(grad), -1).norm(p=2, dim=1).clamp(min=1e-12)
        if self.scale is not None:  # the u-step back in x: delta_x = scale * delta_u
            grad = grad * self.scale.to(grad)
        return adv.add_(grad * _view(alpha / g, grad))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, start: torch.Tensor | None = None,  # type: ignore[override]
                final_check: bool = True, init: torch.Tensor | None = None, target: torch.Tensor | None = None):
        """``final_check=False`` skips the forward pass on the last iterate (the caller verifies the returned
        inputs anyway); ``found`` then covers the earlier iterates only. ``init`` (absolute inputs, projected
        onto the ball) replaces the random start: a warm start. ``target``: the class each example is pushed
        towards, for ``loss = "targeted"``."""
        x0 = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        if (self.loss == "targeted") != (target is not None):
            raise ValueError("a target is given exactly when loss = 'targeted'")
        ta = None if target is None else target.to(y)
        n = len(x0)
        found = torch.zeros(n, dtype=torch.bool, device=x0.device)
        best = x0.clone()
        box = self._box(x0)
        if init is not None:
            adv = self._project(init.to(x0), x0, box)
        elif self.random_start and start is not None:
            u0 = start.to(x0) if self.scale is None else start.to(x0) * self.scale.to(x0)
            adv = self._project(x0 + self.eps * u0, x0, box)
        else:
            adv = x0.clone()
        active = torch.arange(n, device=x0.device)
        xa, ya = x0, y
        for t in range(self.steps):
            adv.requires_grad_(True)
            logits = self.get_logits(adv)
            loss = targeted_margin(logits, ya, ta).sum() if ta is not None else loss_sum(self.loss, logits, ya)
            grad = _input_grad(loss, adv)
            self.counter.forward += len(adv)
            self.counter.backward += len(adv)
            adv = adv.detach()
            if self.early_stop:
                wrong = logits.detach().argmax(1) != ya
                if bool(wrong.any()):
                    hit = active[wrong]
                    best[hit] = adv[wrong]
                    found[hit] = True
                    keep = ~wrong
                    active, adv, xa, ya, grad = active[keep], adv[keep], xa[keep], ya[keep], grad[keep]
                    if ta is not None:
                        ta = ta[keep]
                    if box is not None:
                        box = (box[0][keep], box[1][keep])
                    if len(active) == 0:
                        break
            adv = self._project(self._step(adv, grad, self.alphas[t]), xa, box)
        if len(active):
            best[active] = adv
            if final_check:
                with torch.no_grad():
                    logits = self.get_logits(adv)
                self.counter.forward += len(adv)
                found[active[logits.argmax(1) != ya]] = True
        return best.detach(), found


class _UnitBox(nn.Module):
    """Presents a model with bounds [lo, hi] and any input shape as one taking (N, C, H, W) in [0, 1]
    (the only domain torchattacks' APGD/FAB/Square support): x = lo + (hi - lo) * u."""

    def __init__(self, model: nn.Module, lo: float, hi: float):
        super().__init__()
        self.model = model
        self.lo, self.scale = lo, hi - lo

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(u * self.scale + self.lo if (self.lo, self.scale) != (0.0, 1.0) else u)


def _build_component(model: nn.Module, c: dict[str, Any], norm: str, eps: float, seed: int,
                     num_classes: int) -> torchattacks.Attack:
    tn = {"linf": "Linf", "l2": "L2"}[norm]
    if c["class"] == "APGD":
        atk = torchattacks.APGD(model, norm=tn, eps=eps, steps=c["steps"], n_restarts=c["n_restarts"], seed=seed,
                                loss=c["loss"], rho=c["rho"])
    elif c["class"] == "APGDT":
        atk = torchattacks.APGDT(model, norm=tn, eps=eps, steps=c["steps"], n_restarts=c["n_restarts"], seed=seed,
                                 rho=c["rho"], n_classes=num_classes)
        atk.n_target_classes = c["n_target_classes"]
    elif c["class"] == "FAB":
        atk = torchattacks.FAB(model, norm=tn, eps=eps, steps=c["steps"], n_restarts=c["n_restarts"], seed=seed,
                               multi_targeted=c["multi_targeted"], n_classes=num_classes, alpha_max=c["alpha_max"],
                               eta=c["eta"], beta=c["beta"])
        atk.n_target_classes = c["n_target_classes"]
    elif c["class"] == "Square":
        atk = torchattacks.Square(model, norm=tn, eps=eps, n_queries=c["n_queries"], n_restarts=c["n_restarts"],
                                  p_init=c["p_init"], loss=c["loss"], seed=seed)
    else:  # pragma: no cover - presets are fixed
        raise ValueError(c["class"])
    return atk


class AutoAttackRunner:
    """AutoAttack's components in sequence on the survivors of the previous ones (as torchattacks'
    MultiAttack does), every setting explicit; records which component broke each example."""

    def __init__(self, model: nn.Module, components: list[dict[str, Any]], norm: str,
                 bounds: tuple[float, float], num_classes: int, counter: Counter | None = None):
        lo, hi = bounds
        self.unit = _UnitBox(model, lo, hi)
        self.model = model
        self.components = components
        self.norm = norm
        self.lo, self.scale = lo, hi - lo
        self.num_classes = num_classes
        self.counter = counter or Counter()

    def run(self, x: torch.Tensor, y: torch.Tensor, eps: float, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attack one chunk. ``seeds[j]`` seeds component j. Returns (adv, broken, component index or -1)."""
        shape = x.shape
        u = ((x - self.lo) / self.scale).reshape(shape if x.dim() == 4 else (len(x), 1, 1, -1))
        if x.dim() != 4:
            inner = self.unit.model
            self.unit.model = _Reshape(inner, shape[1:])
        eps_u = eps / self.scale
        adv_u = u.clone()
        which = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        alive = torch.arange(len(x), device=x.device)
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                for j, c in enumerate(self.components):
                    if len(alive) == 0:
                        break
                    atk = _build_component(self.unit, c, self.norm, eps_u, int(seeds[j]), self.num_classes)
                    out = atk(u[alive], y[alive])
                    with torch.no_grad():
                        wrong = self.unit(out).argmax(1) != y[alive]
                    self.counter.forward += len(alive)
                    hit = alive[wrong]
                    adv_u[hit] = out[wrong].detach()
                    which[hit] = j
                    alive = alive[~wrong]
        finally:
            if x.dim() != 4:
                self.unit.model = inner
        adv = (adv_u * self.scale + self.lo).reshape(shape)
        return adv.detach(), which >= 0, which


class TamedLogits(nn.Module):
    """The model with logits z / (max z - min z + 1): every argmax unchanged, every logit in (-1, 1), so
    torchattacks' APGD-CE (plain float32 cross-entropy) keeps a gradient on confident examples (the
    robustness suite's reference attack runs it this way)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z / (z.amax(1, keepdim=True) - z.amin(1, keepdim=True) + 1.0)


class _Reshape(nn.Module):
    def __init__(self, model: nn.Module, shape: tuple[int, ...]):
        super().__init__()
        self.model = model
        self.shape = tuple(shape)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(u.reshape((len(u),) + self.shape))


__all__ = ["AutoAttackRunner", "Counter", "FGSMAttack", "PGDAttack", "TamedLogits"]
