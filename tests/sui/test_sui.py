"""Tests for lsi.sui: closed forms and LOO against brute-force training, in float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_continuous_lyapunov
from scipy.stats import spearmanr

from lsi.sui import compute_sui, linearize, predictions_at, removal_order, weights_at
from lsi.sui.dynamics import Time, coefficients
from lsi.sui.loo import (downdate_inverse, loo_deltas, loo_deltas_dual_gd, loo_deltas_exact,
                         loo_deltas_schur)
from lsi.sui.measures import LyapunovMetric
from prerequisites import needs_cuda
from lsi.sui.reference import flow_linearized, gd_linearized, loo_network_gd

F64 = torch.float64


def _mlp(d: int, h: int, k: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, k)).double()


@pytest.fixture(scope="module")
def problem():
    """A tiny non-linear regression: n=10 samples, k=2 outputs, P=32 parameters (> nk=20)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10, 2, generator=gen, dtype=F64)
    y = torch.randn(10, 2, generator=gen, dtype=F64)
    model = _mlp(2, 6, 2)
    lin = linearize(model, x)
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return dict(x=x, y=y, model=model, lin=lin, w0=w0)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_linearize_matches_autograd(problem):
    model, x, lin = problem["model"], problem["x"], problem["lin"]
    jac = torch.autograd.functional.jacobian(
        lambda *ps: torch.func.functional_call(model, dict(zip([n for n, _ in model.named_parameters()], ps)), (x,)),
        tuple(p.detach() for p in model.parameters()))
    dense = torch.cat([j.reshape(x.shape[0] * 2, -1) for j in jac], 1)
    assert torch.allclose(lin.jac, dense, atol=1e-13)
    assert torch.allclose(lin.f0, model(x).detach(), atol=1e-14)


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("t", [1, 7, 60])
def test_discrete_closed_form_equals_gd(problem, l2, t):
    lin, y, w0 = problem["lin"], problem["y"], problem["w0"]
    lr = 0.05
    closed = weights_at(lin.jac, w0, lin.f0, y, l2=l2, t=t, lr=lr, time="discrete")
    brute = w0 + gd_linearized(lin.jac, lin.f0, y, lr=lr, steps=t, l2=l2)
    assert _rel(closed - w0, brute - w0) < 1e-8
    kernel = lin.jac @ lin.jac.T
    pred = predictions_at(kernel, kernel, lin.f0, y, lin.f0, l2=l2, t=t, lr=lr)
    assert _rel(pred, lin.f0 + (lin.jac @ (brute - w0)).reshape(lin.f0.shape)) < 1e-8


def test_no_l2_training_predictions_reduce(problem):
    lin, y = problem["lin"], problem["y"]
    kernel, lr, t = lin.jac @ lin.jac.T, 0.05, 9
    e_t = torch.linalg.matrix_power(torch.eye(len(kernel), dtype=F64) - lr * kernel, t)
    expected = (torch.eye(len(kernel), dtype=F64) - e_t) @ y.reshape(-1) + e_t @ lin.f0.reshape(-1)
    pred = predictions_at(kernel, kernel, lin.f0, y, lin.f0, t=t, lr=lr)
    assert _rel(pred.reshape(-1), expected) < 1e-10


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("time", ["discrete", "continuous"])
def test_loo_closed_form_equals_brute_force(problem, l2, time):
    lin, y = problem["lin"], problem["y"]
    lr, t, k = 0.05, 40, 2
    kernel = lin.jac @ lin.jac.T
    a = kernel + l2 * torch.eye(len(kernel), dtype=F64)
    residual = (lin.f0 - y).reshape(-1)
    alpha = coefficients(kernel, residual, l2=l2, t=t, lr=lr, time=Time(time))
    samples = torch.tensor([0, 3, 9])
    deltas = loo_deltas_exact(a, alpha, residual, samples, k, t=t, lr=lr, time=Time(time))
    train = gd_linearized if time == "discrete" else flow_linearized
    kwargs = dict(steps=t) if time == "discrete" else dict(t=t)
    full = train(lin.jac, lin.f0, y, lr=lr, l2=l2, **kwargs)
    for column, i in enumerate(samples.tolist()):
        without = train(lin.jac, lin.f0, y, lr=lr, l2=l2, drop=i, **kwargs)
        assert _rel(-lin.jac.T @ deltas[:, column], full - without) < 1e-8


