"""`audit harden`: fine-tune a model against the recipe's threat (``audit.harden.loop``), then audit the
original and the hardened model on the evaluation data and compare the two (``audit.diff``).

    --out DIR
      checkpoint.pt        resumable state after every epoch (torch.load(weights_only=True) reads it)
      model.safetensors    the best epoch's weights, loadable by the recipe's [model] factory
      history.json         settings, per-epoch history, best epoch, why training stopped
      before/              `audit run` of the original model (report.json, examples.npz, ...)
      after/               `audit run` of the hardened model
      diff.json/.html/.md  `audit diff before after`: paired verdicts, per-example flips
      report.json/.html, summary.md, junit.xml
                           the hardened model's report with a `harden` section (history, the trade-off
                           per eps, the diff's verdicts); the recipe's gates apply to it

The audits use attacks stronger than and different from the training attack: PGD with at least twice the
training steps and two restarts, the audit's own losses (cross-entropy and targeted margins, where
training used cross-entropy alone) and, on image data, AutoAttack's cheap preset; the training eps is
added to the sweep (and sigma to the Gaussian noise levels for ``noise``). Both audits use the same recipe,
so the diff pairs them example by example.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from audit.errors import AuditError, DataError, RecipeError
from audit.harden import checkpoint as ckpt

# the files of a harden run besides the report's own (moved aside by the next run, like the report)
RUN_FILES = ("model.safetensors", "history.json", "diff.json", "diff.html", "diff.md", "before", "after")


@dataclass
class HardenOptions:
    recipe: Path
    model_path: Path
    out: Path = Path("out/harden")
    method: str | None = None
    epochs: int | None = None
    lr: float | None = None
    eps: str | None = None
    seed: int | None = None
    device: str | None = None
    resume: bool = False
    quiet: bool = False
    argv: list[str] = field(default_factory=lambda: list(sys.argv))


def execute_harden(opts: HardenOptions, log: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    """Train, audit before and after, diff, write DIR. Returns (report, exit code)."""
    from audit.report.outdir import RunFolder

    # --resume keeps checkpoint.pt where it is; a fresh run moves it aside with the rest
    extra = RUN_FILES + (() if opts.resume else (ckpt.NAME,))
    with RunFolder.open(opts.out, "harden", opts.argv, {"model": opts.model_path, "recipe": opts.recipe},
                        extra_files=extra) as folder:
        return _harden(opts, folder, log)


def settings_from(h: dict[str, Any], opts: HardenOptions, seed: int, amp: str) -> Any:
    """[harden] with the flags applied, as the loop's Settings."""
    from audit.attacks.config import parse_eps, to_step_size
    from audit.harden.loop import Settings
    from audit.recipe.fields import FieldError
    from audit.suites.harden import _p_eps

    eps_raw = h["eps"]
    if opts.eps is not None:
        try:
            eps_raw = _p_eps(opts.eps)
        except FieldError as e:
            raise AuditError(f"--eps {opts.eps}: {e}") from None
    eps = parse_eps(eps_raw)
    method = opts.method or h["method"]
    if method == "fast" and h["norm"] != "linf":
        raise RecipeError("[harden] method = \"fast\" is FGSM training, Linf only: set norm = \"linf\" or use "
                          "method = \"pgd\"")
    steps = h["steps"]
    if h["step_size"] is None:
        step = 2.5 * eps.value / steps
    else:
        step = to_step_size(h["step_size"]).at(eps.value)
    epochs = opts.epochs or h["epochs"]
    if h["warmup_epochs"] and h["warmup_epochs"] >= epochs:
        raise AuditError(f"--epochs {epochs}: must exceed [harden] warmup_epochs = {h['warmup_epochs']}")
    return Settings(method=method, epochs=epochs, eps=float(eps.value), eps_label=eps.label,
                    norm=h["norm"], steps=steps, step=float(step), beta=h["beta"], sigma=h["sigma"],
                    optimizer=h["optimizer"], lr=opts.lr if opts.lr is not None else h["lr"], momentum=h["momentum"],
                    weight_decay=h["weight_decay"], schedule=h["schedule"], warmup_epochs=h["warmup_epochs"],
                    batch_size=h["batch_size"], clip_grad_norm=h["clip_grad_norm"], amp=amp,
                    patience=h["patience"], collapse_drop=h["collapse_drop"], seed=seed)


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _source_id(cfg: dict[str, Any], recipe: Any) -> tuple[Any, ...]:
    """What identifies a data source regardless of split and limit (same source: global indices comparable)."""
    path = str(recipe.resolve(cfg["path"]).resolve()) if cfg.get("path") else None
    # global indices are positions in the source before any split, so split, test_size, split_seed and
    # limit do not change what an index names
    return (cfg["source"], path, cfg.get("name"), cfg.get("callable"), cfg.get("x"), cfg.get("y"),
            json.dumps(cfg.get("kwargs") or {}, sort_keys=True))


