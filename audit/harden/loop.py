"""The training loop of `audit harden`: epochs of one method (``audit.harden.methods``), a validation score
after every epoch, the best epoch kept, early stopping, catastrophic-overfitting detection, a divergence
guard, and a checkpoint after every epoch from which a killed run resumes bitwise (on CPU).

Why a resumed run equals an uninterrupted one: everything random in an epoch is a function of (seed,
epoch) only: the shuffle (``audit.seeding.rng(seed, "harden", "shuffle", epoch)``), the per-example random
starts and noise (``example_seeds``), and torch's global generator, reseeded at the start of every epoch for
whatever the user's network draws (dropout). A resumed run restarts at the first epoch the checkpoint does
not hold, with the weights, optimiser state and RNG states the uninterrupted run had at that point; the
learning rate is a pure function of the step (``learning_rate``), so there is no scheduler object to lose.

The validation score is measured with the network in eval mode, in fp32, on the validation split held out
from the training examples: clean accuracy, and PGD accuracy at the training eps (``steps`` steps of
2.5 * eps / steps, per-example random starts fixed across epochs, so epochs are compared on the same
attack) or, for ``noise``, accuracy under one seeded Gaussian draw of ``sigma`` per example.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from audit.errors import TrainingDiverged
from audit.harden import checkpoint as ckpt
from audit.harden.methods import Threat, batch_loss, gaussian_noise, pgd_attack
from audit.seeding import rng, stream_key


@dataclass(frozen=True)
class Settings:
    """The effective training settings ([harden] with the command-line flags applied)."""

    method: str
    epochs: int
    eps: float
    eps_label: str
    norm: str
    steps: int
    step: float  # absolute step of the training attack
    beta: float
    sigma: float
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    warmup_epochs: int
    batch_size: int
    clip_grad_norm: float | None
    amp: str  # the precision that runs: off | bf16 | fp16
    patience: int
    collapse_drop: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def learning_rate(s: Settings, global_step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimiser step ``global_step`` (0-based): linear warm-up over ``warmup_epochs``,
    then cosine to 0 (Loshchilov & Hutter, SGDR, 2017), x0.1 at 50% and 75% of the remaining steps, or
    constant."""
    warm = s.warmup_epochs * steps_per_epoch
    if global_step < warm:
        return s.lr * (global_step + 1) / warm
    total = max(1, s.epochs * steps_per_epoch - warm)
    t = min(1.0, (global_step - warm) / total)
    if s.schedule == "cosine":
        return s.lr * 0.5 * (1.0 + math.cos(math.pi * t))
    if s.schedule == "step":
        return s.lr * (0.1 if t >= 0.5 else 1.0) * (0.1 if t >= 0.75 else 1.0)
    return s.lr


@dataclass
class Split:
    x: torch.Tensor  # on the training device
    y: torch.Tensor
    index: np.ndarray  # global indices (the per-example random streams)


@dataclass
class Outcome:
    best_epoch: int
    best_score: tuple[float, float]  # (validation robust accuracy, validation clean accuracy)
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    stopped: str | None  # why training ended before `epochs`, in words
    resumed_from: int | None  # the epoch the run resumed after, if it did
    epochs_run: int = 0
    notes: list[str] = field(default_factory=list)


def _make_optimizer(s: Settings, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def _state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in net.state_dict().items()}


def collapsed(history: list[dict[str, Any]], best_epoch: int, best_robust: float, drop: float) -> str | None:
    """Catastrophic overfitting of FGSM training (Wong, Rice & Kolter 2020, section 5; Andriushchenko &
    Flammarion 2020): within an epoch or so, validation PGD accuracy collapses towards 0 while the training
    (FGSM) accuracy keeps rising, because the model became locally non-linear and FGSM's single step no
    longer finds its adversarial examples. The rule: the last epoch's validation PGD accuracy is more than
    ``drop`` below the best so far, or below half of it (so that a model whose best is itself below ``drop``
    is watched too; at least 0.05 below), while its training robust accuracy rose over the epoch before.
    Returns the sentence the report and stderr show, or None."""
    if len(history) < 2:
        return None
    last, prev = history[-1], history[-2]
    robust = last["val_robust_accuracy"]
    fell = robust < best_robust - drop or (robust < 0.5 * best_robust and best_robust - robust >= 0.05)
    if prev["train_robust_accuracy"] is None or not fell:
        return None
    if last["train_robust_accuracy"] <= prev["train_robust_accuracy"]:
        return None
    return (f"catastrophic overfitting at epoch {last['epoch']}: validation PGD accuracy fell to {robust:.3f} "
            f"from {best_robust:.3f} (epoch {best_epoch}) while training FGSM accuracy rose from "
            f"{prev['train_robust_accuracy']:.3f} to {last['train_robust_accuracy']:.3f}; stopped and kept epoch "
            f"{best_epoch}'s weights")


