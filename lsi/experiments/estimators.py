"""KL divergence from samples, against the closed form (the paper's App. I).

The paper did not use the Riemannian Laplace approximation because its
posterior is known only through samples, and a KL estimated from samples breaks
down when the two posteriors are nearly identical (the leave-one-out case) or
far apart. This module holds what that argument needs:

* :func:`gaussian_kl`: the closed form ``KL(N(m0, S0) || N(m1, S1))``;
* :func:`kde_kl`: plug-in estimate ``mean_{x ~ p} [log p_hat(x) - log q_hat(x)]`` with
  Gaussian kernel density estimates (:class:`scipy.stats.gaussian_kde`, Scott's
  bandwidth) fitted on one half of each sample and evaluated on the other half of p's;
* :func:`knn_kl`: the k-nearest-neighbour estimator of Wang, Kulkarni and Verdu
  (2009), ``d/n sum log(nu_k / rho_k) + log(m / (n - 1))``;
* :func:`gaussian_pair`: two Gaussians with a prescribed closed-form KL;
* :func:`laplace_pair`: a real full-data / leave-one-out pair of diagonal Laplace
  posteriors of a linear probe (converged solves), whose KL is that sample's LSI.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from scipy.stats import gaussian_kde

from lsi import curvature, training
from lsi.defaults import PAPER
from lsi.kl import kl_diag
from lsi.probes import LinearProbe


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    """``KL(N(mean0, cov0) || N(mean1, cov1))`` in nats; covariances ``(d, d)`` or diagonals ``(d,)``."""
    mean0, mean1 = np.atleast_1d(np.asarray(mean0, float)), np.atleast_1d(np.asarray(mean1, float))
    cov0, cov1 = np.asarray(cov0, float), np.asarray(cov1, float)
    if cov0.ndim <= 1 and cov1.ndim <= 1:
        v0, v1 = np.broadcast_to(cov0, mean0.shape), np.broadcast_to(cov1, mean0.shape)
        r = v0 / v1
        return float(0.5 * np.sum(r - 1 - np.log(r) + (mean1 - mean0) ** 2 / v1))
    cov0 = np.diag(cov0) if cov0.ndim == 1 else cov0
    cov1 = np.diag(cov1) if cov1.ndim == 1 else cov1
    L1 = np.linalg.cholesky(cov1)
    A = np.linalg.solve(L1, np.linalg.cholesky(cov0))
    b = np.linalg.solve(L1, mean1 - mean0)
    d = len(mean0)
    return float(0.5 * (np.sum(A * A) - d - 2 * np.sum(np.log(np.diag(A))) + b @ b))


def gaussian_pair(dim: int, kl: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(mean0, var0, mean1, var1)`` of two diagonal Gaussians in ``dim`` dimensions with KL ``kl``.

    p is standard normal; q = N(mu, s^2 I) with a random direction for mu. Half of
    the KL comes from the mean shift and half from the variance ratio: the
    variance term ``dim/2 (1/s^2 - 1 + log s^2)`` is solved for s (s > 1) by bisection.
    """
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)
    direction /= np.linalg.norm(direction)
    half = kl / 2
    lo, hi = 0.0, 50.0                                  # t = log s^2
    for _ in range(200):
        t = (lo + hi) / 2
        value = dim / 2 * (math.exp(-t) - 1 + t)
        lo, hi = (t, hi) if value < half else (lo, t)
    s2 = math.exp((lo + hi) / 2)
    mean1 = direction * math.sqrt(2 * half * s2)        # (1/2) |mu|^2 / s^2 = half
    return np.zeros(dim), np.ones(dim), mean1, np.full(dim, s2)


def kde_kl(samples_p: np.ndarray, samples_q: np.ndarray, *, bandwidth: str | float = "scott") -> float:
    """Plug-in KDE estimate of ``KL(p || q)`` from samples ``(n, d)`` of each.

    The densities are fitted on the first half of each sample; the average log
    ratio is taken over the second half of p's, so p_hat is not evaluated on its
    own kernels. Needs more samples than dimensions in each half (a Gaussian KDE
    fits a full bandwidth matrix); returns NaN otherwise.
    """
    p, q = _as_2d(samples_p), _as_2d(samples_q)
    half_p, half_q = len(p) // 2, len(q) // 2
    if min(half_p, half_q) <= p.shape[1] + 1:
        return float("nan")
    try:
        kde_p = gaussian_kde(p[:half_p].T, bw_method=bandwidth)
        kde_q = gaussian_kde(q[:half_q].T, bw_method=bandwidth)
    except np.linalg.LinAlgError:
        return float("nan")
    x = p[half_p:].T
    return float(np.mean(kde_p.logpdf(x) - kde_q.logpdf(x)))


