"""The InfoNCE probe of image-caption pairs and its exact leave-one-pair-out objective (the paper's Fig. 4).

**Probe.** Frozen image features ``u_i`` and caption features ``v_i`` of pair i
go through two linear heads (bias included) into a shared ``dim``-dimensional
embedding: ``a_i = [u_i, 1] W_u``, ``b_i = [v_i, 1] W_v``. The similarity matrix
is ``S_ij = a_i . b_j / T``; parameters ``theta = [vec W_u, vec W_v]``.

**Objective on a set S of pairs, |S| = m** (symmetric InfoNCE, mean over pairs,
weight decay on all parameters):

    L_S(theta) = (1/m) sum_{i in S} 1/2 [ CE_row_i + CE_col_i ] + (lambda/2) ||theta||^2
    CE_row_i = logsumexp_{j in S} S_ij - S_ii,     CE_col_i = logsumexp_{j in S} S_ji - S_ii

**Leave one pair out.** A pair is the positive of its own row and column and a
negative in every other row and column, so removing it is *not* removing one
term of a sum. The objective of S \\ {k} is the one above with row k and
column k of S deleted; :func:`objective` builds it from the full similarity
matrix with a 0/1 ``keep`` mask (a removed column gets ``-inf`` inside every
logsumexp, a removed row weight 0). :func:`objective` on ``keep`` equals the
objective computed from scratch on the reduced arrays (tested).

**Laplace.** ``-m L_S`` is the log posterior, so the precision is
``P_S = GGN_S + m lambda I`` with ``GGN_S = 1/2 sum_rows J^T Lambda J + 1/2 sum_cols J^T Lambda J``
(``J`` the Jacobian of the similarities, ``Lambda`` the softmax curvature of each
row or column over the kept pairs). :func:`ggn_diag_generic` computes its
diagonal for any head through :mod:`torch.func` (per-row Jacobians of S);
:func:`ggn_diag` is the closed form for the linear heads (exact, tested against
the generic one), used for the leave-one-out models.

**Solver.** The full-data optimum by L-BFGS and Newton polishing; each
leave-one-out optimum by Newton steps from ``theta_D`` on the model's own
Hessian (Hessian-vector products), solved by conjugate gradients
preconditioned with the full-data Hessian, many pairs at once through
:func:`torch.func.vmap` (:func:`solve_loo`). The
objective is invariant under a common rotation of both heads (``W_u R, W_v R``);
those directions are flat, the gradient never points along them, and H is
inverted on their complement (a pseudo-inverse).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.func import grad, jvp, vmap

from lsi import runner
from lsi.curvature import Diag
from lsi.defaults import CONTRASTIVE, RUN
from lsi.enums import Solver
from lsi.kl import kl_diag
from lsi.probes import _linear_block
from lsi.validation import check_indices

COCO_2017_TRAIN_IMAGES = 118_287
"""Images in the COCO 2017 training split (cocodataset.org)."""

COCO_2017_TRAIN_CAPTIONS = 591_753
"""Captions (image-caption pairs) in the COCO 2017 training split."""


def _augment(X: Tensor) -> Tensor:
    return torch.cat([X, X.new_ones(X.shape[:-1] + (1,))], -1)


class ContrastiveProbe:
    """Two linear heads ``d_image -> dim`` and ``d_text -> dim``, similarity ``a . b / temperature``."""

    def __init__(self, d_image: int, d_text: int, dim: int, temperature: float = 0.5):
        self.d_image, self.d_text, self.dim, self.temperature = d_image, d_text, dim, temperature
        self.n_image = (d_image + 1) * dim
        self.n_params = self.n_image + (d_text + 1) * dim

    def init(self, seed: int, *, dtype=torch.float64) -> Tensor:
        """PyTorch's default ``nn.Linear`` initialisation of both heads, drawn as after ``torch.manual_seed(seed)``
        but from a local generator: the caller's random state is untouched."""
        generator = torch.Generator().manual_seed(int(seed))
        heads = [_linear_block(d, self.dim, generator, dtype) for d in (self.d_image, self.d_text)]  # in this order
        return torch.cat([head.reshape(-1) for head in heads])

    def heads(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``W_u (d_image+1, dim)`` and ``W_v (d_text+1, dim)`` of one parameter vector."""
        return (theta[:self.n_image].view(self.d_image + 1, self.dim),
                theta[self.n_image:].view(self.d_text + 1, self.dim))

    def embed(self, theta: Tensor, U: Tensor, V: Tensor) -> tuple[Tensor, Tensor]:
        Wu, Wv = self.heads(theta)
        return _augment(U) @ Wu, _augment(V) @ Wv

    def similarity(self, theta: Tensor, U: Tensor, V: Tensor) -> Tensor:
        """``S_ij = a_i . b_j / T`` for one parameter vector, ``(m, m)``."""
        a, b = self.embed(theta, U, V)
        return a @ b.T / self.temperature


def objective(probe: ContrastiveProbe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor,
              weight_decay: float) -> Tensor:
    """``L_S(theta)`` for the pairs with ``keep == 1``, from the masked full similarity matrix (one model)."""
    S = probe.similarity(theta, U, V)
    mask = torch.where(keep > 0, 0.0, -math.inf).to(S.dtype)
    diag = torch.diagonal(S)
    rows = torch.logsumexp(S + mask[None, :], 1) - diag
    cols = torch.logsumexp(S + mask[:, None], 0) - diag
    terms = torch.where(keep > 0, 0.5 * (rows + cols), torch.zeros_like(diag))
    return terms.sum() / keep.sum() + 0.5 * weight_decay * theta.dot(theta)


def objective_grad(probe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor, weight_decay: float) -> Tensor:
    """``grad L`` for every model ``(B, K)`` with its own ``keep`` row ``(B, m)``, through ``vmap(grad)``."""
    return vmap(grad(lambda t, k: objective(probe, t, U, V, k, weight_decay)))(theta, keep)


def _softmaxes(S: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    mask = torch.where(keep > 0, 0.0, -math.inf).to(S.dtype)
    P_row = torch.softmax(S + mask[None, :], 1) * keep[:, None]   # row i over columns j (kept rows only)
    P_col = torch.softmax(S + mask[:, None], 0) * keep[None, :]   # column j over rows i
    return P_row, P_col


def ggn_diag(probe: ContrastiveProbe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor) -> Tensor:
    """Diagonal of ``GGN_S`` for the linear heads, closed form, ``(K,)``.

    With ``dS_ij / dW_u[b, c] = u~_ib b_jc / T``: row i contributes
    ``u~_ib^2 Var_{P_row,i}(b_.c) / T^2`` and column j contributes
    ``b_jc^2 Var_{P_col,j}(u~_.b) / T^2``; symmetrically for ``W_v``. Each
    variance is a weighted mean of squares minus a squared mean, formed by GEMMs.
    """
    a, b = probe.embed(theta, U, V)
    Ua, Va = _augment(U), _augment(V)
    S = a @ b.T / probe.temperature
    P_row, P_col = _softmaxes(S, keep)
    T2 = probe.temperature ** 2
    # W_u: rows i (over columns j: b_j varies), columns j (over rows i: u_i varies)
    row_u = (Ua ** 2).T @ (P_row @ b ** 2 - (P_row @ b) ** 2)
    col_u = (P_col.T @ Ua ** 2 - (P_col.T @ Ua) ** 2).T @ (b ** 2 * keep[:, None])
    # W_v: rows i (over columns j: v_j varies, a_i fixed), columns j (over rows i: a_i varies)
    row_v = (P_row @ Va ** 2 - (P_row @ Va) ** 2).T @ (a ** 2 * keep[:, None])
    col_v = (Va ** 2 * keep[:, None]).T @ (P_col.T @ a ** 2 - (P_col.T @ a) ** 2)
    return 0.5 * torch.cat([(row_u + col_u).reshape(-1), (row_v + col_v).reshape(-1)]) / T2


def ggn_diag_generic(probe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor, *, chunk: int = 8) -> Tensor:
    """Diagonal of ``GGN_S`` for any head, through :func:`torch.func.jacrev` of the similarity rows.

    For a block of rows, ``J = dS_{i.}/dtheta`` ``(c, m, K)``; the row part is
    ``sum_j p_ij J_ijk^2 - (sum_j p_ij J_ijk)^2`` and the same Jacobian entries
    feed every column's ``sum_i q_ij J_ijk^2 - (sum_i q_ij J_ijk)^2``, accumulated
    over the blocks. Memory ``c m K``; for checks and small problems.
    """
    S = probe.similarity(theta, U, V)
    P_row, P_col = _softmaxes(S, keep)
    m = len(U)
    row_part = torch.zeros_like(theta)
    col_sq = torch.zeros_like(theta)
    col_mean = theta.new_zeros(m, len(theta))
    for s in range(0, m, chunk):
        rows = slice(s, s + chunk)
        J = torch.func.jacrev(lambda t: probe.similarity(t, U, V)[rows])(theta)      # (c, m, K)
        p, q = P_row[rows], P_col[rows]
        row_part += (p[..., None] * J * J).sum((0, 1)) - ((p[..., None] * J).sum(1) ** 2).sum(0)
        col_sq += (q[..., None] * J * J).sum((0, 1))
        col_mean += (q[..., None] * J).sum(0)
    return 0.5 * (row_part + col_sq - (col_mean ** 2).sum(0))


_HVP_BATCH = 16
"""Hessian-vector products formed at once when :func:`hessian` builds the full-data Hessian."""


def hessian(probe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor, weight_decay: float) -> Tensor:
    """Exact Hessian of the objective at one ``theta``, ``(K, K)``, by batches of Hessian-vector products."""
    g = grad(lambda t: objective(probe, t, U, V, keep, weight_decay))
    hvp = vmap(lambda v: jvp(g, (theta,), (v,))[1])
    eye = torch.eye(len(theta), dtype=theta.dtype)
    H = torch.cat([hvp(eye[s:s + _HVP_BATCH]) for s in range(0, len(theta), _HVP_BATCH)])
    return 0.5 * (H + H.T)


def fit(probe, theta: Tensor, U: Tensor, V: Tensor, *, weight_decay: float, tol: float = 1e-10,
        max_iter: int = 5000) -> tuple[Tensor, float]:
    """Full-data optimum: L-BFGS (strong Wolfe) then Newton steps on the exact Hessian; ``(theta_D, grad_norm)``."""
    keep = torch.ones(len(U), dtype=theta.dtype)
    x = theta.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0,
                                  history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        value = objective(probe, x, U, V, keep, weight_decay)
        value.backward()
        return value

    optimizer.step(closure)
    theta = x.detach()
    for _ in range(10):
        g = objective_grad(probe, theta[None], U, V, keep[None], weight_decay)[0]
        if g.norm() <= tol:
            break
        theta = theta - _solver(hessian(probe, theta, U, V, keep, weight_decay))(g[None])[0]
    g = objective_grad(probe, theta[None], U, V, keep[None], weight_decay)[0]
    return theta, float(g.norm())


def _solver(H: Tensor, rel_floor: float = 1e-8):
    """``v -> H^+ v``: pseudo-inverse by eigendecomposition, dropping eigenvalues below ``rel_floor * max``.

    The dropped directions are the flat common rotations of the two heads; the
    gradient is orthogonal to them at every point, up to the turn of the orbit
    between ``theta_D`` and the current iterate, which shrinks with the gradient.
    """
    lam, Q = torch.linalg.eigh(H)
    if float(lam.min()) < -1e-6 * float(lam.max()):
        raise RuntimeError(f"The Hessian has a negative eigenvalue ({float(lam.min()):.3g}): not at a minimum.")
    flat = lam < rel_floor * float(lam.max())
    inv = torch.where(flat, torch.zeros_like(lam), 1.0 / torch.where(flat, torch.ones_like(lam), lam))
    return lambda G: ((G @ Q) * inv) @ Q.T


@dataclass
class PairLSI:
    """Result of :func:`leave_one_pair_out`: a table (its provenance in ``attrs["lsi"]``) and what produced it."""

    table: pd.DataFrame
    theta_D: Tensor
    delta: Tensor
    """``(len(pairs), K)``: each leave-one-pair-out optimum minus ``theta_D``, in table order."""

    @property
    def meta(self) -> dict:
        """The fit in one flat record: the options, the gradient norms reached and the times."""
        record = self.table.attrs["lsi"]
        return {**record["options"], **{key: record[key] for key in (
            "n_pairs", "n_params", "full_grad_norm", "max_loo_grad_norm", "fit_s", "wall_time_s")}}


def leave_one_pair_out(image_features, text_features, *, dim: int = CONTRASTIVE["dim"],
                       temperature: float = CONTRASTIVE["temperature"],
                       weight_decay: float = CONTRASTIVE["weight_decay"], seed: int = CONTRASTIVE["seed"],
                       pairs=None, tol: float = CONTRASTIVE["tol"], max_iter: int = CONTRASTIVE["max_iter"],
                       solver: str = CONTRASTIVE["solver"], memory_budget: str | int = RUN["memory_budget"],
                       checkpoint: str | Path | None = None, progress: bool = False,
                       executor: runner.Executor | None = None) -> PairLSI:
    """LSI of each pair (row k of both feature arrays): KL between the diagonal Laplace posteriors
    of the heads trained with and without pair k (exact leave-one-pair-out objective).

    ``solver="converged"`` solves each leave-one-pair-out optimum to gradient norm
    ``tol`` (:func:`solve_loo`); ``"newton-step"`` takes one step
    ``delta = -H^+ grad L_{D\\k}(theta_D)`` with the full-data Hessian (the
    screening tier: one gradient per pair, no Hessian-vector products), and
    ``grad_norm`` reports the leave-one-out gradient left at ``theta_D + delta``.

    The pairs are scored by :func:`lsi.runner.run` in chunks that fit
    ``memory_budget``; with a ``checkpoint`` folder a killed run resumes, and
    ``executor`` spreads the chunks (e.g. over Ray). Columns: ``index, lsi,
    kl_mean, kl_cov, grad_norm, loss`` (loss: the pair's own InfoNCE term at the
    full-data optimum); ``attrs["lsi"]`` is the runner's provenance.
    """
    started = runner.start("cpu")
    options = dict(dim=int(dim), temperature=float(temperature), weight_decay=float(weight_decay), seed=int(seed),
                   tol=float(tol), max_iter=int(max_iter),
                   solver=_check_solver(solver))
    U = torch.as_tensor(np.asarray(image_features), dtype=torch.float64)
    V = torch.as_tensor(np.asarray(text_features), dtype=torch.float64)
    if len(U) != len(V):
        raise ValueError(f"image_features has {len(U)} rows and text_features {len(V)}; pass one row of each "
                         f"per pair.")
    positions = check_indices(pairs, len(U))
    engine = _PairEngine(U, V, options)
    identity = runner.run_identity("contrastive-lsi", options, data=runner.fingerprint(U, V))
    table = runner.run(positions, engine.score, size=runner.chunk_size(engine.bytes_per_pair(), memory_budget),
                       identity=identity, checkpoint=checkpoint, progress=progress,
                       desc=f"leave-one-pair-out ({options['solver']})", unit="pair", executor=executor)
    delta = torch.as_tensor(np.stack(table.pop("delta").to_numpy()))
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity, options={**options, "memory_budget": memory_budget}, n_samples=len(U),
        n_scored=len(table), n_pairs=len(U), n_params=engine.probe.n_params, full_grad_norm=engine.full_grad_norm,
        max_loo_grad_norm=float(table["grad_norm"].max()), fit_s=engine.fit_s)
    return PairLSI(table, engine.theta_D, delta)


def _converged(engine: _PairEngine, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Each leave-one-pair-out optimum to gradient norm ``tol`` (:func:`solve_loo`)."""
    o = engine.o
    return solve_loo(engine.probe, engine.theta_D, engine.U, engine.V, keep, engine.solve,
                     weight_decay=o["weight_decay"], tol=o["tol"], max_iter=o["max_iter"])


def _newton_step(engine: _PairEngine, keep: Tensor) -> tuple[Tensor, Tensor]:
    """One step ``-H^+ grad L_{D\\k}(theta_D)`` with the full-data Hessian; the gradient left after it."""
    args = (engine.probe, engine.U, engine.V, keep, engine.o["weight_decay"])
    theta_D = engine.theta_D.expand(len(keep), -1)
    delta = -engine.solve(objective_grad(engine.probe, theta_D, *args[1:]))
    return delta, objective_grad(engine.probe, theta_D + delta, *args[1:]).norm(dim=1)


PAIR_SOLVERS = {Solver.CONVERGED.value: _converged, Solver.NEWTON_STEP.value: _newton_step}
"""The leave-one-pair-out tiers: solver name -> ``(engine, keep) -> (delta, grad_norm)``."""


def _check_solver(solver: str | Solver) -> str:
    name = getattr(solver, "value", solver)
    if name not in PAIR_SOLVERS:
        raise ValueError(f"solver={solver!r} is not valid for the contrastive probe; choose one of "
                         f"{', '.join(map(repr, PAIR_SOLVERS))}.")
    return name


class _PairEngine:
    """The full-data fit, and the runner's score function: the leave-one-pair-out LSI of a chunk of pairs."""

    def __init__(self, U: Tensor, V: Tensor, options: dict):
        started = time.perf_counter()
        self.U, self.V, self.o = U, V, options
        m, weight_decay = len(U), options["weight_decay"]
        self.probe = ContrastiveProbe(U.shape[1], V.shape[1], options["dim"], options["temperature"])
        self.theta_D, self.full_grad_norm = fit(self.probe, self.probe.init(options["seed"]), U, V,
                                                weight_decay=weight_decay, tol=options["tol"] / 10)
        ones = torch.ones(m, dtype=torch.float64)
        self.solve = _solver(hessian(self.probe, self.theta_D, U, V, ones, weight_decay))
        self.P0 = Diag(ggn_diag(self.probe, self.theta_D, U, V, ones)[None],
                       torch.tensor([m * weight_decay], dtype=torch.float64))
        self.losses = pair_losses(self.probe, self.theta_D, U, V)
        self.fit_s = round(time.perf_counter() - started, 3)

    def bytes_per_pair(self) -> int:
        """Memory of one leave-one-pair-out model: its ``m x m`` similarities, their softmaxes and the
        tangents of a Hessian-vector product (about 12 of them), and a dozen parameter vectors (Newton-CG)."""
        m, K = len(self.U), self.probe.n_params
        return 8 * (12 * m * m + 12 * K)

    def score(self, chunk: np.ndarray, bar=None) -> pd.DataFrame:
        """One row per pair of ``chunk``; ``delta`` (an array per row) goes back into :class:`PairLSI`."""
        m, weight_decay = len(self.U), self.o["weight_decay"]
        block = torch.as_tensor(chunk)
        keep = torch.ones(len(block), m, dtype=torch.float64)
        keep[torch.arange(len(block)), block] = 0
        delta, norms = PAIR_SOLVERS[self.o["solver"]](self, keep)
        P1 = Diag(torch.stack([ggn_diag(self.probe, t, self.U, self.V, k) for t, k in zip(self.theta_D + delta, keep)]),
                  torch.full((len(block),), (m - 1) * weight_decay, dtype=torch.float64))
        mean, cov = kl_diag(self.P0, P1, delta)
        return pd.DataFrame({"index": chunk, "lsi": (mean + cov).numpy(), "kl_mean": mean.numpy(),
                             "kl_cov": cov.numpy(), "grad_norm": norms.numpy(), "loss": self.losses[chunk],
                             "delta": list(delta.numpy())})


def hvp(probe, theta: Tensor, U: Tensor, V: Tensor, keep: Tensor, vectors: Tensor, weight_decay: float) -> Tensor:
    """Hessian-vector products ``H_b v_b`` of every model's own objective, ``(B, K)``."""
    def one(t, k, v):
        return jvp(grad(lambda x: objective(probe, x, U, V, k, weight_decay)), (t,), (v,))[1]
    return vmap(one)(theta, keep, vectors)


def solve_loo(probe, theta_D: Tensor, U: Tensor, V: Tensor, keep: Tensor, precondition, *,
              weight_decay: float, tol: float = CONTRASTIVE["tol"], max_iter: int = CONTRASTIVE["max_iter"],
              cg_iter: int = 30) -> tuple[Tensor, Tensor]:
    """Leave-one-pair-out optima ``theta_D + delta`` for the ``keep`` rows, by batched Newton-PCG.

    Each Newton step solves ``H_b s = -g_b`` (the model's own exact Hessian, through
    Hessian-vector products) by conjugate gradients preconditioned with the
    full-data ``H^+`` (``precondition``): ``H^+ H_b`` differs from the identity by
    the removed pair's low-rank share, so a few CG iterations suffice. Returns
    ``(delta, grad_norm)``.
    """
    B = len(keep)
    delta = torch.zeros(B, len(theta_D), dtype=theta_D.dtype)
    norms = torch.full((B,), math.inf, dtype=theta_D.dtype)
    for _ in range(max_iter):
        theta = theta_D + delta
        g = objective_grad(probe, theta, U, V, keep, weight_decay)
        norms = g.norm(dim=1)
        active = torch.nonzero(norms > tol).flatten()
        if len(active) == 0:
            break
        apply = lambda v: hvp(probe, theta[active], U, V, keep[active], v, weight_decay)
        step = _pcg(apply, -g[active], precondition, cg_iter, rel_tol=1e-3)
        delta[active] += _backtrack(probe, theta[active], step, g[active], U, V, keep[active], weight_decay)
    return delta, norms


def _backtrack(probe, theta: Tensor, step: Tensor, g: Tensor, U: Tensor, V: Tensor, keep: Tensor,
               weight_decay: float) -> Tensor:
    """``t_b * step_b`` with the largest ``t_b`` in 1, 1/2, 1/4, ... meeting the Armijo condition per model
    (a step along which the objective does not descend is replaced by a short gradient step)."""
    values = vmap(lambda t, k: objective(probe, t, U, V, k, weight_decay))
    f0 = values(theta, keep)
    slope = (g * step).sum(1)
    step = torch.where((slope < 0)[:, None], step, -g * 1e-2)
    slope = (g * step).sum(1)
    t = torch.ones(len(theta), dtype=theta.dtype)
    resolution = 1e3 * torch.finfo(theta.dtype).eps * f0.abs()
    for _ in range(30):
        ok = (values(theta + t[:, None] * step, keep) <= f0 + 1e-4 * t * slope) | (-t * slope <= resolution)
        if bool(ok.all()):
            break
        t = torch.where(ok, t, t / 2)
    return t[:, None] * step


def _pcg(apply, b: Tensor, precondition, iters: int, rel_tol: float) -> Tensor:
    """Batched preconditioned conjugate gradients for ``A_b x_b = b_b`` (one system per row)."""
    x = torch.zeros_like(b)
    r = b.clone()
    z = precondition(r)
    p = z.clone()
    rz = (r * z).sum(1)
    target = rel_tol * b.norm(dim=1)
    for _ in range(iters):
        Ap = apply(p)
        curvature = (p * Ap).sum(1)
        alpha = torch.where(curvature > 0, rz / torch.where(curvature > 0, curvature, torch.ones_like(curvature)),
                            torch.zeros_like(rz))
        x += alpha[:, None] * p
        r -= alpha[:, None] * Ap
        if bool((r.norm(dim=1) <= target).all()):
            break
        z = precondition(r)
        rz_new = (r * z).sum(1)
        p = z + (rz_new / torch.where(rz != 0, rz, torch.ones_like(rz)))[:, None] * p
        rz = rz_new
    return x


def pair_losses(probe, theta: Tensor, U: Tensor, V: Tensor) -> np.ndarray:
    """Each pair's own symmetric InfoNCE term ``(CE_row + CE_col) / 2`` on the full set."""
    with torch.no_grad():
        S = probe.similarity(theta, U, V)
        diag = torch.diagonal(S)
        return (0.5 * (torch.logsumexp(S, 1) + torch.logsumexp(S, 0)) - diag).numpy()


def cost_estimate(seconds: float, n_pairs: int, target_pairs: int) -> dict:
    """Cost of the exact leave-one-pair-out at ``target_pairs``, scaled from a measured run.

    Every leave-one-out gradient touches the ``m x m`` similarity matrix and
    there are m of them, so time grows as ``m^3`` and the similarity matrix of
    one model takes ``8 m^2`` bytes (float64).
    """
    scale = target_pairs / n_pairs
    return {"pairs": target_pairs, "cpu_hours": seconds * scale ** 3 / 3600,
            "similarity_matrix_gib": 8 * target_pairs ** 2 / 2 ** 30}


__all__ = ["COCO_2017_TRAIN_CAPTIONS", "COCO_2017_TRAIN_IMAGES", "PAIR_SOLVERS", "ContrastiveProbe", "PairLSI",
           "caption_agreement", "cost_estimate", "fit", "ggn_diag", "ggn_diag_generic", "hessian",
           "leave_one_pair_out", "hvp", "objective", "objective_grad", "pair_losses", "solve_loo"]


def caption_agreement(text_features: np.ndarray, image_of_pair: np.ndarray) -> np.ndarray:
    """Per pair: mean cosine similarity of its caption to the other captions of the same image.

    A caption that says what the other annotators said describes a typical,
    clearly visible subject; a low value marks a caption that disagrees with
    them (an unusual focus, an ambiguous scene, or a mismatched caption).
    """
    T = np.asarray(text_features, float)
    T = T / np.linalg.norm(T, axis=1, keepdims=True)
    image_of_pair = np.asarray(image_of_pair)
    out = np.full(len(T), np.nan)
    for image in np.unique(image_of_pair):
        rows = np.flatnonzero(image_of_pair == image)
        if len(rows) < 2:
            continue
        S = T[rows] @ T[rows].T
        out[rows] = (S.sum(1) - 1) / (len(rows) - 1)
    return out
