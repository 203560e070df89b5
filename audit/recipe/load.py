"""Read and validate a recipe file."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import RecipeError
from audit.recipe.fields import FieldError, Section, suggest, validate_table
from audit.recipe.sections import CORE_SECTIONS, GATE

# [data] keys that apply to data given in memory (``audit.run``): they act on rows already loaded
IN_MEMORY_DATA_KEYS = ("limit", "sensitive_bins")


@dataclass
class Recipe:
    """A validated recipe: every section filled with its defaults, paths kept relative to ``base_dir``."""

    path: Path
    sections: dict[str, dict[str, Any]]
    gates: list[dict[str, Any]]
    present: set[str] = field(default_factory=set)  # sections written in the file
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def section(self, name: str) -> dict[str, Any]:
        return self.sections[name]

    def resolve(self, rel: str) -> Path:
        """A path from the recipe, relative to the recipe's folder unless absolute."""
        p = Path(rel).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "sections": self.sections, "gates": self.gates}


def all_sections() -> dict[str, Section]:
    from audit.suites import all_suites

    sections = {s.name: s for s in CORE_SECTIONS}
    for suite in all_suites():
        sections[suite.name] = suite.section
    return sections


def load_recipe(path: str | Path, gates_only: bool = False) -> Recipe:
    """Read and validate a recipe. ``gates_only``: for `audit gate`, where a file with just [[gates]]
    (and [validity]) is enough; any other section present is still validated."""
    path = Path(path)
    return validate_recipe(read_recipe_file(path), path, gates_only)


def read_recipe_file(path: Path) -> dict[str, Any]:
    """The TOML of a recipe file, not yet validated."""
    from audit.loading.files import require_file

    require_file(path, "recipe file", RecipeError)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot read the recipe ({e.strerror or e})") from None


def validate_recipe(raw: dict[str, Any], path: Path, gates_only: bool = False, data_given: bool = False) -> Recipe:
    """``data_given``: the data comes from memory (``audit.run``), so a recipe without [data] is complete."""
    sections = all_sections()
    for key in raw:
        if key not in sections:
            raise RecipeError(f"{path}: unknown section [{key}] {suggest(key, list(sections))}")
    out: dict[str, dict[str, Any]] = {}
    gates: list[dict[str, Any]] = []
    try:
        for name, section in sections.items():
            if section.array:
                items = raw.get(name, [])
                if not isinstance(items, list):
                    raise FieldError(f"{path}: [[{name}]] must be an array of tables (write [[{name}]])")
                gates = [validate_table(section, item, f"{path}: [[{name}]] #{i + 1}") for i, item in enumerate(items)]
                continue
            if name not in raw:
                if section.required and not gates_only and not (data_given and name == "data"):
                    raise FieldError(f"{path}: missing section [{name}]")
                out[name] = section.defaults()
                continue
            if data_given and name == "data" and isinstance(raw[name], dict) and "source" not in raw[name]:
                # data from memory: a [data] table without a source may hold what acts on loaded rows only
                rows_only = Section(section.name, section.doc,
                                    tuple(f for f in section.fields if f.name in IN_MEMORY_DATA_KEYS))
                out[name] = {**section.defaults(), **validate_table(rows_only, raw[name], f"{path}: [{name}]")}
                continue
            out[name] = validate_table(section, raw[name], f"{path}: [{name}]")
    except FieldError as e:
        raise RecipeError(str(e)) from None
    recipe = Recipe(path=path, sections=out, gates=gates, present=set(raw) - {GATE.name}, raw=raw)
    _check_gates(recipe, gates_only)
    _check_run(recipe)
    _check_data_split(recipe)
    _check_downgrades(recipe)
    return recipe


def _check_data_split(recipe: Recipe) -> None:
    """test_size / split_seed written in a recipe whose split is 'all' would silently do nothing (and the
    user would evaluate on rows they may have trained on)."""
    raw = recipe.raw.get("data", {})
    d = recipe.sections.get("data")
    if not isinstance(raw, dict) or not d or "source" not in raw:
        return
    if (d["split"] or ("test" if d["source"] == "sklearn" else "all")) != "all":
        return
    for key in ("test_size", "split_seed"):
        if key in raw:
            why = "split = 'all'" if "split" in raw else f"split = 'all' (the default for source = {d['source']!r})"
            raise RecipeError(f"{recipe.path}: [data] {key} has no effect with {why}; set split = 'test' to "
                              "evaluate on the held-out part")


def _check_downgrades(recipe: Recipe) -> None:
    from audit.runner import CORE_CHECK_IDS
    from audit.suites import all_suites

    known = list(CORE_CHECK_IDS) + [c for s in all_suites() for c in s.check_ids]
    for c in recipe.sections["validity"]["downgrade"]:
        if c not in known:
            raise RecipeError(f"{recipe.path}: [validity] downgrade: unknown check {c!r} {suggest(c, known)}")