def overlap(train: Any, evaluation: Any, same_source: bool) -> tuple[np.ndarray, np.ndarray]:
    """Global indices of the evaluation examples that are also training examples: by index (when both come
    from the same source) and by identical input bytes (any source)."""
    by_index = np.intersect1d(train.index, evaluation.index) if same_source else np.zeros(0, dtype=np.int64)

    def digests(x: np.ndarray) -> list[bytes]:
        flat = np.ascontiguousarray(x).reshape(len(x), -1)
        return [hashlib.sha1(r.tobytes()).digest() for r in flat]

    seen = set(digests(train.x))
    same_bytes = np.array([i for i, d in zip(evaluation.index, digests(evaluation.x)) if d in seen], dtype=np.int64)
    return by_index, same_bytes


def _refuse_overlap(by_index: np.ndarray, same_bytes: np.ndarray, where: str) -> None:
    if len(by_index) == 0 and len(same_bytes) == 0:
        return
    bits = []
    if len(by_index):
        bits.append(f"{len(by_index)} with the same source and global index (e.g. {', '.join(map(str, by_index[:5]))})")
    if len(same_bytes):
        bits.append(f"{len(same_bytes)} with identical input bytes (e.g. {', '.join(map(str, same_bytes[:5]))})")
    raise DataError(f"{where}: training examples are also evaluation examples ({'; '.join(bits)}): a model scored "
                    "on its own training data gets a wrong report. Train on another split ([harden.data] split = "
                    "\"train\" with [data] split = \"test\" of the same source) or on other data")


