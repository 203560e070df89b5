"""The recipe's core sections: [model], [data], [run], [validity] and [[gates]].

Suite sections ([performance], [robustness], ...) are declared by the suites themselves
(``audit.suites``) and validated with the same machinery.
"""

from __future__ import annotations

from typing import Any

from audit.recipe.fields import (
    REQUIRED,
    Field,
    FieldError,
    Section,
    p_bounds,
    p_factory,
    p_float,
    p_int,
    p_list,
    p_str,
    p_table,
)

# ----------------------------------------------------------------------------------------------- model


def _p_mean_std(v: Any) -> list[float]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return [float(v)]
    return p_list(p_float(), "numbers", min_len=1)(v)


def _p_std(v: Any) -> list[float]:
    out = _p_mean_std(v)
    if any(s <= 0 for s in out):
        raise FieldError("expected standard deviations > 0")
    return out


def _model_post(m: dict[str, Any]) -> None:
    names = m["class_names"]
    if names is not None and len(names) != m["num_classes"]:
        raise FieldError(f"class_names has {len(names)} names but num_classes = {m['num_classes']}")
    if (m["mean"] is None) != (m["std"] is None):
        raise FieldError("mean and std go together: give both or neither")
    if m["mean"] is not None and len(m["mean"]) != len(m["std"]) and 1 not in (len(m["mean"]), len(m["std"])):
        raise FieldError(f"mean has {len(m['mean'])} values but std has {len(m['std'])}")


MODEL = Section(
    "model",
    "The architecture, the classes and how inputs are presented to the network.",
    (
        Field("factory", '"module:callable" or "file.py:callable"',
              "Builds the architecture (a torch.nn.Module) that the state_dict or safetensors weights load into. "
              "A module path is imported with the working directory and the recipe's folder on sys.path; "
              "a file path is relative to the recipe. Not needed for TorchScript or torch.export archives.",
              parse=p_factory, example='"examples/digits/model.py:DigitsCNN"'),
        Field("kwargs", "table", "Keyword arguments for the factory.", default={}, parse=p_table,
              example="{ width = 32 }"),
        Field("num_classes", "integer >= 2", "Number of classes; the model must output this many logits.",
              default=REQUIRED, parse=p_int(2), example="10"),
        Field("class_names", "list of strings", "Names for the classes, in index order (default: 0, 1, ...).",
              parse=p_list(p_str(), "strings", unique=True), example='["bad", "good"]'),
        Field("input_bounds", "[low, high]",
              "Natural bounds of every input value (e.g. [0, 1] for images). Attacks and noise stay inside "
              "them; data outside them is an input error. Omit for unbounded (e.g. tabular) inputs.",
              parse=p_bounds, example="[0.0, 1.0]"),
        Field("input_shape", "list of integers",
              "Shape of one example as the model takes it (e.g. [1, 8, 8]). Flat data of the same size is "
              "reshaped; anything else is an input error.",
              parse=p_list(p_int(1), "positive integers", min_len=1), example="[1, 8, 8]"),
        Field("mean", "number or list of numbers",
              "Normalisation applied inside the wrapped model: (x - mean) / std, one value per channel "
              "(dimension 1) or one for all. Attacks see inputs in their natural bounds.",
              parse=_p_mean_std, example="[0.5]"),
        Field("std", "number or list of numbers (> 0)", "See mean.", parse=_p_std, example="[0.25]"),
    ),
    post=_model_post,
    required=True,
    example='[model]\nfactory = "examples/digits/model.py:DigitsCNN"\nnum_classes = 10\n'
            'input_bounds = [0.0, 1.0]\ninput_shape = [1, 8, 8]',
)

# ------------------------------------------------------------------------------------------------ data

SOURCES = ("npz", "csv", "sklearn", "python")
SKLEARN_DATASETS = ("digits", "breast_cancer", "iris", "wine")

