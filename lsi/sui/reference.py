"""Brute-force leave-one-out training: the ground truth the closed forms are checked against.

- :func:`gd_linearized` runs literal gradient descent on the linearised model,
  step by step (what the closed forms claim to summarise);
- :func:`flow_linearized` integrates gradient flow with an adaptive ODE solver;
- :func:`loo_network_gd` retrains the *real* network from the same ``w0``
  without each sample (all leave-one-out runs batched with ``vmap``), which is
  what SUI approximates; :func:`train_network_gd` trains it on any subsets
  (sample masks), e.g. for data summarisation.

All use the sum convention of :mod:`lsi.sui.dynamics`:
``sum_i 1/2 ||f(x_i) - y_i||^2 + l2/2 ||w - w0||^2``.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch.func import functional_call, grad, vmap
from tqdm.auto import tqdm


def _loss_gradient(jac: torch.Tensor, f0: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor,
                   l2: float):
    """Gradient of the linearised training loss on the ``keep`` rows, as a function of ``w - w0``."""
    jk, rk = jac[keep], (f0 - targets).reshape(-1)[keep]
    return lambda u: jk.T @ (rk + jk @ u) + l2 * u


def _kept_rows(n: int, k: int, drop: int | None, device) -> torch.Tensor:
    keep = torch.ones(n * k, dtype=torch.bool, device=device)
    if drop is not None:
        keep[drop * k:(drop + 1) * k] = False
    return keep


def gd_linearized(jac: torch.Tensor, f0: torch.Tensor, targets: torch.Tensor, *, lr: float,
                  steps: int, l2: float = 0.0, drop: int | None = None) -> torch.Tensor:
    """``w - w0`` after ``steps`` literal GD steps on the linearised model without sample ``drop``."""
    n, k = f0.shape
    gradient = _loss_gradient(jac, f0, targets, _kept_rows(n, k, drop, jac.device), l2)
    u = jac.new_zeros(jac.shape[1])
    for _ in range(steps):
        u = u - lr * gradient(u)
    return u


def flow_linearized(jac: torch.Tensor, f0: torch.Tensor, targets: torch.Tensor, *, lr: float,
                    t: float, l2: float = 0.0, drop: int | None = None) -> torch.Tensor:
    """``w - w0`` of gradient flow ``du/ds = -lr grad L(u)`` at ``s = t`` (DOP853, rtol 1e-13)."""
    n, k = f0.shape
    gradient = _loss_gradient(jac.cpu(), f0.cpu(), targets.cpu(),
                              _kept_rows(n, k, drop, "cpu"), l2)

    def rhs(_, u):
        return -lr * gradient(torch.from_numpy(u)).numpy()

    sol = solve_ivp(rhs, (0.0, t), np.zeros(jac.shape[1]), method="DOP853", rtol=1e-13, atol=1e-15)
    return torch.from_numpy(sol.y[:, -1]).to(jac)


def train_network_gd(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                     masks: torch.Tensor, *, lr: float, steps: int, l2: float = 0.0,
                     eval_inputs: torch.Tensor | None = None, chunk: int = 64,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
                     progress: bool = False) -> dict[str, torch.Tensor]:
    """Train the real network from its current weights ``w0`` once per row of ``masks`` (B, n),
    with ``steps`` full-batch GD steps on ``sum_j mask_j 1/2 ||f(x_j) - y_j||^2 + l2/2 ||w - w0||^2``.

    Returns ``weights`` (B, P) flattened trained weights and, if ``eval_inputs``
    is given, ``predictions`` (B, m, k) there. Models are trained ``chunk`` at a
    time with ``vmap``; the network runs in ``eval()`` mode and is left untouched.
    """
    net = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    w0 = {name: p.detach() for name, p in net.named_parameters()}
    buffers = {name: b for name, b in net.named_buffers()}
    x = torch.as_tensor(inputs).to(device=device, dtype=dtype)
    y = torch.as_tensor(targets).to(device=device, dtype=dtype).reshape(len(x), -1)
    xe = None if eval_inputs is None else torch.as_tensor(eval_inputs).to(device=device, dtype=dtype)
    masks = torch.as_tensor(masks).to(device=device, dtype=dtype)

    def forward(weights, data):
        return functional_call(net, {**buffers, **weights}, (data,)).reshape(len(data), -1)

    def loss(weights, mask):
        fit = 0.5 * (mask[:, None] * (forward(weights, x) - y) ** 2).sum()
        return fit + 0.5 * l2 * sum(((weights[k] - w0[k]) ** 2).sum() for k in weights)

    step = vmap(grad(loss), in_dims=(0, 0))
    weights, predictions = [], []
    for start in tqdm(range(0, len(masks), chunk), desc="GD training", disable=not progress):
        mask = masks[start:start + chunk]
        params = {k: v.expand(len(mask), *v.shape).clone() for k, v in w0.items()}
        for _ in range(steps):
            grads = step(params, mask)
            params = {k: params[k] - lr * grads[k] for k in params}
        weights.append(torch.cat([params[k].reshape(len(mask), -1) for k in params], 1))
        if xe is not None:
            predictions.append(vmap(forward, in_dims=(0, None))(params, xe))
    out = {"weights": torch.cat(weights)}
    if xe is not None:
        out["predictions"] = torch.cat(predictions)
    return out


def loo_network_gd(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   samples, **options) -> dict[str, torch.Tensor]:
    """:func:`train_network_gd` once on all data (row 0) and once without each of ``samples``.

    The ground truth of SUI: the real network retrained from the same ``w0``.
    """
    samples = torch.as_tensor(samples)
    masks = torch.ones(1 + len(samples), len(inputs), dtype=torch.float64)
    masks[torch.arange(1, 1 + len(samples)), samples] = 0.0
    return train_network_gd(model, inputs, targets, masks, **options)


def retraining_information(trained: dict[str, torch.Tensor], sigma: float = 1.0) -> dict[str, np.ndarray]:
    """Weight and functional SI of real retraining, from :func:`loo_network_gd`'s output.

    Row 0 of ``trained`` is the network trained on all data, row ``1 + j`` the
    one trained without the ``j``-th left-out sample; the same smoothing as SUI:

        weight SI     = ||w(D) - w(D\\i)||^2 / (2 sigma^2)
        functional SI = mean_x ||f(x; D) - f(x; D\\i)||^2 / (2 sigma^2)   (needs ``predictions``)
    """
    weights = trained["weights"]
    out = {"weight": ((weights[1:] - weights[0]) ** 2).sum(1).cpu().numpy() / (2 * sigma**2)}
    if "predictions" in trained:
        change = trained["predictions"][1:] - trained["predictions"][0]
        out["functional"] = (change ** 2).sum(2).mean(1).cpu().numpy() / (2 * sigma**2)
    return out