def audit_recipe(recipe: Any, s: Any, images: bool, with_autoattack: bool) -> tuple[Any, list[str]]:
    """The recipe both audits run: the user's, with attacks stronger than training's and the training threat
    in the sweep. Returns (recipe, what was changed, in words)."""
    from audit.recipe.load import validate_recipe
    from audit.suites.robustness import DEFAULT_EPS

    raw = copy.deepcopy(recipe.raw)
    changes: list[str] = []
    suites = (raw.get("run") or {}).get("suites")
    if suites is not None and "robustness" not in suites:
        raw["run"]["suites"] = list(suites) + ["robustness"]
        changes.append("added robustness to [run] suites (the audits must measure what was hardened)")
    rob = raw.get("robustness")
    if rob is None:
        rob = raw["robustness"] = {}
        changes.append("added a [robustness] table (the recipe had none)")
    if s.method != "noise":
        norms = rob.get("norm", "linf")
        norms = [norms] if isinstance(norms, str) else list(norms)
        eps = rob.get("eps")
        if s.norm not in norms:  # the sweep becomes a table by norm; the training norm joins with its eps
            old = eps if isinstance(eps, dict) else ({norms[0]: eps} if eps is not None and len(norms) == 1 else {})
            table = {n: list(old.get(n, DEFAULT_EPS[n])) for n in norms}
            table[s.norm] = [s.eps_label]
            rob["norm"] = norms + [s.norm]
            rob["eps"] = table
            for key in ("large_eps", "step_size"):  # a single value for one norm becomes that norm's entry
                if key in rob and not isinstance(rob[key], dict):
                    rob[key] = {norms[0]: rob[key]} if len(norms) == 1 else {n: rob[key] for n in norms}
            changes.append(f"added norm {s.norm} at eps {s.eps_label} (the training threat) to the sweep")
        else:
            table = dict(eps) if isinstance(eps, dict) else ({norms[0]: eps} if eps is not None else {})
            table = {n: list(table.get(n, DEFAULT_EPS[n])) for n in norms}  # every norm keeps or gets its list
            cur = table[s.norm]
            if not any(abs(_eps_value(e) - s.eps) < 1e-12 for e in cur):
                cur = sorted(cur + [s.eps_label], key=_eps_value)
                changes.append(f"added eps {s.eps_label} ({s.norm}, the training eps) to the sweep")
            table[s.norm] = cur
            rob["eps"] = table if (isinstance(eps, dict) or len(norms) > 1) else cur
        losses = list(rob.get("losses", ["ce", "targeted"]))
        if "targeted" not in losses:  # training used cross-entropy: the audit also runs a loss it did not see
            rob["losses"] = losses + ["targeted"]
            changes.append("added the targeted-margin loss to PGD (training used cross-entropy only)")
        ss = rob.get("step_size")
        if ss is not None and ss != "auto" and not (isinstance(ss, str) and "eps" in ss):
            changes.append(f"note: [robustness] step_size = {ss!r} is an absolute step, kept as written; with "
                           "fewer steps than eps / step the audit's PGD cannot cross the ball")
        attacks = list(rob.get("attacks", ["fgsm", "pgd"]))
        if "pgd" not in attacks:
            attacks.append("pgd")
            changes.append("added PGD")
        steps = int(rob.get("steps", 10))
        if steps < 2 * s.steps:
            rob["steps"] = 2 * s.steps
            changes.append(f"PGD steps {steps} -> {2 * s.steps} (twice the training attack's {s.steps})")
        restarts = int(rob.get("restarts", 1))
        if restarts < 2:
            rob["restarts"] = 2
            rob["random_start"] = True
            changes.append(f"PGD restarts {restarts} -> 2")
        if images and with_autoattack and "autoattack" not in attacks and s.norm in ("linf", "l2"):
            attacks.append("autoattack")
            rob.setdefault("autoattack", "cheap")
            changes.append("added AutoAttack (cheap preset: APGD-CE, APGD-T, Square)")
        rob["attacks"] = attacks
    else:
        noise = dict(rob.get("noise", {}))
        levels = list(noise.get("gaussian", []))
        if not any(abs(_eps_value(v) - s.sigma) < 1e-12 for v in levels):
            noise["gaussian"] = sorted(levels + [s.sigma], key=_eps_value)
            changes.append(f"added Gaussian noise at sigma = {s.sigma:g} (the training sigma)")
        rob["noise"] = noise
        rob.setdefault("attacks", ["fgsm", "pgd"])
    try:
        out = validate_recipe(raw, recipe.path)
    except RecipeError as e:
        raise RecipeError(f"the recipe for the before/after audits (the recipe's, with {'; '.join(changes) or 'no change'}) "
                          f"is invalid: {e}") from None
    return out, changes


def _eps_value(v: Any) -> float:
    from audit.attacks.config import parse_eps

    return float(parse_eps(v).value)