_SOURCE_KEYS: dict[str, set[str]] = {
    "npz": {"path", "x", "y", "sensitive"},
    "csv": {"path", "features", "label", "sensitive", "categorical", "label_values"},
    "sklearn": {"name"},
    "python": {"callable", "kwargs"},
}
_COMMON_KEYS = {"source", "limit", "sensitive_bins", "split", "test_size", "split_seed"}


_NEEDS = {"npz": ("path",), "csv": ("path", "features", "label"), "sklearn": ("name",), "python": ("callable",)}


def _data_post(d: dict[str, Any]) -> None:
    src = d["source"]
    for key in _NEEDS[src]:
        if d[key] is None:
            raise FieldError(f"source = {src!r} needs key {key!r}")
    # Keys that only make sense for another source are a mistake worth reporting.
    defaults = DATA.defaults()
    for key, value in d.items():
        if key in _COMMON_KEYS or key in _SOURCE_KEYS[src]:
            continue
        if value != defaults.get(key):
            owners = ", ".join(repr(s) for s, keys in _SOURCE_KEYS.items() if key in keys)
            raise FieldError(f"key {key!r} is not used by source = {src!r} (only by source = {owners})")
    if src == "npz" and d["sensitive"] is not None and not isinstance(d["sensitive"], dict):
        raise FieldError("for source = 'npz', sensitive is a table { attribute = \"array name\" }")
    if src == "csv" and d["sensitive"] is not None and not isinstance(d["sensitive"], list):
        raise FieldError("for source = 'csv', sensitive is a list of column names")
    if src == "csv" and d["features"] is not None:
        overlap = set(d["features"]) & {d["label"]}
        if overlap:
            raise FieldError(f"the label column {d['label']!r} is also listed in features")


def _p_categorical(v: Any) -> list[str] | dict[str, list[str]]:
    if isinstance(v, dict):
        out = {}
        for k, cats in v.items():
            try:
                out[str(k)] = p_list(p_str(), "category names", min_len=1, unique=True)(cats)
            except FieldError as e:  # name the column: the whole table in the message would hide which one
                raise FieldError(f"column {k!r}: {e} (categories are matched as strings: write \"0\", not 0)") from None
        return out
    return p_list(p_str(), "column names", unique=True)(v)


def _p_sensitive(v: Any) -> Any:
    if isinstance(v, dict):
        for k, name in v.items():
            if not isinstance(name, str):
                raise FieldError(f"expected {{ attribute = \"array name\" }}, got {k} = {name!r}")
        return dict(v)
    return p_list(p_str(), "column names", min_len=1, unique=True)(v)


def _p_bins(v: Any) -> dict[str, list[float]]:
    t = p_table(v)
    out = {}
    for k, edges in t.items():
        e = p_list(p_float(), "numbers", min_len=1)(edges)
        if any(b <= a for a, b in zip(e, e[1:])):
            raise FieldError(f"bins for {k!r} must be increasing")
        out[k] = e
    return out


