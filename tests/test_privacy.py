"""DP-SGD leave-one-out (lsi.privacy): against opacus, plain GD and the closed-form accountant."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from executors import Counting, Interrupted, StopAfter
from lsi import privacy, runner, training
from lsi.training import train_dp
from lsi.probes import LinearProbe


def _data(n=40, d=5, C=3, seed=0):
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.standard_normal((n, d)))
    Y = torch.as_tensor(rng.integers(0, C, n))
    return X, Y, LinearProbe(d, C)


def _opacus_train(X, Y, probe, clip, noise, seed, epochs, lr=0.04, momentum=0.9, wd=0.01):
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = torch.nn.Linear(X.shape[1], probe.n_classes, dtype=torch.float64)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=wd)
    loader = DataLoader(TensorDataset(X, Y), batch_size=len(X), shuffle=False)
    model, optimizer, loader = PrivacyEngine().make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise, max_grad_norm=clip,
        noise_generator=torch.Generator().manual_seed(seed), poisson_sampling=False, loss_reduction="mean")
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
    layer = model._module
    return torch.cat([layer.weight.detach().T, layer.bias.detach()[None]]).reshape(-1)


@pytest.mark.parametrize("clip,noise", [(0.05, 0.0), (0.05, 2.0), (1.0, 8.1)])
def test_train_dp_equals_opacus_make_private_step_for_step(clip, noise):
    X, Y, probe = _data()
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    ours, _ = train_dp(X, Y, theta0, torch.ones(1, len(X), dtype=torch.float64),
                               torch.tensor([clip], dtype=torch.float64), torch.tensor([noise], dtype=torch.float64),
                               torch.tensor([0]), [7], lr=0.04, momentum=0.9, weight_decay=0.01, epochs=30)
    reference = _opacus_train(X, Y, probe, clip, noise, 7, 30)
    torch.testing.assert_close(ours[0], reference, rtol=1e-9, atol=1e-10)


def test_noise_zero_and_huge_clip_is_plain_gradient_descent():
    X, Y, probe = _data()
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    w = torch.ones(2, len(X), dtype=torch.float64)
    w[1, 3] = 0
    ours, _ = train_dp(X, Y, theta0, w, torch.full((2,), 1e9, dtype=torch.float64),
                               torch.zeros(2, dtype=torch.float64), torch.tensor([0, 0]), [0],
                               lr=0.04, momentum=0.9, weight_decay=0.01, epochs=50)
    plain = training.train_gd(probe, theta0, X, Y, w, lr=0.04, momentum=0.9, weight_decay=0.01, epochs=50)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-13)


def test_loo_model_shares_the_noise_of_its_full_model_and_batching_does_not_change_it():
    X, Y, probe = _data()
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    args = dict(lr=0.04, momentum=0.9, weight_decay=0.01, epochs=20)
    w = torch.ones(3, len(X), dtype=torch.float64)
    w[1, 5] = 0
    clip, noise = torch.full((3,), 0.1, dtype=torch.float64), torch.full((3,), 5.0, dtype=torch.float64)
    both, _ = train_dp(X, Y, theta0, w, clip, noise, torch.tensor([0, 0, 1]), [3, 4], **args)
    alone, _ = train_dp(X, Y, theta0, w[1:2], clip[:1], noise[:1], torch.tensor([0]), [3], **args)
    torch.testing.assert_close(both[1], alone[0], rtol=1e-12, atol=1e-14)
    # the same sample set with another noise seed moves much further than leaving one sample out
    assert (both[2] - both[0]).norm() > 5 * (both[1] - both[0]).norm()


def _rdp_to_epsilon(orders, rdp, delta):
    """epsilon at every order from RDP (the conversion opacus uses; Balle et al. 2020), written out independently."""
    return rdp - (np.log(delta) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders)


def test_epsilon_is_opacus_rdp_of_the_gaussian_mechanism_at_rate_one():
    sigma, steps, delta = 8.1, 700, 1e-3
    orders = np.asarray(privacy.DEFAULT_ORDERS)
    rdp = steps * orders / (2 * sigma ** 2)     # Gaussian mechanism without subsampling (Mironov 2017)
    eps = _rdp_to_epsilon(orders, rdp, delta)
    assert privacy.epsilon(sigma, steps, delta) == pytest.approx(float(eps.min()), rel=1e-12)
    assert privacy.epsilon(0.0, steps, delta) == math.inf
    # the per-instance bound with the worst-case sensitivity C at every step is the global epsilon
    clip = 0.5
    worst = np.array([steps * clip ** 2])
    assert privacy.per_instance_epsilon(worst, sigma, clip, delta)[0] == pytest.approx(eps.min(), rel=1e-12)
    assert privacy.per_instance_kl(worst, sigma, clip)[0] == pytest.approx(steps / (2 * sigma ** 2))


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_epsilon_of_a_weak_subsampled_mechanism_has_its_best_order_inside_the_grid():
    """The authors' accounting (rate 0.01) at the ci setting has its best order beyond opacus's 63: the grid
    reaches it (no warning), and a grid four times longer finds nothing better."""
    import warnings

    from opacus.accountants import RDPAccountant

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = privacy.epsilon(8.1, 100, 1 / 200, sample_rate=0.01)
    accountant = RDPAccountant()
    accountant.history = [(8.1, 0.01, 100)]
    longer = accountant.get_epsilon(delta=1 / 200, alphas=privacy.DEFAULT_ORDERS + list(range(64, 4097)))
    opacus_default = accountant.get_epsilon(delta=1 / 200)
    assert got == pytest.approx(longer, rel=1e-12) and got < opacus_default


def test_per_instance_epsilon_of_a_small_sensitivity_finds_its_best_order():
    """Opacus's orders end at 63; a sample with a small total sensitivity b has its best order beyond that.
    The bound is the minimum of the RDP conversion over all orders (brute force on a dense grid), never
    below 0, and no warning says that the grid ended too early."""
    import warnings

    sigma, clip, delta = 8.1, 0.5, 2e-3
    b = np.array([1e-8, 1e-4, 1e-2, 1e-25, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = privacy.per_instance_epsilon(b * 2 * sigma ** 2 * clip ** 2, sigma, clip, delta)
    orders = np.geomspace(1.001, 1e9, 400_001)[:, None]
    eps = _rdp_to_epsilon(orders, orders * b, delta)
    np.testing.assert_allclose(got, np.maximum(eps.min(axis=0), 0.0), rtol=3e-5)
    opacus_orders = np.asarray(privacy.DEFAULT_ORDERS)[:, None]
    eps_opacus = _rdp_to_epsilon(opacus_orders, opacus_orders * b, delta).min(axis=0)
    assert got[0] == got[3] == got[4] == 0.0
    assert got[1] < 0.8 * eps_opacus[1] and got[2] == pytest.approx(eps_opacus[2], rel=1e-3)


def test_dp_lsi_table_and_accounting():
    X, Y, _ = _data(n=30)
    table = privacy.dp_lsi(X.numpy(), Y.numpy(), clips=[0.01, 1.0], noises=[0.0, 8.1], seeds=[0, 1],
                           scored=[0, 4], epochs=15, memory_budget=1)
    assert len(table) == 2 * 2 * 2 * 2
    assert (table["lsi"] > 0).all()
    finite = table[table["noise"] > 0]
    assert np.isfinite(finite["eps_instance"]).all() and (table[table["noise"] == 0]["eps_instance"] == np.inf).all()
    assert table.attrs["lsi"]["epsilon"]["8.1"] == pytest.approx(privacy.epsilon(8.1, 15, 1 / 30))
    assert table.attrs["lsi"]["n_models"] == 2 * 2 * 2 * 3
    # per-instance sensitivity never exceeds the clipping norm
    assert (table["sensitivity_rms"] <= 1 + 1e-9).all()


def test_scaled_cost_is_linear_in_models_steps_and_size():
    base = dict(n=100, n_scored=9, n_settings=2, n_seeds=1, n_params=50, epochs=10)
    assert privacy.scaled_cost(36.0, **base, to={})["cpu_hours"] == pytest.approx(0.01)
    out = privacy.scaled_cost(36.0, **base, to={"n": 200, "n_scored": 19, "n_seeds": 3})
    assert out["cpu_hours"] == pytest.approx(0.01 * 2 * 2 * 3) and out["models"] == 2 * 3 * 20


def test_unpaired_noise_swamps_the_sample_effect():
    X, Y, _ = _data(n=30)
    kw = dict(clips=[1.0], noises=[8.1], seeds=[0], scored=[0, 4], epochs=15)
    paired = privacy.dp_lsi(X.numpy(), Y.numpy(), **kw)
    unpaired = privacy.dp_lsi(X.numpy(), Y.numpy(), paired=False, **kw)
    assert (unpaired["lsi"].to_numpy() > 10 * paired["lsi"].to_numpy()).all()


def test_dp_lsi_resumes_from_a_checkpoint_and_carries_the_runners_identity(tmp_path):
    X, Y, _ = _data(n=30)
    kw = dict(clips=[1.0], noises=[0.0, 8.1], seeds=[0], scored=[0, 4, 7], epochs=15, memory_budget=1)
    whole = privacy.dp_lsi(X.numpy(), Y.numpy(), **kw)                       # 6 chunks of one model
    with pytest.raises(Interrupted):
        privacy.dp_lsi(X.numpy(), Y.numpy(), checkpoint=tmp_path, executor=StopAfter(2), **kw)
    counting = Counting()
    resumed = privacy.dp_lsi(X.numpy(), Y.numpy(), checkpoint=tmp_path, executor=counting, **kw)
    assert counting.scored == [2, 3, 4, 5]                                    # only the missing chunks ran
    pd.testing.assert_frame_equal(resumed, whole, check_exact=True)
    identity = resumed.attrs["lsi"]["identity"]
    assert identity == whole.attrs["lsi"]["identity"] and identity["measure"] == "dp-lsi"
    assert identity["data_sha256"] == runner.fingerprint(X.numpy().astype(np.float64), Y.numpy())
    assert "memory_budget" not in identity and resumed.attrs["lsi"]["options"]["memory_budget"] == 1
    # one chunk of all six models gives the same numbers as six chunks of one
    together = privacy.dp_lsi(X.numpy(), Y.numpy(), **{**kw, "memory_budget": "1GiB"})
    np.testing.assert_allclose(together["lsi"], whole["lsi"], rtol=1e-9)
    with pytest.raises(ValueError, match="other options"):                    # other data, same folder
        privacy.dp_lsi(X.numpy()[::-1].copy(), Y.numpy(), checkpoint=tmp_path, **kw)
