"""The per-example table every suite fills and every metric reads.

One row per example, keyed by the example's global index. Columns are numpy arrays whose first
dimension is the number of rows (a column may be 2-D, e.g. logits). Suites add columns; metrics are
pure functions of columns. Because every fact is per example, distributed runs concatenate rows,
resumed runs skip rows, and two checkpoints or two seeds can be compared example by example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


@dataclass
class ExampleTable:
    """Columns of per-example facts.

    Core columns, filled by the inference pass:
      index (int64)       global example index (position in the full data source)
      label (int64)       true class
      logits (float32, n x K)
      pred (int64)        argmax of logits
      confidence (float64) softmax probability of the predicted class
      group:<attr> (int64) code of the example's value of sensitive attribute <attr>;
                           the category names are in ``categories[attr]``.
    """

    columns: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    # facts about the file, not per example (the id of the run that wrote it): stored as "meta:<key>" strings
    meta: dict[str, str] = field(default_factory=dict)
    # what a column means, for readers that did not write it (JSON-able; stored as "colmeta:<name>"), e.g.
    # robust:worst:linf:eps_broken -> {"kind": "eps_broken", "norm": "linf", "eps": ["2/255", ...],
    # "eps_values": [...]}: the fairness suite and `audit diff` read columns through this, not through
    # another suite's config
    column_meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        if not self.columns:
            return 0
        return len(next(iter(self.columns.values())))

    def add(self, name: str, values: np.ndarray, meta: dict[str, Any] | None = None) -> None:
        values = np.asarray(values)
        if self.columns and len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, table has {len(self)}")
        self.columns[name] = values
        if meta is not None:
            self.column_meta[name] = dict(meta)

    def update(self, columns: dict[str, np.ndarray], meta: dict[str, dict[str, Any]] | None = None) -> None:
        """Add several columns (each the table's length), with their metadata."""
        for name, values in columns.items():
            self.add(name, values, (meta or {}).get(name))

    def take(self, rows: np.ndarray) -> "ExampleTable":
        """The table restricted to ``rows`` (positions or a boolean mask), metadata kept."""
        return ExampleTable({k: v[rows] for k, v in self.columns.items()}, dict(self.categories), dict(self.meta),
                            {k: dict(v) for k, v in self.column_meta.items()})

    @classmethod
    def concat(cls, tables: Sequence["ExampleTable"]) -> "ExampleTable":
        """Rows of several tables (ranks' shards, a resumed run's cached rows and its new ones) as one table
        sorted by global index. Every table must have the same columns and categories, and no index may
        appear twice: two copies of an example would count it twice in every metric."""
        tables = [t for t in tables if len(t.columns)]
        if not tables:
            return cls()
        names = list(tables[0].columns)
        for t in tables[1:]:
            if set(t.columns) != set(names):
                diff = sorted(set(t.columns) ^ set(names))
                raise ValueError(f"tables to concatenate have different columns ({', '.join(diff)})")
            if t.categories != tables[0].categories:
                raise ValueError("tables to concatenate have different category names")
        index = np.concatenate([t.columns["index"] for t in tables])
        order = np.argsort(index, kind="stable")
        dup = index[order][1:][np.diff(index[order]) == 0]
        if len(dup):
            raise ValueError(f"example index {int(dup[0])} appears in more than one table ({len(dup)} duplicates)")
        cols = {k: np.concatenate([t.columns[k] for t in tables])[order] for k in names}
        meta: dict[str, dict[str, Any]] = {}
        for t in tables:
            meta.update(t.column_meta)
        return cls(cols, dict(tables[0].categories), dict(tables[0].meta), meta)

    def align(self, other: "ExampleTable") -> tuple["ExampleTable", "ExampleTable"]:
        """Both tables restricted to the examples they share, in the same (ascending index) order: the
        paired view that a per-example comparison of two audits (`audit diff`) needs."""
        a, b = self.columns["index"], other.columns["index"]
        common, ia, ib = np.intersect1d(a, b, assume_unique=True, return_indices=True)
        return self.take(ia), other.take(ib)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    def group_names(self) -> list[str]:
        return [c.split(":", 1)[1] for c in self.columns if c.startswith("group:")]

    def groups(self) -> Iterator[tuple[str, np.ndarray, list[str]]]:
        """(attribute, codes, category names) for each sensitive attribute."""
        for attr in self.group_names():
            yield attr, self.columns[f"group:{attr}"], self.categories[attr]

    @property
    def probs(self) -> np.ndarray:
        """Softmax of the logits in float64 (computed stably, not stored)."""
        z = self.columns["logits"].astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: Path, meta: dict[str, str] | None = None) -> None:
        """Write the table as .npz (columns, the category names as string arrays, and ``meta`` as 0-d
        string arrays ``meta:<key>``)."""
        arrays = dict(self.columns)
        for attr, names in self.categories.items():
            arrays[f"categories:{attr}"] = np.asarray(names, dtype=str)
        for key, value in {**self.meta, **(meta or {})}.items():
            arrays[f"meta:{key}"] = np.asarray(str(value))
        for name, info in self.column_meta.items():
            if name in self.columns:
                arrays[f"colmeta:{name}"] = np.asarray(json.dumps(info, sort_keys=True))
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> "ExampleTable":
        with np.load(path, allow_pickle=False) as z:
            cols = {k: z[k] for k in z.files if not k.startswith(("categories:", "meta:", "colmeta:"))}
            cats = {k.split(":", 1)[1]: [str(s) for s in z[k]] for k in z.files if k.startswith("categories:")}
            meta = {k.split(":", 1)[1]: str(z[k]) for k in z.files if k.startswith("meta:")}
            colmeta = {k.split(":", 1)[1]: json.loads(str(z[k])) for k in z.files if k.startswith("colmeta:")}
        return cls(columns=cols, categories=cats, meta=meta, column_meta=colmeta)