def _harden(opts: HardenOptions, folder: Any, log: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    import re

    import torch

    from audit.engine.wrapper import WrappedModel, resolve_device
    from audit.harden.loop import Split, Trainer
    from audit.loading.data import load_data, split_indices
    from audit.loading.model import load_checkpoint
    from audit.recipe import load_recipe
    from audit.runner import make_progress
    from audit.seeding import stream_key

    if opts.device is not None and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", opts.device):
        raise AuditError(f"--device {opts.device}: expected auto, cpu, cuda or cuda:N")
    recipe = load_recipe(opts.recipe)
    h = recipe.section("harden")
    run_cfg = recipe.section("run")
    seed = opts.seed if opts.seed is not None else run_cfg["seed"]
    device = resolve_device(opts.device or run_cfg["device"],
                            None if opts.device else f"{recipe.path}: [run] device = {run_cfg['device']!r}")
    amp = "off"
    if device.type == "cuda":
        amp = h["amp"] if h["amp"] != "auto" else ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    s = settings_from(h, opts, seed, amp)
    notes: list[str] = []
    if device.type != "cuda" and h["amp"] in ("bf16", "fp16"):
        notes.append(f"[harden] amp = {h['amp']!r} applies on CUDA only; this run trained in fp32 on {device}")
    model_cfg = recipe.section("model")

    # ---- model and data, checked before any training
    loaded = load_checkpoint(opts.model_path, model_cfg, recipe.base_dir, recipe.path, trust=False)
    if loaded.format not in ("state_dict", "training_checkpoint", "safetensors"):
        raise AuditError(f"{opts.model_path}: audit harden fine-tunes the weights of the recipe's [model] factory; "
                         f"this file is a {loaded.format}. Give it the weights (a state_dict or safetensors file)")
    evaluation = load_data(recipe)
    train_cfg = h["data"] if h["data"] is not None else {**recipe.section("data"), "split": "train"}
    if h["data"] is None and recipe.section("data")["limit"] is not None:
        train_cfg["limit"] = None  # [data] limit limits the evaluation, not the training examples
    train_recipe = replace(recipe, sections={**recipe.sections, "data": train_cfg})
    try:
        train_data = load_data(train_recipe)
    except DataError as e:
        where = "[harden.data]" if h["data"] is not None else "the training split of [data] (split = \"train\")"
        raise DataError(f"{where}: {e}") from None
    same = _source_id(train_cfg, recipe) == _source_id(recipe.section("data"), recipe)
    by_index, same_bytes = overlap(train_data, evaluation, same)
    _refuse_overlap(by_index, same_bytes, f"{recipe.path}: " + ("[harden.data]" if h["data"] is not None else
                                                               "[data] with split = \"train\" (no [harden.data])"))
    if train_data.meta.get("input_shape") != evaluation.meta.get("input_shape"):
        raise DataError(f"{recipe.path}: the training examples have shape {train_data.meta.get('input_shape')}, the "
                        f"evaluation examples {evaluation.meta.get('input_shape')}")
    val_pos = split_indices(train_data.y, "test", h["val_fraction"], stream_key(seed, "harden", "val") % (2 ** 31))
    mask = np.zeros(len(train_data.y), dtype=bool)
    mask[val_pos] = True
    if mask.all() or not mask.any():
        raise DataError(f"{recipe.path}: [harden] val_fraction = {h['val_fraction']:g} leaves no training or no "
                        f"validation example of {len(train_data.y)}")

    # the audits' recipe, built and validated now: a recipe that cannot be audited fails before any training
    images = len(evaluation.x.shape) == 4 and model_cfg["input_bounds"] is not None
    arecipe, changes = audit_recipe(recipe, s, images, h["audit_autoattack"])
    # the reports record what ran: the flags' values, not the recipe's (--method noise must not read as pgd)
    arecipe.sections["harden"] = {**arecipe.sections["harden"], "method": s.method, "epochs": s.epochs, "lr": s.lr,
                                  "eps": s.eps_label}
    if s.method == "noise" and opts.eps is not None:
        notes.append(f"--eps {opts.eps} is not used by method noise (its perturbation is sigma = {s.sigma:g})")

    # ---- resume or start
    import inspect

    try:
        class_file = inspect.getsourcefile(type(loaded.module))
        class_sha = hashlib.sha256(Path(class_file).read_bytes()).hexdigest() if class_file else None
    except (TypeError, OSError):
        class_sha = None
    # what the weights depend on; a checkpoint of any other run is refused (the evaluation data, gates and
    # audit settings are not in it: they do not change training)
    fingerprint = {"settings": s.to_json(), "model": loaded.sha256, "model_class": class_sha,
                   "model_section": _sha(model_cfg), "training_data": train_data.meta["sha256"], "seed": seed,
                   "validation": _sha(train_data.index[mask].tolist()), "val_fraction": h["val_fraction"]}
    path = opts.out / ckpt.NAME
    resume_state = None
    if opts.resume:
        if path.is_file():
            resume_state = ckpt.load(path)
            diff = ckpt.mismatch(resume_state["fingerprint"], fingerprint)
            if diff:
                raise AuditError(f"--resume: {path} was made by another harden run ({'; '.join(diff)}); run "
                                 "without --resume to start over, or with the recipe, model and flags that made it")
        else:
            log(f"harden: --resume: no {ckpt.NAME} in {opts.out} yet; starting from the first epoch")

    net = loaded.module
    trainable = [p.requires_grad for p in net.parameters()]  # what the factory left trainable (before wrapping)
    if not any(trainable):
        trainable = [True] * len(trainable)
    wrapped = WrappedModel(net, model_cfg["mean"], model_cfg["std"], model_cfg["input_bounds"],
                           model_cfg["num_classes"]).to(device)
    params = [p for p, t in zip(net.parameters(), trainable) if t]
    for p in params:
        p.requires_grad_(True)
    if len(params) < len(trainable):
        notes.append(f"{len(trainable) - len(params)} of {len(trainable)} parameter tensors were frozen by the model's "
                     "factory (requires_grad False) and stayed frozen")
    bounds = wrapped.bounds

    def forward(x: torch.Tensor) -> torch.Tensor:
        return net(wrapped.normalise(x))

    def split(m: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(train_data.x[m])).to(device),
                     torch.from_numpy(train_data.y[m]).to(device), train_data.index[m])

    trainer = Trainer(net, forward, s, split(~mask), split(mask), device, bounds, fingerprint, path,
                      progress=make_progress(opts.quiet), log=(lambda _: None) if opts.quiet else log, params=params)
    outcome = trainer.run(resume_state)
    outcome.notes.extend(notes)
    if outcome.best_epoch == 0:
        outcome.notes.append("no epoch beat the original model on the validation split: model.safetensors holds the "
                             "original weights")

    # ---- the hardened weights and the history
    from safetensors.torch import save_file

    tmp = opts.out / ".model.safetensors.partial"
    save_file({k: v.contiguous() for k, v in outcome.best_state.items()}, str(tmp),
              metadata={"audit.harden": json.dumps({"method": s.method, "epoch": outcome.best_epoch})})
    mask_bits = os.umask(0)
    os.umask(mask_bits)
    os.chmod(tmp, 0o666 & ~mask_bits)  # safetensors writes 0600; the other outputs follow the umask
    os.replace(tmp, opts.out / "model.safetensors")
    history = {"settings": s.to_json(), "best_epoch": outcome.best_epoch,
               "best_val_robust_accuracy": outcome.best_score[0], "best_val_clean_accuracy": outcome.best_score[1],
               "stopped": outcome.stopped, "resumed_after_epoch": outcome.resumed_from, "epochs_run": outcome.epochs_run,
               "training_examples": int((~mask).sum()), "validation_examples": int(mask.sum()),
               "training_data": {k: train_data.meta.get(k) for k in ("source", "dataset", "path", "split", "n", "sha256")},
               "history": outcome.history, "notes": outcome.notes}
    from audit.report.outdir import write_text

    write_text(opts.out / ".history.json.partial", json.dumps(history, indent=1, sort_keys=True) + "\n")
    os.replace(opts.out / ".history.json.partial", opts.out / "history.json")

    # ---- the before/after audits and their diff
    from audit.runner import RunOptions, execute

    reports = {}
    for name, model_path in (("before", opts.model_path), ("after", opts.out / "model.safetensors")):
        if not opts.quiet:
            log(f"harden: auditing the {'original' if name == 'before' else 'hardened'} model -> {opts.out / name}")
        rep, _ = execute(RunOptions(recipe=opts.recipe, recipe_obj=arecipe, model_path=Path(model_path),
                                    out=opts.out / name, seed=seed, device=opts.device, quiet=opts.quiet,
                                    cache=False, argv=opts.argv))
        reports[name] = rep
    from audit.diff import compare_reports, write_diff

    diff = compare_reports(opts.out / "before", opts.out / "after", seed=seed)
    write_diff(diff, opts.out)

    report = final_report(reports["after"], reports["before"], diff, history, changes, recipe, s)
    # the hardened model's per-example table beside its report (under this run's id), so that
    # `audit diff DIR/before DIR` pairs like `audit diff DIR/before DIR/after`
    from audit.engine.table import ExampleTable

    report = folder.write(report, ExampleTable.load(opts.out / "after" / "examples.npz"))
    return report, report["exit_code"]


