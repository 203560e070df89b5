"""The Python API: ``audit.run(model, x, y, ...)`` audits an in-memory ``nn.Module`` and returns a
:class:`Report`, for notebooks and scripts. ``audit run`` (the CLI) loads the model and the data from files
and runs the same core (``audit.runner``); the recipe, the data and the model go through the same
validation, and every input error is raised as the exception (``audit.errors``) whose one-line message the
CLI prints before exiting 2.

How options reach the audit (one rule, in this order, each overriding the one before):

1. the defaults of every recipe key (docs/recipe.md);
2. ``recipe``: a dict shaped like the TOML file (``{"robustness": {"eps": ["8/255"]}, "gates": [...]}``) or
   the path of a recipe file;
3. keyword options: ``seed``, ``device``, ``batch_size`` (as ``--seed``, ``--device``, ``--batch-size``),
   ``quiet``; ``suites`` (as ``--suite``); and any recipe section by name, as a dict whose keys replace that
   section's keys one by one (``robustness={"eps": ["8/255"]}``, ``model={"input_bounds": [0, 1]}``) or,
   for ``gates``, a list that replaces the recipe's gates. An unknown option or key is a RecipeError that
   names the closest valid one, as the recipe loader does.

In memory, ``[model] factory``/``kwargs`` are not used (the module is given), ``num_classes`` defaults to
the width of the model's output, and of ``[data]`` only ``limit`` and ``sensitive_bins`` apply (the other
keys describe a file source for the CLI; a recipe file that has them still works here).

Importing this module imports neither torch nor pandas; ``audit.run`` does when called.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from audit.errors import AuditError, DataError, RecipeError

# keyword options that are not recipe sections: the CLI's flags
RUN_OPTIONS = ("seed", "device", "batch_size", "quiet")
DICT_RECIPE = Path("<recipe>")  # how messages name a recipe given as a dict (paths in it: from the cwd)
DATA_WHERE = "in-memory data (x, y)"
IN_MEMORY = "in_memory"  # the model's format in report.json


def run(model: Any, x: Any, y: Any = None, /, *, sensitive: Any = None, recipe: Any = None,
        suites: Any = None, **options: Any) -> "Report":
    """Audit ``model`` (an in-memory ``torch.nn.Module``) on ``x``, ``y``.

    ``x``: a numpy array, a torch tensor or a numeric pandas DataFrame (its columns name the features), with
    ``y`` the integer labels (array or tensor); or a torch ``Dataset`` whose items are ``(x, y)`` or ``(x, y,
    {attribute: value})``, with ``y=None``. ``sensitive``: a dict attribute -> one value per example, or a
    DataFrame (one column per attribute). ``recipe``, ``suites`` and ``**options``: see the module docstring.

    Nothing is written to disk: the returned :class:`Report` holds the report and the per-example table;
    ``Report.save(dir)`` writes report.json, report.html, summary.md, junit.xml and examples.npz.
    The model is given back as it came (train/eval mode, ``requires_grad``, device).
    """
    from audit.runner import RunOptions, execute_in_memory, import_torch

    import_torch()
    import torch

    if not isinstance(model, torch.nn.Module):
        raise AuditError(f"audit.run: model must be a torch.nn.Module, got {type(model).__name__}; for a checkpoint "
                         "file use `audit run FILE --recipe RECIPE.toml`")
    raw, path = _recipe_raw(recipe)
    run_opts = _apply_options(raw, options)
    requested = _suites(suites)
    xs, ys, sens, names, meta = _arrays(x, y, sensitive)
    model_raw = raw.setdefault("model", {})
    if not isinstance(model_raw, dict):
        raise RecipeError(f"{path}: [model] must be a table, got {type(model_raw).__name__}")
    inferred = "num_classes" not in model_raw
    if inferred:
        model_raw["num_classes"] = _output_width(model, xs, model_raw)
    from audit.recipe.load import validate_recipe

    rec = validate_recipe(raw, path, data_given=True)
    from audit.loading.data import data_from_memory

    data = data_from_memory(xs, ys, sens, rec, DATA_WHERE if meta.get("kind") != "dataset" else "in-memory Dataset",
                            names, meta)
    loaded = in_memory_model(model)
    if inferred:
        loaded.notes.append(f"num_classes = {rec.section('model')['num_classes']} was read from the width of the "
                            "model's output (the recipe did not give it).")
    opts = RunOptions(recipe=path, model_path=None, out=None, suites=requested, seed=run_opts.get("seed"),
                      device=run_opts.get("device"), batch_size=run_opts.get("batch_size"),
                      quiet=bool(run_opts.get("quiet", False)), cache=False, resume=False, recipe_obj=rec,
                      argv=["audit.run"], model_obj=loaded, data_obj=data)
    with _given_back(model):
        report, table = execute_in_memory(opts)
    from audit.report.build import dumps

    # exactly what report.json would hold (numpy scalars as numbers, paths as strings)
    return Report(json.loads(dumps(report)), table)


# ------------------------------------------------------------------------------------------------ recipe


def _recipe_raw(recipe: Any) -> tuple[dict[str, Any], Path]:
    """The recipe as a raw dict (deep-copied: the caller's dict is never changed) and the path messages name."""
    if recipe is None:
        return {}, DICT_RECIPE
    if isinstance(recipe, dict):
        return copy.deepcopy(recipe), DICT_RECIPE
    if isinstance(recipe, (str, Path)):
        from audit.recipe.load import read_recipe_file

        p = Path(recipe)
        return read_recipe_file(p), p
    raise RecipeError(f"audit.run: recipe must be a dict or the path of a recipe file, got {type(recipe).__name__}")


def _apply_options(raw: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Merge the keyword options into ``raw`` (module docstring, rule 3); returns the run-level ones."""
    from audit.recipe.fields import suggest
    from audit.recipe.load import all_sections

    sections = all_sections()
    allowed = list(RUN_OPTIONS) + ["suites", "sensitive", "recipe"] + list(sections)
    run_level: dict[str, Any] = {}
    for key, value in options.items():
        if key in RUN_OPTIONS:
            if value is not None:
                _check_run_option(key, value)
                run_level[key] = value
            continue
        if key not in sections:
            raise RecipeError(f"audit.run: unknown option {key!r} {suggest(key, allowed)}")
        section = sections[key]
        if section.array:  # gates: a list that replaces the recipe's
            if not isinstance(value, (list, tuple)):
                raise RecipeError(f"audit.run({key}=...): expected a list of tables (dicts), got {type(value).__name__}")
            raw[key] = copy.deepcopy(list(value))
            continue
        if not isinstance(value, dict):
            raise RecipeError(f"audit.run({key}=...): expected a dict of [{key}] keys, got {type(value).__name__}")
        names = section.field_names()
        for k in value:
            if k not in names:
                raise RecipeError(f"audit.run({key}=...): unknown key {k!r} {suggest(str(k), names)}")
        base = raw.get(key, {})
        if not isinstance(base, dict):
            raise RecipeError(f"{DICT_RECIPE}: [{key}] must be a table, got {type(base).__name__}")
        raw[key] = {**base, **copy.deepcopy(value)}
    return run_level


def _check_run_option(key: str, value: Any) -> None:
    """The CLI's flag checks, with the keyword's name."""
    if key in ("seed", "batch_size"):
        low = 0 if key == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise AuditError(f"audit.run({key}={value!r}): expected an integer >= {low}")
    elif key == "device":
        if not isinstance(value, str) or not re.match(r"^(auto|cpu|cuda(:\d+)?)$", value):
            raise AuditError(f"audit.run(device={value!r}): expected auto, cpu, cuda or cuda:N")


def _suites(suites: Any) -> list[str]:
    from audit.recipe.fields import suggest
    from audit.suites import get_suite, suite_names

    if suites is None:
        return []
    names = [suites] if isinstance(suites, str) else list(suites)
    known = suite_names()
    for s in names:
        if s not in known:
            raise RecipeError(f"audit.run(suites=...): unknown suite {s!r} {suggest(str(s), known)}")
        if get_suite(s).command_only:
            raise RecipeError(f"audit.run(suites=...): the {s!r} suite is not run by an audit; use `audit {s}`")
    return names


# -------------------------------------------------------------------------------------------------- data


def _arrays(x: Any, y: Any, sensitive: Any) -> tuple[Any, Any, dict[str, Any], list[str] | None, dict[str, Any]]:
    """numpy x, y and sensitive attributes from what the caller gave; feature names from a DataFrame."""
    import numpy as np
    import torch

    from audit.loading.data import _np, _unpack_python

    names: list[str] | None = None
    meta: dict[str, Any] = {}
    sens: dict[str, Any] = {}
    if isinstance(x, torch.utils.data.Dataset):
        if y is not None:
            raise DataError("audit.run: x is a torch Dataset, whose items carry the labels: pass y=None")
        xs, ys, sens = _unpack_python(x, "audit.run: the Dataset x")
        meta = {"kind": "dataset", "dataset_class": _qualname(type(x))}
    else:
        if y is None:
            raise DataError("audit.run: y (the labels) is missing; pass y, or x as a torch Dataset of (x, y) items")
        if _is_dataframe(x):
            names = [str(c) for c in x.columns]
            try:
                xs = x.to_numpy(dtype=np.float32)
            except (TypeError, ValueError):
                bad = [str(c) for c, t in x.dtypes.items() if not np.issubdtype(t, np.number)]
                raise DataError(f"{DATA_WHERE}: x has non-numeric columns {', '.join(map(repr, bad[:3]))}; encode "
                                "them (e.g. one-hot) before the audit") from None
        else:
            xs = _np(x)
        ys = _np(y.to_numpy() if _is_dataframe(y) or _is_series(y) else y)
        if xs.dtype == object:
            raise DataError(f"{DATA_WHERE}: x must be numeric, got dtype object")
    if sensitive is not None:
        if _is_dataframe(sensitive):
            given = {str(c): sensitive[c].to_numpy() for c in sensitive.columns}
        elif isinstance(sensitive, dict):
            given = {str(k): _np(v.to_numpy() if _is_series(v) else v) for k, v in sensitive.items()}
        else:
            raise DataError(f"audit.run: sensitive must be a dict attribute -> values or a DataFrame, got "
                            f"{type(sensitive).__name__}")
        both = sorted(set(given) & set(sens))
        if both:
            raise DataError(f"audit.run: sensitive attribute {both[0]!r} is given twice (in the Dataset's items and "
                            "in sensitive=)")
        sens = {**sens, **given}
    meta["x"] = f"{type(x).__name__} {getattr(xs, 'dtype', '?')} {tuple(getattr(xs, 'shape', ()))}"
    return xs, ys, sens, names, meta


def _is_dataframe(v: Any) -> bool:
    return type(v).__name__ == "DataFrame" and hasattr(v, "columns") and hasattr(v, "to_numpy")


def _is_series(v: Any) -> bool:
    return type(v).__name__ == "Series" and hasattr(v, "to_numpy")


def _output_width(model: Any, x: Any, model_raw: dict[str, Any]) -> int:
    """num_classes when the recipe does not give it: the width of the model's output on two examples (the
    input reshaped to [model] input_shape, when given). Failing that, the error asks for it."""
    import numpy as np
    import torch

    try:
        xb = np.asarray(x[:2], dtype=np.float32)
        shape = model_raw.get("input_shape")
        if isinstance(shape, list) and all(isinstance(s, int) for s in shape) and int(np.prod(shape)) == xb[0].size:
            xb = xb.reshape(len(xb), *shape)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with _given_back(model):
            model.eval()
            with torch.inference_mode():
                out = model(torch.from_numpy(np.ascontiguousarray(xb)).to(device))
        width = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else 0
    except Exception as e:  # noqa: BLE001 - any failure here means: cannot tell, say what to give
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RecipeError(f"audit.run: cannot read num_classes from the model's output ({type(e).__name__}: {msg}); "
                          "give it: model={'num_classes': K}") from None
    if width < 2:
        raise RecipeError("audit.run: cannot read num_classes from the model's output (expected logits of shape "
                          "(batch, K) with K >= 2); give it: model={'num_classes': K}")
    return width


# ------------------------------------------------------------------------------------------------- model


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def state_dict_sha256(module: Any) -> str:
    """SHA-256 of a module's state_dict: each entry's name, dtype, shape and bytes, in the module's order (the
    weights as the model holds them, whatever file they came from)."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode() + b"\x1f" + str(t.dtype).encode() + b"\x1f" + str(tuple(t.shape)).encode() + b"\x1e")
        if t.numel():  # the raw bytes, whatever the dtype (bfloat16 has no numpy twin)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def in_memory_model(module: Any) -> Any:
    """The module as the runner takes a loaded checkpoint: its class and state_dict SHA-256 as provenance."""
    from audit.loading.model import LoadedModel

    cls = _qualname(type(module))
    return LoadedModel(module, IN_MEMORY, state_dict_sha256(module), f"<in-memory {cls}>",
                       notes=[f"An in-memory {cls} (audit.run); sha256 is that of its state_dict."],
                       module_class=cls)