@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_dual_gd_path_equals_eigendecomposition_path(problem, l2):
    lin, y, k, lr, t = problem["lin"], problem["y"], 2, 0.05, 25
    kernel = lin.jac @ lin.jac.T
    a = kernel + l2 * torch.eye(len(kernel), dtype=F64)
    residual = (lin.f0 - y).reshape(-1)
    alpha = coefficients(kernel, residual, l2=l2, t=t, lr=lr, time=Time.DISCRETE)
    samples = torch.tensor([2, 5, 7])
    dual = loo_deltas_dual_gd(a, alpha, residual, samples, k, t=t, lr=lr)
    eig = loo_deltas_exact(a, alpha, residual, samples, k, t=t, lr=lr, time=Time.DISCRETE)
    assert _rel(dual, eig) < 1e-9


def test_schur_downdate_equals_direct_inversion(problem):
    kernel = problem["lin"].jac @ problem["lin"].jac.T
    a = kernel + 0.1 * torch.eye(len(kernel), dtype=F64)
    drop = torch.tensor([4, 5])
    keep = torch.tensor([i for i in range(len(a)) if i not in (4, 5)])
    direct = torch.linalg.inv(a[keep][:, keep])
    assert _rel(downdate_inverse(torch.linalg.inv(a), drop), direct) < 1e-10


@pytest.mark.parametrize("l2", [0.0, 0.2])
def test_schur_loo_equals_converged_reduced_problem(problem, l2):
    """t = inf via the rank-k downdate against an independent solve of each reduced problem."""
    lin, y, k = problem["lin"], problem["y"], 2
    kernel = lin.jac @ lin.jac.T
    a = kernel + l2 * torch.eye(len(kernel), dtype=F64)
    residual = (lin.f0 - y).reshape(-1)
    inverse = torch.linalg.inv(a)
    samples = torch.arange(10)
    schur = loo_deltas_schur(inverse, inverse @ residual, samples, k)
    dispatched = loo_deltas(a, inverse @ residual, residual, samples, k, t=math.inf, lr=None,
                            time=Time.DISCRETE, inverse=inverse)
    for deltas in (schur, dispatched):
        _check_against_reduced_solves(lin, residual, inverse, deltas, l2, k)


def _check_against_reduced_solves(lin, residual, inverse, deltas, l2, k):
    for i in range(10):
        keep = torch.ones(20, dtype=torch.bool)
        keep[2 * i:2 * i + 2] = False
        jk, rk = lin.jac[keep], residual[keep]
        # weights of the converged reduced problem: ridge (l2 > 0) or minimum-norm interpolant
        if l2 > 0:
            u = -torch.linalg.solve(jk.T @ jk + l2 * torch.eye(jk.shape[1], dtype=F64), jk.T @ rk)
        else:
            u = -torch.linalg.pinv(jk) @ rk
        u_full = -lin.jac.T @ (inverse @ residual)
        assert _rel(-lin.jac.T @ deltas[:, i], u_full - u) < 1e-8


def test_lyapunov_metric_equals_direct_solve():
    """P < nk so the weight-space covariance is invertible and scipy can solve it directly."""
    gen = torch.Generator().manual_seed(2)
    jac = torch.randn(24, 7, generator=gen, dtype=F64)
    residual = torch.randn(24, generator=gen, dtype=F64)
    deltas = torch.randn(24, 5, generator=gen, dtype=F64)
    k, l2 = 2, 0.1
    grads = torch.einsum("nkp,nk->np", jac.reshape(12, k, 7), residual.reshape(12, k))
    noise = np.cov(grads.numpy().T, bias=True)
    hess = (jac.T @ jac).numpy() + l2 * np.eye(7)
    sigma = solve_continuous_lyapunov(hess, noise)
    assert np.allclose(hess @ sigma + sigma @ hess, noise)
    dw = (-jac.T @ deltas).numpy()
    direct = 0.5 * np.einsum("ps,ps->s", dw, np.linalg.solve(sigma, dw))
    ours = LyapunovMetric(jac, residual, k, l2=l2)(deltas).numpy()
    assert np.allclose(ours, direct, rtol=1e-8)


def test_compute_sui_matches_brute_force_retraining(problem):
    """End to end: sui_weight and sui_functional from literal GD without each sample."""
    x, y, model = problem["x"], problem["y"], problem["model"]
    heldout = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    labels = np.arange(10) % 2
    lr, t, l2, sigma = 0.05, 30, 0.1, 0.5
    df = compute_sui(model, labels, inputs=x, targets=y.numpy(), heldout=heldout, t=t, lr=lr,
                     l2=l2, sigma=sigma, indices=[1, 6], progress=False)
    lin, held = problem["lin"], linearize(model, heldout)
    full = gd_linearized(lin.jac, lin.f0, y, lr=lr, steps=t, l2=l2)
    for row in df.itertuples():
        dw = full - gd_linearized(lin.jac, lin.f0, y, lr=lr, steps=t, l2=l2, drop=row.index)
        assert row.sui_weight == pytest.approx(float(dw @ dw) / (2 * sigma**2), rel=1e-8)
        df_x = (held.jac @ dw).reshape(5, 2)
        assert row.sui_functional == pytest.approx(float(df_x.pow(2).sum(1).mean()) / (2 * sigma**2), rel=1e-8)
    assert list(df["index"]) == [1, 6]
    assert df.attrs["lsi"]["options"]["functional_points"] == "heldout"


