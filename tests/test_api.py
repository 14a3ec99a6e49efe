"""compute_lsi end to end: brute force agreement, determinism, resume, tiers."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

import lsi
from core_data import blobs, digits_subset
from lsi import reference

HYPER = dict(lr=0.04, momentum=0.9, weight_decay=0.01)


def _brute_force_lsi(X, y, i, epochs, structure):
    """Retrain alone, build dense precisions by autograd, KL in 50 digits."""
    Xt, Yt = torch.tensor(X), torch.tensor(y)
    n, d, C = len(X), X.shape[1], int(y.max()) + 1
    initial = reference.linear_model(d, C, seed=0)
    full_model = reference.train_one(reference.linear_model(d, C, seed=0), Xt, Yt, epochs=epochs, **HYPER)
    loo_model = reference.retrain_loop(initial, Xt, Yt, [i], epochs=epochs, **HYPER)[0]

    def logits(theta, x):
        W = theta.view(d + 1, C)
        return x @ W[:-1] + W[-1]

    keep = np.arange(n) != i
    thetas = [reference.flat_linear(m) for m in (full_model, loo_model)]
    P0 = reference.dense_precision(logits, thetas[0], Xt, n * HYPER["weight_decay"]).numpy()
    P1 = reference.dense_precision(logits, thetas[1], Xt[keep], (n - 1) * HYPER["weight_decay"]).numpy()
    if structure == "diag":
        P0, P1 = np.diag(np.diag(P0)), np.diag(np.diag(P1))
    return reference.kl_gaussians(thetas[0].numpy(), P0, thetas[1].numpy(), P1)


@pytest.mark.parametrize("structure", ["full", "diag"])
def test_gd_tier_equals_brute_force(structure):
    X, y = blobs(24, 3, 3, seed=1)
    table = lsi.compute_lsi(X, y, solver="gd", hessian=structure, epochs=150, indices=[0, 13], progress=False)
    for i, value in zip(table["index"], table["lsi"]):
        assert value == pytest.approx(_brute_force_lsi(X, y, i, 150, structure), rel=1e-8)


def test_tiers_rank_alike_on_digits():
    X, y = digits_subset(300)
    converged = lsi.compute_lsi(X, y, solver="converged", progress=False)
    screening = lsi.compute_lsi(X, y, solver="newton-step", progress=False)
    gd = lsi.compute_lsi(X, y, solver="gd", epochs=1000, indices="0:40", progress=False)
    assert converged["grad_norm"].max() <= 1e-10
    assert spearmanr(converged["lsi"], screening["lsi"]).statistic >= 0.95
    assert spearmanr(converged["lsi"][:40], gd["lsi"]).statistic >= 0.9
    assert (converged["lsi"] > 0).all() and np.allclose(converged["lsi"], converged["kl_mean"] + converged["kl_cov"])


def test_structures_agree_in_rank():
    X, y = digits_subset(150, classes=3)
    tables = {h: lsi.compute_lsi(X, y, hessian=h, progress=False)["lsi"] for h in ("diag", "kfac", "full")}
    assert spearmanr(tables["full"], tables["kfac"]).statistic >= 0.8
    assert spearmanr(tables["full"], tables["diag"]).statistic >= 0.8


def test_fixed_prior_precision_changes_only_the_prior():
    X, y = blobs(40, 4, 3)
    default = lsi.compute_lsi(X, y, progress=False)
    fixed = lsi.compute_lsi(X, y, prior_precision=1.0, progress=False)
    assert default.attrs["lsi"]["options"]["prior_precision"] is None
    assert fixed.attrs["lsi"]["options"]["prior_precision"] == 1.0
    assert not np.allclose(default["lsi"], fixed["lsi"])


def test_same_seed_same_table():
    X, y = blobs(60, 4, 3)
    first = lsi.compute_lsi(X, y, solver="gd", epochs=50, seed=3, progress=False)
    second = lsi.compute_lsi(X, y, solver="gd", epochs=50, seed=3, progress=False)
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    other = lsi.compute_lsi(X, y, solver="gd", epochs=50, seed=4, progress=False)
    assert not np.array_equal(first["lsi"], other["lsi"])


def test_killed_run_resumes_to_the_same_table(tmp_path, monkeypatch):
    X, y = blobs(60, 4, 3)
    options = dict(solver="gd", epochs=40, memory_budget=40_000, progress=False)
    uninterrupted = lsi.compute_lsi(X, y, **options)
    original = lsi.api._Engine.score
    calls = {"n": 0}

    def dying(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return original(self, *args)

    monkeypatch.setattr(lsi.api._Engine, "score", dying)
    with pytest.raises(KeyboardInterrupt):
        lsi.compute_lsi(X, y, checkpoint=tmp_path / "run", **options)
    finished = sorted(p.name for p in (tmp_path / "run").glob("chunk-*.parquet"))
    assert len(finished) == 2
    monkeypatch.setattr(lsi.api._Engine, "score", original)
    resumed = lsi.compute_lsi(X, y, checkpoint=tmp_path / "run", **options)
    pd.testing.assert_frame_equal(resumed, uninterrupted, check_exact=True)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    X, y = blobs(30, 3, 3)
    lsi.compute_lsi(X, y, checkpoint=tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="other options"):
        lsi.compute_lsi(X, y, weight_decay=0.02, checkpoint=tmp_path / "run", progress=False)


def test_metadata_is_attached_and_saved(tmp_path):
    X, y = blobs(30, 3, 3)
    table = lsi.compute_lsi(X, y, progress=False)
    meta = table.attrs["lsi"]
    assert {"commit", "versions", "device", "wall_time_s", "options"} <= set(meta)
    assert meta["options"]["lr"] == 0.04 and meta["n_samples"] == 30
    path = lsi.save_table(table, tmp_path / "t.parquet")
    back = lsi.load_table(path)
    pd.testing.assert_frame_equal(back, table)
    assert back.attrs["lsi"]["options"] == meta["options"]


def test_float32_runs_and_is_close_to_float64():
    X, y = blobs(40, 4, 3)
    f64 = lsi.compute_lsi(X, y, solver="gd", epochs=100, progress=False)
    f32 = lsi.compute_lsi(X, y, solver="gd", epochs=100, dtype="float32", progress=False)
    assert spearmanr(f64["lsi"], f32["lsi"]).statistic >= 0.9


def test_converged_smooth_mlp_equals_an_independent_solve():
    """GELU MLP, converged tier: scipy BFGS optima, autograd precisions and an mpmath KL agree."""
    from scipy.optimize import minimize

    X, y = blobs(30, 3, 3, seed=2)
    n, d, C, h, lam = len(X), X.shape[1], 3, 4, HYPER["weight_decay"]
    table = lsi.compute_lsi(X, y, probe="mlp", hidden=h, activation="gelu", hessian="full", tol=1e-11,
                            indices=[0, 17], progress=False, **HYPER)
    probe = lsi.probes.MLPProbe(d, C, h, "gelu")
    Xt, Yt = torch.tensor(X), torch.tensor(y)

    def solve(keep, start):
        def f(t):
            t = torch.tensor(t, requires_grad=True)
            value = probe.ce(t[None], Xt[keep], Yt[keep])[0].mean() + 0.5 * lam * t.dot(t)
            value.backward()
            return float(value), t.grad.numpy()
        return minimize(f, start, jac=True, method="BFGS", options={"gtol": 1e-12, "maxiter": 10000}).x

    everyone = np.ones(n, bool)
    theta_D = solve(everyone, probe.init(0, dtype=torch.float64, device="cpu").numpy())
    logits = lambda t, x: probe.logits(t[None], x)[0]
    P0 = reference.dense_precision(logits, torch.tensor(theta_D), Xt, n * lam).numpy()
    for i, value in zip(table["index"], table["lsi"]):
        keep = everyone.copy()
        keep[i] = False
        theta_i = solve(keep, theta_D)
        P1 = reference.dense_precision(logits, torch.tensor(theta_i), Xt[keep], (n - 1) * lam).numpy()
        assert value == pytest.approx(reference.kl_gaussians(theta_D, P0, theta_i, P1), rel=1e-5)


def test_relu_mlp_is_refused_by_the_converged_tier_and_smooth_ones_are_not():
    X, y = blobs(20, 3, 2)
    with pytest.raises(ValueError, match="activation='gelu' or 'softplus'"):
        lsi.compute_lsi(X, y, probe="mlp", solver="converged", progress=False)
    table = lsi.compute_lsi(X, y, probe="mlp", activation="softplus", hidden=3, indices=[0], progress=False)
    assert table["grad_norm"].max() <= 1e-10


@pytest.mark.parametrize("prior", [None, 1.0])
def test_null_sample_lsi_is_the_lsi_of_a_sample_without_gradient_or_curvature(prior):
    """A sample deep inside its class (softmax ~ 1: no gradient, no curvature) scores the closed-form floor."""
    X, y = blobs(200, 4, 3, seed=3)
    far = 40 * X[y == 1].mean(0, keepdims=True)
    X, y = np.vstack([X, far]), np.append(y, 1)
    table = lsi.compute_lsi(X, y, prior_precision=prior, indices=[len(X) - 1], progress=False)
    floor = lsi.null_sample_lsi(X, y, prior_precision=prior)
    assert table["lsi"].iloc[0] == pytest.approx(floor["total"], rel=1e-2)  # one Newton step: 0.25% measured at n=201
    assert floor["cov_prior"] <= floor["bound"]
    assert (floor["cov_prior"] == 0) == (prior is not None)
