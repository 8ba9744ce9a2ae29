import numpy as np
import pytest
from scipy.special import expit, logit

from analysis.fits import fit_power_law, fit_size_to_solve

SIZES = np.logspace(4.5, 7.5, 7)  # 30k .. 30M parameters


def _logistic_data(rng, x0=6.0, slope=2.5, chance=0.25, seeds=4, noise=0.02):
    sizes = np.repeat(SIZES, seeds)
    clean = chance + (1 - chance) * expit(slope * (np.log10(sizes) - x0))
    accuracy = np.clip(clean + rng.normal(0, noise, sizes.size), 0, 1)
    true_size = 10 ** (x0 + logit((0.9 - chance) / (1 - chance)) / slope)
    return sizes, accuracy, true_size


def test_size_to_solve_recovers_the_size_within_its_ci():
    sizes, accuracy, true_size = _logistic_data(np.random.default_rng(0))
    fit = fit_size_to_solve(sizes, accuracy, chance=0.25, n_boot=400, seed=1)
    assert fit.status == "fit"
    assert fit.ci_low <= true_size <= fit.ci_high
    assert fit.ci_high / fit.ci_low < 2.0  # informative, not a vacuous interval
    assert abs(np.log10(fit.size / true_size)) < 0.1
    assert fit.slope == pytest.approx(2.5, rel=0.3)
    lo, hi = fit.band(SIZES)
    assert np.all(lo <= fit.predict(SIZES) + 1e-9) and np.all(fit.predict(SIZES) <= hi + 1e-9)


def test_size_to_solve_default_uses_at_least_1000_resamples():
    sizes, accuracy, _ = _logistic_data(np.random.default_rng(2))
    assert len(fit_size_to_solve(sizes, accuracy, chance=0.25).boot) >= 1000


def test_size_to_solve_flags_targets_outside_the_sizes_tried():
    sizes = np.repeat(SIZES[:3], 2)
    always = fit_size_to_solve(sizes, np.full(sizes.size, 0.99), chance=0.5, n_boot=50)
    never = fit_size_to_solve(sizes, np.full(sizes.size, 0.55), chance=0.5, n_boot=50)
    assert (always.status, never.status) == ("below range", "above range")


def test_size_to_solve_without_repeated_seeds_has_no_ci():
    sizes, accuracy, _ = _logistic_data(np.random.default_rng(3), seeds=1)
    fit = fit_size_to_solve(sizes, accuracy, chance=0.25, n_boot=100)
    assert np.isnan(fit.ci_low) and np.isnan(fit.ci_high) and np.isfinite(fit.size)


@pytest.mark.parametrize(
    ("sizes", "accuracy", "match"),
    [
        ([1e5, 1e5, 1e5], [0.6, 0.7, 0.8], "2 distinct sizes, got 1"),
        ([1e5], [0.6], "2 distinct sizes, got 1"),
        ([1e5, 1e6], [0.6], "one length"),
        ([1e5, -1.0], [0.6, 0.7], "positive"),
    ],
)
def test_size_to_solve_refuses_too_few_or_bad_points(sizes, accuracy, match):
    with pytest.raises(ValueError, match=match):
        fit_size_to_solve(sizes, accuracy, chance=0.5)


def test_size_to_solve_refuses_a_target_below_chance():
    with pytest.raises(ValueError, match="target"):
        fit_size_to_solve(SIZES, np.linspace(0.5, 1, SIZES.size), chance=0.95)


@pytest.mark.parametrize(("E", "A", "alpha"), [(1.7, 400.0, 0.34), (0.05, 30.0, 0.5)])
def test_power_law_recovers_parameters_within_their_cis(E, A, alpha):
    rng = np.random.default_rng(4)
    n = np.repeat(SIZES, 4)
    loss = (E + A * n**-alpha) * np.exp(rng.normal(0, 0.01, n.size))
    fit = fit_power_law(n, loss, n_boot=300, seed=5)
    for name, true in (("E", E), ("A", A), ("alpha", alpha)):
        lo, hi = fit.ci[name]
        assert lo <= true <= hi, (name, lo, true, hi)
    assert fit.alpha == pytest.approx(alpha, rel=0.15)
    assert fit.E == pytest.approx(E, rel=0.25)
    assert np.allclose(fit.predict(SIZES), E + A * SIZES**-alpha, rtol=0.03)


def test_power_law_resists_one_outlying_seed():
    rng = np.random.default_rng(6)
    n = np.repeat(SIZES, 4)
    loss = (1.0 + 50.0 * n**-0.4) * np.exp(rng.normal(0, 0.005, n.size))
    loss[5] *= 3.0  # one seed blew up
    fit = fit_power_law(n, loss, n_boot=0)
    assert fit.alpha == pytest.approx(0.4, rel=0.1)
    assert len(fit.boot) == 0 and np.isnan(fit.ci["alpha"][0])


def test_power_law_default_uses_at_least_1000_resamples():
    n = np.repeat(SIZES[:4], 2)
    loss = (1.0 + 50.0 * n**-0.4) * np.exp(np.random.default_rng(7).normal(0, 0.01, n.size))
    assert len(fit_power_law(n, loss).boot) >= 1000


@pytest.mark.parametrize(
    ("n", "loss", "match"),
    [
        ([1e5, 1e6, 1e5, 1e6], [2.0, 1.5, 2.1, 1.4], "3 distinct sizes, got 2"),
        ([1e5], [2.0], "3 distinct sizes, got 1"),
        ([1e5, 1e6, 1e7], [2.0, 0.0, 1.0], "positive losses"),
    ],
)
def test_power_law_refuses_too_few_or_bad_points(n, loss, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(n, loss)
