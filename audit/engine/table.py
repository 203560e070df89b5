"""The per-example table every suite fills and every metric reads.

One row per example, keyed by the example's global index. Columns are numpy arrays whose first
dimension is the number of rows (a column may be 2-D, e.g. logits). Suites add columns; metrics are
pure functions of columns. Because every fact is per example, distributed runs concatenate rows,
resumed runs skip rows, and two checkpoints or two seeds can be compared example by example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

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

    def __len__(self) -> int:
        if not self.columns:
            return 0
        return len(next(iter(self.columns.values())))

    def add(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values)
        if self.columns and len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, table has {len(self)}")
        self.columns[name] = values

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
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> "ExampleTable":
        with np.load(path, allow_pickle=False) as z:
            cols = {k: z[k] for k in z.files if not k.startswith(("categories:", "meta:"))}
            cats = {k.split(":", 1)[1]: [str(s) for s in z[k]] for k in z.files if k.startswith("categories:")}
            meta = {k.split(":", 1)[1]: str(z[k]) for k in z.files if k.startswith("meta:")}
        return cls(columns=cols, categories=cats, meta=meta)
