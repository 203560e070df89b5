"""The seeded train/test split of a recipe's data, without scikit-learn.

It reproduces ``sklearn.model_selection.train_test_split(positions, test_size=f, random_state=seed,
stratify=y or None)`` exactly (the same rows, drawn from the same ``numpy.random.RandomState(seed)``
stream in the same order), so every split audit has made stays the same, while ``audit run`` does not pay
for importing scikit-learn (about 1.6 CPU s with the SciPy modules it pulls in) to pick rows. The tests
compare it with scikit-learn over many sizes, class counts, fractions and seeds
(tests/test_fixed_costs.py).

The algorithm (scikit-learn's ShuffleSplit / StratifiedShuffleSplit):

- sizes: ``n_test = ceil(f * n)``, ``n_train = n - n_test``; an empty train part is an error;
- plain: the first ``n_test`` entries of ``rng.permutation(n)`` are the test rows, the rest the train rows;
- stratified: the per-class train counts are the "approximate mode" of the multivariate hypergeometric
  (``floor(n_c * n_train / n)``, the remaining rows given to the classes with the largest fractional parts,
  ties broken by ``rng.choice``), then the test counts the same way over the rows left; each class's rows
  (in index order) are permuted by ``rng.permutation(n_c)`` and cut into train and test. Every class needs
  two rows, and each part at least one row per class, or it is an error.
"""

from __future__ import annotations

from math import ceil

import numpy as np


class SplitError(ValueError):
    """The data cannot be split this way (the caller may try another or explain)."""


def split_sizes(n: int, test_size: float) -> tuple[int, int]:
    """(n_train, n_test) for a test fraction in (0, 1)."""
    if not 0 < test_size < 1:
        raise SplitError(f"test_size={test_size} is not a fraction in (0, 1)")
    n_test = ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0:
        raise SplitError(f"with {n} rows and test_size={test_size} the train part is empty")
    return n_train, n_test


def approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows drawn per class: ``floor(n_c / n * n_draws)``, then one more for the classes with the largest
    remainders until ``n_draws`` are drawn, ties among equal remainders broken at random by ``rng``."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need = int(n_draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add = min(len(inds), need)
            floored[rng.choice(inds, size=add, replace=False)] += 1
            need -= add
            if need == 0:
                break
    return floored.astype(int)


def seeded_split(y: np.ndarray, test_size: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions) of ``len(y)`` rows, stratified by ``y`` when ``stratify``.

    Raises SplitError where scikit-learn raises ValueError (too few rows, a class with one row, fewer rows
    in a part than classes)."""
    y = np.asarray(y)
    n = len(y)
    n_train, n_test = split_sizes(n, test_size)
    rng = np.random.RandomState(seed)
    if not stratify:
        perm = rng.permutation(n)
        return perm[n_test:n_test + n_train], perm[:n_test]
    classes, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    k = len(classes)
    if counts.min() < 2:
        raise SplitError("a class has a single row")
    if n_train < k or n_test < k:
        raise SplitError(f"a part of {min(n_train, n_test)} rows cannot hold each of {k} classes")
    by_class = np.split(np.argsort(y_idx.ravel(), kind="stable"), np.cumsum(counts)[:-1])
    n_i = approximate_mode(counts, n_train, rng)
    t_i = approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for c in range(k):
        rows = by_class[c].take(rng.permutation(counts[c]), mode="clip")
        train.extend(rows[:n_i[c]])
        test.extend(rows[n_i[c]:n_i[c] + t_i[c]])
    # scikit-learn shuffles each part once more; the sets, which are all a split hands on, do not change
    return rng.permutation(train), rng.permutation(test)
