"""The calibrated reference ECE from exact per-cell Poisson-binomial counts, tested against the per-row
label draw it replaced (kept here as the reference implementation), and the Poisson-binomial pmf against
the direct recursion."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from audit.metrics import calibration as C
from audit.metrics.poisson_binomial import poisson_binomial_draws, poisson_binomial_pmf
from audit.seeding import rng as stream



def _atoms(*draws: np.ndarray) -> list[np.ndarray]:
    """ECE draws rounded to 1e-10: equal ECEs computed along different paths differ in the last bits, which
    a KS test on a distribution with atoms (confident models) reads as a difference."""
    return [np.round(d, 10) for d in draws]

def per_row_reference(probs, n_bins, strategy, kind, n_draws, rng):
    """What calibrated_reference did before: draw y*_i ~ Categorical(p_i) for every row in every draw."""
    p = C.as_probs(probs)
    n, k = p.shape
    if kind == "top_label":
        conf, _ = C.top_label(p)
        idx = C.assign_bins(conf, n_bins, strategy)
        conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
        hit = rng.random((n_draws, n)) < conf
        key = (np.arange(n_draws)[:, None] * n_bins + idx[None, :])[hit]
        acc = np.bincount(key, minlength=n_draws * n_bins).reshape(n_draws, n_bins)
        return np.abs(acc - conf_sum).sum(1) / n
    idx = C.assign_bins(p, n_bins, strategy) + (np.arange(k) * n_bins)[None, :]
    size = k * n_bins
    p_sum = np.bincount(idx.ravel(), weights=p.ravel(), minlength=size)
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = np.inf
    ystar = (rng.random((n_draws, n, 1)) >= cum[None]).sum(-1)
    key = np.arange(n_draws)[:, None] * size + idx[np.arange(n)[None, :], ystar]
    hits = np.bincount(key.ravel(), minlength=n_draws * size).reshape(n_draws, size)
    return np.abs(hits - p_sum).sum(1) / (n * k)


def test_pmf_equals_the_direct_recursion_at_every_size_and_near_0_and_1():
    r = np.random.default_rng(0)
    for m in (1, 2, 3, 5, 8, 9, 17, 64, 200, 1000):
        for p in (r.random(m), r.random(m) ** 8, 1 - r.random(m) ** 8):
            pmf = np.array([1.0])
            for q in p:   # pmf_{j}(x) = pmf_{j-1}(x) (1 - q) + pmf_{j-1}(x - 1) q
                pmf = np.r_[pmf * (1 - q), 0.0] + np.r_[0.0, pmf * q]
            got = poisson_binomial_pmf(p)
            assert got.shape == (m + 1,)
            assert np.abs(got - pmf).max() < 1e-13
    assert np.array_equal(poisson_binomial_pmf([0.0, 1.0, 1.0]), [0.0, 0.0, 1.0, 0.0])


def test_cell_draws_match_bernoulli_sums_in_distribution():
    r = np.random.default_rng(1)
    p = np.r_[r.random(40) ** 6, 1 - r.random(30) ** 6, [0.5], [0.02, 0.97]]
    cell = np.r_[np.zeros(40, int), np.ones(30, int), [2], [3, 3]]
    d = poisson_binomial_draws(p, cell, 5, 20000, stream(0, "t"))
    assert d.shape == (20000, 5) and (d[:, 4] == 0).all()
    direct = np.stack([np.bincount(cell, weights=r.random(len(p)) < p, minlength=5) for _ in range(20000)])
    for c in range(4):
        assert ks_2samp(d[:, c], direct[:, c]).pvalue > 1e-3
        assert d[:, c].min() >= 0 and d[:, c].max() <= (cell == c).sum()


def _probs(kind, n, r):
    if kind == "binary":
        p1 = r.beta(0.6, 0.6, n)
        return np.stack([1 - p1, p1], 1)
    if kind == "skewed":     # almost all mass near 0 and 1, a few rows alone in their bins
        p1 = np.r_[r.random(n - 3) ** 12, [0.41, 0.55, 0.62]]
        p1[: n // 2] = 1 - p1[: n // 2]
        return np.stack([1 - p1, p1], 1)
    z = r.normal(size=(n, 4)) * 2
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("data,n", [("binary", 200), ("skewed", 150), ("multiclass", 120)])
def test_reference_distribution_equals_the_per_row_draw(data, n):
    """KS test and quantiles of the reference ECE draws, cell path against per-row draws, every binning
    and kind (binary class-wise and top-label from the one shared draw)."""
    p = _probs(data, n, np.random.default_rng(2))
    refs = C.calibrated_references(p, 15, ("uniform", "quantile"), ("top_label", "classwise"), 3000,
                                   stream(3, "t"))
    for (st, kd), ref in refs.items():
        old = per_row_reference(p, 15, st, kd, 3000, stream(4, "t", st, kd))
        assert ks_2samp(*_atoms(ref.draws, old)).pvalue > 1e-3, (st, kd)
        for q in (0.05, 0.5, 0.95):
            # the Monte-Carlo standard error of a difference of two such quantiles is ~0.03-0.05 sd here
            assert abs(np.quantile(ref.draws, q) - np.quantile(old, q)) < 0.2 * old.std(), (st, kd, q)
        assert abs(ref.mean - old.mean()) < 4 * old.std() / np.sqrt(1500)


def test_single_and_shared_entries_agree_and_are_seeded():
    p = _probs("binary", 300, np.random.default_rng(5))
    one = C.calibrated_reference(p, 15, "quantile", "classwise", 500, stream(6, "t"), observed=0.05)
    again = C.calibrated_reference(p, 15, "quantile", "classwise", 500, stream(6, "t"), observed=0.05)
    assert np.array_equal(one.draws, again.draws) and one.p_value == again.p_value
    assert one.p_value == (1 + np.sum(one.draws >= 0.05)) / 501
    assert one.ci_low <= one.mean <= one.ci_high
    assert C.calibrated_references(p[:0], 15, ("uniform",), ("top_label",), 10, stream(7, "t"))[
        ("uniform", "top_label")].n == 0


def test_multiclass_classwise_cells_are_not_independent():
    """Why multiclass class-wise keeps per-row draws: with rows split between two of three classes, drawing
    (class, bin) cells independently shrinks the spread of the reference well beyond Monte-Carlo error,
    whereas the implementation matches the per-row draw."""
    r = np.random.default_rng(8)
    n = 300
    p = np.zeros((n, 3))
    a = r.integers(0, 3, n)
    w = r.uniform(0.3, 0.7, n)
    p[np.arange(n), a] = w
    p[np.arange(n), (a + 1) % 3] += 1 - w
    ref = C.calibrated_reference(p, 15, "uniform", "classwise", 3000, stream(9, "t"))
    old = per_row_reference(p, 15, "uniform", "classwise", 3000, stream(10, "t"))
    assert ks_2samp(*_atoms(ref.draws, old)).pvalue > 1e-3
    # the independent-cells shortcut, for contrast
    bins = C.assign_bins(p, 15, "uniform") + (np.arange(3) * 15)[None, :]
    x = poisson_binomial_draws(p.ravel(), bins.ravel(), 45, 3000, stream(11, "t"))
    psum = np.bincount(bins.ravel(), weights=p.ravel(), minlength=45)
    indep = np.abs(x - psum).sum(1) / (n * 3)
    assert indep.std() < 0.9 * old.std()


def test_many_bins_compact_the_joint_cell_key_and_stay_exact():
    """With 3000 bins the joint cell key of two binnings x two kinds outgrows int64 and is compacted on the
    way: the draws still follow the per-row draw."""
    p = _probs("binary", 200, np.random.default_rng(12))
    refs = C.calibrated_references(p, 3000, ("uniform", "quantile"), ("top_label", "classwise"), 2000,
                                   stream(13, "t"))
    for (st, kd), ref in refs.items():
        old = per_row_reference(p, 3000, st, kd, 2000, stream(14, "t", st, kd))
        assert ks_2samp(*_atoms(ref.draws, old)).pvalue > 1e-3, (st, kd)


def test_p_value_counts_a_float_tie_with_the_observed_ece():
    """A confident binary model's reference ECE takes few distinct values, and the observed ECE equals one
    of them only up to the last bits (computed along another path). The p-value must count that atom as
    reaching the observed value, as it would with exact arithmetic; a strict >= understated p by the atom's
    mass (up to 0.4, found in review)."""
    from audit.metrics.calibration import calibrated_reference

    g = np.random.default_rng(5)
    p1 = 1 - g.uniform(0.001, 0.02, 150)
    probs = np.stack([1 - p1, p1], axis=1)
    ref = calibrated_reference(probs, 15, "uniform", "top_label", 2000, np.random.default_rng(0))
    atoms, mass = np.unique(ref.draws, return_counts=True)
    assert len(atoms) < 200  # the premise: a few atoms, each with real mass
    atom = atoms[np.argmax(mass)]
    exact = (1 + np.sum(ref.draws >= atom)) / 2001
    for obs in (atom, atom * (1 + 1e-13), atom * (1 - 1e-13), np.nextafter(atom, 1.0)):
        got = calibrated_reference(probs, 15, "uniform", "top_label", 2000, np.random.default_rng(0), observed=obs)
        assert got.p_value == pytest.approx(exact), obs
    above = calibrated_reference(probs, 15, "uniform", "top_label", 2000, np.random.default_rng(0),
                                 observed=atom * (1 + 1e-6))
    assert above.p_value < exact  # a real difference still counts


def test_non_finite_probabilities_are_refused():
    from audit.metrics.poisson_binomial import poisson_binomial_draws

    with pytest.raises(ValueError, match="finite"):
        poisson_binomial_draws(np.array([np.nan, 0.5, 0.5]), np.array([0, 0, 0]), 1, 10, np.random.default_rng(0))