def final_report(after: dict[str, Any], before: dict[str, Any], diff: dict[str, Any], history: dict[str, Any],
                 changes: list[str], recipe: Any, s: Any) -> dict[str, Any]:
    """The hardened model's report with the `harden` section and its metrics, re-gated."""
    from audit.report.build import regate

    report = copy.deepcopy(after)
    for k in ("run_id", "run_status"):
        report.pop(k, None)
    tradeoff = tradeoff_rows(diff)
    report["suites"]["harden"] = {
        "config": {**s.to_json(), "training_examples": history["training_examples"],
                   "validation_examples": history["validation_examples"], "training_data": history["training_data"]},
        "tables": {"history": history["history"], "best_epoch": history["best_epoch"], "stopped": history["stopped"],
                   "resumed_after_epoch": history["resumed_after_epoch"], "audit_changes": changes,
                   "tradeoff": tradeoff, "noise_tradeoff": noise_rows(diff), "clean": _clean_row(diff), "diff": {"paired": diff.get("paired"), "unpaired_reason": diff.get("unpaired_reason"),
                                                  "counts": diff.get("counts"), "flips": len(diff.get("flips", []))},
                   "before": {"verdict": before.get("verdict"), "exit_code": before.get("exit_code")}},
        "notes": history["notes"] + ([history["stopped"]] if history["stopped"] else []),
        "curves": {},
    }
    esc = {name: [c["message"] for c in rep.get("checks", []) if c["id"] == "attack_escalated"]
           for name, rep in (("original", before), ("hardened", after))}
    if bool(esc["original"]) != bool(esc["hardened"]):
        which = "hardened" if esc["hardened"] else "original"
        report["suites"]["harden"]["notes"].append(
            f"The {which} model's audit escalated its attack (its PGD had not converged; see attack_escalated in "
            f"{'after' if which == 'hardened' else 'before'}/report.json) and the other's did not: the two were "
            f"measured with different PGD budgets, so the paired robust-accuracy changes are "
            f"{'conservative (the hardened model faced the stronger attack)' if which == 'hardened' else 'optimistic'}.")
    best = next(r for r in history["history"] if r["epoch"] == history["best_epoch"])
    n_val = history["validation_examples"]
    report["metrics"] = [m for m in report["metrics"] if m["suite"] != "harden"] + [
        {"suite": "harden", "name": "best_epoch", "params": {}, "value": history["best_epoch"], "ci_low": None,
         "ci_high": None, "n": None},
        {"suite": "harden", "name": "epochs_run", "params": {}, "value": history["epochs_run"], "ci_low": None,
         "ci_high": None, "n": None},
        {"suite": "harden", "name": "val_clean_accuracy", "params": {}, "value": best["val_clean_accuracy"],
         "ci_low": None, "ci_high": None, "n": n_val},
        {"suite": "harden", "name": "val_robust_accuracy", "params": {}, "value": best["val_robust_accuracy"],
         "ci_low": None, "ci_high": None, "n": n_val},
    ]
    report["suites_excused"] = [x for x in report.get("suites_excused", []) if x != "harden"]
    report["suites_run"] = ["harden"] + [x for x in report.get("suites_run", []) if x != "harden"]
    report["provenance"] = dict(report["provenance"], command=list(sys.argv))
    report["harden"] = {"before": str(Path(diff["base"]["path"])), "after": str(Path(diff["new"]["path"]))}
    return regate(report, recipe.gates, recipe.section("validity")["downgrade"])


