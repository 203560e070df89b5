"""Epsilon sweeps that reuse work, per attack.

The balls are nested, so an adversarial example found at a smaller epsilon is valid at every larger one.
``nested_sweep`` sorts the epsilons ascending, attacks the clean-correct examples at eps_1, then only the
survivors at eps_2, and so on, and records for every example the smallest epsilon at which it broke
(``0`` for clean-wrong examples, ``inf`` if never broken). Robust accuracy at every epsilon follows from
that one column (``audit.metrics.robustness``).

Every adversarial input is checked after the attack, not assumed: one more forward pass, in fp32 (TF32
off on CUDA; the attack's own search steps run at PyTorch's default precision), decides whether it is
misclassified (that pass, not the attack's own bookkeeping, sets ``eps_broken``), and its distance to
the clean input and its position relative to the input bounds are measured and returned for the
``perturbation_within_eps`` and ``adversarial_within_bounds`` checks.

Never weaker than fresh attacks. At each epsilon a survivor gets exactly the attack a fresh, independent
run at that epsilon would give it (same random start, same steps), so per example the nested result is
at most the independent one: an example counts as robust at eps_k only if the eps_k attack failed on it
(and it survived every smaller epsilon). Nesting only adds breaks, it never removes one. (Warm starts from
the previous epsilon's last iterate were tried and dropped: they lose this guarantee, since an example
that a random start breaks can survive a warm start.)

Randomness. PGD's random start for example i, restart r, loss l, at epsilon e is a counter-based draw
from ``example_seeds(seed, [index_i], "pgd", norm, e, r, l)``: a function of the master seed, the epsilon and the
example's global index only, so results do not depend on batch size or order, and a survivor gets a fresh
direction at each epsilon. AutoAttack's components use torch's global RNG internally; we run them on fixed chunks of
``chunk`` examples taken in table order (independent of ``batch_size``), each component seeded from the
master seed, the epsilon and the chunk's first global index. Its results are therefore reproducible for
the same data and chunk size, and independent of the batch size, but an example's result can change if
the set of examples in its block changes (another ``[data] limit`` or ``[run] block_rows``), because its
chunk-mates change. The runner calls a sweep once per block (``audit.engine.shard``), the same blocks for
any number of torchrun ranks, so sharding does not change it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from audit.attacks.adapters import AutoAttackRunner, Counter, FGSMAttack, PGDAttack
from audit.engine.precision import fp32_decisions
from audit.attacks.config import AttackConfig, Eps
from audit.attacks.losses import top_targets
from audit.attacks.rand import normal, uniform01
from audit.seeding import example_seeds, stream_key


@dataclass
class SweepResult:
    attack: str
    norm: str
    eps: list[Eps]
    eps_broken: np.ndarray
    attacked: list[int] = field(default_factory=list)  # examples attacked at each eps (the survivors)
    broken: list[int] = field(default_factory=list)  # of which broken at that eps
    max_norm_excess: float = float("-inf")  # max over attacked examples of ||x_adv - x|| - eps (measured)
    max_bound_excess: float = 0.0  # how far any x_adv lies outside the input bounds (measured)
    max_norm: float = 0.0  # largest measured ||x_adv - x||
    # largest measured |x_adv - x| on a value the threat model freezes (``audit.attacks.threat``); must be 0
    max_frozen_change: float = 0.0
    counter: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    components: dict[str, dict[str, int]] = field(default_factory=dict)  # autoattack: eps -> component -> broken

    def summary(self) -> dict[str, Any]:
        return {"attack": self.attack, "norm": self.norm, "eps": [e.label for e in self.eps],
                "attacked": self.attacked, "broken": self.broken,
                **self.counter.to_json(),
                "max_norm_excess": None if not np.isfinite(self.max_norm_excess) else self.max_norm_excess,
                "max_bound_excess": self.max_bound_excess, **({"components": self.components} if self.components else {})}


def unit_start(seeds: np.ndarray, shape: tuple[int, ...], norm: str) -> np.ndarray:
    """The per-example random start, before scaling by eps (float32, ``(n, *shape)``).

    linf: uniform in [-1, 1]^d (torchattacks.PGD's start); l2: a normal direction scaled to a radius
    uniform in [0, 1] (torchattacks.PGDL2's start).
    """
    d = int(np.prod(shape))
    if norm == "linf":
        u = 2.0 * uniform01(seeds, d) - 1.0
    else:
        g = normal(seeds, d)
        r = uniform01(seeds, 1, offset=2)
        u = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12) * r
    return u.astype(np.float32).reshape((len(seeds),) + tuple(shape))


def measure(adv: torch.Tensor, x: torch.Tensor, norm: str, bounds: tuple[float, float] | None,
            scale: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """Per-example ||adv - x|| (float64) and the largest excursion outside the bounds. With a threat-model
    ``scale`` (``audit.attacks.threat``) the norm is in declared units, of (adv - x) / scale over the
    perturbed values (:func:`frozen_change` measures the others)."""
    d = (adv.double() - x.double()).reshape(len(x), -1)
    if scale is not None:
        s = scale.double().reshape(1, -1).to(d.device)
        d = torch.where(s > 0, d / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(d))
    dist = (d.abs().amax(dim=1) if norm == "linf" else d.norm(p=2, dim=1)).cpu().numpy()
    out = 0.0
    if bounds is not None and len(adv):
        out = max(0.0, float(bounds[0] - adv.min()), float(adv.max() - bounds[1]))
    return dist, out


def frozen_change(adv: torch.Tensor, x: torch.Tensor, scale: torch.Tensor | None) -> float:
    """The largest |adv - x| over the values the threat model freezes (scale 0): 0.0 when none moved."""
    if scale is None or len(x) == 0:
        return 0.0
    frozen = (scale.reshape(1, -1) == 0).to(adv.device)
    d = (adv.double() - x.double()).reshape(len(x), -1).abs()
    return float(torch.where(frozen, d, torch.zeros_like(d)).max())


def nested_sweep(attack_batch: Callable[[torch.Tensor, torch.Tensor, np.ndarray, Eps], torch.Tensor],
                 model: torch.nn.Module, x: np.ndarray, y: np.ndarray, index: np.ndarray, eps: list[Eps],
                 clean_correct: np.ndarray, batch_size: int, device: torch.device, norm: str,
                 bounds: tuple[float, float] | None, result: SweepResult, progress: Any = None,
                 desc: str = "attack", eligible: np.ndarray | None = None,
                 scale: torch.Tensor | None = None) -> SweepResult:
    """Fill ``result.eps_broken`` by attacking only the survivors at each epsilon (ascending).

    ``attack_batch(xb, yb, rows, eps)`` returns adversarial inputs for table rows ``rows``. ``eligible``
    (bool, ``(n, len(eps))`` in ascending eps order): attack a survivor at the j-th eps only where
    ``eligible[:, j]`` (the checks' stronger PGD, which needs only the examples the configured attack left
    standing at that eps); an example skipped there is not broken there.
    """
    t0 = time.perf_counter()
    eps = sorted(eps)
    eps_broken = np.where(clean_correct, np.inf, 0.0)
    alive = np.asarray(clean_correct, dtype=bool).copy()
    total = int(alive.sum()) * len(eps)
    bar = progress(total=total, desc=desc) if progress else None
    for j, e in enumerate(eps):
        if bar is not None and hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"eps {e.label}")  # a log's progress lines say which eps is under attack
        idx = np.flatnonzero(alive if eligible is None else alive & eligible[:, j])
        n_broken = 0
        for start in range(0, len(idx), batch_size):
            b = idx[start:start + batch_size]
            xb = torch.from_numpy(x[b]).to(device)
            yb = torch.from_numpy(y[b]).to(device)
            adv = attack_batch(xb, yb, b, e)
            with torch.no_grad(), fp32_decisions():  # the decision: fp32 (no TF32), whatever the search used
                wrong = (model(adv).argmax(1) != yb).cpu().numpy()
            result.counter.forward += len(b)
            dist, out = measure(adv, xb, norm, bounds, scale)
            result.max_frozen_change = max(result.max_frozen_change, frozen_change(adv, xb, scale))
            result.max_norm_excess = max(result.max_norm_excess, float(np.max(dist - e.value)))
            result.max_norm = max(result.max_norm, float(dist.max()))
            result.max_bound_excess = max(result.max_bound_excess, out)
            eps_broken[b[wrong]] = e.value
            alive[b[wrong]] = False
            n_broken += int(wrong.sum())
            if bar is not None:
                bar.update(len(b))
        result.attacked.append(len(idx))
        result.broken.append(n_broken)
        if bar is not None:
            bar.update(total // len(eps) - len(idx))  # examples already broken need no work at this eps
    if bar is not None:
        bar.close()
    result.eps_broken = eps_broken
    result.seconds += time.perf_counter() - t0
    return result


def fgsm_sweep(model: torch.nn.Module, cfg: AttackConfig, x: np.ndarray, y: np.ndarray, index: np.ndarray,
               clean_correct: np.ndarray, batch_size: int, device: torch.device,
               bounds: tuple[float, float] | None, progress: Any = None, scale: torch.Tensor | None = None
               ) -> SweepResult:
    """FGSM at every epsilon from one gradient per clean-correct example (the gradient is taken at the
    clean input, so it does not depend on epsilon). ``scale``: the tabular threat model's per-feature unit
    of eps (0: frozen), ``audit.attacks.threat``."""
    res = SweepResult("fgsm", cfg.norm, sorted(cfg.eps), np.empty(0))
    atk = FGSMAttack(model, bounds=bounds, counter=res.counter, scale=scale)
    t0 = time.perf_counter()
    sign = np.zeros(x.shape, dtype=np.int8)
    cc = np.flatnonzero(clean_correct)
    for start in range(0, len(cc), batch_size):
        b = cc[start:start + batch_size]
        s = atk.grad_sign(torch.from_numpy(x[b]).to(device), torch.from_numpy(y[b]).to(device))
        sign[b] = s.to(torch.int8).cpu().numpy()
    res.seconds += time.perf_counter() - t0
    def attack_batch(xb: torch.Tensor, yb: torch.Tensor, rows: np.ndarray, e: Eps) -> torch.Tensor:
        return atk.at(xb, torch.from_numpy(sign[rows]).to(xb), e.value)

    return nested_sweep(attack_batch, model, x, y, index, cfg.eps, clean_correct, batch_size, device, cfg.norm,
                        bounds, res, progress, "fgsm", scale=scale)


def pgd_attack_fn(model: torch.nn.Module, cfg: AttackConfig, seed: int, bounds: tuple[float, float] | None,
                  counter: Counter, index: np.ndarray, steps: int | None = None, stream: str = "pgd",
                  early_stop: bool = True, restarts: int | None = None, scale: torch.Tensor | None = None):
    """``attack_batch(xb, yb, rows, eps) -> adv`` for PGD: ``restarts`` (default ``cfg.restarts``) seeded
    restarts, each running every loss of ``cfg.losses`` in turn on the examples still unbroken (the
    per-example worst case over all runs). ``index`` maps table rows to global example indices (the seeds'
    key)."""
    steps = steps or cfg.steps
    restarts = restarts or cfg.restarts
    runs = [(r, loss, j) for r in range(restarts) for loss in cfg.losses
            for j in (range(cfg.targets) if loss == "targeted" else [None])]
    # (a model with fewer classes gets fewer targets: top_targets caps them, the runs past it are skipped)

    def attack_batch(xb: torch.Tensor, yb: torch.Tensor, rows: np.ndarray, e: Eps) -> torch.Tensor:
        idx = index[rows]
        alphas = cfg.alphas(e.value, steps)
        adv = xb.clone()
        todo = torch.ones(len(xb), dtype=torch.bool, device=xb.device)
        targets = None
        if "targeted" in cfg.losses:  # the classes closest at the clean input, as APGD-T picks them
            with torch.no_grad():
                targets = top_targets(model(xb), yb, cfg.targets)
            counter.forward += len(xb)
        for k, (r, loss, j) in enumerate(runs):
            sel = todo.nonzero().squeeze(1)
            if len(sel) == 0:
                break
            if j is not None and j >= targets.shape[1]:
                continue
            atk = PGDAttack(model, eps=e.value, alpha=alphas, steps=steps, norm=cfg.norm,
                            random_start=cfg.random_start, bounds=bounds, early_stop=early_stop, counter=counter,
                            loss=loss, scale=scale)
            start = None
            if cfg.random_start:
                names = (stream, cfg.norm, e.label, r, loss) + (() if j is None else (j,))
                seeds = example_seeds(seed, idx[sel.cpu().numpy()], *names)
                start = torch.from_numpy(unit_start(seeds, tuple(xb.shape[1:]), cfg.norm))
            # the last run's final iterate is checked by the sweep's verification pass
            a, found = atk(xb[sel], yb[sel], start, final_check=k < len(runs) - 1,
                           target=None if j is None else targets[sel, j])
            adv[sel] = a
            todo[sel[found]] = False
        return adv

    return attack_batch


def pgd_sweep(model: torch.nn.Module, cfg: AttackConfig, x: np.ndarray, y: np.ndarray, index: np.ndarray,
              clean_correct: np.ndarray, batch_size: int, device: torch.device, bounds: tuple[float, float] | None,
              seed: int, progress: Any = None, steps: int | None = None, stream: str = "pgd",
              restarts: int | None = None, eligible: np.ndarray | None = None,
              scale: torch.Tensor | None = None) -> SweepResult:
    """``scale``: the tabular threat model's per-feature unit of eps (0: frozen), ``audit.attacks.threat``."""
    res = SweepResult("pgd", cfg.norm, sorted(cfg.eps), np.empty(0))
    fn = pgd_attack_fn(model, cfg, seed, bounds, res.counter, index, steps, stream, restarts=restarts, scale=scale)
    return nested_sweep(fn, model, x, y, index, cfg.eps, clean_correct, batch_size, device, cfg.norm, bounds, res,
                        progress, f"pgd-{cfg.norm}", eligible, scale=scale)


def autoattack_sweep(model: torch.nn.Module, cfg: AttackConfig, x: np.ndarray, y: np.ndarray, index: np.ndarray,
                     clean_correct: np.ndarray, device: torch.device, bounds: tuple[float, float], seed: int,
                     num_classes: int, progress: Any = None) -> SweepResult:
    """AutoAttack on fixed chunks of ``cfg.chunk`` survivors (see the module docstring on determinism)."""
    res = SweepResult("autoattack", cfg.norm, sorted(cfg.eps), np.empty(0))
    runner = AutoAttackRunner(model, cfg.components, cfg.norm, bounds, num_classes, res.counter)
    names = [c["component"] for c in cfg.components]

    def attack_batch(xb: torch.Tensor, yb: torch.Tensor, rows: np.ndarray, e: Eps) -> torch.Tensor:
        seeds = [stream_key(seed, "autoattack", c, cfg.norm, e.label, int(index[rows[0]])) >> 1 for c in names]
        adv, broken, which = runner.run(xb, yb, e.value, seeds)
        tally = res.components.setdefault(e.label, {c: 0 for c in names})
        for j in which[which >= 0].tolist():
            tally[names[j]] += 1
        return adv

    return nested_sweep(attack_batch, model, x, y, index, cfg.eps, clean_correct, int(cfg.chunk or 128), device,
                        cfg.norm, bounds, res, progress, f"autoattack-{cfg.norm}")
