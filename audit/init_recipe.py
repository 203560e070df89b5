"""`audit init`: a commented recipe written from what the model file and the data say.

What is read, not guessed: the checkpoint's format (``audit.loading.model``, the same safe loading as
`audit run`), the number of classes (the width of the model's output on the data; without data, the rows
of the last 2-D weight), the input shape and range (from the data), the CSV's columns and categories.
What is guessed is marked ``# guessed: ...`` in the file: input bounds, normalisation (tried on the data:
the candidate with the best accuracy), which CSV columns are features (the width that fits the model's
first layer), suite settings and the example gates' thresholds.

Before the file is written it is loaded and checked as `audit run` checks a recipe (the recipe, the data,
every suite's section against the data), so the recipe runs as written.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import AuditError, DataError, RecipeError

LABEL_NAMES = ("label", "labels", "target", "y", "class")


@dataclass
class InitOptions:
    model_path: Path
    out: Path = Path("recipe.toml")
    data: str | None = None  # a .npz or .csv file, or sklearn:NAME
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    label: str | None = None
    features: list[str] | None = None
    sensitive: list[str] = field(default_factory=list)
    x_name: str | None = None
    y_name: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    limit: int | None = None
    trust_checkpoint: bool = False
    force: bool = False


@dataclass
class _Lines:
    """TOML being written: lines with their comments, by section."""

    lines: list[str] = field(default_factory=list)

    def section(self, name: str, comment: str = "", array: bool = False) -> None:
        head = f"[[{name}]]" if array else f"[{name}]"
        self.lines.append("")
        self.lines.append(head + (f"  # {comment}" if comment else ""))

    def key(self, key: str, value: Any, comment: str = "", guessed: str = "", commented: bool = False) -> None:
        text = f"{key} = {toml_value(value)}"
        note = f"guessed: {guessed}" if guessed else comment
        if guessed and comment:
            note = f"guessed: {guessed} ({comment})"
        line = ("# " if commented else "") + text
        self.lines.append(f"{line:<40}  # {note}" if note else line)

    def comment(self, text: str) -> None:
        self.lines.append(f"# {text}")

    def text(self) -> str:
        return "\n".join(self.lines).lstrip("\n") + "\n"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(float(f"{v:.6g}"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v).__name__)


def _toml_key(k: str) -> str:
    import re

    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def init_recipe(opts: InitOptions) -> tuple[Path, list[str]]:
    """Write the recipe; returns its path and the one-line notes of what was guessed (for stderr)."""
    out = opts.out
    if out.exists() and not opts.force:
        raise AuditError(f"--out {out}: exists; pass --force to overwrite it, or choose another file")
    if out.exists() and not out.is_file():
        raise AuditError(f"--out {out}: exists and is not a file; choose a file name for the recipe")
    if not out.parent.is_dir():
        raise AuditError(f"--out {out}: folder {out.parent} does not exist")
    from audit.runner import import_torch

    import_torch()
    loaded, factory_rel = _load_model(opts)
    weight_rows, first_in = _layer_widths(loaded.module)
    base = out.parent.resolve()
    data_raw, data_notes = _data_section(opts, base, first_in)
    x, y = _load(data_raw, out, opts) if data_raw is not None else (None, None)
    notes: list[str] = list(data_notes)
    width = _output_width(loaded.module, x, opts) if x is not None else None
    k, k_note = _classes(opts, weight_rows, width, y)


    lines = _Lines()
    lines.comment(f"Recipe written by `audit init {opts.model_path}`: check every `# guessed:` line, then")
    lines.comment(f"    audit run {opts.model_path} --recipe {out}")
    lines.comment("Every key is documented in docs/recipe.md.")

    lines.section("model")
    fmt = loaded.format
    if factory_rel is not None:
        lines.key("factory", factory_rel, f"builds the architecture the {fmt} weights load into")
        if opts.kwargs:
            lines.key("kwargs", opts.kwargs)
    else:
        lines.comment(f"the checkpoint is {fmt}: it carries its own architecture (no factory)")
    lines.key("num_classes", k, k_note)
    bounds, b_note = _bounds(x, data_raw)
    if bounds is not None:
        lines.key("input_bounds", bounds, "attacks and noise stay inside", guessed=b_note)
    else:
        lines.key("input_bounds", [0.0, 1.0], f"not set: {b_note}", commented=True)
    if x is not None:
        lines.key("input_shape", list(x.shape[1:]), "one example as the model takes it, from the data")
    mean, std, n_note = _normalisation(loaded.module, x, y, bounds, opts)
    if mean is not None:
        lines.key("mean", mean, "normalisation inside the wrapped model: (x - mean) / std",
                  guessed=n_note if opts.mean is None else "")
        lines.key("std", std, "", guessed="" if opts.mean is not None else "with mean")
    else:
        lines.key("mean", [0.5], "normalisation inside the wrapped model, if the network expects it", commented=True)
        lines.key("std", [0.5], n_note or "not tried: set both if the network expects normalised inputs",
                  commented=True)
    if n_note:
        notes.append(n_note)

    lines.section("data")
    if data_raw is None:
        lines.lines[-1] = "# [data]"  # to fill in: a [data] table without a source would not load
        lines.comment("no --data given: describe the evaluation data (npz, csv, sklearn or python), e.g.")
        lines.key("source", "npz", commented=True)
        lines.key("path", "test.npz", commented=True)
    else:
        for key, value in data_raw.items():
            if key == "categorical":
                continue
            lines.key(key, value, *_data_comment(key, data_raw))
        if data_raw.get("categorical"):
            lines.section("data.categorical",
                          "one-hot columns; guessed: categories sorted as in this file: pin them in training's order")
            for col, cats in data_raw["categorical"].items():
                lines.key(col, cats)

    _run_section(lines)
    suites_written = _suite_sections(lines, k, bounds, x, data_raw, opts)
    _gates(lines, k, suites_written, opts)
    lines.section("validity", "checks of the evaluation itself; downgrade one only knowingly")
    lines.key("downgrade", [], "e.g. [\"inference_deterministic\"]")

    text = lines.text()
    _check_runs(text, out, loaded, opts)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AuditError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return out, [n for n in notes if n]


# ------------------------------------------------------------------------------------------------ model


def _load_model(opts: InitOptions) -> tuple[Any, str | None]:
    from audit.loading.files import require_file
    from audit.loading.model import detect_format, load_checkpoint

    path = opts.model_path
    from audit.errors import CheckpointError

    require_file(path, "checkpoint file", CheckpointError)
    fmt = detect_format(path)
    cfg = {"factory": opts.factory, "kwargs": opts.kwargs}
    if opts.factory is not None:
        from audit.recipe.fields import FieldError, p_factory

        try:
            p_factory(opts.factory)
        except FieldError as e:
            raise RecipeError(f"--factory {opts.factory!r}: {e}") from None
    try:
        loaded = load_checkpoint(path, cfg, Path.cwd(), Path("--factory"), trust=opts.trust_checkpoint)
    except RecipeError as e:
        if opts.factory is None and "holds weights only" in str(e):
            raise RecipeError(f"{path}: holds weights only ({fmt}): name the architecture they load into with "
                              "--factory file.py:Class (or module:callable), and its arguments with --kwarg NAME=VALUE"
                              ) from None
        raise
    if opts.factory is None:
        return loaded, None
    target, _, attr = opts.factory.rpartition(":")
    if target.endswith(".py"):
        target = os.path.relpath((Path.cwd() / target).resolve(), opts.out.parent.resolve())
    return loaded, f"{target}:{attr}"


def _layer_widths(module: Any) -> tuple[int | None, int | None]:
    """(rows of the last 2-D weight, columns of the first one), in the module's own order: the output and
    input widths of an MLP-like network; None when there is no 2-D weight."""
    weights = [t for name, t in module.state_dict().items() if name.endswith("weight") and t.dim() == 2]
    if not weights:
        return None, None
    return int(weights[-1].shape[0]), int(weights[0].shape[1])


def _output_width(module: Any, x: np.ndarray, opts: InitOptions) -> int | None:
    import torch

    from audit.engine.wrapper import WrappedModel

    wrapped = WrappedModel(module, opts.mean, opts.std)
    try:
        with torch.inference_mode():
            out = wrapped(torch.from_numpy(np.ascontiguousarray(x[:2])))
    except Exception as e:  # noqa: BLE001 - a model that rejects the data: say so in one line
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DataError(f"the model rejects the data's examples of shape {tuple(x.shape[1:])}: {type(e).__name__}: "
                        f"{msg}; check --data (and --features for a CSV)") from None
    finally:
        wrapped.restore()
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _classes(opts: InitOptions, weight_rows: int | None, width: int | None, y: np.ndarray | None) -> tuple[int, str]:
    if opts.num_classes is not None:
        k, note = opts.num_classes, "given with --num-classes"
        if width is not None and width != k:
            raise AuditError(f"--num-classes {k}: the model outputs {width} logits per example")
    elif width is not None:
        k, note = width, f"the width of the model's output on the data ({width} logits)"
    elif weight_rows is not None:
        k, note = weight_rows, f"rows of the last layer's weight ({weight_rows}); not checked on data (no --data)"
    else:
        raise AuditError(f"{opts.model_path}: cannot tell the number of classes (no 2-D weight and no --data to run "
                         "the model on); pass --num-classes K")
    if k < 2:
        raise AuditError(f"{opts.model_path}: the model outputs {k} logit per example; audit needs a classifier "
                         "with one logit per class (>= 2); pass --num-classes if this is wrong")
    if y is not None and len(y) and int(y.max()) >= k:
        raise DataError(f"the data's labels go up to {int(y.max())}, but the model outputs {k} logits per example "
                        "(labels must be 0..num_classes-1)")
    return k, note


# ------------------------------------------------------------------------------------------------- data


def _data_section(opts: InitOptions, base: Path, first_in: int | None
                  ) -> tuple[dict[str, Any] | None, list[str]]:
    if opts.data is None:
        if opts.sensitive or opts.label or opts.features:
            raise AuditError("--sensitive, --label and --features describe the data: give --data too")
        return None, ["no --data: [data] left for you to fill in (and the class count read from the weights)"]
    d = opts.data
    notes: list[str] = []
    if d.startswith("sklearn:"):
        from audit.recipe.fields import suggest
        from audit.recipe.sections import SKLEARN_DATASETS

        name = d.split(":", 1)[1]
        if name not in SKLEARN_DATASETS:
            raise AuditError(f"--data {d}: unknown scikit-learn dataset {suggest(name, list(SKLEARN_DATASETS))}")
        if opts.sensitive:
            raise AuditError(f"--sensitive: the scikit-learn dataset {name!r} has no sensitive attributes")
        raw: dict[str, Any] = {"source": "sklearn", "name": name, "split": "test"}
        notes.append("[data] split = \"test\" (the held-out part of audit's seeded split): the model must have been "
                     "trained on split = \"train\" of the same split")
    else:
        path = Path(d)
        from audit.loading.files import require_file

        require_file(path, "data file", DataError)
        rel = os.path.relpath(path.resolve(), base)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            raw = _npz_section(path, rel, opts)
        elif suffix == ".csv":
            raw, csv_notes = _csv_section(path, rel, opts, first_in)
            notes += csv_notes
        else:
            raise AuditError(f"--data {d}: expected a .npz or .csv file, or sklearn:NAME (digits, breast_cancer, iris, "
                             "wine)")
    if opts.limit is not None:
        raw["limit"] = opts.limit
    return raw, notes


def _npz_section(path: Path, rel: str, opts: InitOptions) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: (z[k].shape, z[k].dtype) for k in z.files}
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: not a readable .npz file: {type(e).__name__}: {e}") from None
    from audit.recipe.fields import suggest

    def pick(given: str | None, default: str, test: Any, what: str) -> str:
        if given is not None:
            if given not in arrays:
                raise DataError(f"{path}: no array {given!r} {suggest(given, list(arrays))}")
            return given
        if default in arrays:
            return default
        cands = [k for k, (shape, dtype) in arrays.items() if test(shape, dtype) and k not in opts.sensitive]
        if len(cands) != 1:
            raise DataError(f"{path}: cannot tell which array holds the {what} (arrays: {', '.join(arrays)}); name it "
                            f"with --{'x' if what == 'inputs' else 'y'} NAME")
        return cands[0]

    x = pick(opts.x_name, "x", lambda s, t: len(s) >= 2, "inputs")
    y = pick(opts.y_name, "y", lambda s, t: len(s) == 1 and (np.issubdtype(t, np.integer)), "labels")
    raw: dict[str, Any] = {"source": "npz", "path": rel, "x": x, "y": y}
    for s in opts.sensitive:
        if s not in arrays:
            raise DataError(f"--sensitive {s}: {path} has no array {s!r} {suggest(s, list(arrays))}")
    if opts.sensitive:
        raw["sensitive"] = {s: s for s in opts.sensitive}
        bins = _sensitive_bins({s: _npz_array(path, s) for s in opts.sensitive})
        if bins:
            raw["sensitive_bins"] = bins
    return raw


def _npz_array(path: Path, name: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as z:
        return z[name]


def _csv_section(path: Path, rel: str, opts: InitOptions, first_in: int | None
                 ) -> tuple[dict[str, Any], list[str]]:
    import pandas as pd

    from audit.loading.data import _scan_csv
    from audit.recipe.fields import suggest

    _scan_csv(path)
    df = pd.read_csv(path)
    cols = [str(c) for c in df.columns]
    notes: list[str] = []
    if opts.label is not None:
        if opts.label not in cols:
            raise DataError(f"--label {opts.label}: {path} has no column {opts.label!r} {suggest(opts.label, cols)}")
        label = opts.label
    else:
        found = [c for c in cols if c.lower() in LABEL_NAMES]
        if len(found) != 1:
            raise DataError(f"{path}: name the label column with --label COLUMN (columns: {', '.join(cols)})")
        label = found[0]
        notes.append(f"[data] label = {label!r}, by its name")
    for s in opts.sensitive:
        if s not in cols:
            raise DataError(f"--sensitive {s}: {path} has no column {s!r} {suggest(s, cols)}")
        if s == label:
            raise DataError(f"--sensitive {s}: that is the label column")

    def numeric(c: str) -> bool:
        return bool(pd.api.types.is_numeric_dtype(df[c]))

    def width(features: list[str]) -> int:
        return sum(1 if numeric(c) else int(df[c].astype(str).nunique()) for c in features)

    if opts.features is not None:
        for c in opts.features:
            if c not in cols:
                raise DataError(f"--features: {path} has no column {c!r} {suggest(c, cols)}")
        features = list(opts.features)
    else:
        base = [c for c in cols if c != label and c not in opts.sensitive]
        features = base
        if first_in is not None and width(base) != first_in:
            # a sensitive attribute may also be an input (age in a credit model): the fewest that fit the model
            fits = [sub for r in range(1, len(opts.sensitive) + 1) for sub in itertools.combinations(opts.sensitive, r)
                    if width(base + list(sub)) == first_in]
            if not fits:
                raise DataError(f"{path}: the model's first layer takes {first_in} inputs, but the columns other than "
                                f"the label and the sensitive ones encode to {width(base)} (one-hot columns count one "
                                "input per category); list the model's inputs, in training order, with --features")
            features = [c for c in cols if c in base or c in fits[0]]
            notes.append(f"sensitive column(s) {', '.join(fits[0])} are also model inputs (so the inputs number "
                         f"{first_in}, as the model's first layer takes)")
        notes.append("[data] features are in the file's column order: the model needs the order it was trained on "
                     "(--features)")
    raw: dict[str, Any] = {"source": "csv", "path": rel, "features": features, "label": label}
    if not numeric(label):
        raw["label_values"] = sorted(df[label].astype(str).unique())
        notes.append(f"[data] label_values {raw['label_values']}: sorted; class i is the i-th value")
    if opts.sensitive:
        raw["sensitive"] = list(opts.sensitive)
        bins = _sensitive_bins({s: df[s].to_numpy() for s in opts.sensitive})
        if bins:
            raw["sensitive_bins"] = bins
    cats = {c: sorted(df[c].astype(str).unique()) for c in features if not numeric(c)}
    if cats:
        raw["categorical"] = cats
    return raw, notes


def _sensitive_bins(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """A cut at the median for numeric attributes with many values (age in years would make dozens of tiny
    groups whose gates are all inconclusive)."""
    out = {}
    for name, v in values.items():
        if np.issubdtype(v.dtype, np.number) and len(np.unique(v)) > 10:
            med = float(np.median(v))
            out[name] = [float(round(med)) if abs(med) >= 10 else float(f"{med:.3g}")]
    return out


def _data_comment(key: str, raw: dict[str, Any]) -> tuple[str, str]:
    comment = {"path": "relative to this recipe", "split": "", "limit": "only the first N examples",
               "features": "the model's inputs, in order", "sensitive": "kept aside for the fairness suite",
               "x": "the inputs", "y": "labels 0..num_classes-1"}.get(key, "")
    guessed = {"split": "the held-out part; train on split = \"train\"",
               "features": "the file's order unless --features gave it" if key == "features" else "",
               "sensitive_bins": "a cut at the median", "label_values": "sorted values, class i the i-th"}.get(key, "")
    return comment, guessed


def _load(data_raw: dict[str, Any], out: Path, opts: InitOptions) -> tuple[np.ndarray, np.ndarray]:
    """The data as `audit run` will read it (the same loader and validation), with a provisional class count."""
    from audit.loading.data import load_data
    from audit.recipe.load import validate_recipe

    # any label is accepted here: the labels are checked against the model's output width afterwards
    raw: dict[str, Any] = {"model": {"num_classes": 2 ** 31 - 1}, "data": dict(data_raw)}
    if opts.mean is not None:
        raw["model"].update(mean=opts.mean, std=opts.std)
    recipe = validate_recipe(raw, out)
    data = load_data(recipe)
    return data.x, data.y


# ------------------------------------------------------------------------------------------- guesses


def _bounds(x: np.ndarray | None, data_raw: dict[str, Any] | None) -> tuple[list[float] | None, str]:
    if x is None:
        return None, "no data to read the range from"
    lo, hi = float(x.min()), float(x.max())
    if data_raw is not None and data_raw.get("source") == "csv":
        return None, f"tabular features in their own units (range {lo:g} to {hi:g})"
    if lo >= 0 and hi <= 1:
        return [0.0, 1.0], f"the data lie in [{lo:g}, {hi:g}]"
    if lo >= 0 and hi <= 255 and np.all(x == np.round(x)):
        return [0.0, 255.0], f"integer data in [{lo:g}, {hi:g}]"
    if x.ndim >= 3:
        return [lo, hi], "the data's own range"
    return None, f"features in their own units (range {lo:g} to {hi:g})"


def _normalisation(module: Any, x: np.ndarray | None, y: np.ndarray | None, bounds: list[float] | None,
                   opts: InitOptions) -> tuple[list[float] | None, list[float] | None, str]:
    """Given --mean/--std: those. Else each candidate normalisation is tried on (up to) 512 examples and the
    most accurate kept: none, the data's own mean/std, and (x - 0.5) / 0.5 for inputs in [0, 1]. A model that
    normalises inside itself keeps 'none'; one trained on normalised inputs is near chance without it."""
    if opts.mean is not None:
        return opts.mean, opts.std, ""
    if x is None or y is None:
        return None, None, ""
    import torch

    from audit.engine.wrapper import WrappedModel

    xs, ys = x[:512], y[:512]
    m, s = float(xs.mean()), float(xs.std()) or 1.0  # noqa: F841 - used by the image candidates below
    cands: list[tuple[str, list[float] | None, list[float] | None]] = [("none", None, None)]
    if x.ndim < 3:
        # tabular: one mean and std for every feature is no one's normalisation (a model standardises per
        # feature, usually inside itself, as examples/credit does)
        return None, None, ""
    cands.append((f"(x - {m:.3g}) / {s:.3g}, the data's mean and std", [float(f"{m:.4g}")], [float(f"{s:.4g}")]))
    if bounds == [0.0, 1.0]:
        cands.append(("(x - 0.5) / 0.5", [0.5], [0.5]))
    scores = []
    for _name, mean, std in cands:
        wrapped = WrappedModel(module, mean, std)
        try:
            with torch.inference_mode():
                pred = wrapped(torch.from_numpy(np.ascontiguousarray(xs))).argmax(1).numpy()
        finally:
            wrapped.restore()
        scores.append(float((pred == ys).mean()))
    best = int(np.argmax(scores))
    if best == 0 or scores[best] < scores[0] + 0.05:
        return None, None, (f"no normalisation: the model is as accurate on the raw inputs ({scores[0]:.2f}) as with "
                            f"{cands[1][0]} ({scores[1]:.2f})")
    return cands[best][1], cands[best][2], (f"accuracy {scores[best]:.2f} with {cands[best][0]}, {scores[0]:.2f} on raw "
                                            "inputs: the network expects normalised inputs")


# ------------------------------------------------------------------------------------------ sections


def _run_section(lines: _Lines) -> None:
    lines.section("run")
    lines.key("seed", 0, "master seed of every random stream")
    lines.key("device", "auto", "CUDA when present")
    lines.key("batch_size", 256)


def _suite_sections(lines: _Lines, k: int, bounds: list[float] | None, x: np.ndarray | None,
                    data_raw: dict[str, Any] | None, opts: InitOptions) -> dict[str, Any]:
    """Every suite's table; returns what the gates refer to."""
    written: dict[str, Any] = {}
    lines.section("performance", "accuracy next to balanced accuracy and MCC, ROC/PR, per-class metrics")
    lines.key("bootstrap", 1000, "posterior draws for the intervals")
    if k == 2:
        lines.key("positive_class", 1, "binary: the class ROC/PR curves are drawn for", guessed="class 1")

    lines.section("robustness", "FGSM and PGD over an eps sweep, noise, and validity checks of the attacks")
    lines.key("attacks", ["fgsm", "pgd"], "worst case per example; add \"autoattack\" for the reference (slow on CPU)")
    lines.key("norm", "linf")
    if bounds == [0.0, 1.0]:
        eps: list[Any] = ["2/255", "4/255", "8/255", "16/255"]
        e_note = "fractions of the [0, 1] range, as for images"
        noise: dict[str, list[float]] = {"gaussian": [0.05, 0.1], "salt_pepper": [0.02, 0.05]}
    else:
        span = (bounds[1] - bounds[0]) if bounds else (float(np.median(x.std(axis=0))) if x is not None and len(x) > 1 else 1.0)
        span = span or 1.0
        eps = [float(f"{f * span:.3g}") for f in (0.01, 0.02, 0.05)]
        e_note = ("1%, 2% and 5% of the input range" if bounds else
                  "1%, 2% and 5% of the features' median std, in their raw units")
        noise = {"gaussian": [float(f"{0.05 * span:.3g}"), float(f"{0.1 * span:.3g}")]}
        if bounds:
            noise["salt_pepper"] = [0.02, 0.05]
    lines.key("eps", eps, "perturbation sizes", guessed=e_note)
    lines.key("steps", 10, "PGD iterations")
    lines.key("restarts", 1)
    lines.key("noise", noise, "" if bounds else "salt_pepper needs input_bounds", guessed="levels like the eps")
    lines.key("noise_draws", 5)
    written["robustness"] = {"eps": eps[len(eps) // 2], "noise": next(iter(noise)), "level": noise["gaussian"][0]}

    lines.section("calibration", "ECE, MCE, Brier, NLL, reliability diagrams, temperature scaling")
    lines.key("bins", 15)
    lines.key("reference_draws", 1000, "ECE of a perfectly calibrated model at this n, for comparison")

    if opts.sensitive:
        lines.section("fairness", "per-group rates and disparities over the sensitive attributes")
        lines.key("attributes", list(opts.sensitive))
        if k == 2:
            lines.key("positive_class", 1, "the favourable outcome", guessed="class 1")
        else:
            lines.key("positive_class", 0, "multiclass: the class audited one-vs-rest", guessed="class 0")
        lines.key("min_group_size", 30, "smaller groups make their gates inconclusive")
        lines.key("bootstrap", 1000)
        written["fairness"] = list(opts.sensitive)
    else:
        lines.section("fairness", "needs sensitive attributes: audit init --sensitive COLUMN ...")
        lines.lines[-1] = "# " + lines.lines[-1]
        lines.key("attributes", ["sex"], commented=True)
    return written


def _gates(lines: _Lines, k: int, written: dict[str, Any], opts: InitOptions) -> None:
    lines.lines.append("")
    lines.comment("Example gates: every threshold is a placeholder to replace with your own requirement.")
    gates: list[list[tuple[str, Any, str]]] = [
        [("metric", "balanced_accuracy", ""), ("op", ">=", ""), ("threshold", 0.8, "example threshold"),
         ("use", "ci_low", "the lower end of the 95% interval must clear it")],
        [("metric", "robust_accuracy", ""), ("params", {"norm": "linf", "eps": written["robustness"]["eps"]}, ""),
         ("op", ">=", ""), ("threshold", 0.5, "example threshold")],
        [("metric", "noise_accuracy", ""),
         ("params", {"noise": "gaussian", "level": written["robustness"]["level"]}, ""), ("op", ">=", ""),
         ("threshold", 0.8, "example threshold")],
        [("metric", "ece", ""), ("params", {"binning": "equal_width", "kind": "top_label"}, ""), ("op", "<=", ""),
         ("threshold", 0.1, "example threshold"), ("min_n", 100, "")],
    ]
    for attr in written.get("fairness", []):
        gates.append([("metric", "disparate_impact_ratio", ""), ("params", {"attribute": attr}, ""), ("op", ">=", ""),
                      ("threshold", 0.8, "the four-fifths rule"), ("severity", "warn", "reported, not blocking")])
    for g in gates:
        lines.section("gates", array=True)
        for key, value, comment in g:
            lines.key(key, value, comment)


# ------------------------------------------------------------------------------------------ checking


def _check_runs(text: str, out: Path, loaded: Any, opts: InitOptions) -> None:
    """Load the recipe as `audit run` does and validate every suite's section against the data: what would
    fail there fails here, before the file is written. A failure is a bug of `audit init` (exit 3)."""
    import tomllib

    from audit.recipe.load import validate_recipe

    raw = tomllib.loads(text)
    if "data" not in raw or "source" not in raw.get("data", {}):
        validate_recipe(raw, out, data_given=True)  # no --data: the rest must still be valid
        return
    from audit.loading.data import load_data
    from audit.runner import choose_suites, make_facts
    from audit.suites import get_suite

    try:
        recipe = validate_recipe(raw, out)
        data = load_data(recipe)
        facts = make_facts(recipe, data, 0, recipe.section("run")["batch_size"])
        for name in choose_suites(recipe, []):
            get_suite(name).validate(recipe.section(name), facts)
    except AuditError as e:
        raise RuntimeError(f"audit init wrote a recipe that does not load ({e})") from e