def knn_kl(samples_p: np.ndarray, samples_q: np.ndarray, *, k: int = 1) -> float:
    """k-nearest-neighbour estimate of ``KL(p || q)`` (Wang, Kulkarni and Verdu 2009).

    ``rho_k(i)``: distance from ``x_i`` to its k-th neighbour among the other p
    samples; ``nu_k(i)``: to its k-th neighbour among the q samples. Then
    ``KL_hat = d/n sum_i log(nu_k(i) / rho_k(i)) + log(m / (n - 1))``. Consistent
    as n, m grow, for any dimension; no bandwidth.
    """
    p, q = _as_2d(samples_p), _as_2d(samples_q)
    n, d = p.shape
    m = len(q)
    rho = cKDTree(p).query(p, k=k + 1)[0][:, k]
    nu = cKDTree(q).query(p, k=k)[0]
    nu = nu[:, k - 1] if nu.ndim == 2 else nu
    return float(d * np.mean(np.log(nu / rho)) + math.log(m / (n - 1)))


def sample_gaussian(mean: np.ndarray, var: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """``n`` draws of ``N(mean, diag(var))``, ``(n, d)``."""
    rng = np.random.default_rng(seed)
    mean = np.atleast_1d(mean)
    return mean + rng.standard_normal((n, len(mean))) * np.sqrt(var)


def _as_2d(samples) -> np.ndarray:
    a = np.asarray(samples, float)
    return a[:, None] if a.ndim == 1 else a


def laplace_pair(features, labels, index: int, *, weight_decay: float = PAPER["weight_decay"],
                 tol: float = 1e-11) -> dict:
    """Full-data and leave-``index``-out diagonal Laplace posteriors of a linear probe, converged.

    Returns ``mean0, precision0, mean1, precision1`` (float64 numpy, the mean
    difference ``delta`` exact to the solver tolerance) and ``lsi``: the closed-form
    diagonal KL of :func:`lsi.kl.kl_diag`, i.e. the sample's LSI.
    """
    X = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    Y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    probe = LinearProbe(X.shape[1], int(Y.max()) + 1)
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    theta_D, _ = training.fit_optimum(probe, theta0, X, Y, weight_decay=weight_decay, tol=tol)
    inverse = training.hessian_inverse(probe, theta_D, X, Y, weight_decay=weight_decay)
    excluded = torch.tensor([index])
    loo = training.solve_leave_one_out(probe, theta_D, inverse, X, Y, excluded, weight_decay=weight_decay,
                                       tol=tol)
    n = len(X)
    ones = torch.ones(1, n, dtype=torch.float64)
    w = training.loo_weights(n, excluded, dtype=torch.float64, device="cpu")
    P0 = curvature.diag(probe, theta_D[None], X, ones, torch.tensor([n * weight_decay], dtype=torch.float64))
    P1 = curvature.diag(probe, theta_D[None] + loo.delta, X, w,
                        torch.tensor([(n - 1) * weight_decay], dtype=torch.float64))
    mean_term, cov_term = kl_diag(P0, P1, loo.delta)
    return {"mean0": theta_D.numpy(), "precision0": (P0.ggn[0] + P0.prior[0]).numpy(),
            "mean1": (theta_D + loo.delta[0]).numpy(), "precision1": (P1.ggn[0] + P1.prior[0]).numpy(),
            "lsi": float(mean_term[0] + cov_term[0])}


ESTIMATORS = {"kde": kde_kl, "knn": knn_kl}


def sweep(dims, kls, sample_counts, *, seeds=(0,), estimators=("kde", "knn")):
    """Estimates of known Gaussian KLs: one row per (dim, kl, n, seed, estimator), with
    ``estimate``, ``truth`` and ``ratio = estimate / truth``; ``seconds`` is the estimator's time."""
    import time

    import pandas as pd

    rows = []
    for dim in dims:
        for kl in kls:
            m0, v0, m1, v1 = gaussian_pair(dim, kl)
            for n in sample_counts:
                for seed in seeds:
                    p = sample_gaussian(m0, v0, n, seed=2 * seed + 1)
                    q = sample_gaussian(m1, v1, n, seed=2 * seed + 2)
                    for name in estimators:
                        start = time.perf_counter()
                        value = ESTIMATORS[name](p, q)
                        rows.append({"dim": dim, "kl": kl, "n": n, "seed": seed, "estimator": name,
                                     "estimate": value, "truth": kl, "ratio": value / kl,
                                     "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows)


def log_ratio_variance(mean0, var0, mean1, var1, *, n: int = 100_000, seed: int = 0) -> float:
    """Variance of ``log p(x) - log q(x)`` under ``x ~ p`` for diagonal Gaussians (by sampling).

    Even with the exact densities, the Monte Carlo average of ``n`` log ratios
    has standard error ``sqrt(variance / n)``, so a relative error r needs
    ``n >= variance / (r KL)^2`` samples: a floor under any sample-based estimate.
    """
    x = sample_gaussian(mean0, var0, n, seed=seed)
    logp = -0.5 * (((x - mean0) ** 2 / var0).sum(1) + np.log(var0).sum())
    logq = -0.5 * (((x - mean1) ** 2 / var1).sum(1) + np.log(var1).sum())
    return float(np.var(logp - logq))


__all__ = ["ESTIMATORS", "gaussian_kl", "gaussian_pair", "kde_kl", "knn_kl", "laplace_pair", "log_ratio_variance",
           "sample_gaussian", "sweep"]
