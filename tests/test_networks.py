"""Pixel networks (lsi/networks.py) and their leave-one-out LSI through the generic module path.

Independent checks: PyTorch's own initialisation, the authors' per-model loop
(``lsi.reference.retrain_loop``: one ``torch.optim.SGD`` copy per left-out
sample), dense autograd Jacobians and a diagonal-Gaussian KL in 50 digits.
"""
import copy

import mpmath
import numpy as np
import pandas as pd
import pytest
import torch

import lsi
from lsi import networks, reference, runner, training
from lsi.probes import ModuleProbe

HYPER = dict(lr=0.04, momentum=0.9, weight_decay=0.01)
TINY = {"mlp": (6, 5), "small_cnn": (2, 2, 2), "resnet9": 2, "resnet18": 2}
"""Narrow widths of each architecture, so that every test runs in seconds."""


def _images(n: int, n_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random 32 x 32 RGB images in [0, 1] and balanced labels."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=generator, dtype=torch.float64), torch.arange(n) % n_classes


def _flat(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize("name", list(TINY))
def test_output_and_feature_shapes(name):
    net = networks.build(name, n_classes=7, width=TINY[name])
    X, _ = _images(4)
    assert net(X).shape == (4, 7)
    assert net.features(X).shape == (4, net.head.in_features)
    assert networks.head_parameters(net) == ["head.weight", "head.bias"]


def test_default_widths_give_the_documented_sizes():
    sizes = {name: sum(p.numel() for p in networks.build(name).parameters()) for name in TINY}
    assert sizes["small_cnn"] == 33_834
    assert sizes["mlp"] == 3072 * 512 + 512 + 512 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    assert networks.build("resnet9").head.in_features == 512
    assert sum(p.numel() for p in networks.build("resnet18").parameters()) == 11_173_962  # torchvision's, 10 classes


@pytest.mark.parametrize("name", list(TINY))
def test_build_is_deterministic_and_leaves_the_global_generator_alone(name):
    state = torch.random.get_rng_state()
    first, second = (networks.build(name, width=TINY[name], seed=5) for _ in range(2))
    other = networks.build(name, width=TINY[name], seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(_flat(first), _flat(second))
    assert not torch.allclose(_flat(first), _flat(other))
    torch.manual_seed(5)  # PyTorch's own default initialisation, drawn from the global generator in float32
    default_dtype = torch.get_default_dtype()  # another test module may have changed it
    torch.set_default_dtype(torch.float32)
    try:
        default = networks.ARCHITECTURES[networks.Architecture(name)](10, TINY[name]).double()
    finally:
        torch.set_default_dtype(default_dtype)
    assert torch.equal(_flat(first), _flat(default))


def test_build_places_and_types_the_weights():
    net = networks.build("small_cnn", width=TINY["small_cnn"], dtype=torch.float32, device="meta")
    assert {(p.dtype, p.device.type) for p in net.parameters()} == {(torch.float32, "meta")}


def test_unknown_network_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'mlp', 'small_cnn', 'smooth_cnn', 'resnet9', 'resnet18'"):
        networks.build("vgg")
    with pytest.raises(ValueError, match="3 convolutions"):
        networks.build("small_cnn", width=(4, 8))


def test_train_and_evaluate_is_build_train_and_accuracy_on_flat_or_shaped_images():
    X, y = _images(24)
    Xt, yt = _images(12, seed=1)
    found = networks.train_and_evaluate("small_cnn", X.reshape(24, -1).numpy(), y.numpy(), Xt, yt, n_classes=3,
                                        width=(2, 2, 2), seed=3, epochs=3, batch_size=5, dtype=torch.float64, **HYPER)
    net = networks.train(networks.build("small_cnn", n_classes=3, width=(2, 2, 2), seed=3), X, y, epochs=3,
                         batch_size=5, seed=3, **HYPER)
    assert found["train_accuracy"] == networks.accuracy(net, X, y)
    assert found["test_accuracy"] == networks.accuracy(net, Xt, yt)
    assert found["wall_time_s"] > 0


def test_batched_leave_one_out_training_equals_the_per_model_loop():
    """vmap over stacked CNN weights, one weight mask per model, against one torch.optim copy per sample."""
    X, y = _images(10)
    net = networks.build("small_cnn", n_classes=3, width=TINY["small_cnn"], seed=1)
    probe = ModuleProbe(net, 3)
    left_out = [0, 4, 9]
    w = training.loo_weights(len(X), torch.tensor(left_out), dtype=X.dtype, device="cpu")
    batched = training.train_gd(probe, probe.init(0, dtype=X.dtype, device="cpu"), X, y, w, epochs=15, **HYPER)
    loop = torch.stack([_flat(m) for m in reference.retrain_loop(net, X, y, left_out, epochs=15, **HYPER)])
    err = float((batched - loop).abs().max() / loop.abs().max())
    print(f"MEASURED batched vs per-model CNN training: max rel err {err:.3g}")
    assert err <= 1e-14  # measured 2.8e-16
    assert float((batched[0] - batched[1]).abs().max()) > 1e-6  # the left-out sample mattered


def _train_to_tolerance(net, X, y, tol, max_steps) -> tuple[torch.Tensor, int]:
    """torch.optim Nesterov steps until the gradient norm of the regularised objective is <= tol;
    the parameters and the number of steps taken."""
    optimizer = torch.optim.SGD(net.parameters(), nesterov=True, **HYPER)
    for step in range(max_steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(X), y).backward()
        gradient = torch.cat([(p.grad + HYPER["weight_decay"] * p).reshape(-1) for p in net.parameters()])
        if gradient.norm() <= tol:
            break
        optimizer.step()
    return _flat(net), step


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_tolerance_stops_each_model_as_it_would_alone():
    """Models leave the lockstep batch at their own step; each equals its own run to that tolerance."""
    X, y = _images(10, seed=1)
    net = networks.build("mlp", n_classes=3, width=(4,), seed=2)
    probe = ModuleProbe(net, 3)
    start = training.fit_first_order(probe, probe.init(0, dtype=X.dtype, device="cpu"), X, y, epochs=200, **HYPER)
    left_out, tol = [1, 2, 7], 2e-2
    w = training.loo_weights(len(X), torch.tensor(left_out), dtype=X.dtype, device="cpu")
    batched = training.train_gd(probe, start, X, y, w, epochs=1000, tol=tol, **HYPER)
    norms = training.objective_grad(probe, batched, X, y, w, HYPER["weight_decay"]).norm(dim=1)
    assert bool((norms <= tol).all())
    warm = networks.with_parameters(net, start)
    runs = [_train_to_tolerance(copy.deepcopy(warm), X[torch.arange(len(X)) != i], y[torch.arange(len(X)) != i],
                                tol, 1000) for i in left_out]
    assert len({steps for _, steps in runs}) > 1  # the models did stop at different steps
    err = float((batched - torch.stack([theta for theta, _ in runs])).abs().max())
    print(f"MEASURED warm start to tol, batched vs alone: max abs err {err:.3g}, steps {[s for _, s in runs]}")
    assert err <= 1e-13  # measured 3.1e-15 (over about 230 steps; longer ReLU runs amplify rounding)


def test_fit_is_the_full_data_training_and_leaves_the_network_alone():
    X, y = _images(8)
    net = networks.build("small_cnn", n_classes=3, width=TINY["small_cnn"], seed=3)
    before = _flat(net).clone()
    fitted = networks.fit(net, X, y, epochs=12)
    assert torch.equal(_flat(net), before)
    expected = _flat(reference.train_one(copy.deepcopy(net), X, y, epochs=12, **HYPER))
    err = float((_flat(fitted) - expected).abs().max())
    print(f"MEASURED networks.fit vs torch.optim: max abs err {err:.3g}")
    assert err <= 1e-15  # measured 5.6e-17
    assert fitted.features(X).shape == (8, fitted.head.in_features)


def test_activation_count_of_the_small_cnn():
    net = networks.build("small_cnn", n_classes=3, width=(2, 3, 4))
    X, _ = _images(1)
    per_stage = [2 * 32 * 32 * 2 + 2 * 16 * 16, 3 * 16 * 16 * 2 + 3 * 8 * 8, 4 * 8 * 8 * 2 + 4 * 4 * 4]
    # conv, ReLU and pool outputs per stage; then flatten (in the body), the body, and the head's logits
    expected = sum(per_stage) + 4 * 4 * 4 + 4 * 4 * 4 + 3
    assert ModuleProbe(net, 3).activations_per_sample(X[0]) == expected


def _diag_kl(mean0, p0, mean1, p1) -> float:
    """KL between two diagonal Gaussians, coordinate by coordinate in 50 digits."""
    with mpmath.workdps(50):
        total = mpmath.mpf(0)
        for m0, a, m1, b in zip(mean0.tolist(), p0.tolist(), mean1.tolist(), p1.tolist()):
            r = mpmath.mpf(b) / mpmath.mpf(a)
            total += r - 1 - mpmath.log(r) + mpmath.mpf(b) * (mpmath.mpf(m1) - mpmath.mpf(m0)) ** 2
        return float(total / 2)


def test_cnn_lsi_equals_brute_force():
    """compute_lsi(probe=CNN, gd, diag) against the authors' loop, dense Jacobians and a 50-digit KL."""
    X, y = _images(8, seed=2)
    n, epochs, lam = len(X), 10, HYPER["weight_decay"]
    net = networks.build("small_cnn", n_classes=3, width=TINY["small_cnn"], seed=4)
    table = lsi.compute_lsi(X, y, probe=net, solver="gd", epochs=epochs, indices=[2, 5], progress=False)
    logits = lambda theta, x: torch.func.functional_call(net, ModuleProbe(net, 3)._unflatten(theta), (x,))
    theta_D = _flat(reference.train_one(copy.deepcopy(net), X, y, epochs=epochs, **HYPER))
    p0 = reference.dense_precision(logits, theta_D, X, n * lam).diagonal()
    expected = []
    for i, model in zip(table["index"], reference.retrain_loop(net, X, y, list(table["index"]), epochs=epochs, **HYPER)):
        keep = torch.arange(n) != i
        p1 = reference.dense_precision(logits, _flat(model), X[keep], (n - 1) * lam).diagonal()
        expected.append(_diag_kl(theta_D, p0, _flat(model), p1))
    err = float(np.max(np.abs(table["lsi"] - expected) / np.abs(expected)))
    print(f"MEASURED CNN gd/diag LSI vs brute force: max rel err {err:.3g}")
    assert err <= 1e-14  # measured 5.2e-16


def _linear_network(n_in: int, n_classes: int, seed: int) -> networks.Network:
    """A network reduced to multinomial logistic regression on flattened inputs, the probe's init."""
    net = networks.Network(torch.nn.Flatten(), torch.nn.Linear(n_in, n_classes)).double()
    networks.initialise(net, torch.Generator().manual_seed(seed))
    return net


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
@pytest.mark.parametrize("solver, reference_solver, bound", [("gd", "gd", 1e-14), ("warm-start", "converged", 5e-8)])
def test_network_path_reduced_to_a_linear_model_equals_the_linear_probe(solver, reference_solver, bound):
    """The generic module path (a Network with a flatten body) against the closed-form linear probe.

    gd: same init, same steps, so the same LSI to rounding. warm-start: the
    first-order solve to gradient norm 1e-9 against the exact Newton solves of
    the converged tier (the objective is strictly convex, so both find the same optima).
    """
    X, y = _images(12, seed=3)
    X = X[:, :, :2, :2]  # 12 inputs per image, so that the linear problem is small
    net = _linear_network(12, 3, seed=0)
    options = dict(epochs=3000, weight_decay=0.1, tol=1e-9, indices=[0, 3, 7], progress=False)
    table = lsi.compute_lsi(X, y, probe=net, solver=solver, **options)
    expected = lsi.compute_lsi(X.reshape(len(X), -1), y, probe="linear", solver=reference_solver, **options)
    err = float(np.max(np.abs(table["lsi"] - expected["lsi"]) / expected["lsi"]))
    print(f"MEASURED network {solver} vs linear probe {reference_solver}: max rel err {err:.3g}")
    assert err <= bound  # measured 2.7e-16 (gd), 1.0e-8 (warm-start)
    if solver == "warm-start":
        assert bool((table["grad_norm"] <= 1e-9).all())


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_last_layer_lsi_on_frozen_features():
    """The last-layer variant: features of the fitted network, then the linear probe's converged tier;
    its LOO optima are those of a head-only network retrained on the same frozen features."""
    X, y = _images(10, seed=4)
    net = networks.build("small_cnn", n_classes=3, width=TINY["small_cnn"], seed=5)
    features = networks.fit(net, X, y, epochs=20).features(X).detach()
    table = lsi.compute_lsi(features, y, probe="linear", indices=[1, 6], progress=False)
    head = _linear_network(features.shape[1], 3, seed=0)
    check = lsi.compute_lsi(features, y, probe=head, solver="warm-start", epochs=4000, tol=1e-9, indices=[1, 6],
                            progress=False)
    err = float(np.max(np.abs(table["lsi"] - check["lsi"]) / table["lsi"]))
    print(f"MEASURED last layer: linear probe converged vs head warm-start: max rel err {err:.3g}")
    assert err <= 3e-8  # measured 4.3e-9


def test_marginal_lsi_of_the_last_layer_equals_brute_force():
    """The authors' last-layer LSI: the head's coordinates of the retrained networks' diagonal posteriors."""
    X, y = _images(8, seed=5)
    n, epochs, lam = len(X), 8, HYPER["weight_decay"]
    net = networks.build("small_cnn", n_classes=3, width=TINY["small_cnn"], seed=6)
    head = networks.head_parameters(net)
    table = lsi.compute_lsi(X, y, probe=net, solver="gd", epochs=epochs, indices=[0, 3], progress=False,
                            marginals={"last_layer": head})
    logits = lambda theta, x: torch.func.functional_call(net, ModuleProbe(net, 3)._unflatten(theta), (x,))
    theta_D = _flat(reference.train_one(copy.deepcopy(net), X, y, epochs=epochs, **HYPER))
    last = slice(-(net.head.weight.numel() + net.head.bias.numel()), None)
    p0 = reference.dense_precision(logits, theta_D, X, n * lam).diagonal()[last]
    expected = []
    for i, model in zip(table["index"], reference.retrain_loop(net, X, y, list(table["index"]), epochs=epochs, **HYPER)):
        p1 = reference.dense_precision(logits, _flat(model), X[torch.arange(n) != i], (n - 1) * lam).diagonal()[last]
        expected.append(_diag_kl(theta_D[last], p0, _flat(model)[last], p1))
    err = float(np.max(np.abs(table["lsi_last_layer"] - expected) / np.abs(expected)))
    print(f"MEASURED last-layer marginal LSI vs brute force: max rel err {err:.3g}")
    assert err <= 1e-14  # measured 8.2e-16
    assert bool((table["lsi_last_layer"] < table["lsi"]).all())  # a marginal KL is at most the joint one
    with pytest.raises(ValueError, match="head.weight"):
        lsi.compute_lsi(X, y, probe=net, solver="gd", epochs=1, marginals={"x": ["fc.weight"]}, progress=False)
    with pytest.raises(ValueError, match="hessian='diag'"):
        lsi.compute_lsi(X, y, probe=net, solver="gd", hessian="full", epochs=1, marginals={"x": head}, progress=False)


def test_train_full_batch_is_fit_and_mini_batches_follow_the_seed():
    X, y = _images(12, seed=6)
    net = networks.build("mlp", n_classes=3, width=(5,), seed=7)
    full = networks.train(net, X, y, epochs=6)
    err = float((_flat(full) - _flat(networks.fit(net, X, y, epochs=6))).abs().max())
    print(f"MEASURED train (full batch) vs fit: max abs err {err:.3g}")
    assert err <= 1e-15  # measured 2.1e-17
    runs = [_flat(networks.train(net, X, y, epochs=3, batch_size=5, seed=s)) for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    order = torch.Generator().manual_seed(0)  # the same schedule by hand: 3 epochs of 5, 5, 2 samples
    model = copy.deepcopy(net)
    optimizer = torch.optim.SGD(model.parameters(), nesterov=True, **HYPER)
    for _ in range(3):
        for batch in torch.randperm(12, generator=order).split(5):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(X[batch]), y[batch]).backward()
            optimizer.step()
    assert torch.equal(runs[0], _flat(model))


def test_accuracy_counts_argmax_hits():
    net = _linear_network(2, 2, seed=0)
    with torch.no_grad():
        net.head.weight.copy_(torch.eye(2, dtype=torch.float64))
        net.head.bias.zero_()
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    assert networks.accuracy(net, X, torch.tensor([0, 1, 1, 1]), batch_size=3) == 0.75


def test_forward_flops_of_the_small_cnn_by_hand():
    convolutions = 2 * (16 * 32 * 32 * 3 * 9 + 32 * 16 * 16 * 16 * 9 + 64 * 8 * 8 * 32 * 9)
    assert networks.forward_flops(networks.build("small_cnn")) == convolutions + 2 * 10 * 1024
    assert networks.forward_flops(networks.build("mlp", width=(4,))) == 2 * (3072 * 4 + 4 * 10)


@pytest.mark.filterwarnings("ignore:solver='warm-start'")  # a few steps: the point is the same network, not convergence
@pytest.mark.parametrize("solver", ["gd", "warm-start"])
def test_fit_gives_the_full_data_network_of_compute_lsi(solver):
    X, y = _images(10, seed=7)
    net = networks.build("mlp", n_classes=3, width=(4,), seed=8)
    options = dict(solver=solver, epochs=30, tol=1e-2)
    table = lsi.compute_lsi(X, y, probe=net, indices=[0], progress=False, **options)
    probe = ModuleProbe(net, 3)
    theta_D = _flat(networks.fit(net, X, y, **options))
    norm = float(training.objective_grad(probe, theta_D[None], X, y, torch.ones(1, 10, dtype=X.dtype),
                                         HYPER["weight_decay"]).norm())
    assert norm == table.attrs["lsi"]["full_data_grad_norm"]
    with pytest.raises(ValueError, match="'gd' or 'warm-start'"):
        networks.fit(net, X, y, solver="converged")


def test_warm_start_warns_when_the_full_data_model_is_not_converged():
    X, y = _images(10, seed=8)
    net = networks.build("mlp", n_classes=3, width=(4,), seed=9)
    with pytest.warns(RuntimeWarning, match="above tol/10"):
        lsi.compute_lsi(X, y, probe=net, solver="warm-start", epochs=2, tol=1e-6, indices=[0], progress=False)


def _exact_newton(objective, theta: torch.Tensor, tol: float = 1e-13, steps: int = 30) -> torch.Tensor:
    """Plain Newton with the dense exact Hessian (torch.autograd.functional), the brute-force solver."""
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(objective, theta)
        if float(g.norm()) <= tol:
            break
        theta = theta - torch.linalg.solve(torch.autograd.functional.hessian(objective, theta), g)
    return theta


def test_smooth_cnn_is_the_small_cnn_with_gelu_and_average_pooling():
    smooth, paper = networks.build("smooth_cnn", width=(8, 16, 32)), networks.build("small_cnn", width=(8, 16, 32))
    assert sum(p.numel() for p in smooth.parameters()) == sum(p.numel() for p in paper.parameters()) == 11_162
    assert all(torch.equal(a, b) for a, b in zip(smooth.parameters(), paper.parameters()))  # same seeded draws
    kinds = [type(m).__name__ for m in smooth.body]
    assert kinds == ["Conv2d", "GELU", "AvgPool2d"] * 3 + ["Flatten"]


def _learnable_images(n: int, n_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random images whose label is the colour channel raised by 0.5: a signal every unit can use."""
    X, y = _images(n, n_classes, seed)
    X[torch.arange(n), y % 3] += 0.5
    return X, y


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_certified_leave_one_out_lsi_equals_brute_force():
    """fit_certified + leave_one_out_lsi against independent exact-Newton solves of every objective and a
    50-digit diagonal-Laplace KL from dense Jacobians, on learnable labels: random ones leave this narrow network
    at its bias-only optimum (zero body), where most of the network's coordinates would go unchecked. Every
    left-out solve reaches 1e-12, below where Armijo on ``L`` alone stalls (about 5e-9 here)."""
    X, y = _learnable_images(10, seed=7)
    n, lam, tol = len(X), 0.01, 1e-12
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=1)
    fitted, info = networks.fit_certified(net, X, y, weight_decay=lam, tol=tol, lbfgs_steps=300)
    assert info["reached_tol"] and info["grad_norm"] <= tol
    assert _flat(net).equal(_flat(networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=1)))
    probe = ModuleProbe(net, 3)
    logits = lambda theta, x: torch.func.functional_call(net, probe._unflatten(theta), (x,))
    def objective(keep):
        return lambda theta: (torch.nn.functional.cross_entropy(logits(theta, X[keep]), y[keep])
                              + 0.5 * lam * theta.dot(theta))
    everyone = torch.ones(n, dtype=torch.bool)
    theta_D = _exact_newton(objective(everyone), _flat(fitted))
    assert float((theta_D - _flat(fitted)).norm()) <= 1e-8 * float(theta_D.norm())
    table = networks.leave_one_out_lsi(fitted, X, y, [0, 4, 9], weight_decay=lam, tol=tol,
                                       marginals={"last_layer": networks.head_parameters(fitted)})
    assert table.attrs["lsi"]["max_grad_norm"] <= tol and bool((table["grad_norm"] <= tol).all())
    p0 = reference.dense_precision(logits, theta_D, X, n * lam).diagonal()
    last = slice(-(net.head.weight.numel() + net.head.bias.numel()), None)
    expected, expected_last, moved = [], [], []
    for i in table["index"]:
        keep = torch.arange(n) != i
        theta = _exact_newton(objective(keep), theta_D)
        moved.append(float((theta - theta_D).norm()))
        p1 = reference.dense_precision(logits, theta, X[keep], (n - 1) * lam).diagonal()
        expected.append(_diag_kl(theta_D, p0, theta, p1))
        expected_last.append(_diag_kl(theta_D[last], p0[last], theta[last], p1[last]))
    err = float(np.max(np.abs(table["lsi"] - expected) / np.abs(expected)))
    err_last = float(np.max(np.abs(table["lsi_last_layer"] - expected_last) / np.abs(expected_last)))
    print(f"MEASURED certified smooth-CNN LSI vs brute force: max rel err {err:.3g} (last layer {err_last:.3g})")
    assert err <= 1e-10 and err_last <= 1e-10  # measured 2.0e-11 and 3.9e-12 (solves to gradient norm 1e-12)
    np.testing.assert_allclose(table["displacement"], moved, rtol=1e-8)


def test_lbfgs_in_the_gauss_newton_metric_reaches_the_optimum_of_exact_newton():
    """From a rough start, L-BFGS in the Gauss-Newton metric alone (no Newton stage), refreshing its factor every
    ten iterations, reaches the tolerance at the point dense exact Newton confirms; with a wrong chain rule
    (``R^-T`` for ``R^-1``) it stops near the start, at a gradient norm of 0.19.

    Two choices, each for a reason. The labels are learnable (:func:`_learnable_images`), so the optimum is a
    network that uses its units, a strict minimum (Hessian eigenvalues 2.8e-3 to 1.3 at lambda = 0.01), not the
    zero or bias-only network random labels give this narrow net, nor the near-flat minimum of a smaller lambda.
    The tolerance, 1e-7, sits above the float64 floor of a function-value line search: it cannot see a decrease
    below eps |L|, i.e. a gradient below about sqrt(2 eps |L| lambda_max) ~ 5e-9 here. Production goes below that
    floor with ``fit_certified``'s Newton stage, which this test deliberately leaves out (``max_newton=0``)."""
    X, y = _learnable_images(10)
    lam, tol = 0.01, 1e-7
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=1)
    rough, info = networks.fit_certified(net, X, y, weight_decay=lam, tol=tol, lbfgs_steps=5, max_newton=0)
    assert info["grad_norm"] > 1e-2
    probe = networks.GaussNewtonModule(rough, 3)
    w = torch.ones(len(X), dtype=X.dtype)
    theta, norm, iterations = networks.lbfgs_gauss_newton(probe, _flat(rough), X, y, w, weight_decay=lam, tol=tol,
                                                          steps=2000, round_steps=10)
    assert norm <= tol and 10 < iterations <= 2000  # more than one round: the refreshed factor is exercised
    logits = lambda t, x: torch.func.functional_call(net, probe._unflatten(t), (x,))
    objective = lambda t: torch.nn.functional.cross_entropy(logits(t, X), y) + 0.5 * lam * t.dot(t)
    assert float(objective(theta)) < 0.1  # the images are fitted: far below ln 3, the zero network's
    exact = _exact_newton(objective, theta)
    smallest = float(torch.linalg.eigvalsh(torch.autograd.functional.hessian(objective, exact))[0])
    assert smallest > 1e-3  # the premise: a strict minimum, so |theta - theta*| <= ||grad|| / smallest
    assert float((exact - theta).norm()) <= 1.5 * norm / smallest


def test_the_zero_network_is_flagged_trivial_although_its_gradient_certifies_it():
    """At a large lambda the zero network, which predicts every class alike (L = ln C), is a strict local
    minimum: the gradient norm certifies it and ``trivial`` says what it is. So it is for this two-channel
    network at the paper's lambda = 0.01 too; at 0.001 it fits the nine images."""
    X, y = _images(9, seed=12)
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=5)
    zero, info = networks.fit_certified(net, X, y, weight_decay=1.0, tol=1e-9, lbfgs_steps=300)
    assert info["reached_tol"] and info["trivial"]
    assert abs(info["objective"] - np.log(3)) <= 1e-9 and float(_flat(zero).norm()) <= 1e-6
    fitted, info = networks.fit_certified(net, X, y, weight_decay=0.001, tol=1e-9, lbfgs_steps=300)
    assert info["reached_tol"] and not info["trivial"] and info["objective"] < np.log(3) - 0.1


def test_a_left_out_network_the_downdated_preconditioner_leaves_short_is_finished_with_its_own():
    """A preconditioner that gives no direction (zero) leaves the first Newton solve where it started; the
    refreshed Gauss-Newton factors then reach the tolerance and the same optimum as a solve with them alone."""
    X, y = _images(8, seed=9)
    lam, tol = 0.01, 1e-9
    fitted, _ = networks.fit_certified(networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=3),
                                       X, y, weight_decay=lam, tol=tol, lbfgs_steps=200)
    probe = networks.GaussNewtonModule(fitted, 3)
    theta_D = torch.nn.utils.parameters_to_vector(fitted.parameters()).detach()
    w = training.loo_weights(len(X), torch.tensor([2]), dtype=X.dtype, device="cpu")[0]
    useless = torch.zeros_like
    stuck, stuck_norm = networks.newton_pcg(probe, theta_D, X, y, w, weight_decay=lam, tol=tol, precondition=useless)
    assert stuck_norm > 1e3 * tol and torch.equal(stuck, theta_D)  # the first solve alone does not move
    theta, norm = networks._solve_left_out(probe, theta_D, X, y, w, weight_decay=lam, tol=tol, precondition=useless)
    reference, reference_norm, _ = networks.newton_refreshed(probe, theta_D, X, y, w, weight_decay=lam, tol=tol,
                                                             max_newton=30)
    assert norm <= tol and reference_norm <= tol
    assert float((theta - reference).norm() / (theta - theta_D).norm()) <= 1e-6


def test_leave_one_out_lsi_resumes_from_a_checkpoint_and_carries_the_runners_identity(tmp_path):
    """A run killed after its first chunk solves only the missing ones when rerun, with the same rows; another
    theta_D finds no chunk of its own in the folder."""
    from executors import Counting, Interrupted, StopAfter
    X, y = _images(8, seed=3)
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=2)
    fitted, _ = networks.fit_certified(net, X, y, weight_decay=0.001, tol=1e-8, lbfgs_steps=200)
    kw = dict(weight_decay=0.001, tol=1e-8, chunk=2, marginals={"last_layer": networks.head_parameters(fitted)})
    whole = networks.leave_one_out_lsi(fitted, X, y, [0, 3, 5, 6], **kw)
    with pytest.raises(Interrupted):
        networks.leave_one_out_lsi(fitted, X, y, [0, 3, 5, 6], checkpoint=tmp_path, executor=StopAfter(1), **kw)
    counting = Counting()
    resumed = networks.leave_one_out_lsi(fitted, X, y, [0, 3, 5, 6], checkpoint=tmp_path, executor=counting, **kw)
    assert counting.scored == [5]                                             # only the missing chunk ran
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)
    identity = resumed.attrs["lsi"]["identity"]
    assert identity["measure"] == "lsi-network" and identity["module_sha256"] == runner.fingerprint(_flat(fitted))
    assert resumed.attrs["lsi"]["max_grad_norm"] <= 1e-8
    moved = networks.with_parameters(fitted, _flat(fitted) * (1 + 1e-9))
    with pytest.raises(ValueError, match="other options"):                    # another theta_D, same folder
        networks.leave_one_out_lsi(moved, X, y, [0, 3, 5, 6], checkpoint=tmp_path, **kw)


