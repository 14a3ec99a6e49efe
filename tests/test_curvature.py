"""Our curvature against two field libraries: curvlinops (dense GGN) and laplace-torch (the authors' path)."""
import pytest
import torch
from torch import nn

from lsi import curvature
from lsi.probes import LinearProbe, make_probe
from prerequisites import require_module

CURVATURE_EXTRA = "the curvature extra: pip install -e '.[curvature]'"


def _module_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    X = torch.randn(17, 4, dtype=torch.float64)
    Y = torch.randint(0, 3, (17,))
    return model, X, Y


def test_module_probe_ggn_equals_curvlinops():
    curvlinops = require_module("curvlinops", CURVATURE_EXTRA)
    model, X, Y = _module_problem()
    probe = make_probe(model, 4, 3)
    theta = probe.init(0, dtype=torch.float64, device="cpu")
    ours = probe.ggn_full(theta, X, torch.ones(len(X)))
    operator = curvlinops.GGNLinearOperator(model, nn.CrossEntropyLoss(reduction="sum"),
                                            list(model.parameters()), [(X, Y)], check_deterministic=False)
    dense = operator @ torch.eye(probe.n_params, dtype=torch.float64)
    torch.testing.assert_close(ours, torch.as_tensor(dense, dtype=torch.float64))


def test_diag_precision_with_unit_prior_equals_laplace_torch():
    """prior_precision=1 reproduces the authors' laplace-torch 'all'/'diag' posterior precision."""
    laplace = require_module("laplace", CURVATURE_EXTRA)
    torch.manual_seed(1)
    layer = nn.Linear(4, 3).double()
    X = torch.randn(25, 4, dtype=torch.float64)
    Y = torch.randint(0, 3, (25,))
    posterior = laplace.Laplace(layer, "classification", subset_of_weights="all", hessian_structure="diag",
                                prior_precision=1.0)
    posterior.fit(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, Y), batch_size=25))
    probe = LinearProbe(4, 3)
    theta = torch.cat([layer.weight.T, layer.bias[None]]).reshape(-1).detach()
    P = curvature.diag(probe, theta[None], X, torch.ones(1, 25), torch.tensor([1.0], dtype=torch.float64))
    ours = (P.ggn[0] + P.prior[0]).view(5, 3)
    theirs = posterior.posterior_precision.detach()
    theirs = torch.cat([theirs[:12].view(3, 4).T, theirs[12:][None]])  # laplace-torch: weight (C, d), then bias
    torch.testing.assert_close(ours, theirs.double())


def test_module_probe_refuses_kfac_with_a_clear_message():
    model, X, _ = _module_problem()
    probe = make_probe(model, 4, 3)
    with pytest.raises(ValueError, match="kfac"):
        curvature.kfac(probe, probe.init(0, dtype=torch.float64, device="cpu")[None], X, torch.ones(1, len(X)),
                       torch.ones(1, dtype=torch.float64))
