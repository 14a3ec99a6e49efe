"""Closed-form probe derivatives against generic torch.func ones (and nn.Module probes)."""
import pytest
import torch

from lsi.probes import LinearProbe, MLPProbe, ModuleProbe, Probe, make_probe
from prerequisites import needs_cuda


@pytest.fixture(autouse=True)
def float64_by_default():
    """float64 tensors by default in this file's tests only; the session's default is restored after each."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _problem(probe, n=23, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    Y = torch.randint(0, probe.n_classes, (n,), generator=g)
    theta = probe.init(seed, dtype=torch.float64, device="cpu")[None].repeat(3, 1)
    theta = theta + 0.5 * torch.randn(theta.shape, generator=g)
    w = torch.ones(3, n)
    w[1, 4] = 0
    w[2, 0] = 0
    return X, Y, theta, w


PROBES = [LinearProbe(5, 3), MLPProbe(5, 4, 6), MLPProbe(5, 4, 6, "gelu"), MLPProbe(5, 4, 6, "softplus")]
IDS = ["linear", "mlp", "mlp-gelu", "mlp-softplus"]


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_closed_forms_match_torch_func(probe):
    X, Y, theta, w = _problem(probe)
    torch.testing.assert_close(probe.grad(theta, X, Y, w), Probe.grad(probe, theta, X, Y, w))
    soft = torch.rand(w.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(probe.grad(theta, X, Y, soft), Probe.grad(probe, theta, X, Y, soft))
    generic_diag = torch.stack([(wb[:, None] * Probe.sample_ggn_diag(probe, t, X)).sum(0) for t, wb in zip(theta, w)])
    torch.testing.assert_close(probe.ggn_diag(theta, X, w), generic_diag)
    full = Probe.ggn_full(probe, theta[1], X, w[1])
    torch.testing.assert_close(probe.ggn_full(theta[1], X, w[1]), full)
    torch.testing.assert_close(torch.diagonal(full), generic_diag[1])
    V = torch.randn(2, probe.n_params)
    torch.testing.assert_close(probe.ggn_vp(theta[1], X, w[1], V), V @ full)
    U = probe.sample_ggn_factor(theta[0], X)
    torch.testing.assert_close((U @ U.transpose(1, 2)).sum(0), Probe.ggn_full(probe, theta[0], X, torch.ones(len(X))))
    psg = probe.per_sample_grads(theta[0], X, Y)
    torch.testing.assert_close(psg.sum(0), Probe.grad(probe, theta[:1], X, Y, torch.ones(1, len(X)))[0])


def test_linear_ggn_blocks_over_sample_chunks_equal_one_pass():
    """The class-block Hessian accumulated over chunks of 4 samples (23 = 5 x 4 + 3) against the dense generic
    one, with fractional and zero weights."""
    probe = LinearProbe(5, 3)
    X, Y, theta, w = _problem(probe)
    soft = torch.rand(len(X), generator=torch.Generator().manual_seed(2)) * w[1]
    chunked = probe.ggn_full(theta[1], X, soft, chunk=4)
    assert float((chunked - Probe.ggn_full(probe, theta[1], X, soft)).norm() / chunked.norm()) <= 1e-15


def test_linear_passes_over_row_blocks_equal_the_generic_derivatives(monkeypatch):
    """150 samples in blocks of 64, 64 and 22 rows (the smallest block): gradients, the diagonal GGN of a pass's
    kept probabilities for all models and for a subset, against torch.func."""
    monkeypatch.setattr("lsi.probes.BLOCK_BYTES", 1)
    probe = LinearProbe(5, 3)
    X, Y, theta, w = _problem(probe, n=150)
    g, ggn_at = probe.grad_and_ggn_diag(theta, X, Y, w)
    torch.testing.assert_close(g, Probe.grad(probe, theta, X, Y, w), rtol=1e-13, atol=0)
    torch.testing.assert_close(probe.grad(theta, X, Y, w), g, rtol=0, atol=0)
    some = torch.tensor([True, False, True])
    generic = torch.stack([(wb[:, None] * Probe.sample_ggn_diag(probe, t, X)).sum(0) for t, wb in zip(theta, w)])
    torch.testing.assert_close(ggn_at(some), generic[some], rtol=1e-13, atol=0)
    torch.testing.assert_close(probe.ggn_diag(theta, X, w), generic, rtol=1e-13, atol=0)


def test_linear_probe_reuses_its_design_matrix_only_while_the_features_are_unchanged():
    probe = LinearProbe(5, 3)
    X, Y, theta, w = _problem(probe)
    before = probe.grad(theta, X, Y, w)
    X.mul_(2)                                   # the same tensor, changed in place: the kept [X, 1] is stale
    torch.testing.assert_close(probe.grad(theta, X, Y, w), Probe.grad(probe, theta, X, Y, w))
    assert not torch.allclose(probe.grad(theta, X, Y, w), before)


def test_linear_hessian_is_the_ggn():
    probe = LinearProbe(5, 3)
    X, Y, theta, w = _problem(probe)
    torch.testing.assert_close(probe.hessian(theta[0], X, Y, w[0]), Probe.hessian(probe, theta[0], X, Y, w[0]))


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_kfac_is_exact_for_one_sample(probe):
    X, Y, theta, _ = _problem(probe)
    w = torch.zeros(len(X))
    w[7] = 1
    full = probe.ggn_full(theta[0], X, w)
    offset = 0
    for A, G in probe.kfac(theta[0], X, w):
        size = A.shape[0] * G.shape[0]
        torch.testing.assert_close(torch.kron(A, G), full[offset:offset + size, offset:offset + size])
        offset += size
    assert offset == probe.n_params


def test_linear_kfac_is_exact_when_all_predictions_agree():
    """With zero weights every p_j is uniform, so sum_j x x^T kron Lambda = A kron G exactly."""
    probe = LinearProbe(4, 3)
    X = torch.randn(30, 4)
    theta = torch.zeros(probe.n_params)
    w = torch.ones(30)
    (A, G), = probe.kfac(theta, X, w)
    torch.testing.assert_close(torch.kron(A, G), probe.ggn_full(theta, X, w))


def test_module_probe_matches_linear_probe():
    torch.manual_seed(3)
    module = torch.nn.Linear(5, 3)
    linear = LinearProbe(5, 3)
    generic = make_probe(module, 5, 3)
    X = torch.randn(11, 5)
    theta_module = generic.init(0, dtype=torch.float64, device="cpu")
    theta_linear = torch.cat([module.weight.T, module.bias[None]]).reshape(-1).detach()
    torch.testing.assert_close(generic.logits(theta_module[None], X), linear.logits(theta_linear[None], X))
    assert isinstance(generic, ModuleProbe) and generic.n_params == linear.n_params


def test_unknown_probe_is_a_clear_error():
    with pytest.raises(ValueError, match="probe='cnn' is not valid"):
        make_probe("cnn", 3, 2)


@pytest.mark.parametrize("activation, module", [("relu", torch.nn.ReLU()), ("gelu", torch.nn.GELU()),
                                                ("softplus", torch.nn.Softplus())])
def test_mlp_activations_match_torch_modules(activation, module):
    """The probe's logits equal nn.Sequential(Linear, <activation>, Linear) with the same weights."""
    probe = MLPProbe(5, 3, 4, activation)
    theta = probe.init(2, dtype=torch.float64, device="cpu")
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), module, torch.nn.Linear(4, 3)).double()
    X = 2 * torch.randn(9, 5)
    torch.testing.assert_close(probe.logits(theta[None], X)[0], net(X))


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="activation='tanh' is not valid"):
        make_probe("mlp", 3, 2, 4, "tanh")


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_chunked_hessian_equals_torch_func_hessian(activation):
    probe = MLPProbe(5, 3, 4, activation)
    X, Y, theta, w = _problem(probe)
    dense = torch.func.hessian(lambda t: (probe.ce(t[None], X, Y)[0] * w[1]).sum())(theta[1])
    torch.testing.assert_close(probe.hessian(theta[1], X, Y, w[1], chunk=7), dense)