def test_converged_schur_path_equals_exact_path(problem):
    x, y, model = problem["x"], problem["y"], problem["model"]
    labels = np.arange(10) % 2
    common = dict(inputs=x, targets=y.numpy(), l2=0.2, progress=False, lyapunov=True)
    schur = compute_sui(model, labels, **common)
    # a very long finite horizon converges to the same answer through the exact per-sample path
    long = compute_sui(model, labels, t=1e5, lr=0.05, time="continuous", **common)
    for column in ("sui_weight", "sui_functional", "sui_weight_lyapunov"):
        assert np.allclose(schur[column], long[column], rtol=1e-7)


def test_parameter_subset_and_projection(problem):
    model, x = problem["model"], problem["x"]
    full = problem["lin"].jac
    last = linearize(model, x, params=["2.weight", "2.bias"])
    assert torch.equal(last.jac, full[:, -14:])
    proj = linearize(model, x, projection_dim=20000, seed=5)
    again = linearize(model, x, projection_dim=20000, seed=5)
    assert torch.equal(proj.jac, again.jac)
    kernel, approx = full @ full.T, proj.jac @ proj.jac.T
    assert float((approx - kernel).norm() / kernel.norm()) < 0.05
    with pytest.raises(ValueError, match="not trainable parameters"):
        linearize(model, x, params=["nope"])


def test_features_path_checkpoint_resumes(tmp_path):
    gen = np.random.default_rng(0)
    features, labels = gen.normal(size=(30, 4)), np.arange(30) % 3
    kwargs = dict(probe="mlp", hidden=5, l2=0.1, progress=False, memory_budget=1)   # chunks of one sample
    first = compute_sui(features, labels, indices=range(0, 16), checkpoint=tmp_path / "run", **kwargs)
    assert len(list((tmp_path / "run").glob("chunk-*.parquet"))) == 16
    resumed = compute_sui(features, labels, checkpoint=tmp_path / "run", **kwargs)
    plain = compute_sui(features, labels, **kwargs)
    assert len(list((tmp_path / "run").glob("chunk-*.parquet"))) == 30
    assert np.allclose(resumed["sui_weight"], plain["sui_weight"], rtol=1e-12)
    assert np.allclose(first["sui_weight"], plain["sui_weight"][:16], rtol=1e-12)
    assert set(plain.columns) >= {"index", "id", "label", "sui_weight", "sui_functional"}
    with pytest.raises(ValueError, match="other options"):
        compute_sui(features, labels, checkpoint=tmp_path / "run", **{**kwargs, "l2": 0.5})


def test_linear_probe_is_exact_loo_ridge():
    """For a linear probe the linearisation is exact: SUI's dw is ridge regression's LOO change."""
    gen = np.random.default_rng(1)
    features, labels = gen.normal(size=(15, 3)), np.arange(15) % 2
    df = compute_sui(features, labels, probe="linear", l2=0.3, sigma=1.0, progress=False)
    xa = np.hstack([features, np.ones((15, 1))])
    y = np.eye(2)[labels]

    def fit(rows):
        # the flat probe stores W (d+1, C) row-major; theta0 is its seeded init
        from lsi.probes import make_probe
        theta0 = make_probe("linear", 3, 2).init(0, dtype=F64, device="cpu").numpy().reshape(4, 2)
        gram = xa[rows].T @ xa[rows] + 0.3 * np.eye(4)
        return theta0 + np.linalg.solve(gram, xa[rows].T @ (y[rows] - xa[rows] @ theta0))

    full = fit(np.arange(15))
    expected = [np.sum((full - fit(np.delete(np.arange(15), i))) ** 2) / 2 for i in range(15)]
    assert np.allclose(df["sui_weight"], expected, rtol=1e-8)


