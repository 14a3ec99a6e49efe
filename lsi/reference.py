"""Brute force, one model at a time: the ground truth the fast engine is tested against.

Nothing here is batched or clever. :func:`retrain_loop` is the authors' loop
(a deep copy of one initial model, retrained from scratch with
``torch.optim.SGD`` for every left-out sample); :func:`dense_precision` builds
``P_S`` entry by entry from autograd Jacobians; :func:`kl_gaussians` evaluates
the Gaussian KL from its textbook formula in high precision (mpmath).
"""
from __future__ import annotations

import copy

import mpmath
import numpy as np
import torch
from torch import nn

from lsi.probes import _linear_block


def linear_model(n_features: int, n_classes: int, seed: int, dtype=torch.float64) -> nn.Module:
    """``nn.Linear`` as built after ``torch.manual_seed(seed)``: the probe's shared initialisation.

    The weights come from a local generator seeded with ``seed``; the global random state is untouched."""
    return _seeded_linears([n_features, n_classes], seed, dtype)[0]


def mlp_model(n_features: int, n_classes: int, hidden: int, seed: int, dtype=torch.float64) -> nn.Module:
    """``Linear -> ReLU -> Linear`` as built after ``torch.manual_seed(seed)`` (a local generator, as above)."""
    first, second = _seeded_linears([n_features, hidden, n_classes], seed, dtype)
    return nn.Sequential(first, nn.ReLU(), second)


def _seeded_linears(widths: list[int], seed: int, dtype) -> list[nn.Linear]:
    """``nn.Linear(widths[i], widths[i + 1])`` for each i, drawn in that order from one generator seeded ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layer = torch.nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=dtype)  # no draw from the global generator
        block = _linear_block(n_in, n_out, generator, dtype)  # [W^T; b]
        with torch.no_grad():
            layer.weight.copy_(block[:-1].T)
            layer.bias.copy_(block[-1])
        layers.append(layer)
    return layers


def train_one(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, *, lr: float, momentum: float,
              weight_decay: float, epochs: int) -> nn.Module:
    """Full-batch ``SGD(nesterov=True)`` on mean cross-entropy, one step per epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss_fn(model(X), Y).backward()
        optimizer.step()
    return model


def retrain_loop(initial: nn.Module, X: torch.Tensor, Y: torch.Tensor, left_out: list[int], **hyper) -> list[nn.Module]:
    """For each i in ``left_out``: deep-copy ``initial`` and train it on D without i."""
    keep = torch.ones(len(X), dtype=torch.bool)
    models = []
    for i in left_out:
        keep[:] = True
        keep[i] = False
        models.append(train_one(copy.deepcopy(initial), X[keep], Y[keep], **hyper))
    return models


def flat_linear(model: nn.Linear) -> torch.Tensor:
    """The probe's parameter layout: ``[W^T; b]`` of shape (d+1, C), flattened row-major."""
    return torch.cat([model.weight.T, model.bias[None]]).reshape(-1).detach()


def dense_precision(logits_fn, theta: torch.Tensor, X: torch.Tensor, prior: float) -> torch.Tensor:
    """``sum_j J_j^T (diag p_j - p_j p_j^T) J_j + prior I`` from one autograd Jacobian per sample."""
    K = len(theta)
    P = prior * torch.eye(K, dtype=torch.float64)
    for x in X:
        J = torch.autograd.functional.jacobian(lambda t: logits_fn(t, x[None])[0], theta)
        p = torch.softmax(logits_fn(theta, x[None])[0], -1)
        P += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    return P


def kl_gaussians(mean0, precision0, mean1, precision1, digits: int = 50) -> float:
    """``KL(N(mean0, P0^-1) || N(mean1, P1^-1))`` in ``digits`` decimal digits (mpmath)."""
    with mpmath.workdps(digits):
        P0 = mpmath.matrix(np.asarray(precision0, dtype=np.float64).tolist())
        P1 = mpmath.matrix(np.asarray(precision1, dtype=np.float64).tolist())
        d = mpmath.matrix((np.asarray(mean1, np.float64) - np.asarray(mean0, np.float64)).tolist())
        K = P0.rows
        trace = sum((P1 * mpmath.inverse(P0))[k, k] for k in range(K))
        logdet = mpmath.log(mpmath.det(P0)) - mpmath.log(mpmath.det(P1))
        quad = (d.T * P1 * d)[0, 0]
        return float((trace - K + logdet + quad) / 2)


