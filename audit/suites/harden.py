"""The [harden] section of `audit harden` (``audit.harden``), registered as a command-only suite so that the
recipe loader validates it and docs/recipe.md documents it like every other section. `audit run` ignores
it. Its command-line flags (--method, --epochs, --lr, --eps, --seed) override these keys.

Metric records (suite "harden", in the hardened model's report):

  best_epoch               {}   the epoch whose weights were written (0: the original model was best)
  epochs_run               {}   epochs trained (fewer than `epochs` after early stopping or a collapse)
  val_clean_accuracy       {}   the written model's clean accuracy on the validation split of the training data
  val_robust_accuracy      {}   its PGD (or, for noise, Gaussian-noise) accuracy there
"""

from __future__ import annotations

from typing import Any

from audit.attacks.config import parse_eps, parse_step_size
from audit.errors import RecipeError
from audit.recipe.fields import Field, FieldError, Section, p_bool, p_float, p_int, p_str
from audit.recipe.sections import DATA
from audit.report.records import SuiteResult
from audit.suites.base import HIGHER, MetricSpec, Suite

METHODS = ("pgd", "trades", "fast", "noise")


def _p_eps(v: Any) -> str | float:
    e = parse_eps(v)
    if not e.value > 0:
        raise FieldError("must be > 0")
    return e.label if isinstance(v, str) else float(e.value)


def _p_step(v: Any) -> str | float | None:
    return parse_step_size(v)


def _post(h: dict[str, Any]) -> None:
    if h["warmup_epochs"] >= h["epochs"] and h["warmup_epochs"] > 0:
        raise FieldError(f"warmup_epochs = {h['warmup_epochs']} must be below epochs = {h['epochs']}")