DATA = Section(
    "data",
    "Where the evaluation examples come from. Every example keeps its global index (its position in "
    "the source after the split), which the report and the per-example table use.",
    (
        Field("source", " | ".join(repr(s) for s in SOURCES), "Kind of source.", default=REQUIRED,
              parse=p_str(SOURCES), example='"sklearn"'),
        Field("path", "path", "npz/csv: the file, relative to the recipe.", parse=p_str(what="a path"),
              example='"data/test.npz"'),
        Field("x", "string", "npz: name of the input array.", default="x", parse=p_str()),
        Field("y", "string", "npz: name of the label array (integers in [0, num_classes)).", default="y",
              parse=p_str()),
        Field("sensitive", "npz: table attribute -> array name; csv: list of columns",
              "Sensitive attributes, kept aside (never fed to the model unless also listed as a csv feature).",
              parse=_p_sensitive, example='["sex"]'),
        Field("features", "list of column names", "csv: the feature columns, in the model's input order.",
              parse=p_list(p_str(), "column names", min_len=1, unique=True), example='["age", "duration"]'),
        Field("categorical", "list of column names, or table column -> list of categories",
              "csv: feature columns to one-hot encode, each category becoming a COLUMN=VALUE input. As a list, "
              "the categories are the file's distinct values, sorted: a file that lacks one (or adds one) "
              "shifts every later input, so the report lists the encoded columns and says so. As a table the "
              "categories are pinned in the model's order (as in training); a value outside them is an error.",
              default=[], parse=_p_categorical, example='{ housing = ["free", "own", "rent"] }'),
        Field("label", "column name", "csv: the label column.", parse=p_str(), example='"risk"'),
        Field("label_values", "list of strings",
              "csv: label values in class order when the label column is not already 0..K-1.",
              parse=p_list(p_str(), "strings", min_len=2, unique=True), example='["bad", "good"]'),
        Field("name", " | ".join(repr(s) for s in SKLEARN_DATASETS),
              "sklearn: a dataset scikit-learn ships (no download). digits gives images in [0, 1] of shape "
              "(1, 8, 8); the others give raw feature vectors.", parse=p_str(SKLEARN_DATASETS),
              example='"digits"'),
        Field("split", "'test' | 'train' | 'all'",
              "Which part of a seeded split stratified by label (any source). Default: 'test' for sklearn, "
              "'all' for the other sources. Training scripts use split = 'train' of the same recipe, so the "
              "two never overlap.", parse=p_str(("test", "train", "all")), example='"test"'),
        Field("test_size", "number in (0, 0.99]", "Fraction held out as the test split.", default=0.25,
              parse=p_float(0.0, 0.99, lo_open=True)),
        Field("split_seed", "integer >= 0", "Seed of the split.", default=0, parse=p_int(0)),
        Field("callable", '"module:callable" or "file.py:callable"',
              "python: returns (x, y), (x, y, {attribute: values}), a dict with keys x, y, sensitive, or a "
              "torch Dataset whose items are (x, y) or (x, y, {attribute: value}).",
              parse=p_factory, example='"mydata.py:load"'),
        Field("kwargs", "table", "python: keyword arguments for the callable.", default={}, parse=p_table),
        Field("sensitive_bins", "table attribute -> increasing cut points",
              "Bin a numeric sensitive attribute into groups, e.g. age = [25] gives '<25' and '>=25'.",
              default={}, parse=_p_bins, example="{ age = [25] }"),
        Field("limit", "integer >= 1", "Use only the first N examples (after the split).", parse=p_int(1),
              example="500"),
    ),
    post=_data_post,
    required=True,
    example='[data]\nsource = "sklearn"\nname = "digits"\nsplit = "test"',
)

# ------------------------------------------------------------------------------------------------- run

RUN = Section(
    "run",
    "Defaults for the run; the matching command-line options override them.",
    (
        Field("seed", "integer >= 0", "Master seed; every random stream is derived from it.", default=0,
              parse=p_int(0), example="0"),
        Field("device", "'auto' | 'cpu' | 'cuda' | 'cuda:N'", "auto picks CUDA when present.", default="auto",
              parse=p_str(pattern=r"^(auto|cpu|cuda(:\d+)?)$", what="'auto', 'cpu', 'cuda' or 'cuda:N'")),
        Field("batch_size", "integer >= 1", "Examples per forward pass.", default=256, parse=p_int(1)),
        Field("suites", "list of suite names",
              "Suites to run when --suite is not given (default: every suite that has a table in the "
              "recipe, or performance alone if none has).", parse=p_list(p_str(), "suite names", min_len=1)),
        Field("block_rows", "integer >= 1",
              "Examples per block: the unit of sharding under torchrun (block b runs on rank b % world size) and "
              "of the resume cache (a killed run keeps its finished blocks). Batches never cross a block. "
              "Default: a whole number of batches (the largest batch size B of the run, times n / (32 B) rounded "
              "up and kept within 1..4): at least 32 blocks when the data allows, at most 4 batches each.",
              parse=p_int(1), example="1024"),
        Field("rank_timeout", "number > 0 (seconds)",
              "Under torchrun: a rank that shows no progress (no forward pass of the model, no batch) for this long while the others "
              "wait for it is reported as hung, and every rank stops with one line naming it.", default=300.0,
              parse=p_float(1e-3, 1e9), example="300"),
    ),
    example="[run]\nseed = 0\ndevice = \"auto\"\nbatch_size = 256",
)

