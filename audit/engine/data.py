"""The evaluation data as the engine sees it: validated arrays with global indices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Validated evaluation data.

    x: float32, shape (n, *input_shape), finite, inside the input bounds when the recipe sets them.
    y: int64 in [0, num_classes).
    index: int64 global example index (position in the source before any split or limit).
    groups: attribute -> (codes int64 of length n, category names).
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    groups: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    feature_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)