SECTION = Section(
    "harden",
    "Settings of `audit harden`: adversarial or noise fine-tuning of the model, then an audit of the original "
    "and of the hardened model on the evaluation data ([data]) and `audit diff` of the two. `audit run` "
    "ignores this section; the flags --method, --epochs, --lr, --eps and --seed override its keys. Methods: "
    "pgd = PGD adversarial training (Madry et al., ICLR 2018), the attack in eval mode and the update in "
    "train mode; trades = TRADES (Zhang et al., ICML 2019), cross-entropy plus beta times the KL divergence "
    "between clean and adversarial predictions; fast = FGSM from a random start with step 1.25 * eps (Wong, "
    "Rice & Kolter, ICLR 2020), stopped with the last good weights when validation PGD accuracy collapses "
    "while training accuracy rises (catastrophic overfitting); noise = Gaussian noise augmentation with "
    "sigma (Cohen et al., ICML 2019). Every method writes the epoch with the best validation robust accuracy "
    "(noise accuracy for noise), since robust accuracy peaks and then falls (Rice et al., ICML 2020). The "
    "training examples are [harden.data] (the keys of [data]), or without it the [data] source with split = "
    "\"train\"; an example that is also an evaluation example (same source and global index, or identical "
    "bytes) stops the run before any training (exit 2).",
    (
        Field("method", "'pgd' | 'trades' | 'fast' | 'noise'", "Hardening method (see above).", default="pgd",
              parse=p_str(METHODS), example='"pgd"'),
        Field("epochs", "integer >= 1", "Training epochs at most (early stopping may end sooner).", default=10,
              parse=p_int(1, 100000), example="10"),
        Field("eps", "number or fraction string > 0", "Training perturbation budget (pgd, trades, fast); the "
              "audits' sweep gets it added if it lacks it.", default="8/255", parse=_p_eps, example='"8/255"'),
        Field("norm", "'linf' | 'l2'", "Norm of the training ball (fast: linf only).", default="linf",
              parse=p_str(("linf", "l2")), example='"linf"'),
        Field("steps", "integer >= 1", "PGD steps of the training attack (pgd, trades) and of the validation "
              "attack that picks the best epoch (that one never fewer than 10, so that a fast-trained model that "
              "only fools FGSM shows).", default=10, parse=p_int(1, 1000), example="10"),
        Field("step_size", "'auto', a number, or a fraction of eps such as \"eps / 4\"",
              "Step of the training attack. auto: 2.5 * eps / steps (Madry et al.) for pgd and trades; fast "
              "always steps 1.25 * eps.", default=None, parse=_p_step, example='"auto"'),
        Field("beta", "number >= 0", "trades: weight of the KL term (6 in the paper).", default=6.0,
              parse=p_float(0.0), example="6.0"),
        Field("sigma", "number > 0", "noise: standard deviation of the Gaussian noise, in input units (noisy "
              "inputs are clipped to [model] input_bounds, as the audit's Gaussian noise is); the audits' "
              "[robustness] noise gets it added.", default=0.25, parse=p_float(0.0, lo_open=True), example="0.25"),
        Field("optimizer", "'sgd' | 'adamw'", "Optimiser of the fine-tuning (adamw: decoupled weight decay, Loshchilov & Hutter 2019; a "
              "safe default for fine-tuning a trained model, where SGD with momentum at a from-scratch learning "
              "rate can wreck it in the first epoch).", default="adamw",
              parse=p_str(("sgd", "adamw")), example='"sgd"'),
        Field("lr", "number > 0", "Peak learning rate.", default=0.001, parse=p_float(0.0, lo_open=True),
              example="0.01"),
        Field("momentum", "number in [0, 1)", "sgd: momentum (Nesterov off).", default=0.9,
              parse=p_float(0.0, 0.999999), example="0.9"),
        Field("weight_decay", "number >= 0", "L2 weight decay (decoupled for adamw).", default=5e-4,
              parse=p_float(0.0), example="5e-4"),
        Field("schedule", "'cosine' | 'step' | 'constant'",
              "Learning-rate schedule over the optimiser steps after warm-up: cosine to 0; step: x0.1 at 50% "
              "and 75% of them; constant.", default="cosine", parse=p_str(("cosine", "step", "constant")),
              example='"cosine"'),
        Field("warmup_epochs", "integer >= 0", "Linear warm-up from 0 to lr over this many epochs.", default=0,
              parse=p_int(0), example="1"),
        Field("batch_size", "integer >= 1", "Training examples per step.", default=128, parse=p_int(1),
              example="128"),
        Field("clip_grad_norm", "number > 0 or false",
              "Clip the gradient's global L2 norm to this (false: no clipping).", default=10.0,
              parse=lambda v: None if v is False else p_float(0.0, lo_open=True)(v), example="10.0"),
        Field("amp", "'auto' | 'bf16' | 'fp16' | 'off'",
              "Mixed precision of the update on CUDA: bf16 autocast, or fp16 autocast with a GradScaler; auto "
              "= bf16 where the GPU supports it. On CPU training is fp32 whatever this says. Attacks and every "
              "accuracy are computed in fp32.", default="auto", parse=p_str(("auto", "bf16", "fp16", "off")),
              example='"auto"'),
        Field("val_fraction", "number in (0, 0.5]",
              "Fraction of the training examples held out (seeded, stratified) to pick the best epoch and to "
              "watch for catastrophic overfitting.", default=0.1, parse=p_float(0.0, 0.5, lo_open=True),
              example="0.1"),
        Field("patience", "integer >= 0",
              "Stop after this many epochs without a better validation score (0: never stop early).", default=3,
              parse=p_int(0), example="3"),
        Field("collapse_drop", "number in (0, 1]",
              "fast: validation PGD accuracy this far below its best while training accuracy rises is a "
              "catastrophic overfitting: training stops and the best weights are kept.", default=0.2,
              parse=p_float(0.0, 1.0, lo_open=True), example="0.2"),
        Field("audit_autoattack", "true | false",
              "On image data, add AutoAttack's cheap preset to the before/after audits, so gains that only "
              "fool the training attack show (slow on CPU: about 35 s per audit of 450 digits).", default=True,
              parse=p_bool),
        Field("data", "table with the keys of [data]",
              "[harden.data]: where the training examples come from. Without it: the [data] source with split = "
              "\"train\".", subsection=DATA, example='{ source = "sklearn", name = "digits", split = "train" }'),
    ),
    post=_post,
    example='[harden]\nmethod = "pgd"\neps = 0.1\nepochs = 5\nlr = 0.002\n\n[harden.data]\nsource = "sklearn"\n'
            'name = "digits"\nsplit = "train"',
)

METRICS = {
    "best_epoch": MetricSpec("The epoch whose weights were written (0: the original model was best).", better=None),
    "epochs_run": MetricSpec("Epochs trained (fewer than `epochs` after early stopping or a collapse).", better=None),
    "val_clean_accuracy": MetricSpec("The written model's clean accuracy on the validation split.", better=HIGHER),
    "val_robust_accuracy": MetricSpec("The written model's PGD accuracy (noise: Gaussian-noise accuracy) on the "
                                      "validation split.", better=HIGHER),
}


def summarise(*_: Any) -> SuiteResult:  # pragma: no cover - command-only: `audit run` never calls it
    raise RecipeError("the harden suite runs only under `audit harden`")


SUITE = Suite("harden", SECTION.doc, SECTION, METRICS, summarise, command_only=True)