class _given_back:
    """The caller's module as it came after the audit: train/eval mode, requires_grad of each parameter and
    the device (the wrapper puts it in eval mode, freezes it and moves it to the audit's device)."""

    def __init__(self, module: Any):
        self.module = module

    def __enter__(self) -> None:
        m = self.module
        self.modes = [(sub, sub.training) for sub in m.modules()]
        self.grads = [(p, p.requires_grad) for p in m.parameters()]
        self.device = next((p.device for p in m.parameters()), None)

    def __exit__(self, *exc: Any) -> None:
        for sub, mode in self.modes:
            sub.training = mode
        for p, g in self.grads:
            p.requires_grad_(g)
        if self.device is not None and next(self.module.parameters()).device != self.device:
            self.module.to(self.device)


# ------------------------------------------------------------------------------------------------ report


class Report:
    """An audit's report: what report.json holds (``to_dict()``), the per-example table, and the verdict.

    Nothing here depends on files: ``save(dir)`` writes them. In Jupyter the report shows its summary card
    (verdict, gates, worst findings), rendered by the HTML report's own template.
    """

    def __init__(self, report: dict[str, Any], table: Any = None, saved_to: Path | None = None):
        self._report = report
        self._table = table
        self.saved_to = saved_to

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        """A saved report.json (or the folder holding it), validated as `audit gate` reads it; the per-example
        table is not loaded (``save`` of it writes no examples.npz)."""
        from audit.report.build import read_report

        p = Path(path)
        if p.is_dir():
            p = p / "report.json"
        return cls(read_report(p), None, p.parent)

    # ------------------------------------------------------------------------------------------ facts

    @property
    def passed(self) -> bool:
        return bool(self._report["passed"])

    @property
    def exit_code(self) -> int:
        """What `audit run` would exit with: 0 pass, 1 a gate failed, 4 a validity check failed."""
        return int(self._report["exit_code"])

    @property
    def verdict(self) -> str:
        return str(self._report["verdict"])

    @property
    def run_id(self) -> str | None:
        return self._report.get("run_id")

    @property
    def metrics(self) -> Any:
        """Every metric record as a pandas DataFrame: suite, name, params (a dict), value, ci_low, ci_high, n,
        inconclusive (why, when it is)."""
        import pandas as pd

        cols = ["suite", "name", "params", "value", "ci_low", "ci_high", "n", "inconclusive"]
        rows = [{c: m.get(c) for c in cols} for m in self._report["metrics"]]
        return pd.DataFrame(rows, columns=cols)

    @property
    def checks(self) -> list[dict[str, Any]]:
        """The validity checks, as report.json records them: id, suite, status, message."""
        return copy.deepcopy(self._report["checks"])

    @property
    def gates(self) -> list[dict[str, Any]]:
        """The gates, as report.json records them: id, metric, params, op, threshold, use, value, status, ..."""
        return copy.deepcopy(self._report["gates"])

    @property
    def table(self) -> Any:
        """The per-example table (``audit.engine.table.ExampleTable``; examples.npz when saved), or None for a
        report loaded from a file."""
        return self._table

    def to_dict(self) -> dict[str, Any]:
        """A copy of what report.json holds."""
        return copy.deepcopy(self._report)

    @property
    def json(self) -> str:
        """report.json's text (sorted keys, as written)."""
        from audit.report.build import dumps

        return dumps(self._report)

    # ------------------------------------------------------------------------------------------ gating

    def gate(self, gates: Any) -> "Report":
        """This report judged by other gates, as `audit gate report.json --recipe FILE` judges it: ``gates`` is
        a recipe file (only its [[gates]] and [validity] are read), a dict shaped like one, or a list of gate
        tables. Returns a new Report; this one is unchanged."""
        from audit.recipe.load import load_recipe, validate_recipe
        from audit.report.build import regate_with_recipe, stamp_regated

        if isinstance(gates, (str, Path)):
            where = Path(gates)
            r = load_recipe(where, gates_only=True)
        elif isinstance(gates, dict):
            where = Path("<gates>")
            r = validate_recipe(copy.deepcopy(gates), where, gates_only=True)
        elif isinstance(gates, (list, tuple)):
            where = Path("<gates>")
            r = validate_recipe({"gates": copy.deepcopy(list(gates))}, where, gates_only=True)
        else:
            raise RecipeError(f"Report.gate: expected a recipe file, a dict or a list of gates, got {type(gates).__name__}")
        validity = r.section("validity")
        if isinstance(gates, (list, tuple)):  # gates alone: the run's [validity] downgrades still hold
            validity = self._report.get("recipe", {}).get("sections", {}).get("validity") or validity
        result = regate_with_recipe(self._report, r.gates, validity["downgrade"], where, r.present)
        # recorded as `audit gate --out` records it: saved, the report says it was re-gated, and `audit gate`
        # on its report.json (without --recipe) reaches this verdict
        result = stamp_regated(result, self._report, "audit.Report.gate",
                               None if str(where) == "<gates>" else where, _file_sha256(where), None, r.gates, validity)
        return Report(result, self._table)

    # ------------------------------------------------------------------------------------------ files

    def save(self, out: str | Path, pages: bool = True) -> Path:
        """Write report.json, summary.md, examples.npz (when the table is here) and, with ``pages``,
        report.html and junit.xml into ``out``, as `audit run --out` does: the folder is locked while it is
        written, an earlier run's files there are moved to previous-runs/, and every file carries this run's
        id (so `audit gate out/report.json` accepts them). Returns the folder."""
        from audit.report.outdir import RunFolder

        out = Path(out)
        prov = self._report.get("provenance", {})
        inputs = {"model": self._report.get("model", {}).get("path"), "recipe": self._report.get("recipe", {}).get("path")}
        with RunFolder.open(out, "run", list(prov.get("command") or ["audit.run"]), inputs, pages=pages,
                            run_id=self.run_id, created=prov.get("created")) as folder:
            folder.write(self._report, self._table)
        self.saved_to = out
        return out

    # ------------------------------------------------------------------------------------------ display

    def summary_html(self) -> str:
        """The HTML report's summary card (verdict, gates, worst findings) with its styles scoped to it, for
        embedding (Jupyter's ``_repr_html_``)."""
        from audit.report.html import render_html, render_summary

        where = (f"saved to <code>{_esc(str(self.saved_to))}</code>" if self.saved_to is not None
                 else "in memory: <code>report.save(dir)</code> writes report.html and the other files")
        foot = f'<p class="muted">audit report {_esc(str(self.run_id))} — {where}</p>'
        if self._report.get("run_status") not in ("failed", "incomplete"):
            # the renderer's own card, its styles already scoped to .audit-summary
            return f'<div class="audit-summary-wrap">{render_summary(self._report)}{foot}</div>'
        # a failure report loaded from disk (Report.load) has no summary card: its page's "failed" card
        page = render_html(self._report)
        card = _element_by_id(page, "failed") or "<p>(no summary card)</p>"
        styles = "".join(_scope_css(css, ".audit-summary") for css in re.findall(r"<style[^>]*>(.*?)</style>", page, re.S))
        return f'<div class="audit-summary"><style>{styles}</style>{card}{foot}</div>'

    def _repr_html_(self) -> str:
        return self.summary_html()

    def __repr__(self) -> str:
        gates = self._report["gates"]
        counts: dict[str, int] = {}
        for g in gates:
            counts[g["status"]] = counts.get(g["status"], 0) + 1
        failed = [c["id"] for c in self._report["checks"] if c["status"] == "fail"]
        parts = [f"{self.verdict.upper()} (exit {self.exit_code})", f"{len(self._report['metrics'])} metrics",
                 "gates: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none")]
        if failed:
            parts.append("failed checks: " + ", ".join(failed))
        return f"<audit.Report {'; '.join(parts)}>"