def _check_run(recipe: Recipe) -> None:
    from audit.suites import suite_names

    suites = recipe.sections["run"]["suites"]
    for s in suites or []:
        if s not in suite_names():
            raise RecipeError(f"{recipe.path}: [run] suites: unknown suite {s!r} {suggest(s, suite_names())}")


def metric_catalogue() -> dict[str, dict[str, Any]]:
    """suite name -> {metric name -> MetricSpec}."""
    from audit.suites import all_suites

    return {s.name: s.metrics for s in all_suites()}


def resolve_metric(metric: str) -> tuple[str | None, str]:
    """Split ``"suite.name"`` or ``"name"``; check it exists. Returns (suite or None, name).

    Raises FieldError naming the candidates.
    """
    cat = metric_catalogue()
    if "." in metric:
        suite, name = metric.split(".", 1)
        if suite not in cat:
            raise FieldError(f"unknown suite {suite!r} in metric {metric!r} {suggest(suite, list(cat))}")
        if name not in cat[suite]:
            raise FieldError(f"suite {suite!r} has no metric {name!r} {suggest(name, list(cat[suite]))}")
        return suite, name
    owners = [s for s, ms in cat.items() if metric in ms]
    if not owners:
        every = sorted({m for ms in cat.values() for m in ms})
        raise FieldError(f"unknown metric {metric!r} {suggest(metric, every)}")
    if len(owners) > 1:
        raise FieldError(f"metric {metric!r} exists in several suites; write one of "
                         + ", ".join(f"{s}.{metric}" for s in owners))
    return None, metric


def _check_gates(recipe: Recipe, gates_only: bool = False) -> None:
    cat = metric_catalogue()
    swept_cfg = None  # what [robustness] runs, parsed once for every gate's params
    # a run recipe without a [robustness] table runs its defaults: gates are checked against those too (a
    # gates-only file for `audit gate` has no sweep of its own: there the report decides)
    if recipe.gates and ("robustness" in recipe.present or not gates_only):
        from audit.suites.robustness import settings

        swept_cfg = settings(recipe.sections["robustness"], str(recipe.path))
    for i, g in enumerate(recipe.gates):
        where = f"{recipe.path}: [[gates]] #{i + 1}"
        try:
            suite, name = resolve_metric(g["metric"])
        except FieldError as e:
            raise RecipeError(f"{where} metric: {e}") from None
        owner = suite or next(s for s, ms in cat.items() if name in ms)
        spec = cat[owner][name]
        for p in g["params"]:
            if p not in spec.params and not spec.extra_params:
                allowed = ", ".join(spec.params) or "none"
                raise RecipeError(f"{where} params: metric {name!r} has no parameter {p!r} (parameters: {allowed})")
        _check_param_values(g["params"], spec, recipe, where, swept_cfg)
        if swept_cfg is not None and owner == "robustness" and not gates_only:
            _check_bounded_noise(g["params"], recipe, where)
        g["suite"] = owner
        g["name"] = name
        if g["id"] is None:
            g["id"] = gate_id(g)
        _check_capture_gate(g, recipe, where)
    ids = [g["id"] for g in recipe.gates]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise RecipeError(f"{recipe.path}: [[gates]] ids must be unique; repeated: {', '.join(sorted(dup))}")


_CAPTURE_METRICS = {"nondeterministic_ops": "capture", "latent_cuda_hazards": "capture",
                    "batch_invariance_max_abs_diff": "batch_invariance", "batch_invariance_flips": "batch_invariance"}


def _check_capture_gate(g: dict[str, Any], recipe: Recipe, where: str) -> None:
    """A gate on a capture-run metric while [repro] turns that run off could only be 'no record' later."""
    need = _CAPTURE_METRICS.get(g["name"]) if g["suite"] == "repro" else None
    if need is None or "repro" not in recipe.present:
        return
    cfg = recipe.sections["repro"]
    for key in dict.fromkeys(("capture", need)):
        if not cfg[key]:
            raise RecipeError(f"{where} metric: repro.{g['name']} comes from the capture run, which [repro] "
                              f"{key} = false turns off")


def _check_param_values(params: dict[str, Any], spec: Any, recipe: Recipe, where: str,
                        swept_cfg: dict[str, Any] | None) -> None:
    """Values from a closed set (an average, a binning, a norm, a class) are checked now, not after the run."""
    from audit.report.gates import closest_value, same_param

    for p, value in params.items():
        if isinstance(value, (list, dict)) or isinstance(value, bool):
            raise RecipeError(f"{where} params: {p} = {value!r}: expected a string or a number")
        allowed: tuple[str, ...] | None = spec.choices.get(p)
        if p == "class" and recipe.sections.get("model", {}).get("num_classes"):
            model = recipe.sections["model"]
            allowed = tuple(model["class_names"] or [str(k) for k in range(model["num_classes"])])
        swept = _swept_values(swept_cfg, p, params) if p in _SWEPT and swept_cfg is not None else None
        if swept is not None:
            allowed = swept
        if allowed is not None and not any(same_param(value, a) for a in allowed):
            what = f"one of {', '.join(map(repr, allowed))}" if allowed else "produced by this recipe"
            if swept is not None:
                what += " (what [robustness] runs)"
            near = closest_value(value, list(allowed))
            hint = f"; did you mean {near!r}?" if near is not None else ""
            raise RecipeError(f"{where} params: {p} = {value!r} is not {what}{hint}")
        if p == "metric" and spec.extra_params:  # repro.seed_*: the summarised metric, as "suite.name"
            _check_summarised_metric(value, where)


