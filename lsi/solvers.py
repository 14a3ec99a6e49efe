"""The leave-one-out solvers: one class per ``solver=`` name, found through :data:`SOLVERS`.

Every solver answers the same three questions for the engine of :func:`lsi.compute_lsi`:

* :meth:`~LeaveOneOutSolver.fit`: the full-data parameters ``theta_D`` from the seeded init;
* :meth:`~LeaveOneOutSolver.leave_one_out`: for a chunk of left-out samples ``i``, the parameters
  ``theta_{D\\i}`` and the gradient norm ``||grad L_{D\\i}(theta_{D\\i})||`` that certifies them;
* :meth:`~LeaveOneOutSolver.precision`: the posterior precision ``P_{D\\i}`` at those parameters.

The first-order solvers (``gd``, ``warm-start``) train by Nesterov steps and factorise no Hessian; the
second-order ones (``converged``, ``newton-step``) solve the full-data optimum to gradient norm 1e-13 and
factorise ``M = (1/m) sum_j Hess CE_j(theta_D) + lambda I`` once (:mod:`lsi.training`). Each class declares
its name in ``_key``, as laplace-torch's Laplace classes do.
"""
from __future__ import annotations

import warnings
from typing import ClassVar

import torch
from torch import Tensor

from lsi import curvature, training
from lsi.enums import Solver
from lsi.probes import ModuleProbe, Probe


class LeaveOneOutSolver:
    """How the full-data and leave-one-out parameters of one run are obtained."""

    _key: ClassVar[str]
    first_order: ClassVar[bool]
    """Trains by Nesterov steps: no Hessian is factorised, float32 works, a kinked (ReLU) probe is allowed."""

    def __init__(self, probe: Probe, X: Tensor, Y: Tensor, options: dict):
        self.probe, self.X, self.Y, self.o = probe, X, Y, options
        self.theta0 = probe.init(options["seed"], dtype=X.dtype, device=X.device)
        self.theta_D: Tensor | None = None
        self.full_grad_norm = float("nan")

    def fit(self) -> Tensor:
        """``theta_D``, ``(K,)``; kept as ``self.theta_D`` with its ``full_grad_norm = ||grad L_D(theta_D)||``."""
        self.theta_D = self._fit()
        ones = torch.ones(1, len(self.X), dtype=self.X.dtype, device=self.X.device)
        g = training.objective_grad(self.probe, self.theta_D[None], self.X, self.Y, ones, self.o["weight_decay"])
        self.full_grad_norm = float(g.norm())
        return self.theta_D

    def _fit(self) -> Tensor:
        raise NotImplementedError

    def leave_one_out(self, excluded: Tensor, w: Tensor, bar=None) -> tuple[Tensor, training.LeaveOneOut]:
        """``(theta, loo)``: the ``(B, K)`` leave-one-out parameters and their :class:`~lsi.training.LeaveOneOut`
        (``delta = theta - theta_D``, gradient norms) for the samples ``excluded`` with 0/1 weights ``w``."""
        raise NotImplementedError

    def precision(self, structure: str, P0, theta: Tensor, excluded: Tensor, w: Tensor,
                  loo: training.LeaveOneOut, prior: Tensor):
        """``P_{D\\i}``: the curvature of the kept samples at ``theta`` plus ``prior``."""
        return curvature.precision(structure, self.probe, theta, self.X, w, prior)

    def bytes_per_model(self, structure: str) -> int:
        """Memory of one leave-one-out model in a chunk: passes over the data and the precision."""
        n, K, C = len(self.X), self.probe.n_params, self.probe.n_classes
        hidden = getattr(self.probe, "hidden", 0)
        if isinstance(self.probe, ModuleProbe):  # a network: its activations, kept for the backward pass
            hidden = self.probe.activations_per_sample(self.X[0])
        per = 8 * (6 * n * (C + 2 * hidden) + 8 * K)
        if structure == "full":
            per += 8 * 4 * K * K
        return per


class _FirstOrder(LeaveOneOutSolver):
    """Nesterov steps (PyTorch's ``SGD(nesterov=True)``) for the full-data and the leave-one-out models."""

    first_order = True
    loo_from_full: ClassVar[bool] = False   #: leave-one-out models start at ``theta_D`` (else at the seeded init)

    def full_tol(self) -> float | None:
        """Gradient norm to continue ``theta_D`` to after ``epochs`` steps; None: stop there."""
        return None

    def _fit(self) -> Tensor:
        o = self.o
        return training.fit_first_order(
            self.probe, self.theta0, self.X, self.Y, lr=o["lr"], momentum=o["momentum"],
            weight_decay=o["weight_decay"], epochs=o["epochs"], tol=self.full_tol())

    def leave_one_out(self, excluded: Tensor, w: Tensor, bar=None) -> tuple[Tensor, training.LeaveOneOut]:
        o = self.o
        start, tol = (self.theta_D, o["tol"]) if self.loo_from_full else (self.theta0, None)
        step = None if bar is None else (lambda epoch, theta: bar.update(len(w) / o["epochs"]))
        theta = training.train_gd(self.probe, start, self.X, self.Y, w, lr=o["lr"], momentum=o["momentum"],
                                  weight_decay=o["weight_decay"], epochs=o["epochs"], tol=tol, callback=step)
        grad_norm = training.objective_grad(self.probe, theta, self.X, self.Y, w, o["weight_decay"]).norm(dim=1)
        return theta, training.LeaveOneOut(theta - self.theta_D, grad_norm)


