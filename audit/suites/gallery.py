"""The report's per-example gallery: a few examples shown as images, recorded while the model is in hand.

Renderers read only the report, so what the gallery shows is recorded here, small and deterministic:

- **Adversarial examples** (robustness): up to ``MAX_ADVERSARIAL`` clean-correct examples of image data
  that broke at the smallest eps, distinct true classes first (ties: by global index), of the first norm
  swept (L∞ when it ran). For each, the clean input, the adversarial input that broke it at its smallest
  breaking eps, and the perturbation amplified to the full grey range. The adversarial input is the one
  the sweep found: the attack that broke the example at that eps (FGSM or PGD; an example broken there only
  by AutoAttack, whose random streams are keyed by its chunk, is passed over) is run again on it alone, at
  that eps, with the sweep's own seeds (PGD's random starts are keyed by master seed, stream, norm, eps,
  restart, loss and the example's global index, so the example gets exactly the starts the sweep gave it,
  whatever the batch; FGSM is deterministic). It runs in robustness's ``fill_checks`` (the model in hand,
  a check task like the others: dealt to a rank under torchrun, cached for resume), never in
  ``summarise``. The record keeps the prediction the re-run input gets; an input that does not reproduce
  the break (floating-point differences between batch shapes) is left out, never shown as if it broke.
- **Most confident errors** (performance): per true class, the ``ERRORS_PER_CLASS`` misclassified
  examples the model was most confident about (at most ``MAX_ERRORS``), with their true and predicted
  class and confidence; their inputs as images for image data, as their values for a tabular row of at
  most ``MAX_FEATURES`` inputs.

Images are stored as uint8 pixels, base64, ``{"b64", "shape": [height, width, channels]}`` (inputs scaled
from their bounds [lo, hi], or the image's own range when unbounded), about 90 bytes for an 8x8 digit: the
gallery of the digits demo adds a few kilobytes to report.json and report.html. Image data means an
input of shape (C, H, W) with C = 1 or 3, or (H, W); other data gets the confident errors without images.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

MAX_ADVERSARIAL = 4
ERRORS_PER_CLASS = 2
MAX_ERRORS = 20
MAX_FEATURES = 64  # a non-image input this small is recorded as its values (a tabular row)


def image_layout(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(height, width, channels) of an input of ``shape`` when it is an image, else None."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) >= 2:
        return shape[1], shape[2], shape[0]
    if len(shape) == 2 and min(shape) >= 2:
        return shape[0], shape[1], 1
    return None


def encode_image(x: np.ndarray, bounds: tuple[float, float] | None) -> dict[str, Any] | None:
    """One input (its model shape) as uint8 pixels scaled from ``bounds`` (or its own min..max)."""
    lay = image_layout(x.shape)
    if lay is None:
        return None
    h, w, c = lay
    arr = np.asarray(x, dtype=np.float64).reshape(c, h, w).transpose(1, 2, 0)
    lo, hi = bounds if bounds is not None else (float(arr.min()), float(arr.max()))
    span = hi - lo if hi > lo else 1.0
    px = np.clip(np.rint((arr - lo) / span * 255.0), 0, 255).astype(np.uint8)
    return {"b64": base64.b64encode(px.tobytes()).decode("ascii"), "shape": [h, w, c]}


def encode_perturbation(delta: np.ndarray) -> tuple[dict[str, Any] | None, float]:
    """The perturbation with 0 as mid-grey and the largest |delta| as black or white; the amplification."""
    m = float(np.max(np.abs(delta))) if delta.size else 0.0
    if m == 0.0:
        return encode_image(np.zeros_like(delta), (-1.0, 1.0)), 1.0
    return encode_image(delta / m, (-1.0, 1.0)), 1.0 / m


# --------------------------------------------------------------------------------------- adversarial


def adversarial_tasks(table: Any, eps_by_norm: dict[str, list[Any]]) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """One check task: the examples to show, chosen from the complete table (the worst-case column of the
    first norm): broken at the smallest eps first, one per true class before a second of any class."""
    if not eps_by_norm:
        return []
    norm = "linf" if "linf" in eps_by_norm else next(iter(eps_by_norm))
    col = f"robust:worst:{norm}:eps_broken"
    if col not in table:
        return []
    worst = np.asarray(table[col], dtype=np.float64)
    cc = np.asarray(table["pred"] == table["label"])
    cand = np.flatnonzero(cc & np.isfinite(worst) & (worst > 0))
    if not len(cand):
        return []
    index, label = np.asarray(table["index"]), np.asarray(table["label"])
    order = cand[np.lexsort((index[cand], worst[cand]))]
    chosen: list[int] = []
    seen: set[int] = set()
    for rnd in (0, 1):  # distinct classes first, then the next smallest breaks
        for p in order:
            if len(chosen) == MAX_ADVERSARIAL:
                break
            if p in chosen or (rnd == 0 and int(label[p]) in seen):
                continue
            chosen.append(int(p))
            seen.add(int(label[p]))
    pos = np.array(sorted(chosen), dtype=np.int64)
    return [(pos, {"do": "gallery", "norm": norm, "cost": 1.0 * len(pos)})]


def fill_adversarial(fc: Any, configs: list[Any], eps: list[Any], positions: np.ndarray, rows: Any,
                     task: dict[str, Any]) -> dict[str, Any]:
    """The partial result of the gallery task: per chosen example, the adversarial input re-found at its
    smallest breaking eps (see the module docstring), with its clean input and amplified perturbation."""
    import torch

    from audit.attacks.adapters import Counter, FGSMAttack
    from audit.attacks.sweep import pgd_attack_fn
    from audit.engine.precision import fp32_decisions

    norm = task["norm"]
    bounds = fc.facts.input_bounds
    names = fc.facts.class_names
    if image_layout(fc.facts.input_shape) is None:
        return {"gallery": []}
    xs = fc.data.x[positions]
    ys, ids = np.asarray(rows["label"]), np.asarray(rows["index"])
    worst = np.asarray(rows[f"robust:worst:{norm}:eps_broken"], dtype=np.float64)
    out = []
    for i in range(len(positions)):
        e = next((e for e in sorted(eps) if e.value == worst[i]), None)
        attack = next((a for a in configs if a.norm == norm and a.name in ("fgsm", "pgd")
                       and float(rows[f"robust:{a.name}:{norm}:eps_broken"][i]) == worst[i]), None)
        if e is None or attack is None:
            continue
        x1 = torch.from_numpy(np.ascontiguousarray(xs[i:i + 1])).to(fc.device)
        y1 = torch.from_numpy(ys[i:i + 1]).to(fc.device)
        if attack.name == "pgd":
            fn = pgd_attack_fn(fc.model, attack, fc.seed, bounds, Counter(), ids[i:i + 1])
            adv = fn(x1, y1, np.array([0]), e)
        else:
            atk = FGSMAttack(fc.model, bounds=bounds, counter=Counter())
            adv = atk.at(x1, atk.grad_sign(x1, y1).to(x1), e.value)
        with torch.no_grad(), fp32_decisions():
            p = torch.softmax(fc.model(adv).double(), dim=1)[0].cpu().numpy()
        pred = int(np.argmax(p))
        if pred == int(ys[i]):
            continue  # did not reproduce the break: not shown
        a_np = adv.detach().cpu().numpy()[0].astype(np.float64)
        x_np = xs[i].astype(np.float64)
        pert, amp = encode_perturbation(a_np - x_np)
        out.append({"index": int(ids[i]), "label": names[int(ys[i])], "pred": names[pred],
                    "confidence": round(float(p[pred]), 6), "attack": attack.name, "norm": norm,
                    "eps": e.label, "eps_value": float(e.value), "amplify": round(amp, 4),
                    "clean": encode_image(x_np, bounds), "adversarial": encode_image(a_np, bounds),
                    "perturbation": pert})
    return {"gallery": out}


def adversarial_table(partials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded examples from every check task's partials, smallest eps first (then by index)."""
    items = [it for p in partials for it in p.get("gallery", [])]
    return sorted(items, key=lambda it: (it["eps_value"], it["index"]))


