"""KL from samples vs the closed form (lsi.experiments.estimators)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import lsi
from lsi.experiments import estimators as est


def test_gaussian_kl_full_equals_diagonal_and_monte_carlo():
    rng = np.random.default_rng(0)
    m0, m1 = rng.standard_normal(3), rng.standard_normal(3)
    v0, v1 = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    closed = est.gaussian_kl(m0, v0, m1, v1)
    assert est.gaussian_kl(m0, np.diag(v0), m1, np.diag(v1)) == pytest.approx(closed, rel=1e-12)
    x = est.sample_gaussian(m0, v0, 400_000, seed=1)
    logp = -0.5 * (((x - m0) ** 2 / v0).sum(1) + np.log(v0).sum())
    logq = -0.5 * (((x - m1) ** 2 / v1).sum(1) + np.log(v1).sum())
    assert np.mean(logp - logq) == pytest.approx(closed, rel=0.01)


@pytest.mark.parametrize("dim,kl", [(1, 1e-4), (5, 0.3), (100, 50.0)])
def test_gaussian_pair_has_the_requested_kl(dim, kl):
    assert est.gaussian_kl(*est.gaussian_pair(dim, kl)) == pytest.approx(kl, rel=1e-9)


@pytest.mark.parametrize("estimator", [est.kde_kl, est.knn_kl])
def test_sample_estimators_converge_to_the_closed_form_in_low_dimension(estimator):
    m0, v0, m1, v1 = est.gaussian_pair(2, 1.0)
    errors = [abs(estimator(est.sample_gaussian(m0, v0, n, seed=1), est.sample_gaussian(m1, v1, n, seed=2)) - 1.0)
              for n in (500, 20_000)]
    assert errors[1] < 0.06 and errors[1] < errors[0] + 0.02


def test_kde_needs_more_samples_than_dimensions():
    x = np.random.default_rng(0).standard_normal((40, 30))
    assert np.isnan(est.kde_kl(x, x))


def test_laplace_pair_kl_is_the_converged_lsi_of_that_sample():
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16, y[:300]
    pair = est.laplace_pair(X, y, 7)
    reference = lsi.compute_lsi(X, y, solver="converged", indices=[7], progress=False)
    assert pair["lsi"] == pytest.approx(float(reference["lsi"].iloc[0]), rel=1e-6)
    closed = est.gaussian_kl(pair["mean0"], 1 / pair["precision0"], pair["mean1"], 1 / pair["precision1"])
    assert closed == pytest.approx(pair["lsi"], rel=1e-6)


def test_sweep_rows_and_log_ratio_variance():
    table = est.sweep([1, 3], [0.5], [200], seeds=[0, 1])
    assert len(table) == 2 * 2 * 2 and set(table["estimator"]) == {"kde", "knn"}
    assert np.allclose(table["ratio"], table["estimate"] / 0.5)
    # for a pure mean shift N(0,1) vs N(mu,1) the log ratio is linear in x: variance mu^2 = 2 KL
    var = est.log_ratio_variance(np.zeros(1), np.ones(1), np.array([0.3]), np.ones(1), n=400_000)
    assert var == pytest.approx(0.09, rel=0.01)