def kl_monte_carlo(mean0, precision0, mean1, precision1, samples: int, seed: int = 0) -> tuple[float, float]:
    """Monte Carlo ``E_{x ~ N0}[log N0(x) - log N1(x)]`` and its standard error."""
    rng = np.random.default_rng(seed)
    cov0 = np.linalg.inv(precision0)
    x = rng.multivariate_normal(mean0, cov0, size=samples)

    def log_density(x, mean, precision):
        d = x - mean
        sign, logdet = np.linalg.slogdet(precision)
        return 0.5 * logdet - 0.5 * np.einsum("nk,kl,nl->n", d, precision, d)

    diff = log_density(x, mean0, precision0) - log_density(x, mean1, precision1)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(samples))


def newton_logistic(X: np.ndarray, y: np.ndarray, n_classes: int, weight_decay: float,
                    tol: float = 1e-13) -> np.ndarray:
    """The linear probe's optimum by damped Newton in plain numpy, from zero.

    Minimises ``mean CE + (lambda/2)||w||^2`` over ``w = vec([W; b])`` with the
    dense Hessian ``(1/n) sum_j (x_j x_j^T) kron (diag p_j - p_j p_j^T) + lambda I``
    (one GEMM over samples): an independent second-order solver for tests and
    benchmarks.
    """
    Xa = np.hstack([X, np.ones((len(X), 1))])
    onehot = np.eye(n_classes)[y]

    def probabilities(w):
        Z = Xa @ w.reshape(Xa.shape[1], n_classes)
        P = np.exp(Z - Z.max(1, keepdims=True))
        return P / P.sum(1, keepdims=True)

    def value(w):
        return -np.mean(np.log(probabilities(w)[np.arange(len(y)), y])) + 0.5 * weight_decay * w @ w

    w = np.zeros(Xa.shape[1] * n_classes)
    for _ in range(100):
        P = probabilities(w)
        grad = (Xa.T @ (P - onehot) / len(y)).ravel() + weight_decay * w
        if np.linalg.norm(grad) <= tol:
            return w
        curvature = np.einsum("jc,cd->jcd", P, np.eye(n_classes)) - np.einsum("jc,jd->jcd", P, P)
        outer = np.einsum("jk,jl->jkl", Xa, Xa).reshape(len(y), -1)
        hess = (outer.T @ curvature.reshape(len(y), -1)).reshape(Xa.shape[1], Xa.shape[1], n_classes, n_classes)
        hess = hess.transpose(0, 2, 1, 3).reshape(len(w), len(w)) / len(y)
        step, t, current = np.linalg.solve(hess + weight_decay * np.eye(len(w)), -grad), 1.0, value(w)
        while -(grad @ step) > 1e-12 * abs(current) and value(w + t * step) > current + 1e-4 * t * grad @ step:
            t /= 2
        w = w + t * step
    raise RuntimeError("newton_logistic did not converge")