_SWEPT = ("eps", "level", "norm", "noise", "attack")


def _check_bounded_noise(params: dict[str, Any], recipe: Recipe, where: str) -> None:
    """A gate on a noise kind that needs input bounds (salt-and-pepper) while [model] has none: the suite
    skips that kind (a note, not a finding), so the gate could only be an error after the whole run."""
    from audit.suites.robustness import BOUNDED_NOISE

    kind = params.get("noise")
    if kind in BOUNDED_NOISE and recipe.sections["model"].get("input_bounds") is None:
        raise RecipeError(f"{where} params: noise = {kind!r} is not run: {BOUNDED_NOISE[kind]}")


def _swept_values(cfg: dict[str, Any], p: str, params: dict[str, Any]) -> tuple[str, ...]:
    """What the recipe's [robustness] runs (``cfg``, its parsed settings), for a robustness param: the
    epsilons (of the gate's norm), the noise levels (of its noise kind), the norms, noise kinds and
    attacks; a gate on anything else could only fail after the whole run. Without a [robustness] table (a
    gates-only file for `audit gate`) nothing is checked here: the report decides."""
    if p == "norm":
        return tuple(cfg["eps"])
    if p == "noise":
        return tuple(cfg["noise"])
    if p == "attack":
        return tuple(cfg["attacks"])
    if p == "eps":
        norms = [params["norm"]] if params.get("norm") in cfg["eps"] else list(cfg["eps"])
        return tuple(e.label for n in norms for e in cfg["eps"][n])
    kinds = [params["noise"]] if params.get("noise") in cfg["noise"] else list(cfg["noise"])
    return tuple(lv.label for k in kinds for lv in cfg["noise"][k])


def _check_summarised_metric(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise RecipeError(f"{where} params: metric = {value!r}: expected \"suite.name\", e.g. \"performance.accuracy\"")
    if "." not in value:
        try:
            suite, name = resolve_metric(value)
        except FieldError as e:
            raise RecipeError(f"{where} params: metric = {value!r}: {e}") from None
        owner = suite or next(s for s, ms in metric_catalogue().items() if name in ms)
        if owner == "repro":
            raise RecipeError(f"{where} params: metric = {value!r}: the spread of a repro metric is not summarised")
        raise RecipeError(f"{where} params: metric = {value!r}: name the suite too, metric = \"{owner}.{name}\"")
    try:
        suite, _ = resolve_metric(value)
    except FieldError as e:
        raise RecipeError(f"{where} params: metric = {value!r}: {e}") from None
    if suite == "repro":
        raise RecipeError(f"{where} params: metric = {value!r}: the spread of a repro metric is not summarised")


def gate_id(g: dict[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(g["params"].items()))
    use = "" if g["use"] == "value" else f"{g['use']} "
    return f"{g['suite']}.{g['name']}{'[' + params + ']' if params else ''} {use}{g['op']} {g['threshold']:g}"


def check_gate_groups(recipe: Recipe, categories: dict[str, list[str]]) -> None:
    """Gates naming a sensitive attribute or a group the data does not have, found once the data is loaded
    and before any suite runs (they could only give an ERROR gate after the whole run). ``categories``: each
    attribute's groups, as the data loader read them; an intersection ``"a&b"`` has the groups
    ``"x & y"`` of every pair."""
    import itertools

    from audit.report.gates import describe_valid, same_param

    for i, g in enumerate(recipe.gates):
        params = g["params"]
        if "attribute" not in params:
            continue
        where = f"{recipe.path}: [[gates]] #{i + 1} ({g['id']}) params"
        attr = str(params["attribute"])
        parts = attr.split("&")
        if not categories:
            raise RecipeError(f"{where}: attribute = {attr!r}, but the data has no sensitive attributes; name them "
                              "in [data] sensitive, or remove the gate")
        unknown = [a for a in parts if a not in categories]
        if unknown:
            valid = list(categories) + (["&".join(categories)] if len(categories) > 1 else [])
            raise RecipeError(f"{where}: {describe_valid('attribute', attr, valid, 'of the data')}")
        if "group" not in params:
            continue
        groups = [" & ".join(c) for c in itertools.product(*(categories[a] for a in parts))]
        if not any(same_param(params["group"], v) for v in groups):
            raise RecipeError(f"{where}: {describe_valid('group', params['group'], groups, f'of {attr!r}')}")