@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_init_leaves_the_global_random_state_alone(probe):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    probe.init(7, dtype=torch.float64, device="cpu")
    assert torch.equal(torch.rand(4), expected)


def test_init_draws_nn_linear_default_weights():
    """Same numbers as ``torch.manual_seed(seed); nn.Linear(...)`` (the authors' models), in both dtypes."""
    for dtype in (torch.float64, torch.float32):
        torch.manual_seed(3)
        first = torch.nn.Linear(5, 6, dtype=dtype)
        second = torch.nn.Linear(6, 4, dtype=dtype)
        flat = [torch.cat([m.weight.T, m.bias[None]]).reshape(-1).detach() for m in (first, second)]
        assert torch.equal(MLPProbe(5, 4, 6).init(3, dtype=dtype, device="cpu"), torch.cat(flat))
        assert torch.equal(LinearProbe(5, 6).init(3, dtype=dtype, device="cpu"), flat[0])


@needs_cuda
@pytest.mark.parametrize("probe", PROBES, ids=IDS)
def test_cuda_and_cpu_start_from_the_same_weights(probe):
    cpu = probe.init(0, dtype=torch.float64, device="cpu")
    cuda = probe.init(0, dtype=torch.float64, device="cuda")
    assert cuda.device.type == "cuda" and torch.equal(cuda.cpu(), cpu)
