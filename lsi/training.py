"""Training the full-data and leave-one-out probes, many models at once.

All solvers minimise, for each model b with sample weights ``w_b`` (0/1) and
``m_b = sum_j w_bj``,

    L_b(theta) = (1/m_b) sum_j w_bj CE_j(theta) + (lambda/2) ||theta||^2.

* :func:`train_gd` is the paper's training: full-batch SGD with Nesterov
  momentum and coupled weight decay, exactly PyTorch's ``SGD(nesterov=True)``
  update, one step per epoch, from one shared initialisation.
* :func:`fit_optimum` finds the full-data optimum ``theta_D`` by damped
  Gauss-Newton with conjugate gradients on GGN-vector products.
* :func:`solve_leave_one_out` iterates ``delta <- delta - H_{D\\i}^-1 grad L_{D\\i}(theta_D + delta)``
  from ``delta = 0``, with one shared Hessian factorisation and a rank-C
  Woodbury downdate per sample, the steps Anderson-mixed (:class:`AndersonMixing`);
  :func:`newton_step` is the one-step screening tier.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lsi.probes import Probe, softmax_sqrt
from lsi.validation import NonFiniteError


class SolverDoesNotApply(RuntimeError):
    """The converged or newton-step tier cannot certify an optimum for this probe and data: the
    full-data or a leave-one-out solve stops short of its gradient tolerance, or the Hessian at the
    optimum is not positive definite (a non-convex probe). The ``gd`` tier still applies."""


def objective_grad(probe: Probe, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor,
                   weight_decay: float) -> Tensor:
    """``grad L_b(theta_b)`` for every model, ``(B, K)``."""
    m = w.sum(1, keepdim=True)
    return probe.grad(theta, X, Y, w) / m + weight_decay * theta


def train_gd(probe: Probe, theta0: Tensor, X: Tensor, Y: Tensor, w: Tensor, *, lr: float,
             momentum: float, weight_decay: float, epochs: int, tol: float | None = None,
             callback=None) -> Tensor:
    """Full-batch Nesterov SGD for ``B`` models in lockstep, PyTorch semantics.

    With ``g = grad L(theta)`` (weight decay included), PyTorch's update is
    ``buf = mu*buf + g`` (``buf = 0`` before the first step) and
    ``theta <- theta - lr*(g + mu*buf)``. ``theta0`` is one shared start ``(K,)``
    or one per model ``(B, K)``. With a ``tol``, a model stops (and leaves the
    batch) at the first step where ``||grad L_b|| <= tol``; training ends when all
    have stopped or after ``epochs`` steps, whichever comes first.
    """
    theta = theta0.expand(len(w), -1).clone()
    buf = torch.zeros_like(theta)
    rows: slice | Tensor = slice(None)
    for epoch in range(epochs):
        g = objective_grad(probe, theta[rows], X, Y, w[rows], weight_decay)
        if tol is not None:
            moving = g.norm(dim=1) > tol
            rows = torch.arange(len(theta), device=theta.device)[rows][moving]
            if len(rows) == 0:
                break
            g = g[moving]
        buf[rows] = momentum * buf[rows] + g
        theta[rows] -= lr * (g + momentum * buf[rows])
        if callback is not None:
            callback(epoch, theta)
    return theta


def fit_first_order(probe: Probe, theta0: Tensor, X: Tensor, Y: Tensor, *, lr: float, momentum: float,
                    weight_decay: float, epochs: int, tol: float | None = None) -> Tensor:
    """``theta_D`` of the first-order solvers, ``(K,)``: ``epochs`` Nesterov steps on all the data from
    ``theta0`` (the ``gd`` tier); with a ``tol``, then on from there until ``||grad L_D|| <= tol``, at most
    ``epochs`` further steps (the ``warm-start`` tier)."""
    ones = torch.ones(1, len(X), dtype=theta0.dtype, device=theta0.device)
    steps = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, epochs=epochs)
    theta = train_gd(probe, theta0, X, Y, ones, **steps)[0]
    return theta if tol is None else train_gd(probe, theta, X, Y, ones, tol=tol, **steps)[0]


def _objective(probe, theta, X, Y, w, weight_decay) -> Tensor:
    ce = probe.ce(theta[None], X, Y)[0]
    return (w * ce).sum() / w.sum() + 0.5 * weight_decay * theta.dot(theta)


def preconditioned_cg(apply: Callable[[Tensor], Tensor], b: Tensor, precondition: Callable[[Tensor], Tensor], *,
                       tol: float, max_iter: int) -> Tensor:
    """Solve ``A x = b`` by conjugate gradients preconditioned with ``precondition ~ A^-1``; at non-positive
    curvature (a non-convex region) it returns the iterate so far, or the preconditioned ``b`` if there is none."""
    x, r = torch.zeros_like(b), b.clone()
    z = precondition(r)
    p, rz = z.clone(), r.dot(z)
    for _ in range(max_iter):
        Ap = apply(p)
        curvature = p.dot(Ap)
        if curvature <= 0:
            return x if bool(x.any()) else z
        alpha = rz / curvature
        x, r = x + alpha * p, r - alpha * Ap
        if float(r.norm()) <= tol:
            break
        z = precondition(r)
        rz_new = r.dot(z)
        p, rz = z + (rz_new / rz) * p, rz_new
    return x


def fit_optimum(probe: Probe, theta: Tensor, X: Tensor, Y: Tensor, *, weight_decay: float,
                tol: float = 1e-12, max_iter: int = 200) -> tuple[Tensor, float]:
    """Minimise the full-data objective from ``theta`` by Levenberg-Marquardt Newton-CG.

    Each step solves ``(H + mu I) s = -g`` by CG with exact Hessian-vector
    products; ``mu`` shrinks while the quadratic model predicts the decrease
    well and grows when it does not (kinks of a ReLU probe). For the strictly
    convex linear probe ``mu`` stays 0: Newton's method. Returns ``(theta_D, grad_norm)``.
    """
    w = torch.ones(len(X), dtype=theta.dtype, device=theta.device)
    n, mu = len(X), 0.0
    value = _objective(probe, theta, X, Y, w, weight_decay)
    for _ in range(max_iter):
        g = objective_grad(probe, theta[None], X, Y, w[None], weight_decay)[0]
        norm = float(g.norm())
        if norm <= tol:
            break
        hess = lambda v: probe.hvp(theta, X, Y, w, v[None])[0] / n + weight_decay * v
        step = preconditioned_cg(lambda v: hess(v) + mu * v, -g, lambda v: v, tol=min(0.5, norm ** 0.5) * norm * 1e-2,
                                 max_iter=500)
        predicted = -(g.dot(step) + 0.5 * step.dot(hess(step)))
        candidate = _objective(probe, theta + step, X, Y, w, weight_decay)
        if predicted <= 1e3 * torch.finfo(value.dtype).eps * abs(float(value)):  # below resolution: trust Newton
            theta, value = theta + step, candidate
            continue
        ratio = float((value - candidate) / predicted)
        if ratio > 0:
            theta, value = theta + step, candidate
        if ratio < 0.25:
            mu = max(4 * mu, 1e-6)
        elif ratio > 0.75:
            mu = 0.0 if mu < 1e-9 else mu / 4
    else:
        raise SolverDoesNotApply(
            f"The full-data optimum was not found to gradient norm {tol:g} in {max_iter} Newton steps "
            f"(reached {norm:.3g}). A piecewise-linear (ReLU) model can have its minimum on a kink, "
            f"where no gradient tolerance is reachable; use solver='gd' for such probes."
        )
    return theta, norm


@dataclass
class LeaveOneOut:
    """Leave-one-out solutions ``theta_{D\\i} = theta_D + delta`` for a chunk of samples."""

    delta: Tensor                #: (B, K) parameter change from the full-data optimum
    grad_norm: Tensor            #: (B,) gradient norm of the LOO objective at the solution
    ggn_diag: Tensor | None = None  #: (B, K) diagonal GGN of the kept samples at the solution, if asked for
    steps: Tensor | None = None     #: (B,) iterations of each solve (a pass over the data each), if iterative


def loo_weights(n: int, excluded: Tensor, *, dtype, device) -> Tensor:
    """``(B, n)`` 0/1 weights, row b leaving out sample ``excluded[b]``."""
    w = torch.ones(len(excluded), n, dtype=dtype, device=device)
    w[torch.arange(len(excluded), device=device), excluded] = 0
    return w


class LeaveOneOutHessian:
    """``H_{D\\i}(theta_D)^-1`` for a chunk of samples, by a rank-C Woodbury downdate of ``M^-1``.

    In mean form, with ``m = n - 1`` for every i,

        H_{D\\i} = M - U_i U_i^T / m,    M = (1/m) sum_j H_j + lambda I,

    where ``U_i = J_i^T S_i`` (``J_i`` the Jacobian of the sample's logits, ``S_i S_i^T = diag p_i - p_i p_i^T``)
    gives its own curvature ``U_i U_i^T = GGN_i`` (its exact Hessian for the linear probe). ``A = M^-1`` is
    computed once (:func:`hessian_inverse`); with ``A J_i^T`` for the whole chunk in one GEMM
    (:meth:`~lsi.probes.Probe.jacobian_products`), ``E_i = A U_i = (A J_i^T) S_i`` and the ``C x C`` Cholesky
    factor ``R_i R_i^T = m I - S_i^T (J_i A J_i^T) S_i``,

        H_{D\\i}^-1 g = A g + E_i (R_i R_i^T)^-1 E_i^T g,

    one GEMM over all right-hand sides at once and ``O(K C)`` per sample, whatever ``C``. A right-hand side
    ``c - J_i^T r_i / m`` (the first gradient, :func:`gradient_at_optimum`) needs no GEMM per sample at all.
    """

    def __init__(self, probe: Probe, theta_D: Tensor, inverse: Tensor, X: Tensor, excluded: Tensor):
        self.inverse, self.m = inverse, len(X) - 1
        self.AJ, self.JAJ = probe.jacobian_products(theta_D, X[excluded], inverse)      # (B, K, C), (B, C, C)
        self.S = softmax_sqrt(probe.probabilities(theta_D[None], X[excluded])[0])      # (B, C, C)
        eye = torch.eye(self.S.shape[1], dtype=self.S.dtype, device=self.S.device)
        self.core = torch.linalg.cholesky(self.m * eye - self.S.transpose(1, 2) @ self.JAJ @ self.S)

    def solve(self, g: Tensor, rows: Tensor) -> Tensor:
        """``H_{D\\i}^-1 g`` for the samples ``rows`` of the chunk, one row of ``g`` each."""
        AJ = self.AJ[rows]
        return self._downdate(g @ self.inverse, (AJ.transpose(1, 2) @ g[..., None])[..., 0], AJ, rows)

    def solve_at_optimum(self, common: Tensor, residual: Tensor) -> Tensor:
        """``H_{D\\i}^-1 (c - J_i^T r_i / m)`` for every sample of the chunk: ``c`` shared ``(K,)``, ``r_i`` in
        ``residual`` ``(B, C)``; one matrix-vector product with ``A`` in all."""
        r = residual[..., None] / self.m
        Ag = (common @ self.inverse)[None] - (self.AJ @ r)[..., 0]
        JAg = (self.AJ.transpose(1, 2) @ common)[..., None] - self.JAJ @ r
        return self._downdate(Ag, JAg[..., 0], self.AJ, torch.arange(len(r), device=r.device))

    def _downdate(self, Ag: Tensor, JAg: Tensor, AJ: Tensor, rows: Tensor) -> Tensor:
        """``A g + E_i (R_i R_i^T)^-1 E_i^T g`` from ``A g`` and ``J_i A g`` (``E_i^T g = S_i^T J_i A g``)."""
        S = self.S[rows]
        z = torch.cholesky_solve(S.transpose(1, 2) @ JAg[..., None], self.core[rows])
        return torch.baddbmm(Ag[..., None], AJ, S @ z)[..., 0]


ANDERSON_MEMORY = 5
"""Depth of the Anderson mixing of :func:`solve_leave_one_out`'s chord steps (0: plain chord iterations)."""


class AndersonMixing:
    """Anderson acceleration (type II) of the chord iterations of a chunk of leave-one-out models.

    With iterates ``x_k`` and chord steps ``f_k = -H_{D\\i}(theta_D)^-1 grad L_{D\\i}(theta_D + x_k)``, the
    last ``memory`` differences ``dX_j = x_{j+1} - x_j``, ``dF_j = f_{j+1} - f_j`` give

        gamma = argmin ||f_k - dF gamma||,    x_{k+1} = x_k + f_k - (dX + dF) gamma,

    the step to the combination of past iterates whose linearised chord step is smallest. On a quadratic
    objective this is GMRES on ``H_{D\\i}`` preconditioned by the chord Hessian (Walker and Ni 2011): the few
    directions where the Hessian at ``theta_D`` misjudges the one at ``theta_{D\\i}``, which the plain chord
    iteration shrinks by a constant factor per step, are removed within ``memory`` steps. The history is
    kept per model; ``rows`` index the models still iterating, which all share the step count.
    """

    def __init__(self, models: int, size: int, memory: int, *, like: Tensor):
        self.dX = like.new_zeros(models, memory, size)
        self.dF = like.new_zeros(models, memory, size)
        self.x, self.f = like.new_zeros(models, size), like.new_zeros(models, size)
        self.k = 0

    def step(self, rows: Tensor, x: Tensor, f: Tensor) -> Tensor:
        """The mixed step ``x_{k+1} - x_k`` for the models ``rows`` at iterates ``x`` with chord steps ``f``."""
        memory = self.dX.shape[1]
        if self.k > 0:
            slot = (self.k - 1) % memory
            self.dX[rows, slot] = x - self.x[rows]
            self.dF[rows, slot] = f - self.f[rows]
        self.x[rows], self.f[rows] = x, f
        used, self.k = min(self.k, memory), self.k + 1
        if used == 0:
            return f
        dX, dF = self.dX[rows, :used], self.dF[rows, :used]                 # (r, used, K)
        scale = dF.norm(dim=2, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)
        gamma = torch.linalg.lstsq((dF / scale).transpose(1, 2), f[..., None]).solution / scale   # (r, used, 1)
        return f - ((dX + dF).transpose(1, 2) @ gamma)[..., 0]


def gradient_at_optimum(probe: Probe, theta_D: Tensor, X: Tensor, Y: Tensor, excluded: Tensor,
                        weight_decay: float) -> tuple[Tensor, Tensor, Tensor]:
    """``grad L_{D\\i}(theta_D) = c - grad CE_i / m`` for every excluded i, ``(B, K)``, with the shared
    ``c = (sum_j grad CE_j) / m + lambda theta_D``; also ``c`` and the logit residuals ``r_i = p_i - e_{y_i}``
    ``(B, C)``, for which ``grad CE_i = J_i^T r_i``.

    One pass over the data for the shared sum, then per-sample gradients: the
    leave-one-out models' first gradients cost no pass of their own.
    """
    m = len(X) - 1
    common = probe.grad(theta_D[None], X, Y, X.new_ones(1, len(X)))[0] / m + weight_decay * theta_D
    own = probe.per_sample_grads(theta_D, X[excluded], Y[excluded])
    onehot = torch.nn.functional.one_hot(Y[excluded], probe.n_classes).to(theta_D.dtype)
    return common - own / m, common, probe.probabilities(theta_D[None], X[excluded])[0] - onehot


def objective_grad_and_ggn(probe: Probe, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, weight_decay: float):
    """``grad L_b(theta_b)`` as :func:`objective_grad`, and ``rows -> ggn_diag`` at the same parameters
    for the models ``rows`` (a probe that can reuses the pass's softmax outputs)."""
    g, ggn_diag = probe.grad_and_ggn_diag(theta, X, Y, w)
    return g / w.sum(1, keepdim=True) + weight_decay * theta, ggn_diag


def solve_leave_one_out(probe: Probe, theta_D: Tensor, inverse: Tensor, X: Tensor, Y: Tensor,
                        excluded: Tensor, *, weight_decay: float, tol: float = 1e-10,
                        chord_iter: int = 60, contraction: float = 0.5, max_iter: int = 50,
                        ggn_diag: bool = False, memory: int = ANDERSON_MEMORY) -> LeaveOneOut:
    """Newton-type iterations ``delta <- delta - H_{D\\i}(theta_D)^-1 grad L_{D\\i}(theta_D + delta)``.

    ``inverse`` is ``M^-1`` (:func:`hessian_inverse`; see :class:`LeaveOneOutHessian`).
    The first step uses the gradient at ``theta_D`` in closed form
    (:func:`gradient_at_optimum`); every later one costs one pass over the data
    for all models of the chunk at once (two GEMMs), which also verifies the
    previous step: a sample leaves the batch once its gradient norm is ``<= tol``.
    The Hessian is frozen at ``theta_D`` (a chord method), which converges fast
    when ``theta_{D\\i}`` is close to ``theta_D`` (gradient norms fall by ~1/n per
    step) and linearly when it is not (n < K: by 0.3 to 0.5 per step for the
    samples that move it most, each step still ~1/K of a dense Newton step's cost).
    A sample whose last step shrank its gradient norm by less than ``contraction``,
    or still unconverged after ``chord_iter`` steps, continues with exact, damped
    Newton steps on its own Hessian (from ``theta_D`` again if the chord
    iterations increased its objective, which can happen for a non-convex probe). With ``ggn_diag``, the diagonal GGN of each
    model's kept samples at its solution comes from the pass that verified it. With ``memory > 0`` the chord
    steps are Anderson-mixed (:class:`AndersonMixing`): same fixed point and certificate, fewer steps where the
    plain iteration contracts slowly; ``memory=0`` is the plain chord iteration. ``steps`` counts each model's
    iterations (chord and Newton), one pass over the data each.
    """
    n, B = len(X), len(excluded)
    hessian = LeaveOneOutHessian(probe, theta_D, inverse, X, excluded)
    w = loo_weights(n, excluded, dtype=theta_D.dtype, device=theta_D.device)
    delta = torch.zeros(B, len(theta_D), dtype=theta_D.dtype, device=theta_D.device)
    norms = torch.full((B,), float("inf"), dtype=theta_D.dtype, device=theta_D.device)
    ggn = torch.zeros_like(delta) if ggn_diag else None
    active, stalled = torch.arange(B, device=theta_D.device), []
    steps = torch.zeros(B, dtype=torch.long, device=theta_D.device)
    mixing = AndersonMixing(B, len(theta_D), memory, like=theta_D) if memory else None
    g, common, residual = gradient_at_optimum(probe, theta_D, X, Y, excluded, weight_decay)
    step = -hessian.solve_at_optimum(common, residual)
    for _ in range(chord_iter):
        delta[active] += step if mixing is None else mixing.step(active, delta[active], step)
        previous = g.norm(dim=1)
        g, ggn_at = objective_grad_and_ggn(probe, theta_D + delta[active], X, Y, w[active], weight_decay)
        steps[active] += 1
        norms[active] = g.norm(dim=1)
        done = norms[active] <= tol
        if ggn is not None and bool(done.any()):
            ggn[active[done]] = ggn_at(done)
        slow = ~done & (norms[active] > contraction * previous)
        stalled += active[slow].tolist()
        active, g = active[~done & ~slow], g[~done & ~slow]
        if len(active) == 0:
            break
        step = -hessian.solve(g, active)
    for row in stalled + active.tolist():
        start = delta[row]
        if _objective(probe, theta_D + start, X, Y, w[row], weight_decay) > _objective(probe, theta_D, X, Y, w[row],
                                                                                       weight_decay):
            start = torch.zeros_like(start)  # the chord iterations went uphill (non-convex probe): restart at theta_D
        delta[row], norms[row], newton_steps = _newton(probe, theta_D, start, X, Y, w[row], weight_decay, tol,
                                                       max_iter)
        steps[row] += newton_steps
        if ggn is not None:
            ggn[row] = probe.ggn_diag((theta_D + delta[row])[None], X, w[row][None])[0]
    return LeaveOneOut(delta, norms, ggn, steps)


def _newton(probe: Probe, theta_D: Tensor, delta: Tensor, X: Tensor, Y: Tensor, w: Tensor,
            weight_decay: float, tol: float, max_iter: int) -> tuple[Tensor, Tensor, int]:
    """Damped Newton on one leave-one-out objective with its exact Hessian, from ``theta_D + delta``:
    the solution, its gradient norm and the number of Newton steps taken."""
    m = w.sum()
    eye = torch.eye(len(delta), dtype=delta.dtype, device=delta.device)
    for taken in range(max_iter):
        theta = theta_D + delta
        g = objective_grad(probe, theta[None], X, Y, w[None], weight_decay)[0]
        if g.norm() <= tol:
            return delta, g.norm(), taken
        step = -torch.cholesky_solve(g[:, None], _damped_cholesky(probe.hessian(theta, X, Y, w) / m
                                                                  + weight_decay * eye))[:, 0]
        value, t = _objective(probe, theta, X, Y, w, weight_decay), 1.0
        while (-(g @ step) > 1e3 * torch.finfo(value.dtype).eps * value.abs()
               and _objective(probe, theta + t * step, X, Y, w, weight_decay) > value + 1e-4 * t * (g @ step)):
            t /= 2
        delta = delta + t * step
    raise SolverDoesNotApply(
        f"A leave-one-out solve did not reach gradient norm {tol:g} in {max_iter} Newton steps "
        f"(reached {float(g.norm()):.3g}). The probe may be non-convex here; use solver='gd' or a larger weight_decay."
    )


def _damped_cholesky(H: Tensor, max_damping: float = 1e8) -> Tensor:
    """Cholesky factor of ``H + mu I`` with the smallest ``mu`` in 0, 1e-8, 1e-7, ..., ``max_damping`` (times
    the scale of ``H``) that makes it positive definite, so that a Newton step on a non-convex objective is a
    descent direction and a line search cannot walk into a saddle or another basin.

    A Hessian with NaN or inf is a :class:`~lsi.validation.NonFiniteError` at once; one that no damping up
    to ``max_damping`` times its scale makes positive definite is a :class:`SolverDoesNotApply`.
    """
    if not bool(torch.isfinite(H).all()):
        raise NonFiniteError("The Hessian of a leave-one-out problem holds NaN or inf: the model's parameters or "
                             "the features overflowed. Standardise the features, use dtype='float64', or use "
                             "solver='gd' with a smaller lr.")
    scale = float(H.diagonal().abs().max()) or 1.0
    eye = torch.eye(len(H), dtype=H.dtype, device=H.device)
    mu = 0.0
    while mu <= max_damping:
        factor, info = torch.linalg.cholesky_ex(H + mu * scale * eye)
        if int(info) == 0:
            return factor
        mu = 1e-8 if mu == 0 else 10 * mu
    raise SolverDoesNotApply(f"The Hessian of a leave-one-out problem stays indefinite with damping up to "
                             f"{max_damping:g} times its scale; the converged tier does not apply here. "
                             f"Use solver='gd'.")


def newton_step(probe: Probe, theta_D: Tensor, inverse: Tensor, X: Tensor, Y: Tensor, excluded: Tensor,
                *, weight_decay: float) -> Tensor:
    """The screening tier: ``delta_i = M^-1 (lambda theta_D + g_i) / m`` for every excluded sample.

    This is one Newton step from ``theta_D`` with the sample's own curvature
    ignored in the Hessian; it needs per-sample gradients only, no pass over the data.
    """
    g_i = probe.per_sample_grads(theta_D, X[excluded], Y[excluded])
    return ((weight_decay * theta_D + g_i) / (len(X) - 1)) @ inverse


def hessian_inverse(probe: Probe, theta_D: Tensor, X: Tensor, Y: Tensor, *, weight_decay: float) -> Tensor:
    """``M^-1`` with ``M = (1/m) sum_j Hess CE_j(theta_D) + lambda I`` and ``m = n - 1``, through its Cholesky factor.

    The explicit inverse (``K^3`` FLOP once) turns every later solve into a GEMM, and for the linear
    probe the products with the samples' curvature factors into one GEMM of ``2 K^2`` FLOP per sample
    (:meth:`lsi.probes.LinearProbe.sample_ggn_factor_and_product`).
    """
    w = torch.ones(len(X), dtype=theta_D.dtype, device=theta_D.device)
    H = probe.hessian(theta_D, X, Y, w).div_(len(X) - 1)
    H.diagonal().add_(weight_decay)
    factor, info = torch.linalg.cholesky_ex(H)
    del H
    if int(info) != 0:
        raise SolverDoesNotApply(
            "The full-data Hessian is not positive definite at the optimum, so the converged "
            "and newton-step solvers do not apply (a non-convex probe away from a strict minimum). "
            "Use solver='gd' or a larger weight_decay."
        )
    return torch.cholesky_inverse(factor).mT.contiguous()   # symmetric: LAPACK's column-major result, transposed


def _opacus_noise(generators: list[torch.Generator], d: int, C: int, dtype) -> Tensor:
    """``xi_t`` per seed in the probe's ``(d+1, C)`` layout, drawn in opacus's order (weight ``(C, d)``, then bias)."""
    rows = []
    for g in generators:
        weight = torch.normal(0.0, 1.0, (C, d), generator=g, dtype=dtype)
        bias = torch.normal(0.0, 1.0, (C,), generator=g, dtype=dtype)
        rows.append(torch.cat([weight.T, bias[None]]))
    return torch.stack(rows)                                            # (S, d+1, C)


def train_dp(X: Tensor, Y: Tensor, theta0: Tensor, w: Tensor, clip: Tensor, noise: Tensor, stream: Tensor,
             seeds: list[int], *, lr: float, momentum: float, weight_decay: float, epochs: int,
             track: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Full-batch DP-SGD for ``B`` linear-probe models in lockstep (:mod:`lsi.privacy`).

    Exactly opacus's ``make_private(..., poisson_sampling=False, loss_reduction="mean")``
    step followed by PyTorch's ``SGD(lr, momentum, nesterov=True, weight_decay)``:

        g_j   = grad CE_j(theta)                      (per sample; x~_j (p_j - e_yj)^T in closed form)
        c_j   = min(1, C / (||g_j|| + 1e-6))          (opacus's clip factor, norm over all parameters)
        grad  = (sum_j c_j g_j + sigma C xi_t) / m    (xi_t ~ N(0, I), m the training set's size)
        SGD:  d = grad + lambda theta; buf = mu buf + d; theta -= lr (d + mu buf)

    Each step draws ``xi_t`` from one generator per seed, whichever models use it,
    so a model's noise does not depend on the other models of the batch.
    ``w`` (B, n) 0/1 sample weights; ``clip``, ``noise`` (B,) each model's C and
    sigma; ``stream`` (B,) which of ``seeds`` draws its noise. ``track`` (B,) bool
    marks models whose per-sample squared clipped gradient norms are summed over
    the steps (returned as ``(B_tracked, n)``). Returns ``(theta, tracked)``.
    """
    n, d = X.shape
    B, K = w.shape[0], theta0.shape[-1]
    C = K // (d + 1)
    Xa = torch.cat([X, X.new_ones(n, 1)], 1)
    x_norm2 = (Xa * Xa).sum(1)                                          # (n,)
    onehot = torch.nn.functional.one_hot(Y, C).to(X.dtype)[:, None, :]  # (n, 1, C)
    m = w.sum(1)
    theta = theta0.expand(B, -1).clone()
    buf = None
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    tracked = None if track is None or not bool(track.any()) else X.new_zeros(int(track.sum()), n)
    scale = (noise * clip / m)[:, None, None]
    for _ in range(epochs):
        W = theta.view(B, d + 1, C)
        Z = (Xa @ W.permute(1, 0, 2).reshape(d + 1, B * C)).view(n, B, C)
        R = torch.softmax(Z, -1).sub_(onehot)                           # (n, B, C)
        norms = (x_norm2[:, None] * (R * R).sum(-1)).sqrt_()            # (n, B)
        factor = (clip[None, :] / (norms + 1e-6)).clamp_(max=1.0) * w.T
        if tracked is not None:
            tracked += ((factor * norms) ** 2).T[track]
        R.mul_(factor[..., None])
        summed = (Xa.T @ R.reshape(n, B * C)).view(d + 1, B, C).permute(1, 0, 2)
        xi = _opacus_noise(generators, d, C, X.dtype)[stream]            # (B, d+1, C)
        g = (summed / m[:, None, None] + scale * xi).reshape(B, K) + weight_decay * theta
        buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
        theta -= lr * (g + momentum * buf)
    return theta, tracked