# --- Laplace posteriors and LSI of the linear probe, in plain numpy -------------------------------------------
def linear_logits(n_classes: int):
    """``logits(theta, x) = [x, 1] W`` with ``W = theta.view(d + 1, C)``: the probe's layout, for autograd."""
    def logits(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        W = theta.view(-1, n_classes)
        return x @ W[:-1] + W[-1]
    return logits


def linear_ggn(X: np.ndarray, theta: np.ndarray, n_classes: int) -> np.ndarray:
    """Dense ``sum_j (x_j x_j^T) kron (diag p_j - p_j p_j^T)`` (``x`` with the bias 1) by a loop over samples."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    W = theta.reshape(Xa.shape[1], n_classes)
    total = np.zeros((W.size, W.size))
    for x in Xa:
        z = x @ W
        p = np.exp(z - z.max())
        p /= p.sum()
        total += np.kron(np.outer(x, x), np.diag(p) - np.outer(p, p))
    return total


def linear_kfac(X: np.ndarray, theta: np.ndarray, n_classes: int) -> np.ndarray:
    """Dense KFAC ``A kron G`` of the linear probe: ``A = sum_j x_j x_j^T``, ``G = mean_j (diag p_j - p_j p_j^T)``."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    Z = Xa @ theta.reshape(Xa.shape[1], n_classes)
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    G = np.mean([np.diag(p) - np.outer(p, p) for p in P], axis=0)
    return np.kron(Xa.T @ Xa, G)


def linear_grad(X: np.ndarray, y: np.ndarray, theta: np.ndarray, n_classes: int, weight_decay: float) -> np.ndarray:
    """Gradient of ``mean CE + (lambda/2)||theta||^2`` for the linear probe."""
    Xa = np.hstack([X, np.ones((len(X), 1))])
    Z = Xa @ theta.reshape(Xa.shape[1], n_classes)
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    P[np.arange(len(y)), y] -= 1
    return (Xa.T @ P / len(y)).ravel() + weight_decay * theta


def _structured(ggn: np.ndarray, structure: str, X: np.ndarray, theta: np.ndarray, n_classes: int) -> np.ndarray:
    if structure == "full":
        return ggn
    if structure == "diag":
        return np.diag(np.diag(ggn))
    if structure == "kfac":
        return linear_kfac(X, theta, n_classes)
    raise ValueError(f"structure={structure!r}; choose 'diag', 'kfac' or 'full'.")


def lsi_linear(X: np.ndarray, y: np.ndarray, i: int, *, n_classes: int, weight_decay: float,
               structure: str = "full", prior_precision: float | None = None,
               solver: str = "converged") -> float:
    """LSI of sample ``i`` for the linear probe, every piece from scratch (numpy, mpmath).

    ``solver="converged"``: both optima by :func:`newton_logistic`, precisions
    at each optimum. ``solver="newton-step"``: ``theta_D + delta`` with
    ``delta = -H^-1 grad L_{D\\i}(theta_D)``, ``H = (1/(n-1)) sum_j Hess CE_j(theta_D) + lambda I``
    (all n samples), and ``P_{D\\i} = P_D - GGN_i(theta_D)`` with the ``(n-1)``-sample prior.
    The prior is ``m * weight_decay`` for m samples unless ``prior_precision`` is given.
    """
    n = len(X)
    keep = np.arange(n) != i
    tau0, tau1 = ((n * weight_decay, (n - 1) * weight_decay) if prior_precision is None
                  else (prior_precision, prior_precision))
    theta0 = newton_logistic(X, y, n_classes, weight_decay)
    ggn0 = linear_ggn(X, theta0, n_classes)
    P0 = _structured(ggn0, structure, X, theta0, n_classes) + tau0 * np.eye(len(theta0))
    if solver == "converged":
        theta1 = newton_logistic(X[keep], y[keep], n_classes, weight_decay)
        P1 = _structured(linear_ggn(X[keep], theta1, n_classes), structure, X[keep], theta1, n_classes)
    elif solver == "newton-step":
        H = ggn0 / (n - 1) + weight_decay * np.eye(len(theta0))  # the CE Hessian of the linear probe is its GGN
        theta1 = theta0 - np.linalg.solve(H, linear_grad(X[keep], y[keep], theta0, n_classes, weight_decay))
        own = linear_ggn(X[i:i + 1], theta0, n_classes)
        if structure == "kfac":
            P1 = linear_kfac(X[keep], theta0, n_classes)
        else:
            P1 = _structured(ggn0 - own, structure, X, theta0, n_classes)
    else:
        raise ValueError(f"solver={solver!r}; choose 'converged' or 'newton-step'.")
    return kl_gaussians(theta0, P0, theta1, P1 + tau1 * np.eye(len(theta0)))