def tradeoff_rows(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """Per norm and eps: robust accuracy (worst case over attacks) before and after, next to the clean
    accuracy lost, from the diff's paired rows."""
    rows = []
    clean = next((m for m in diff["metrics"] if m["suite"] == "robustness" and m["name"] == "clean_accuracy"
                  and not m["params"]), None)
    for m in diff["metrics"]:
        # the worst case over the attacks: the record without attack (and without class) params
        if m["suite"] == "robustness" and m["name"] == "robust_accuracy" and set(m["params"]) == {"norm", "eps"}:
            rows.append({"norm": m["params"].get("norm"), "eps": m["params"].get("eps"),
                         "eps_value": _eps_value(m["params"]["eps"]), "before": m["base"],
                         "after": m["new"], "gain": m["delta"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                         "verdict": m["verdict"],
                         "clean_before": clean["base"] if clean else None, "clean_after": clean["new"] if clean else None,
                         "clean_lost": -clean["delta"] if clean and clean["delta"] is not None else None})
    return rows


def _clean_row(diff: dict[str, Any]) -> dict[str, Any] | None:
    """Clean accuracy before and after, with the diff's test and verdict (the main cost of hardening)."""
    for m in diff["metrics"]:
        if m["suite"] == "performance" and m["name"] == "accuracy" and not m["params"]:
            return {k: m.get(k) for k in ("base", "new", "delta", "ci_low", "ci_high", "p_value", "test", "verdict")}
    return None


def noise_rows(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """Per noise kind and level: accuracy under noise before and after (the diff's rows without class or
    group params)."""
    rows = []
    for m in diff["metrics"]:
        if m["suite"] == "robustness" and m["name"] == "noise_accuracy" and set(m["params"]) == {"noise", "level"}:
            rows.append({"noise": m["params"]["noise"], "level": m["params"]["level"], "before": m["base"],
                         "after": m["new"], "gain": m["delta"], "ci_low": m["ci_low"], "ci_high": m["ci_high"],
                         "verdict": m["verdict"]})
    return sorted(rows, key=lambda r: (r["noise"], _eps_value(r["level"])))