def _esc(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def _element_by_id(page: str, element_id: str) -> str | None:
    """The element of ``page`` with this id, start tag to its matching end tag (nesting of the same tag
    counted), or None."""
    from html.parser import HTMLParser

    class Finder(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=False)
            self.tag: str | None = None
            self.depth = 0
            self.start: int | None = None
            self.end: int | None = None

        def _offset(self) -> int:
            line, col = self.getpos()
            return line_starts[line - 1] + col

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if self.end is not None:
                return
            if self.tag is None and dict(attrs).get("id") == element_id:
                self.tag, self.depth, self.start = tag, 1, self._offset()
            elif tag == self.tag:
                self.depth += 1

        def handle_endtag(self, tag: str) -> None:
            if self.tag is not None and self.end is None and tag == self.tag:
                self.depth -= 1
                if self.depth == 0:
                    self.end = self._offset() + len(f"</{tag}>")

    line_starts = [0]
    for line in page.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    f = Finder()
    f.feed(page)
    if f.start is None or f.end is None:
        return None
    return page[f.start:f.end]


def _scope_css(css: str, scope: str) -> str:
    """Every rule of ``css`` limited to elements inside ``scope`` (``body``, ``html`` and ``:root`` become the
    scope itself), so the report's styles do not restyle the notebook around the card. @media and
    @supports blocks are scoped inside; other at-rules are dropped."""
    out, i, n = [], 0, len(css)
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    n = len(css)
    while i < n:
        brace = css.find("{", i)
        if brace < 0:
            break
        head = css[i:brace].strip()
        depth, j = 1, brace + 1
        while j < n and depth:
            depth += {"{": 1, "}": -1}.get(css[j], 0)
            j += 1
        body = css[brace + 1:j - 1]
        if head.startswith("@media") or head.startswith("@supports"):
            out.append(f"{head} {{{_scope_css(body, scope)}}}")
        elif head.startswith("@"):
            pass  # @font-face, @keyframes, @page: nothing the card needs
        elif head:
            sels = []
            for sel in head.split(","):
                sel = sel.strip()
                sel = re.sub(r"^(html|body|:root)\b", scope, sel)
                sels.append(sel if sel.startswith(scope) else f"{scope} {sel}")
            out.append(f"{', '.join(sels)} {{{body}}}")
        i = j
    return "\n".join(out)


__all__ = ["Report", "run", "state_dict_sha256"]


def _file_sha256(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