def _autograd_hessian(net, X, y, lam):
    """The Hessian of L = mean CE + lam/2 ||theta||^2 by ``torch.autograd.functional.hessian`` on the flat
    parameters: independent of the probes' Hessian-vector products."""
    shapes = {name: p.shape for name, p in net.named_parameters()}

    def objective(flat):
        pieces = torch.split(flat, [shape.numel() for shape in shapes.values()])
        params = {name: piece.view(shape) for (name, shape), piece in zip(shapes.items(), pieces)}
        logits = torch.func.functional_call(net, params, (X,))
        return torch.nn.functional.cross_entropy(logits, y) + 0.5 * lam * flat.pow(2).sum()

    return torch.autograd.functional.hessian(objective, _flat(net))


def test_smallest_hessian_eigenvalue_equals_the_autograd_hessians_both_ways():
    """The dense path and Lanczos (forced by dense_limit=0) against numpy's eigvalsh of the autograd Hessian, at an
    optimum and at the seeded weights (not an optimum: a negative eigenvalue)."""
    X, y = _images(8, seed=4)
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=3)
    fitted, _ = networks.fit_certified(net, X, y, weight_decay=0.001, tol=1e-8, lbfgs_steps=200)
    random_net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=3, dtype=torch.float64)
    for model, lam in [(fitted, 0.001), (random_net, 0.0)]:
        expected = float(np.linalg.eigvalsh(_autograd_hessian(model, X, y, lam).numpy())[0])
        for limit in (networks.DENSE_HESSIAN_LIMIT, 0):
            measured = networks.smallest_hessian_eigenvalue(model, X, y, weight_decay=lam, dense_limit=limit)
            assert abs(measured - expected) <= 1e-8 * max(1.0, abs(expected)), (limit, measured, expected)
        assert (expected > 0) == (model is fitted)


def test_leave_one_out_lsi_reports_networks_that_stop_short():
    """A tolerance below the float64 floor is not reached: grad_norm says so instead of an error."""
    X, y = _images(6, seed=8)
    net = networks.build("smooth_cnn", n_classes=3, width=TINY["small_cnn"], seed=2)
    fitted, info = networks.fit_certified(net, X, y, weight_decay=0.01, tol=1e-30, lbfgs_steps=50, max_newton=3)
    assert not info["reached_tol"] and info["grad_norm"] > 1e-30
    table = networks.leave_one_out_lsi(fitted, X, y, [1], weight_decay=0.01, tol=1e-30)
    assert table.attrs["lsi"]["max_grad_norm"] > 1e-30 and np.isfinite(table["lsi"]).all()