# ------------------------------------------------------------------------------------ confident errors


def error_tasks(table: Any, plan: Any) -> list[tuple[np.ndarray, dict[str, Any]]]:  # noqa: ARG001
    """One check task: per true class, its most confident misclassified examples (ties: by index)."""
    y, pred = np.asarray(table["label"]), np.asarray(table["pred"])
    wrong = np.flatnonzero(pred != y)
    if not len(wrong):
        return []
    conf = table.probs[wrong, pred[wrong]]
    index = np.asarray(table["index"])[wrong]
    chosen: list[tuple[float, int, int]] = []
    for c in np.unique(y[wrong]):
        mine = np.flatnonzero(y[wrong] == c)
        mine = mine[np.lexsort((index[mine], -conf[mine]))][:ERRORS_PER_CLASS]
        chosen += [(-float(conf[j]), int(index[j]), int(wrong[j])) for j in mine]
    chosen = sorted(chosen)[:MAX_ERRORS]
    pos = np.array(sorted(p for _, _, p in chosen), dtype=np.int64)
    return [(pos, {"do": "gallery_errors", "cost": 1.0 * len(pos)})]


def fill_errors(fc: Any, plan: Any, positions: np.ndarray, rows: Any, task: dict[str, Any]) -> Any:  # noqa: ARG001
    """The confident errors' records (their inputs as images where the data are images). No model call:
    the table's logits are the model's; the inputs come from the data."""
    from audit.engine.table import Part

    names = fc.facts.class_names
    probs = rows.probs
    xs = fc.data.x[positions]
    out = []
    for i in range(len(positions)):
        pred, y = int(rows["pred"][i]), int(rows["label"][i])
        x = np.asarray(xs[i])
        image = encode_image(x, fc.facts.input_bounds)
        rec = {"index": int(rows["index"][i]), "y": y, "label": names[y], "pred": names[pred],
               "confidence": round(float(probs[i, pred]), 6), "image": image}
        if image is None and x.size <= MAX_FEATURES:  # tabular: the model's inputs, to read beside the error
            rec["features"] = [float(f"{v:.6g}") for v in x.reshape(-1).astype(np.float64)]
        out.append(rec)
    return Part(positions, {}, {}, {"gallery_errors": out})


def errors_table(partials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded errors: by true class (in class order), most confident first."""
    items = [it for p in partials for it in p.get("gallery_errors", [])]
    return sorted(items, key=lambda it: (it["y"], -it["confidence"], it["index"]))