class Trainer:
    """Trains ``net`` in place. ``forward(x)`` = the network on normalised inputs (the audit's wrapper)."""

    def __init__(self, net: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], s: Settings, train: Split,
                 val: Split, device: torch.device, bounds: tuple[float, float] | None, fingerprint: dict[str, Any],
                 path: Any, progress: Callable[..., Any] | None = None, log: Callable[[str], None] = lambda _: None,
                 params: list[nn.Parameter] | None = None):
        self.net, self.forward, self.s, self.train, self.val = net, forward, s, train, val
        self.device, self.bounds, self.fingerprint, self.path = device, bounds, fingerprint, path
        self.progress, self.log = progress, log
        self.threat = Threat(s.norm, s.eps, s.steps, s.step, bounds)
        # the validation attack picks the best epoch and, for fast, must see through a model that only fools
        # FGSM (catastrophic overfitting): never fewer than 10 steps
        val_steps = max(s.steps, 10)
        self.val_threat = Threat(s.norm, s.eps, val_steps, 2.5 * s.eps / val_steps, bounds)
        # the parameters trained (those the model's factory left trainable); the attack turns them off and on
        self.params = list(params) if params is not None else [p for p in net.parameters()]
        self.opt = _make_optimizer(s, self.params)
        self.scaler = torch.amp.GradScaler("cuda") if s.amp == "fp16" else None
        self.steps_per_epoch = math.ceil(len(train.y) / s.batch_size)

    # ------------------------------------------------------------------------------------- helpers

    def _autocast(self) -> Any:
        if self.s.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.s.amp == "bf16" else torch.float16)

    def _param_grads(self, on: bool) -> None:
        # the attacks need input gradients only; parameters without requires_grad skip the weight backward
        for p in self.params:
            p.requires_grad_(on)

    def evaluate(self) -> tuple[float, float]:
        """(clean accuracy, robust accuracy) on the validation split, eval mode, fp32."""
        self.net.eval()
        self._param_grads(False)
        clean = robust = 0
        bs = max(self.s.batch_size, 256)
        v = self.val
        for start in range(0, len(v.y), bs):
            xb, yb, ib = v.x[start:start + bs], v.y[start:start + bs], v.index[start:start + bs]
            with torch.no_grad():
                ok = self.forward(xb).argmax(1) == yb
            clean += int(ok.sum())
            if self.s.method == "noise":
                noisy = gaussian_noise(xb, ib, self.s.sigma, self.bounds, self.s.seed, "val-noise")
                with torch.no_grad():
                    robust += int((self.forward(noisy).argmax(1) == yb).sum())
            else:
                adv = pgd_attack(self.forward, xb, yb, ib, self.val_threat, self.s.seed, "val")
                with torch.no_grad():
                    robust += int(((self.forward(adv).argmax(1) == yb) & ok).sum())
        n = max(1, len(v.y))
        return clean / n, robust / n

    def _save(self, epoch: int, global_step: int, best: tuple[int, tuple[float, float], dict[str, torch.Tensor]],
              history: list[dict[str, Any]], bad_epochs: int, stopped: str | None) -> None:
        ckpt.save(self.path, {
            "fingerprint": self.fingerprint, "epoch": epoch, "step": global_step,
            "model": _state_copy(self.net), "best_model": best[2],
            "best": {"epoch": best[0], "robust": best[1][0], "clean": best[1][1]},
            "optimizer": self.opt.state_dict(),
            "scheduler": {"kind": self.s.schedule, "step": global_step, "steps_per_epoch": self.steps_per_epoch},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": ckpt.rng_state(), "history": history, "bad_epochs": bad_epochs, "stopped": stopped,
        })

    # ------------------------------------------------------------------------------------- the loop

    def run(self, resume: dict[str, Any] | None = None) -> Outcome:
        s = self.s
        if resume is not None:
            self.net.load_state_dict(resume["model"])
            self.opt.load_state_dict(resume["optimizer"])
            if self.scaler is not None and resume["scaler"]:
                self.scaler.load_state_dict(resume["scaler"])
            ckpt.set_rng_state(resume["rng"])
            start, global_step = int(resume["epoch"]), int(resume["step"])
            best = (int(resume["best"]["epoch"]), (float(resume["best"]["robust"]), float(resume["best"]["clean"])),
                    resume["best_model"])
            history, bad_epochs, stopped = list(resume["history"]), int(resume["bad_epochs"]), resume["stopped"]
            self.log(f"harden: resuming after epoch {start} of {s.epochs}" + (f" ({stopped})" if stopped else ""))
        else:
            start, global_step, bad_epochs, stopped = 0, 0, 0, None
            clean, robust = self.evaluate()  # epoch 0: the original model, a candidate like any epoch
            history = [{"epoch": 0, "loss": None, "train_clean_accuracy": None, "train_robust_accuracy": None,
                        "val_clean_accuracy": clean, "val_robust_accuracy": robust, "lr": None, "seconds": 0.0,
                        "train_seconds": 0.0, "skipped_steps": 0}]
            best = (0, (robust, clean), _state_copy(self.net))
            self._save(0, 0, best, history, 0, None)
        for epoch in range(start + 1, s.epochs + 1):
            if stopped:
                break
            t0 = time.perf_counter()
            torch.manual_seed(stream_key(s.seed, "harden", "torch", epoch) & ((1 << 63) - 1))
            perm = rng(s.seed, "harden", "shuffle", epoch).permutation(len(self.train.y))
            loss_sum = 0.0
            clean_ok = robust_ok = seen = skipped = 0
            bar = self.progress(total=self.steps_per_epoch, desc=f"epoch {epoch}/{s.epochs}") if self.progress else None
            for b in range(self.steps_per_epoch):
                pos = perm[b * s.batch_size:(b + 1) * s.batch_size]
                pos_t = torch.from_numpy(pos).to(self.train.x.device)
                xb, yb, ib = self.train.x[pos_t], self.train.y[pos_t], self.train.index[pos]
                lr = learning_rate(s, global_step, self.steps_per_epoch)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                self.net.eval()
                self._param_grads(False)
                with torch.no_grad():
                    clean_ok += int((self.forward(xb).argmax(1) == yb).sum())
                out = batch_loss(s.method, self.net, self.forward, xb, yb, ib, self.threat, s.seed, epoch, s.beta,
                                 s.sigma, self._autocast, self._param_grads)
                loss = out.loss
                if not torch.isfinite(loss):
                    self._diverged(epoch, b + 1, f"the loss is {float(loss.detach())}", lr, best[0])
                self.opt.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.unscale_(self.opt)
                else:
                    loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.params, s.clip_grad_norm or float("inf"))
                if not torch.isfinite(norm):
                    if self.scaler is None:
                        self._diverged(epoch, b + 1, f"the gradient norm is {float(norm)}", lr, best[0])
                    skipped += 1  # GradScaler skips this step and lowers its scale (fp16 overflow)
                if self.scaler is not None:
                    self.scaler.step(self.opt)
                    self.scaler.update()
                else:
                    self.opt.step()
                global_step += 1
                n = len(yb)
                seen += n
                loss_sum += float(loss.detach()) * n
                robust_ok += out.robust_correct
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{clean_ok / seen:.3f}",
                                    robust=f"{robust_ok / seen:.3f}")
            if bar is not None:
                bar.close()
            train_seconds = time.perf_counter() - t0
            if not all(bool(torch.isfinite(p).all()) for p in self.params):
                self._diverged(epoch, self.steps_per_epoch, "the weights became NaN or infinite", lr, best[0])
            if self.scaler is not None and skipped == self.steps_per_epoch:
                self._diverged(epoch, self.steps_per_epoch, "every step overflowed in fp16", lr, best[0])
            clean, robust = self.evaluate()
            history.append({"epoch": epoch, "loss": loss_sum / seen, "train_clean_accuracy": clean_ok / seen,
                            "train_robust_accuracy": robust_ok / seen, "val_clean_accuracy": clean,
                            "val_robust_accuracy": robust, "lr": lr, "seconds": time.perf_counter() - t0,
                            "train_seconds": train_seconds, "skipped_steps": skipped})
            what = "noise" if s.method == "noise" else "robust"
            self.log(f"harden: epoch {epoch}/{s.epochs}: loss {loss_sum / seen:.4f}, train clean {clean_ok / seen:.3f}, "
                     f"train {what} {robust_ok / seen:.3f}, val clean {clean:.3f}, val {what} {robust:.3f}, "
                     f"{history[-1]['seconds']:.1f} s")
            if (robust, clean) > best[1]:
                best, bad_epochs = (epoch, (robust, clean), _state_copy(self.net)), 0
            else:
                bad_epochs += 1
            collapse = collapsed(history, best[0], best[1][0], s.collapse_drop) if s.method == "fast" else None
            if collapse:
                stopped = collapse
            elif s.patience and bad_epochs >= s.patience and epoch < s.epochs:
                stopped = (f"early stopping after epoch {epoch}: no better validation score for {bad_epochs} "
                           f"epoch{'s' if bad_epochs != 1 else ''} (patience {s.patience}); kept epoch {best[0]}")
            self._save(epoch, global_step, best, history, bad_epochs, stopped)
            if stopped:
                self.log(f"harden: {stopped}")
        epochs_run = history[-1]["epoch"]
        return Outcome(best_epoch=best[0], best_score=best[1], best_state=best[2], history=history, stopped=stopped,
                       resumed_from=int(resume["epoch"]) if resume is not None else None, epochs_run=epochs_run)

    def _diverged(self, epoch: int, step: int, what: str, lr: float, best_epoch: int) -> None:
        cause = (f"fp16 overflow (set [harden] amp = \"bf16\" or \"off\") or a learning rate too high ({lr:g})"
                 if self.s.amp == "fp16" else
                 f"a learning rate too high for this model (lr {lr:g} at this step; lower [harden] lr or --lr)")
        raise TrainingDiverged(f"training diverged at epoch {epoch}, step {step}: {what}; likely cause: {cause}. "
                               f"The last checkpoint ({self.path.name}, after epoch {epoch - 1}) is kept, and in it "
                               f"the best epoch's weights (epoch {best_epoch}, by validation score)")
