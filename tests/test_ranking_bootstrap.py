"""The ranking bootstrap from cell counts (no (B, n) array) against the (B, n) row-weights bootstrap it
replaced, kept here as the reference: same distribution of the AUROC / AP replicates and of the intervals
built from them, binary (both sampling paths) and multiclass (one joint resample across classes)."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from audit.metrics import classification as C
from audit.metrics.bootstrap import percentile_interval


def weights_bootstrap(y, probs, classes, n_boot, rng):
    """The previous implementation: a (B, n) index array, its counts per row, one weighted pass per class."""
    n = len(y)
    idx = rng.integers(0, n, size=(n_boot, n))
    w = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(), minlength=n_boot * n).reshape(n_boot, n)
    out = [C.ranking_replicates(y == c, probs[:, c], w) for c in classes]
    return np.stack([o[0] for o in out], 1), np.stack([o[1] for o in out], 1)


def _binary(n, r, decimals=None):
    y = (r.random(n) < 0.3).astype(np.int64)
    p1 = 1 / (1 + np.exp(-(r.normal(size=n) + 1.2 * y)))
    if decimals is not None:
        p1 = np.round(p1, decimals)
    return y, np.stack([1 - p1, p1], 1)


# continuous scores (one cell per row), some ties (runs of positions summed), heavy ties (multinomial counts)
@pytest.mark.parametrize("decimals,path", [(None, "rows"), (2, "runs"), (1, "multinomial")])
def test_binary_replicates_and_intervals_equal_the_row_weights_bootstrap(decimals, path):
    r = np.random.default_rng(0)
    y, p = _binary(400, r, decimals)
    cells = C.RankingCells(y == 1, p[:, 1])
    got = "multinomial" if 16 * len(cells) <= len(y) else "rows" if len(cells) == len(y) else "runs"
    assert got == path  # each sampling path is exercised
    au, ap = C.ranking_bootstrap(y, p, [1], 4000, np.random.default_rng(1))
    au0, ap0 = weights_bootstrap(y, p, [1], 4000, np.random.default_rng(2))
    for new, old in ((au[:, 0], au0[:, 0]), (ap[:, 0], ap0[:, 0])):
        assert ks_2samp(new, old).pvalue > 1e-3
        lo, hi = percentile_interval(new)
        lo0, hi0 = percentile_interval(old)
        assert abs(lo - lo0) < 0.15 * old.std() * 2 and abs(hi - hi0) < 0.15 * old.std() * 2


def test_multiclass_resample_is_joint_across_classes():
    """Macro-average replicates (which need one row resample shared by all classes) have the distribution
    of the row-weights bootstrap's; with independent per-class resamples the spread would differ."""
    r = np.random.default_rng(3)
    n, k = 150, 3
    y = r.integers(0, k, n)
    z = r.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    au, ap = C.ranking_bootstrap(y, p, list(range(k)), 3000, np.random.default_rng(4), max_elements=2000)
    au0, ap0 = weights_bootstrap(y, p, list(range(k)), 3000, np.random.default_rng(5))
    for new, old in ((au, au0), (ap, ap0)):
        for c in range(k):
            assert ks_2samp(new[:, c], old[:, c]).pvalue > 1e-3
        assert ks_2samp(np.nanmean(new, 1), np.nanmean(old, 1)).pvalue > 1e-3
        # the classes' correlation within a replicate, as a joint resample makes it
        cn, co = np.corrcoef(new.T), np.corrcoef(old.T)
        assert np.abs(cn - co).max() < 0.1


def test_cell_metrics_equal_the_resampled_rows_exactly():
    r = np.random.default_rng(6)
    y, p = _binary(90, r, 1)
    y[:3] = 1 - y[:3]
    cells = C.RankingCells(y == 1, p[:, 1])
    assert len(cells.tie) > 0
    idx = r.integers(0, 90, size=(40, 90))
    counts = np.stack([np.bincount(cells.cell_of_row[i], minlength=len(cells)) for i in idx])
    au, ap = cells.metrics(counts)
    for b in range(40):
        yy, ss = y[idx[b]] == 1, p[idx[b], 1]
        np.testing.assert_allclose(au[b], C.auroc_binary(yy, ss), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ap[b], C.average_precision_binary(yy, ss), rtol=1e-12, atol=1e-12)