# -------------------------------------------------------------------------------------------- validity

VALIDITY = Section(
    "validity",
    "Validity checks test the evaluation itself (e.g. logits, determinism). A failed check makes the run "
    "invalid (exit 4) unless it is downgraded here, in which case it is reported as a warning.",
    (
        Field("downgrade", "list of check ids", "Checks whose failure is reported as a warning instead.",
              default=[], parse=p_list(p_str(), "check ids", unique=True), example='["inference_deterministic"]'),
    ),
    example='[validity]\ndowngrade = ["logits_not_probabilities"]',
)

# ----------------------------------------------------------------------------------------------- gates

OPS = (">=", "<=", ">", "<")

GATE = Section(
    "gates",
    "Each [[gates]] entry compares one metric of the report with a threshold. A failed gate of severity "
    "'error' exits 1; a gate whose metric rests on fewer than min_n examples (or is undefined) is "
    "'inconclusive', which counts as failed unless inconclusive = 'pass'.",
    (
        Field("metric", '"name" or "suite.name"', "A metric from the metric catalogue below.",
              default=REQUIRED, parse=p_str(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$",
                                            what='"name" or "suite.name"'), example='"accuracy"'),
        Field("params", "table", "Selects one record when a metric has several (e.g. { average = \"macro\" }).",
              default={}, parse=p_table, example='{ average = "macro" }'),
        Field("op", " | ".join(repr(o) for o in OPS), "Comparison: the gate passes when VALUE op threshold.",
              default=REQUIRED, parse=p_str(OPS), example='">="'),
        Field("threshold", "number", "The threshold.", default=REQUIRED, parse=p_float(), example="0.9"),
        Field("use", "'value' | 'ci_low' | 'ci_high'",
              "Which number is compared: the point estimate or an end of its 95% interval. ci_low with >= "
              "asks that the metric is above the threshold with confidence.", default="value",
              parse=p_str(("value", "ci_low", "ci_high"))),
        Field("severity", "'error' | 'warn'", "A failed 'warn' gate is reported but does not fail the run.",
              default="error", parse=p_str(("error", "warn"))),
        Field("min_n", "integer >= 1", "Below this many examples the gate is inconclusive. n is the count the "
              "metric's precision rests on (see each metric's entry: a precision's predictions, a TPR's positives, "
              "the smaller of positives and negatives for AUROC and AP). Default 30 for every metric of `audit run` "
              "(repro metrics, whose n counts seeds, have none); min_n = 1 turns it off.", parse=p_int(1),
              example="100"),
        Field("inconclusive", "'fail' | 'pass'", "How an inconclusive gate counts.", default="fail",
              parse=p_str(("fail", "pass"))),
        Field("id", "string", "A name for the gate (default: built from metric, params, op and threshold).",
              parse=p_str(pattern=r"^[\w.\-:\[\]=<>, /]+$", what="a short name"), example='"accuracy-floor"'),
    ),
    array=True,
    example='[[gates]]\nmetric = "accuracy"\nop = ">="\nthreshold = 0.9\nuse = "ci_low"',
)

CORE_SECTIONS: tuple[Section, ...] = (MODEL, DATA, RUN, VALIDITY, GATE)
