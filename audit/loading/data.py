"""Read evaluation data from npz, csv, scikit-learn's bundled datasets or a Python callable, and validate it.

Every problem is reported as one line naming the file, the array or column, and how many rows are
affected (with the first few global indices), then exit 2.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from audit.engine.data import Dataset
from audit.errors import DataError
from audit.loading.hashing import sha256_file
from audit.loading.imports import import_callable
from audit.recipe.load import Recipe


def load_data(recipe: Recipe) -> Dataset:
    cfg = recipe.section("data")
    model = recipe.section("model")
    src = cfg["source"]
    loader = {"npz": _load_npz, "csv": _load_csv, "sklearn": _load_sklearn, "python": _load_python}[src]
    x, y, sensitive, index, feature_names, meta = loader(cfg, recipe)
    where = meta.get("path") or f"[data] source = {src!r}"
    x, y, sensitive, index = _validate(x, y, sensitive, index, model, where, feature_names)
    split = cfg["split"] or ("test" if src == "sklearn" else "all")
    if split != "all":
        try:
            chosen = split_indices(y, split, cfg["test_size"], cfg["split_seed"])
        except DataError as e:
            raise DataError(f"{recipe.path}: {e}") from None
        x, y, index = x[chosen], y[chosen], index[chosen]
        sensitive = {k: v[chosen] for k, v in sensitive.items()}
        meta.update(split=split, test_size=cfg["test_size"], split_seed=cfg["split_seed"])
    else:
        meta.update(split="all")
    meta["source"] = src
    return finish_data(x, y, sensitive, index, feature_names, meta, recipe, where)


def data_from_memory(x: np.ndarray, y: np.ndarray, sensitive: dict[str, np.ndarray], recipe: Recipe, where: str,
                     feature_names: list[str] | None = None, meta: dict[str, Any] | None = None) -> Dataset:
    """Arrays handed over in memory (``audit.run``), validated exactly as a file's (:func:`_validate`: shapes,
    NaN, labels, bounds, sensitive attributes), with global indices 0..n-1. Of [data], only what acts on
    loaded rows applies (``limit``, ``sensitive_bins``); the keys that describe a file source are not read."""
    index = np.arange(len(y) if np.ndim(y) else 0)
    x, y, sensitive, index = _validate(x, y, sensitive, index, recipe.section("model"), where, feature_names)
    return finish_data(x, y, sensitive, index, feature_names, {"source": "memory", "path": None, "split": "all",
                                                               **(meta or {})}, recipe, where)


def finish_data(x: np.ndarray, y: np.ndarray, sensitive: dict[str, np.ndarray], index: np.ndarray,
                feature_names: list[str] | None, meta: dict[str, Any], recipe: Recipe, where: str) -> Dataset:
    """Validated rows -> the Dataset: [data] limit, the sensitive attributes encoded as groups, the content
    hash. Shared by every source, files and memory alike."""
    cfg = recipe.section("data")
    if cfg["limit"] is not None:
        x, y, index = x[: cfg["limit"]], y[: cfg["limit"]], index[: cfg["limit"]]
        sensitive = {k: v[: cfg["limit"]] for k, v in sensitive.items()}
    groups = {k: _encode_groups(k, v, cfg["sensitive_bins"].get(k), where) for k, v in sensitive.items()}
    for k in cfg["sensitive_bins"]:
        if k not in sensitive:
            raise DataError(f"{recipe.path}: [data] sensitive_bins names {k!r}, which is not a sensitive attribute "
                            f"(sensitive: {', '.join(sensitive) or 'none'})")
    x = canonical(x)
    meta.update(n=int(len(y)), input_shape=list(x.shape[1:]), sha256=data_sha256(x, y, index, groups),
                sensitive={k: v[1] for k, v in groups.items()})
    return Dataset(x=x, y=y, index=index, groups=groups, feature_names=feature_names, meta=meta)


ALIGN = 64  # bytes: a cache line, and the widest SIMD register (AVX-512)


def canonical(x: np.ndarray) -> np.ndarray:
    """``x`` in one fixed memory layout: C order with the canonical strides, its first byte on a 64-byte
    boundary (copied only when it is not so already). CPU kernels (oneDNN's convolutions) choose their
    algorithm from the strides and the alignment, and round the last bits of the logits differently: a
    size-1 channel axis made with ``x[:, None]`` has a stride numpy ignores (the array is still
    "C-contiguous") but torch reads as channels-last, and an .npz file's arrays start 32 bytes off the
    boundary. The same inputs read from a file, scikit-learn or memory then gave logits one float32 ulp
    apart; in this layout they give the same numbers whatever they were read from."""
    want = [x.itemsize]
    for d in reversed(x.shape[1:]):
        want.insert(0, want[0] * d)
    if x.size == 0 or (x.ctypes.data % ALIGN == 0 and tuple(want) == x.strides):
        return x
    buf = np.empty(x.nbytes + ALIGN, dtype=np.uint8)
    start = -buf.ctypes.data % ALIGN
    out = buf[start:start + x.nbytes].view(x.dtype).reshape(x.shape)
    out[...] = x
    return out


def data_sha256(x: np.ndarray, y: np.ndarray, index: np.ndarray, groups: dict[str, tuple[np.ndarray, list[str]]]) -> str:
    """A content hash of exactly what is evaluated (independent of the source format)."""
    h = hashlib.sha256()
    for arr in (x, y, index):
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    for name in sorted(groups):
        codes, cats = groups[name]
        h.update(name.encode())
        h.update("\x1f".join(cats).encode())
        h.update(np.ascontiguousarray(codes).tobytes())
    return h.hexdigest()


def _rows(mask: np.ndarray, index: np.ndarray | None = None) -> str:
    rows = np.nonzero(mask)[0]
    shown = (index[rows] if index is not None else rows)[:5]
    more = "..." if len(rows) > 5 else ""
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''} (first: {', '.join(map(str, shown))}{more})"


# ------------------------------------------------------------------------------------------------ sources


def _existing(recipe: Recipe, cfg: dict[str, Any]) -> Path:
    path = recipe.resolve(cfg["path"])
    from audit.loading.files import file_problem

    problem = file_problem(path)
    if problem is not None:
        raise DataError(f"{recipe.path}: [data] path = {cfg['path']!r}: file {path} {problem}")
    return path


def _load_npz(cfg: dict[str, Any], recipe: Recipe):
    path = _existing(recipe, cfg)
    try:
        z = np.load(path, allow_pickle=False)
        files = list(z.files)
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    def get(name: str, key: str) -> np.ndarray:
        if name not in files:
            raise DataError(f"{path}: no array {name!r} (named by [data] {key}); arrays: {', '.join(files)}")
        try:
            return z[name]
        except ValueError as e:  # object arrays need pickle: refused
            raise DataError(f"{path}: array {name!r} cannot be read without pickle ({e}); store plain numeric "
                            "or string arrays") from e

    x = get(cfg["x"], "x")
    y = get(cfg["y"], "y")
    sensitive = {attr: get(arr, f"sensitive.{attr}") for attr, arr in (cfg["sensitive"] or {}).items()}
    return x, y, sensitive, np.arange(len(y)), None, {"path": str(path), "file_sha256": sha256_file(path)}


def _load_csv(cfg: dict[str, Any], recipe: Recipe):
    import pandas as pd

    path = _existing(recipe, cfg)
    _scan_csv(path)
    try:
        df = pd.read_csv(path, engine="c")
    except Exception as e:
        raise DataError(f"{path}: not a readable CSV file: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    from audit.recipe.fields import suggest

    cols = [str(c) for c in df.columns]
    categorical = cfg["categorical"]
    pinned = categorical if isinstance(categorical, dict) else {}
    needed = list(cfg["features"]) + [cfg["label"]] + list(cfg["sensitive"] or []) + list(categorical)
    for c in needed:
        if c not in cols:
            raise DataError(f"{path}: no column {c!r} {suggest(c, cols)}")
    for c in categorical:
        if c not in cfg["features"]:
            raise DataError(f"{recipe.path}: [data] categorical column {c!r} is not listed in features")
    parts, names, owners, from_file = [], [], [], {}
    for c in cfg["features"]:
        col = df[c]
        if c in categorical:
            if col.isna().any():
                raise DataError(f"{path}: categorical column {c!r} has missing values in {_rows(col.isna().to_numpy())}")
            values = col.astype(str).to_numpy()
            if c in pinned:
                cats = pinned[c]
                unknown = ~np.isin(values, cats)
                if unknown.any():
                    raise DataError(f"{path}: categorical column {c!r} has {values[unknown][0]!r}, which is not one "
                                    f"of its [data] categorical categories {cats}, in {_rows(unknown)}")
            else:
                cats = sorted(set(values))
                from_file[c] = cats
            for cat in cats:
                parts.append((values == cat).astype(np.float32))
                names.append(f"{c}={cat}")
                owners.append(c)
            continue
        numeric = pd.to_numeric(col, errors="coerce")
        bad = numeric.isna().to_numpy() & col.notna().to_numpy()
        if bad.any():
            raise DataError(f"{path}: feature column {c!r} is not numeric in {_rows(bad)}; list it in [data] "
                            "categorical to one-hot encode it")
        if numeric.isna().any():
            raise DataError(f"{path}: feature column {c!r} has missing values in {_rows(numeric.isna().to_numpy())}")
        parts.append(numeric.to_numpy(dtype=np.float64))
        names.append(c)
        owners.append(c)
    x = np.stack(parts, axis=1) if parts else np.zeros((len(df), 0))
    label = df[cfg["label"]]
    if cfg["label_values"] is not None:
        lv = list(cfg["label_values"])
        sv = label.astype(str).to_numpy()
        unknown = ~np.isin(sv, lv)
        if unknown.any():
            raise DataError(f"{path}: label column {cfg['label']!r} has values outside label_values {lv} in "
                            f"{_rows(unknown)} (e.g. {sv[unknown][0]!r})")
        y = np.array([lv.index(v) for v in sv], dtype=np.int64)
    else:
        y = label.to_numpy()
    sensitive = {c: df[c].to_numpy() for c in (cfg["sensitive"] or [])}
    meta: dict[str, Any] = {"path": str(path), "file_sha256": sha256_file(path), "encoded_features": names,
                            # inputs made by the one-hot encoding: attacks and noise never perturb them
                            "one_hot_features": [n for n, c in zip(names, owners) if c in categorical]}
    if from_file:
        meta["categories_from_file"] = from_file
    return x, y, sensitive, np.arange(len(df)), names, meta


CSV_FIELD_LIMIT = 1 << 20  # characters in one field: more is a broken file (an unclosed quote), not data


def _scan_csv(path: Path) -> None:
    """One bounded pass over the file before pandas sees it: every line must have as many fields as the
    header, and no field may exceed CSV_FIELD_LIMIT. A malformed line is reported by number at once
    (pandas alone either takes minutes widening the frame for a line with 100,000 extra fields and then
    blames missing values, or fails somewhere later)."""
    import csv

    limit = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    reader: Any = None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: the CSV file is empty (no header line)")
            k = len(header)
            start = reader.line_num + 1  # the line a record starts on (a quoted field can span lines)
            for row in reader:
                if row and len(row) != k:
                    span = f"line {start}" + (f" (a record running to line {reader.line_num}: an unclosed quote?)"
                                              if reader.line_num > start else "")
                    raise DataError(f"{path}: {span} has {len(row)} fields but the header has {k}; fix that line")
                start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num if reader else 1} is not valid CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded); save the CSV as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    finally:
        csv.field_size_limit(limit)


def split_indices(y: np.ndarray, split: str, test_size: float, split_seed: int) -> np.ndarray:
    """Positions of the ``split`` part of a seeded split stratified by label (sorted; all rows for 'all').

    Stratification falls back to a plain seeded split when a class has fewer than two examples. The rows
    are scikit-learn's ``train_test_split`` rows, drawn without importing it (``audit.loading.split``).
    """
    from audit.loading.split import SplitError, seeded_split

    positions = np.arange(len(y))
    if split == "all":
        return positions
    _, counts = np.unique(y, return_counts=True)
    stratify = bool(len(counts)) and counts.min() >= 2
    try:
        tr, te = seeded_split(y, test_size, split_seed, stratify=stratify)
    except SplitError:
        # too few rows for two non-empty parts (1 row), or fewer test rows than classes when stratified
        try:
            tr, te = seeded_split(y, test_size, split_seed, stratify=False)
        except SplitError:
            raise DataError(f"[data] split = {split!r} with test_size = {test_size:g}: {len(y)} row"
                            f"{'s' if len(y) != 1 else ''} cannot be split into a non-empty train and test part; "
                            "use split = \"all\" to audit every row, or more data") from None
    return np.sort(te if split == "test" else tr)


def sklearn_split(name: str, split: str, test_size: float, split_seed: int):
    """The bundled scikit-learn dataset ``name`` and a seeded stratified split.

    Returns (x, y, global index, feature names). digits are images in [0, 1] of shape (1, 8, 8)
    (pixel values / 16). Training scripts use this same function so that train and test never overlap.
    """
    x, y, names = _sklearn_arrays(name)
    chosen = split_indices(y, split, test_size, split_seed)
    return x[chosen], y[chosen], chosen, names


def _sklearn_arrays(name: str):
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
               "iris": datasets.load_iris, "wine": datasets.load_wine}
    bunch = loaders[name]()
    if name == "digits":
        return (bunch.images / 16.0).astype(np.float32)[:, None, :, :], bunch.target.astype(np.int64), None
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), list(bunch.feature_names)


def _load_sklearn(cfg: dict[str, Any], recipe: Recipe):
    x, y, names = _sklearn_arrays(cfg["name"])
    return x, y, {}, np.arange(len(y)), names, {"path": None, "dataset": cfg["name"]}


def _load_python(cfg: dict[str, Any], recipe: Recipe):
    where = f"{recipe.path}: [data] callable"
    fn = import_callable(cfg["callable"], recipe.base_dir, where)
    try:
        out = fn(**cfg["kwargs"])
    except Exception as e:
        raise DataError(f"{where} = {cfg['callable']!r} raised {type(e).__name__}: {e}") from e
    x, y, sensitive = _unpack_python(out, where)
    return x, y, sensitive, np.arange(len(y)), None, {"path": None, "callable": cfg["callable"]}


def _unpack_python(out: Any, where: str):
    import torch

    if isinstance(out, dict):
        if "x" not in out or "y" not in out:
            raise DataError(f"{where}: returned a dict without keys 'x' and 'y' (keys: {', '.join(map(str, out))})")
        return _np(out["x"]), _np(out["y"]), {k: _np(v) for k, v in (out.get("sensitive") or {}).items()}
    if isinstance(out, tuple) and len(out) in (2, 3):
        sens = out[2] if len(out) == 3 else {}
        if not isinstance(sens, dict):
            raise DataError(f"{where}: the third element must be a dict {{attribute: values}}")
        return _np(out[0]), _np(out[1]), {k: _np(v) for k, v in sens.items()}
    if isinstance(out, torch.utils.data.Dataset):
        try:
            items = [out[i] for i in range(len(out))]  # type: ignore[arg-type]
        except TypeError as e:
            raise DataError(f"{where}: returned a Dataset without __len__/__getitem__: {e}") from e
        if not items:
            raise DataError(f"{where}: returned an empty Dataset")
        if not all(isinstance(it, (tuple, list)) and len(it) in (2, 3) for it in items):
            raise DataError(f"{where}: Dataset items must be (x, y) or (x, y, {{attribute: value}})")
        x = np.stack([_np(it[0]) for it in items])
        y = np.array([int(_np(it[1])) for it in items])
        sens: dict[str, np.ndarray] = {}
        if len(items[0]) == 3:
            for k in items[0][2]:
                sens[k] = np.array([it[2][k] for it in items])
        return x, y, sens
    raise DataError(f"{where}: returned {type(out).__name__}; expected (x, y), (x, y, sensitive), a dict or a "
                    "torch Dataset")


def _np(v: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(v)


# ----------------------------------------------------------------------------------------------- validation


def _validate(x: np.ndarray, y: np.ndarray, sensitive: dict[str, np.ndarray], index: np.ndarray,
              model: dict[str, Any], where: str, feature_names: list[str] | None = None):
    n = len(y) if np.ndim(y) else 0
    if np.ndim(y) != 1:
        raise DataError(f"{where}: labels must be a 1-D array, got shape {np.shape(y)}")
    if n == 0 or len(x) == 0:
        raise DataError(f"{where}: the data is empty (0 examples)")
    if len(x) != n:
        raise DataError(f"{where}: x has {len(x)} rows but y has {n}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{where}: x must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    flat = x.reshape(n, -1)
    bad = ~np.isfinite(flat).all(axis=1)
    if bad.any():
        raise DataError(f"{where}: x has NaN or Inf values {_where_in_example(~np.isfinite(flat[bad]), x.shape[1:], feature_names)} "
                        f"in {_rows(bad, index)}; drop or impute them before the audit")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad_y = ~np.isfinite(y) | (y != np.round(y))
            raise DataError(f"{where}: labels must be integers; non-integer labels in {_rows(bad_y, index)}")
    elif not np.issubdtype(y.dtype, np.integer) and not np.issubdtype(y.dtype, np.bool_):
        raise DataError(f"{where}: labels must be integers 0..{model['num_classes'] - 1}, got dtype {y.dtype} "
                        "(csv: map them with [data] label_values)")
    y = y.astype(np.int64)
    k = model["num_classes"]
    out = (y < 0) | (y >= k)
    if out.any():
        raise DataError(f"{where}: labels outside [0, {k}) ([model] num_classes = {k}) in {_rows(out, index)}")
    for name, s in sensitive.items():
        if np.ndim(s) != 1:
            raise DataError(f"{where}: sensitive attribute {name!r} must hold one value per example (1-D), got shape "
                            f"{np.shape(s)}")
        if len(s) != n:
            raise DataError(f"{where}: sensitive attribute {name!r} has {len(s)} values but the data has {n} rows")
        s_missing = _missing(s)
        if s_missing.any():
            raise DataError(f"{where}: sensitive attribute {name!r} is missing in {_rows(s_missing, index)}")
    bounds = model["input_bounds"]
    if bounds is not None:
        lo, hi = bounds
        outside = ((flat < lo) | (flat > hi)).any(axis=1)
        if outside.any():
            raise DataError(f"{where}: x has values outside [model] input_bounds = [{lo:g}, {hi:g}] in "
                            f"{_rows(outside, index)} (min {flat.min():g}, max {flat.max():g})")
    shape = model["input_shape"]
    if shape is not None:
        if list(x.shape[1:]) != list(shape):
            if int(np.prod(shape)) != flat.shape[1]:
                raise DataError(f"{where}: each example has shape {tuple(x.shape[1:])}, which cannot be reshaped to "
                                f"[model] input_shape = {shape}")
            x = flat.reshape(n, *shape)
    for key in ("mean", "std"):
        values = model[key]
        if values is not None and len(values) > 1 and (x.ndim < 2 or x.shape[1] != len(values)):
            channels = x.shape[1] if x.ndim >= 2 else 1
            raise DataError(f"[model] {key} has {len(values)} values but the inputs have {channels} along dimension 1 "
                            f"(example shape {tuple(x.shape[1:])}): give one value per channel, or one for all")
    return np.ascontiguousarray(x), y, sensitive, np.asarray(index, dtype=np.int64)


def _where_in_example(bad: np.ndarray, shape: tuple[int, ...], names: list[str] | None) -> str:
    """Which features of the bad rows hold the bad values: column names when known ("in column 'age'"),
    else positions within an example ("at position (0, 3, 4) of each (1, 8, 8) example")."""
    cols = np.flatnonzero(bad.any(axis=0))
    more = f" (and {len(cols) - 3} more)" if len(cols) > 3 else ""
    if names is not None and len(names) == bad.shape[1]:
        label = "column" if len(cols) == 1 else "columns"
        return f"in {label} {', '.join(repr(names[c]) for c in cols[:3])}{more}"
    if len(shape) <= 1:
        label = "feature" if len(cols) == 1 else "features"
        return f"in {label} {', '.join(str(int(c)) for c in cols[:3])}{more} (0-based)"
    pos = [str(tuple(int(i) for i in np.unravel_index(c, shape))) for c in cols[:3]]
    return f"at position {', '.join(pos)}{more} of each {tuple(shape)} example"


def _missing(s: np.ndarray) -> np.ndarray:
    if np.issubdtype(s.dtype, np.floating):
        return ~np.isfinite(s)
    if s.dtype == object:
        return np.array([v is None or (isinstance(v, float) and not np.isfinite(v)) for v in s])
    return np.zeros(len(s), dtype=bool)


def _encode_groups(name: str, values: np.ndarray, bins: list[float] | None, where: str) -> tuple[np.ndarray, list[str]]:
    """Codes 0..G-1 and category names. Numeric attributes with cut points are binned ("<25", "[25, 40)",
    ">=40", in order); otherwise categories are the sorted distinct values."""
    if bins is not None:
        try:
            v = values.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: sensitive attribute {name!r} is not numeric, so it cannot be binned") from None
        codes = np.searchsorted(np.asarray(bins), v, side="right")
        labels = [f"<{bins[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(bins, bins[1:])] + [f">={bins[-1]:g}"]
        return codes.astype(np.int64), labels
    as_str = np.array([_fmt(v) for v in values.tolist()])
    cats, codes = np.unique(as_str, return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in cats]


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
