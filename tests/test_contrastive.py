"""The InfoNCE probe and its exact leave-one-pair-out objective (lsi.contrastive)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from executors import Counting, Interrupted, StopAfter
from lsi import contrastive as con
from lsi import runner


def _pairs(m=24, du=5, dv=4, seed=0):
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((m, 3))
    U = latent @ rng.standard_normal((3, du)) + 0.3 * rng.standard_normal((m, du))
    V = latent @ rng.standard_normal((3, dv)) + 0.3 * rng.standard_normal((m, dv))
    return torch.as_tensor(U), torch.as_tensor(V)


def _reference_objective(probe, theta, U, V, wd):
    """Symmetric InfoNCE written from scratch with F.cross_entropy on the given pairs only."""
    S = probe.similarity(theta, U, V)
    target = torch.arange(len(U))
    ce = 0.5 * (torch.nn.functional.cross_entropy(S, target) + torch.nn.functional.cross_entropy(S.T, target))
    return ce + 0.5 * wd * theta.dot(theta)


def test_masked_objective_equals_the_objective_on_the_reduced_pair_set():
    U, V = _pairs()
    probe = con.ContrastiveProbe(5, 4, 3)
    theta = probe.init(1)
    keep = torch.ones(len(U), dtype=torch.float64)
    keep[[2, 7]] = 0
    reduced = keep.bool()
    got = con.objective(probe, theta, U, V, keep, 0.01)
    want = _reference_objective(probe, theta, U[reduced], V[reduced], 0.01)
    assert float(got) == pytest.approx(float(want), rel=1e-13)
    g_masked = con.objective_grad(probe, theta[None], U, V, keep[None], 0.01)[0]
    g_reduced = torch.func.grad(lambda t: _reference_objective(probe, t, U[reduced], V[reduced], 0.01))(theta)
    torch.testing.assert_close(g_masked, g_reduced, rtol=1e-12, atol=1e-14)


def test_closed_form_ggn_diagonal_equals_the_generic_torch_func_one():
    U, V = _pairs(m=15)
    probe = con.ContrastiveProbe(5, 4, 3, temperature=0.5)
    theta = probe.init(2)
    keep = torch.ones(len(U), dtype=torch.float64)
    keep[4] = 0
    torch.testing.assert_close(con.ggn_diag(probe, theta, U, V, keep),
                               con.ggn_diag_generic(probe, theta, U, V, keep, chunk=4), rtol=1e-11, atol=1e-13)


def test_ggn_diagonal_is_the_brute_force_gauss_newton_matrix_diagonal():
    U, V = _pairs(m=8)
    probe = con.ContrastiveProbe(5, 4, 2)
    theta = probe.init(3)
    keep = torch.ones(len(U), dtype=torch.float64)
    J = torch.func.jacrev(lambda t: probe.similarity(t, U, V))(theta)          # (m, m, K)
    S = probe.similarity(theta, U, V)
    G = torch.zeros(len(theta), len(theta), dtype=torch.float64)
    for i in range(len(U)):
        for vec, jac in ((torch.softmax(S[i], 0), J[i]), (torch.softmax(S[:, i], 0), J[:, i])):
            lam = torch.diag(vec) - torch.outer(vec, vec)
            G += 0.5 * jac.T @ lam @ jac
    torch.testing.assert_close(con.ggn_diag(probe, theta, U, V, keep), torch.diagonal(G), rtol=1e-11, atol=1e-13)


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_leave_one_pair_out_equals_retraining_on_the_reduced_set():
    U, V = _pairs(m=20)
    result = con.leave_one_pair_out(U.numpy(), V.numpy(), dim=3, pairs=[0, 5], tol=1e-10)
    assert result.meta["full_grad_norm"] < 1e-10 and result.meta["max_loo_grad_norm"] < 1e-10
    probe = con.ContrastiveProbe(5, 4, 3)
    for k in (0, 5):
        rest = torch.arange(20) != k
        # retrain from scratch (another start) on the reduced arrays: same objective value at its optimum
        theta_k, norm = con.fit(probe, probe.init(7), U[rest], V[rest], weight_decay=0.01, tol=1e-11)
        ones = torch.ones(19, dtype=torch.float64)
        row = result.table.set_index("index").loc[k]
        assert norm < 1e-10 and row["grad_norm"] < 1e-10
        # the similarity matrix is invariant under the heads' common rotation; compare it
        mask = torch.ones(20, dtype=torch.float64)
        mask[k] = 0
        theta_masked = result.theta_D + result.delta[list(result.table["index"]).index(k)]
        torch.testing.assert_close(probe.similarity(theta_masked, U[rest], V[rest]),
                                   probe.similarity(theta_k, U[rest], V[rest]), rtol=1e-6, atol=1e-7)
        assert float(con.objective(probe, theta_k, U[rest], V[rest], ones, 0.01)) == pytest.approx(
            float(con.objective(probe, theta_masked, U, V, mask, 0.01)), rel=1e-12)
    assert (result.table["lsi"] > 0).all()


def test_shuffle_captions_moves_the_requested_share_to_other_images():
    from lsi.corruptions import shuffle_captions
    image = np.repeat(np.arange(40), 5)
    order, shuffled = shuffle_captions(image, 0.1, seed=0)
    assert sorted(order) == list(range(200))
    assert 15 <= shuffled.sum() <= 20 and (image[order][shuffled] != image[shuffled]).all()
    assert (order[~shuffled] == np.arange(200)[~shuffled]).sum() >= 180


def test_cost_estimate_is_cubic():
    est = con.cost_estimate(10.0, 100, 1000)
    assert est["cpu_hours"] == pytest.approx(10 * 1000 / 3600)
    assert est["similarity_matrix_gib"] == pytest.approx(8e6 / 2 ** 30)


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_newton_step_tier_approximates_the_converged_solve():
    U, V = _pairs(m=60)
    exact = con.leave_one_pair_out(U.numpy(), V.numpy(), dim=3, pairs=range(0, 60, 6))
    step = con.leave_one_pair_out(U.numpy(), V.numpy(), dim=3, pairs=range(0, 60, 6), solver="newton-step")
    rho = exact.table["lsi"].rank().corr(step.table["lsi"].rank())
    assert rho > 0.8
    ratio = step.table["lsi"] / exact.table["lsi"]
    assert ratio.median() == pytest.approx(1, abs=0.15) and ratio.between(1 / 3, 3).all()
    with pytest.raises(ValueError, match="solver"):
        con.leave_one_pair_out(U.numpy(), V.numpy(), dim=3, pairs=[0], solver="gd")


def test_caption_agreement_is_the_mean_cosine_to_the_other_captions():
    T = np.array([[1.0, 0], [1, 0], [0, 1], [3, 4], [3, 4]])
    got = con.caption_agreement(T, np.array([0, 0, 0, 1, 1]))
    np.testing.assert_allclose(got, [0.5, 0.5, 0.0, 1.0, 1.0])


def test_caption_gallery_shows_each_pick():
    from PIL import Image

    from lsi.book import plots
    picks = pd.DataFrame({"index": [0, 1], "lsi": [0.1, 2.0], "end": ["lowest", "highest"]})
    out = plots.caption_gallery(picks, lambda i: Image.new("RGB", (30, 20), "red"), lambda i: f"caption <{i}>")
    assert out.data.count("<img") == 2 and "caption &lt;1&gt;" in out.data and "highest" in out.data


def test_leave_one_pair_out_resumes_from_a_checkpoint_and_carries_the_runners_identity(tmp_path):
    U, V = _pairs(m=12)
    kw = dict(dim=3, pairs=range(5), solver="newton-step", tol=1e-6, memory_budget=1)   # five chunks of one pair
    with pytest.raises(Interrupted):
        con.leave_one_pair_out(U.numpy(), V.numpy(), checkpoint=tmp_path, executor=StopAfter(2), **kw)
    counting = Counting()
    resumed = con.leave_one_pair_out(U.numpy(), V.numpy(), checkpoint=tmp_path, executor=counting, **kw)
    assert counting.scored == [2, 3, 4]                                       # only the missing chunks ran
    whole = con.leave_one_pair_out(U.numpy(), V.numpy(), **kw)
    pd.testing.assert_frame_equal(resumed.table, whole.table, check_exact=True)
    torch.testing.assert_close(resumed.delta, whole.delta, rtol=0, atol=0)
    identity = resumed.table.attrs["lsi"]["identity"]
    assert identity == whole.table.attrs["lsi"]["identity"] and identity["measure"] == "contrastive-lsi"
    assert identity["data_sha256"] == runner.fingerprint(U, V) and identity["solver"] == "newton-step"
    assert "memory_budget" not in identity and resumed.meta["n_params"] == con.ContrastiveProbe(5, 4, 3).n_params


@pytest.mark.slow  # over 10 s: the exact check runs in `make test`
def test_heads_start_from_nn_linear_draws_and_leave_the_global_random_state_alone():
    torch.manual_seed(3)  # what the heads' start was built from before: the global generator, seeded
    old = [torch.nn.Linear(5, 3, dtype=torch.float64), torch.nn.Linear(4, 3, dtype=torch.float64)]
    expected = torch.cat([torch.cat([h.weight.T, h.bias[None]]).reshape(-1) for h in old]).detach()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert torch.equal(con.ContrastiveProbe(5, 4, 3).init(3), expected)
    U, V = _pairs(m=12)
    con.leave_one_pair_out(U.numpy(), V.numpy(), dim=3, pairs=[0], seed=3)
    assert torch.equal(torch.get_rng_state(), state)