def test_float32_and_projection_paths_run_and_agree_roughly():
    gen = np.random.default_rng(4)
    features, labels = gen.normal(size=(24, 3)), np.arange(24) % 2
    options = dict(probe="mlp", hidden=6, l2=0.5, progress=False)
    exact = compute_sui(features, labels, **options)
    single = compute_sui(features, labels, dtype="float32", **options)
    for column in ("sui_weight", "sui_functional"):  # measured max relative error 7.5e-6, 1.1e-5
        assert np.allclose(single[column], exact[column], rtol=1e-4, atol=0)
    projected = compute_sui(features, labels, projection_dim=4000, **options)
    assert projected.attrs["lsi"]["options"]["n_parameters"] == 4000
    # a seeded random 4000-dim projection: measured Spearman 0.998, max relative error 9.2%
    assert spearmanr(projected["sui_weight"], exact["sui_weight"]).statistic >= 0.99
    assert np.allclose(projected["sui_weight"], exact["sui_weight"], rtol=0.2, atol=0)


def test_removal_order_recomputes_on_what_is_left():
    gen = np.random.default_rng(3)
    features, labels = gen.normal(size=(20, 3)), np.arange(20) % 2
    options = dict(probe="linear", l2=0.5, progress=False)
    order = removal_order(features, labels, step=0.25, until=0.6, **options)
    assert sorted(order) == list(range(20))
    first = compute_sui(features, labels, **options)
    assert list(order[:5]) == list(first.sort_values("sui_functional", kind="stable")["index"][:5])
    rest = np.sort(order[5:])
    second = compute_sui(features[rest], labels[rest], **options)
    assert list(order[5:9]) == list(rest[second.sort_values("sui_functional", kind="stable")["index"][:4]])


@pytest.mark.parametrize("bad, match", [
    (dict(time="sideways"), "time='sideways' is not valid"),
    (dict(t=2.5, lr=0.1), "whole number"),
    (dict(t=10), "lr is required"),
    (dict(t=10, lr=100.0), "diverge"),
    (dict(sigma=0), "sigma == 0"),
    (dict(lyapunov=True), "SGD noise"),
    (dict(dtype="float16"), "dtype='float16' is not valid"),
])
def test_bad_options_raise_clear_errors(bad, match):
    features, labels = np.random.default_rng(0).normal(size=(8, 3)), np.arange(8) % 2
    with pytest.raises(ValueError, match=match):
        compute_sui(features, labels, progress=False, **bad)


def test_model_output_width_must_match_labels(problem):
    with pytest.raises(ValueError, match="one-hot"):
        compute_sui(problem["model"], np.arange(10) % 3, inputs=problem["x"], progress=False)


def test_sui_tracks_real_network_retraining():
    """Faithfulness, tiny: digits 4-vs-9, n=40, MLP 64-16-2. SUI from the linearisation must rank
    samples like the real network retrained without each of them from the same init."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    keep = np.isin(digits.target, [4, 9])
    x = torch.tensor(digits.data[keep][:40] / 16.0)
    heldout = torch.tensor(digits.data[keep][40:60] / 16.0)
    labels = (digits.target[keep][:40] == 9).astype(int)
    model = _mlp(64, 16, 2, seed=0)
    lr, t = 0.005, 100
    df = compute_sui(model, labels, inputs=x, heldout=heldout, t=t, lr=lr, progress=False)
    truth = loo_network_gd(model, x, np.eye(2)[labels], np.arange(40), lr=lr, steps=t,
                           eval_inputs=heldout)
    real_weight = ((truth["weights"][1:] - truth["weights"][0]) ** 2).sum(1).numpy() / 2
    real_function = ((truth["predictions"][1:] - truth["predictions"][0]) ** 2).sum(2).mean(1).numpy() / 2
    assert spearmanr(df["sui_weight"], real_weight).statistic > 0.8
    assert spearmanr(df["sui_functional"], real_function).statistic > 0.8


@pytest.mark.realdata
def test_cifar10_mirror_pixels(mirrors):
    """Real CIFAR-10 rows (8x8 pixels, cat vs dog) through the features path."""
    from lsi.data import load_dataset
    ds = load_dataset("cifar10", "train", limit=400, seed=0)
    rows = np.flatnonzero(np.isin(ds.labels, [3, 5]))[:40]
    pixels = np.stack([np.asarray(ds.image(i).resize((8, 8)), dtype=np.float64).reshape(-1) / 255
                       for i in rows])
    labels = (ds.labels[rows] == 5).astype(int)
    df = compute_sui(pixels, labels, probe="linear", l2=1.0, ids=ds.ids[rows], progress=False)
    assert np.isfinite(df["sui_weight"]).all() and (df["sui_weight"] > 0).all()
    assert list(df["id"]) == list(ds.ids[rows])


@needs_cuda
def test_projection_is_the_same_on_cuda_and_cpu(problem):
    model, x = problem["model"], problem["x"]
    cpu = linearize(model, x, projection_dim=50, seed=5)
    cuda = linearize(model, x, projection_dim=50, seed=5, device="cuda")
    torch.testing.assert_close(cuda.jac.cpu(), cpu.jac)