@dataclass
class Part:
    """Rows filled by one unit of work (a block, or one check task on the checks' examples): their
    positions in the data, their columns (one entry per position), the columns' metadata, and the suite's
    mergeable partial results for these rows (JSON-able; the suite's ``summarise`` reduces the list of
    every part's partials, e.g. the largest perturbation measured, the sum of backward rows)."""

    positions: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    column_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    partials: dict[str, Any] = field(default_factory=dict)


def blank(dtype: np.dtype) -> Any:
    """The value of a column at a row no part filled (a check column outside the checks' examples)."""
    if dtype == np.bool_:
        return False
    if np.issubdtype(dtype, np.integer):
        return -1
    return np.nan


class Merger:
    """Builds columns of length ``n`` from parts added one at a time (so that a gather can stream: one part
    in flight, never every rank's parts at once). Rows no part covers get :func:`blank`. Several parts may
    fill the same rows with different columns (check tasks), never the same column twice. ``dense``:
    every column covers every row."""

    def __init__(self, n: int, dense: bool):
        self.n, self.dense = n, dense
        self.cols: dict[str, np.ndarray] = {}
        self.seen: dict[str, np.ndarray] = {}
        self.meta: dict[str, dict[str, Any]] = {}
        self.partials: list[dict[str, Any]] = []

    def add(self, p: Part) -> None:
        self.meta.update(p.column_meta)
        if p.partials:
            self.partials.append(p.partials)
        for k, v in p.columns.items():
            if k not in self.cols:
                self.cols[k] = np.full((self.n,) + v.shape[1:], blank(v.dtype), dtype=v.dtype)
                self.seen[k] = np.zeros(self.n, dtype=np.int64)
            self.cols[k][p.positions] = v
            self.seen[k][p.positions] += 1

    def done(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]], list[dict[str, Any]]]:
        for k, count in self.seen.items():
            if (count > 1).any() or (self.dense and (count == 0).any()):
                bad = int(np.flatnonzero((count > 1) | (self.dense & (count == 0)))[0])
                raise ValueError(f"row {bad} of column {k!r} is filled {int(count[bad])} times (expected once)")
        return self.cols, self.meta, self.partials