class GD(_FirstOrder):
    """The paper's training: ``epochs`` Nesterov steps from one seeded init, with and without each sample."""

    _key = Solver.GD.value


class WarmStart(_FirstOrder):
    """First-order ``converged`` for networks: ``theta_D`` trained on to gradient norm ``tol/10``, each
    leave-one-out model continued from it until its gradient norm is below ``tol`` (at most ``epochs`` steps)."""

    _key = Solver.WARM_START.value
    loo_from_full = True

    def full_tol(self) -> float:
        return self.o["tol"] / 10

    def fit(self) -> Tensor:
        theta = super().fit()
        if self.full_grad_norm > self.full_tol():
            warnings.warn(f"solver='warm-start': the full-data model stopped at gradient norm {self.full_grad_norm:.3g} "
                          f"after {self.o['epochs']} further steps, above tol/10 = {self.full_tol():g}; "
                          f"the leave-one-out models then also continue its training. Raise epochs or tol.",
                          RuntimeWarning, stacklevel=4)
        return theta


class _SecondOrder(LeaveOneOutSolver):
    """``theta_D`` to gradient norm ``min(tol, 1e-12) / 10`` by Newton-CG, and ``M^-1`` (through its Cholesky factor)."""

    first_order = False

    def _fit(self) -> Tensor:
        o = self.o
        theta, _ = training.fit_optimum(self.probe, self.theta0, self.X, self.Y,
                                        weight_decay=o["weight_decay"], tol=min(o["tol"], 1e-12) / 10)
        self.inverse = training.hessian_inverse(self.probe, theta, self.X, self.Y, weight_decay=o["weight_decay"])
        return theta


class Converged(_SecondOrder):
    """Each leave-one-out optimum to gradient norm ``tol`` (:func:`lsi.training.solve_leave_one_out`); with a
    diagonal precision, its GGN comes from the pass that verified the solution."""

    _key = Solver.CONVERGED.value

    def leave_one_out(self, excluded: Tensor, w: Tensor, bar=None) -> tuple[Tensor, training.LeaveOneOut]:
        loo = training.solve_leave_one_out(self.probe, self.theta_D, self.inverse, self.X, self.Y, excluded,
                                           weight_decay=self.o["weight_decay"], tol=self.o["tol"],
                                           ggn_diag=self.o["hessian"] == "diag")
        return self.theta_D + loo.delta, loo

    def bytes_per_model(self, structure: str) -> int:
        """As every solver's, plus the Anderson history: ``2 memory + 2`` vectors of length K."""
        return super().bytes_per_model(structure) + 8 * (2 * training.ANDERSON_MEMORY + 2) * self.probe.n_params

    def precision(self, structure, P0, theta, excluded, w, loo, prior):
        if loo.ggn_diag is not None:
            return curvature.Diag(loo.ggn_diag, prior)
        return super().precision(structure, P0, theta, excluded, w, loo, prior)


class NewtonStep(_SecondOrder):
    """Screening: one Newton step from ``theta_D`` with the sample's own curvature ignored
    (:func:`lsi.training.newton_step`), and ``P_D`` minus the sample's curvature at ``theta_D``."""

    _key = Solver.NEWTON_STEP.value

    def leave_one_out(self, excluded: Tensor, w: Tensor, bar=None) -> tuple[Tensor, training.LeaveOneOut]:
        delta = training.newton_step(self.probe, self.theta_D, self.inverse, self.X, self.Y, excluded,
                                     weight_decay=self.o["weight_decay"])
        loo = training.LeaveOneOut(delta, torch.full((len(excluded),), float("nan"), device=delta.device))
        return self.theta_D + delta, loo

    def precision(self, structure, P0, theta, excluded, w, loo, prior):
        return curvature.remove_sample(P0, structure, self.probe, self.theta_D, self.X, excluded, prior)

    def bytes_per_model(self, structure: str) -> int:
        if structure == "diag":
            return 8 * 8 * self.probe.n_params   # per-sample gradients, steps and diagonals: no pass over the data
        return super().bytes_per_model(structure)


SOLVERS: dict[str, type[LeaveOneOutSolver]] = {cls._key: cls for cls in (GD, Converged, NewtonStep, WarmStart)}
"""Every solver by its ``solver=`` name."""


def solver_class(name: str | Solver) -> type[LeaveOneOutSolver]:
    """The class registered under ``name``; a ValueError lists the valid names."""
    key = name.value if isinstance(name, Solver) else name
    if key not in SOLVERS:
        raise ValueError(f"solver={name!r} is not valid; choose one of {', '.join(map(repr, SOLVERS))}.")
    return SOLVERS[key]
