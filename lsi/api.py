"""The front door: :func:`compute_lsi`.

    LSI(i) = KL( N(theta_D, P_D^-1) || N(theta_{D\\i}, P_{D\\i}^-1) )

for every requested sample i, where ``theta_S`` minimises
``(1/m) sum_{j in S} CE_j + (lambda/2)||theta||^2`` (or is what the paper's
Nesterov training reaches on S), and ``P_S`` is the Laplace precision of
:mod:`lsi.curvature`. Leave-one-out models are trained many at a time
(:mod:`lsi.training`), chunked to a memory budget (:mod:`lsi.batching`) and,
given a ``checkpoint`` folder, written chunk by chunk so a killed run resumes.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lsi import batching, curvature, runner, training
from lsi.defaults import LSI, PAPER
from lsi.enums import Hessian, Probe, Solver
from lsi.kl import kl_terms
from lsi.probes import ACTIVATIONS, ModuleProbe, make_probe
from lsi.validation import (check_choice, check_features, check_indices, check_labels,
                            check_positive)


def compute_lsi(features: Any, labels: Any, *, probe: str | torch.nn.Module = LSI["probe"],
                hidden: int = PAPER["hidden"], activation: str = "relu",
                solver: str = LSI["solver"], hessian: str = LSI["hessian"],
                epochs: int = PAPER["epochs"], lr: float = PAPER["lr"], momentum: float = PAPER["momentum"],
                weight_decay: float = PAPER["weight_decay"], prior_precision: float | None = LSI["prior_precision"],
                indices: Any = None, seed: int = PAPER["seed"], device: str | torch.device = LSI["device"],
                dtype: str = LSI["dtype"], tol: float = LSI["tol"], memory_budget: str | int = LSI["memory_budget"],
                checkpoint: str | Path | None = None, progress: bool = True, ids: Any = None,
                n_classes: int | None = None, marginals: dict[str, list[str]] | None = None,
                executor: runner.Executor | None = None) -> pd.DataFrame:
    """Laplace Sample Information of each requested training sample.

    Parameters
    ----------
    features, labels
        ``(n, d)`` finite features (or model inputs when ``probe`` is a module) and
        integer labels in ``0..C-1``.
    probe
        ``"linear"`` (multinomial logistic regression), ``"mlp"`` (one hidden ReLU
        layer of width ``hidden``) or any ``torch.nn.Module`` producing logits.
    activation
        The MLP's hidden activation: ``"relu"`` (the paper's; ``gd`` only) or a
        smooth ``"gelu"``/``"softplus"``, with which ``converged`` also applies.
    solver
        ``"gd"``: the paper's Nesterov SGD for ``epochs`` steps from one seeded
        initialisation; ``"converged"``: each LOO optimum to gradient norm ``tol``;
        ``"newton-step"``: one Newton step from the full-data optimum (screening);
        ``"warm-start"``: first-order ``converged`` for networks (no Hessian is
        factorised): ``theta_D`` is trained ``epochs`` steps from the init and on
        to gradient norm ``tol/10``, each LOO model runs the same Nesterov steps
        from ``theta_D`` until its gradient norm is below ``tol`` (at most
        ``epochs`` steps each; ``grad_norm`` shows any that stopped short).
    hessian
        Posterior precision structure: ``"diag"``, ``"kfac"`` or ``"full"``.
    prior_precision
        ``None`` uses ``m * weight_decay`` for a set of m samples, consistent with
        the objective; a number fixes it for both posteriors (the authors' code: 1).
    indices
        Which samples to score: ``None`` (all), ``"a:b"``, a slice or positions.
    checkpoint
        Folder for finished chunks; rerunning with the same arguments resumes.
    executor
        Who scores the chunks: ``None`` here, one after another; a
        :class:`lsi.distributed.RayExecutor` over a Ray cluster (same chunks, same table).
    marginals
        For a module probe with ``hessian="diag"``: ``{name: [parameter names]}`` adds a
        column ``lsi_<name>``, the KL between the two posteriors' marginals on those
        parameters (for diagonal precisions: the KL's terms over their coordinates only),
        from the same retrained models. ``{"last_layer": ["head.weight", "head.bias"]}``
        is the authors' last-layer LSI (Appendix D) of fully retrained networks.

    Returns
    -------
    DataFrame with columns ``index, id, label, lsi, kl_mean, kl_cov, grad_norm``
    and the run's metadata in ``attrs["lsi"]``.
    """
    started = runner.start(device)
    options = _check_options(solver=solver, hessian=hessian, probe=probe, hidden=hidden,
                             activation=activation, epochs=epochs,
                             lr=lr, momentum=momentum, weight_decay=weight_decay,
                             prior_precision=prior_precision, seed=seed, tol=tol)
    if marginals:
        options["marginals"] = _check_marginals(marginals, probe, options["hessian"])
    X = _check_inputs(features, probe)
    Y, C = check_labels(labels, len(X), n_classes=n_classes)
    positions = check_indices(indices, len(X))
    ids = _check_ids(ids, len(X))
    device, torch_dtype = batching.resolve_device(device), batching.resolve_dtype(dtype)
    if torch_dtype != torch.float64 and options["solver"] not in FIRST_ORDER:
        raise ValueError(f"solver={options['solver']!r} needs dtype='float64': it solves the full-data optimum "
                         f"to gradient norm 1e-13 and each leave-one-out problem to tol={options['tol']:g}, "
                         f"below float32 resolution. Use dtype='float64', or solver='gd' in float32.")
    budget = batching.parse_bytes(memory_budget)

    Xt = torch.as_tensor(X, dtype=torch_dtype, device=device)
    Yt = torch.as_tensor(Y, device=device)
    model = make_probe(probe, Xt.shape[-1] if Xt.ndim == 2 else 0, C, hidden, activation)
    engine = _Engine(model, Xt, Yt, options)

    module = runner.module_fingerprint(probe) if isinstance(probe, torch.nn.Module) else None
    identity = runner.run_identity("lsi", {**options, "dtype": dtype, "n_classes": C},
                                   data=runner.fingerprint(X, Y), module=module)
    size = runner.chunk_size(engine.bytes_per_model(), budget)
    table = runner.run(positions, lambda chunk, bar: engine.score(chunk, Y, ids, bar), size=size,
                       identity=identity, checkpoint=checkpoint, progress=progress,
                       desc=f"LSI ({options['solver']})", unit="model", executor=executor)
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity,
        options={**options, "dtype": dtype, "device": str(device), "memory_budget": budget},
        n_samples=len(X), n_scored=len(table),
        n_features=int(np.prod(X.shape[1:])), n_classes=C, n_params=model.n_params,
        full_data_grad_norm=engine.full_grad_norm)
    return table


FIRST_ORDER = ("gd", "warm-start")
"""Solvers that train by Nesterov steps (no Hessian factorisation): the only ones for large networks."""


class _Engine:
    """Full-data fit and per-chunk leave-one-out scoring for one set of options."""

    def __init__(self, probe, X: torch.Tensor, Y: torch.Tensor, options: dict):
        self.probe, self.X, self.Y, self.o = probe, X, Y, options
        n, dtype, device = len(X), X.dtype, X.device
        self.structure, self.solver = options["hessian"], options["solver"]
        self.theta0 = probe.init(options["seed"], dtype=dtype, device=device)
        ones = torch.ones(1, n, dtype=dtype, device=device)
        if self.solver in FIRST_ORDER:
            theta = training.fit_first_order(
                probe, self.theta0, X, Y, lr=options["lr"], momentum=options["momentum"],
                weight_decay=options["weight_decay"], epochs=options["epochs"],
                tol=options["tol"] / 10 if self.solver == "warm-start" else None)
        else:
            theta, _ = training.fit_optimum(probe, self.theta0, X, Y, weight_decay=options["weight_decay"],
                                            tol=min(options["tol"], 1e-12) / 10)
            self.factor = training.factor_hessian(probe, theta, X, Y, weight_decay=options["weight_decay"])
        self.theta_D = theta
        g = training.objective_grad(probe, theta[None], X, Y, ones, options["weight_decay"])
        self.full_grad_norm = float(g.norm())
        if self.solver == "warm-start" and self.full_grad_norm > options["tol"] / 10:
            warnings.warn(f"solver='warm-start': the full-data model stopped at gradient norm {self.full_grad_norm:.3g} "
                          f"after {options['epochs']} further steps, above tol/10 = {options['tol'] / 10:g}; the "
                          f"leave-one-out models then also continue its training. Raise epochs or tol.",
                          RuntimeWarning, stacklevel=3)
        self.P0 = curvature.precision(self.structure, probe, theta[None], X, ones, self._prior(n, 1))

    def _prior(self, m: int, count: int) -> torch.Tensor:
        tau = self.o["weight_decay"] * m if self.o["prior_precision"] is None else self.o["prior_precision"]
        return torch.full((count,), float(tau), dtype=torch.float64, device=self.X.device)

    def _train(self, w, bar=None, *, start=None, tol=None):
        """Nesterov steps for the models ``w`` from ``start`` (default: the seeded init), stopping at ``tol``."""
        o = self.o
        step = None if bar is None else (lambda epoch, theta: bar.update(len(w) / o["epochs"]))
        return training.train_gd(self.probe, self.theta0 if start is None else start, self.X, self.Y, w,
                                 lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                                 epochs=o["epochs"], tol=tol, callback=step)

    def _solve(self, excluded: torch.Tensor) -> training.LeaveOneOut:
        """The second-order tiers; the converged one also returns the diagonal GGN at each solution."""
        args = (self.probe, self.theta_D, self.factor, self.X, self.Y, excluded)
        if self.solver == "newton-step":
            delta = training.newton_step(*args, weight_decay=self.o["weight_decay"])
            return training.LeaveOneOut(delta, torch.full((len(excluded),), float("nan"), device=delta.device))
        return training.solve_leave_one_out(*args, weight_decay=self.o["weight_decay"], tol=self.o["tol"],
                                            ggn_diag=self.structure == "diag")

    def bytes_per_model(self) -> int:
        n, K, C = len(self.X), self.probe.n_params, self.probe.n_classes
        if self.solver == "newton-step" and self.structure == "diag":
            return 8 * 8 * K   # per-sample gradients, steps and diagonals: no pass over the data per model
        hidden = getattr(self.probe, "hidden", 0)
        if isinstance(self.probe, ModuleProbe):  # a network: its activations, kept for the backward pass
            hidden = self.probe.activations_per_sample(self.X[0])
        per = 8 * (6 * n * (C + 2 * hidden) + 8 * K)
        if self.structure == "full":
            per += 8 * 4 * K * K
        return per

    def score(self, chunk: np.ndarray, labels: np.ndarray, ids: np.ndarray, bar) -> pd.DataFrame:
        n, o = len(self.X), self.o
        excluded = torch.as_tensor(chunk, device=self.X.device)
        w = training.loo_weights(n, excluded, dtype=self.X.dtype, device=self.X.device)
        prior = self._prior(n - 1, len(chunk))
        if self.solver in FIRST_ORDER:
            start, tol = (self.theta_D, o["tol"]) if self.solver == "warm-start" else (None, None)
            theta = self._train(w, bar, start=start, tol=tol)
            delta = theta - self.theta_D
            grad_norm = training.objective_grad(self.probe, theta, self.X, self.Y, w, o["weight_decay"]).norm(dim=1)
        else:
            loo = self._solve(excluded)
            delta, grad_norm, theta = loo.delta, loo.grad_norm, self.theta_D + loo.delta
        if self.solver == "newton-step":
            P1 = curvature.remove_sample(self.P0, self.structure, self.probe, self.theta_D, self.X, excluded, prior)
        elif self.solver == "converged" and loo.ggn_diag is not None:
            P1 = curvature.Diag(loo.ggn_diag, prior)
        else:
            P1 = curvature.precision(self.structure, self.probe, theta, self.X, w, prior)
        mean, cov = kl_terms(self.P0, P1, delta)
        return pd.DataFrame({
            "index": chunk, "id": ids[chunk], "label": labels[chunk],
            "lsi": (mean + cov).cpu().numpy(), "kl_mean": mean.cpu().numpy(), "kl_cov": cov.cpu().numpy(),
            "grad_norm": grad_norm.double().cpu().numpy(),
            **{f"lsi_{name}": self._marginal_kl(names, P1, delta) for name, names in o.get("marginals", {}).items()},
        })

    def _marginal_kl(self, names: list[str], P1: curvature.Diag, delta: torch.Tensor) -> np.ndarray:
        """KL of the diagonal posteriors restricted to the coordinates of the module parameters ``names``."""
        offsets = np.cumsum([0, *self.probe.sizes]).tolist()
        coords = torch.cat([torch.arange(offsets[k], offsets[k + 1], device=delta.device)
                            for k, name in enumerate(self.probe.names) if name in names])
        mean, cov = kl_terms(curvature.Diag(self.P0.ggn[:, coords], self.P0.prior),
                             curvature.Diag(P1.ggn[:, coords], P1.prior), delta[:, coords])
        return (mean + cov).cpu().numpy()


def _check_options(**o) -> dict:
    o["solver"] = check_choice(o["solver"], Solver, name="solver").value
    o["hessian"] = check_choice(o["hessian"], Hessian, name="hessian").value
    if isinstance(o["probe"], torch.nn.Module):
        o["probe"] = f"module:{type(o['probe']).__name__}"
    else:
        o["probe"] = check_choice(o["probe"], Probe, name="probe").value
    for name in ("hidden", "epochs"):
        if isinstance(o[name], bool) or not isinstance(o[name], (int, np.integer)) or o[name] < 1:
            raise ValueError(f"{name} == {o[name]!r}, must be an integer >= 1.")
        o[name] = int(o[name])
    o["lr"] = check_positive(o["lr"], name="lr")
    o["tol"] = check_positive(o["tol"], name="tol")
    o["momentum"] = check_positive(o["momentum"], name="momentum", allow_zero=True)
    if o["momentum"] >= 1:
        raise ValueError(f"momentum == {o['momentum']}, must be < 1.")
    if o["activation"] not in ACTIVATIONS:
        raise ValueError(f"activation={o['activation']!r} is not valid; choose one of {', '.join(ACTIVATIONS)}.")
    strict = o["solver"] not in FIRST_ORDER
    if strict and o["probe"] == "mlp" and o["activation"] == "relu":
        raise ValueError(f"solver={o['solver']!r} needs a smooth probe with a strict minimum; a ReLU MLP's "
                         f"optimum can sit on a kink where no gradient tolerance is reachable. Use solver='gd' "
                         f"(the paper's training) for probe='mlp', or a smooth activation='gelu' or 'softplus'.")
    o["weight_decay"] = check_positive(o["weight_decay"], name="weight_decay", allow_zero=not strict)
    if o["prior_precision"] is not None:
        o["prior_precision"] = check_positive(o["prior_precision"], name="prior_precision")
    elif o["weight_decay"] == 0:
        raise ValueError("weight_decay == 0 gives a zero prior precision (m * weight_decay); "
                         "pass prior_precision=<a positive number>.")
    o["seed"] = int(o["seed"])
    return o


def _check_marginals(marginals: dict, probe, hessian: str) -> dict[str, list[str]]:
    if not isinstance(probe, torch.nn.Module) or hessian != "diag":
        raise ValueError("marginals needs a torch.nn.Module probe and hessian='diag' (the marginal of a "
                         "diagonal Gaussian is its sub-diagonal); pass marginals=None otherwise.")
    known = [name for name, _ in probe.named_parameters()]
    checked = {}
    for group, names in marginals.items():
        names = [names] if isinstance(names, str) else list(names)
        unknown = [name for name in names if name not in known]
        if not names or unknown:
            raise ValueError(f"marginals[{group!r}] names {unknown or 'no parameters'}; the module's parameters "
                             f"are {', '.join(known)}.")
        checked[str(group)] = names
    return checked


def _check_inputs(features: Any, probe) -> np.ndarray:
    if isinstance(probe, torch.nn.Module):
        array = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features,
                           dtype=np.float64)
        if not np.isfinite(array).all():
            raise ValueError("inputs contain NaN or inf; clean them before computing LSI.")
        return array
    return check_features(features)


def _check_ids(ids: Any, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n)
    ids = np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} samples; pass one id per sample.")
    return ids


def null_sample_lsi(features: Any, labels: Any, *, weight_decay: float = PAPER["weight_decay"],
                    prior_precision: float | None = LSI["prior_precision"], device: str | torch.device = LSI["device"],
                    n_classes: int | None = None) -> dict[str, float]:
    """The LSI of a sample that carries no information: the floor the bulk of the samples sits on.

    Leaving out a sample j whose gradient and curvature at ``theta_D`` are zero
    still changes two things, both through the weight decay (linear probe,
    diagonal Hessian, converged tier to first order in 1/n):

    * **the prior of the posterior** (only with the default prior ``m * lambda``):
      ``P_{D\\j} = P_D - lambda`` at fixed parameters, so ``r_k = 1 - lambda / p0_k`` and the
      covariance term is ``1/2 sum_k (d_k - log1p(d_k))`` with ``d_k = -lambda / p0_k``, about
      ``1/4 sum_k (lambda / p0_k)^2 <= K / (4 n^2)`` since ``p0_k >= n lambda`` (``cov_prior``, ``bound``);
    * **the weight of the weight decay in the mean objective**: the leave-one-out
      gradient at ``theta_D`` is ``-(lambda theta_D + g_j) / m``, so even ``g_j = 0`` moves the
      optimum by ``delta = M^-1 lambda theta_D / m`` (``m = n - 1``, ``M`` the mean Hessian). The
      mean term is ``1/2 sum_k p1_k delta_k^2``, and the other samples' curvature, evaluated at
      ``theta_D + delta``, adds to the covariance term.

    With a fixed ``prior_precision`` (the authors' 1) ``cov_prior`` vanishes and
    the rest remains. Returns ``mean``, ``cov``, ``total`` (their sum), ``cov_prior``
    and ``bound``; one Newton step, no leave-one-out solve. It is not a strict lower
    bound: a sample whose gradient points against ``lambda theta_D`` cancels part of the
    shift and can score below it.
    """
    X = check_features(features)
    Y, C = check_labels(labels, len(X), n_classes=n_classes)
    options = _check_options(solver="converged", hessian="diag", probe="linear", hidden=1, activation="relu",
                             epochs=1, lr=1.0, momentum=0.0, weight_decay=weight_decay,
                             prior_precision=prior_precision, seed=PAPER["seed"], tol=LSI["tol"])
    device = batching.resolve_device(device)
    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    engine = _Engine(make_probe("linear", X.shape[1], C), Xt, torch.as_tensor(Y, device=device), options)
    n, lam = len(X), options["weight_decay"]
    delta = torch.cholesky_solve((lam * engine.theta_D / (n - 1))[:, None], engine.factor).T
    ones = torch.ones(1, n, dtype=torch.float64, device=device)
    P1 = curvature.precision("diag", engine.probe, engine.theta_D + delta, Xt, ones, engine._prior(n - 1, 1))
    mean, cov = kl_terms(engine.P0, P1, delta)
    _, prior_part = kl_terms(engine.P0, curvature.Diag(engine.P0.ggn, engine._prior(n - 1, 1)), 0 * delta)
    K = engine.probe.n_params
    return {"cov": float(cov[0]), "mean": float(mean[0]), "total": float(mean[0] + cov[0]),
            "cov_prior": float(prior_part[0]), "bound": K / (4 * n ** 2), "n": n, "n_params": K}
