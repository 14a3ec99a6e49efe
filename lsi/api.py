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

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lsi import batching, curvature, runner, solvers, training
from lsi.defaults import LSI, PAPER
from lsi.enums import Hessian, Probe
from lsi.kl import kl_terms
from lsi.probes import ACTIVATIONS, make_probe
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
                executor: runner.Executor | None = None, on_nonfinite: str = "raise") -> pd.DataFrame:
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
    on_nonfinite
        A sample whose ``lsi``, KL terms or ``grad_norm`` is NaN or inf (training
        diverged, float32 overflowed): ``"raise"`` (default) is a
        :class:`lsi.validation.NonFiniteError` naming the samples and the likely cause;
        ``"flag"`` keeps the rows and adds a boolean column ``nonfinite``.

    Returns
    -------
    DataFrame with columns ``index, id, label, lsi, kl_mean, kl_cov, grad_norm`` (the certificate: the
    gradient norm of each leave-one-out objective at its solution), for ``"converged"`` also ``steps`` (the
    iterations of each solve, one pass over the data each), and the run's metadata in ``attrs["lsi"]``.
    """
    started = runner.start(device)
    runner.check_on_nonfinite(on_nonfinite)
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
    if torch_dtype != torch.float64 and not solvers.solver_class(options["solver"]).first_order:
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
                       desc=f"LSI ({options['solver']})", unit="model", executor=executor,
                       finite=_finite_columns(options), on_nonfinite=on_nonfinite)
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity,
        options={**options, "dtype": dtype, "device": str(device), "memory_budget": budget},
        n_samples=len(X), n_scored=len(table),
        n_features=int(np.prod(X.shape[1:])), n_classes=C, n_params=model.n_params,
        full_data_grad_norm=engine.full_grad_norm)
    return table


def _finite_columns(options: dict) -> tuple[str, ...]:
    """The columns that must be finite: all scores, and ``grad_norm`` except for the newton-step tier
    (which solves nothing, so its ``grad_norm`` is NaN by design)."""
    scores = ("lsi", "kl_mean", "kl_cov", *(f"lsi_{name}" for name in options.get("marginals", {})))
    return scores if options["solver"] == "newton-step" else (*scores, "grad_norm")


class _Engine:
    """Full-data fit and per-chunk leave-one-out scoring for one set of options; the solver named in the
    options (:data:`lsi.solvers.SOLVERS`) supplies the parameters and the leave-one-out precision."""

    def __init__(self, probe, X: torch.Tensor, Y: torch.Tensor, options: dict):
        self.probe, self.X, self.Y, self.o = probe, X, Y, options
        self.structure = options["hessian"]
        self.solver = solvers.solver_class(options["solver"])(probe, X, Y, options)
        self.theta_D = self.solver.fit()
        self.full_grad_norm = self.solver.full_grad_norm
        ones = torch.ones(1, len(X), dtype=X.dtype, device=X.device)
        self.P0 = curvature.precision(self.structure, probe, self.theta_D[None], X, ones, self._prior(len(X), 1))

    def _prior(self, m: int, count: int) -> torch.Tensor:
        tau = self.o["weight_decay"] * m if self.o["prior_precision"] is None else self.o["prior_precision"]
        return torch.full((count,), float(tau), dtype=torch.float64, device=self.X.device)

    def bytes_per_model(self) -> int:
        return self.solver.bytes_per_model(self.structure)

    def score(self, chunk: np.ndarray, labels: np.ndarray, ids: np.ndarray, bar) -> pd.DataFrame:
        n, o = len(self.X), self.o
        excluded = torch.as_tensor(chunk, device=self.X.device)
        w = training.loo_weights(n, excluded, dtype=self.X.dtype, device=self.X.device)
        theta, loo = self.solver.leave_one_out(excluded, w, bar)
        P1 = self.solver.precision(self.structure, self.P0, theta, excluded, w, loo, self._prior(n - 1, len(chunk)))
        mean, cov = kl_terms(self.P0, P1, loo.delta)
        return pd.DataFrame({
            "index": chunk, "id": ids[chunk], "label": labels[chunk],
            "lsi": (mean + cov).cpu().numpy(), "kl_mean": mean.cpu().numpy(), "kl_cov": cov.cpu().numpy(),
            "grad_norm": loo.grad_norm.double().cpu().numpy(),
            **({} if loo.steps is None else {"steps": loo.steps.cpu().numpy()}),
            **{f"lsi_{name}": self._marginal_kl(names, P1, loo.delta) for name, names in o.get("marginals", {}).items()},
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
    o["solver"] = solvers.solver_class(o["solver"])._key
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
    strict = not solvers.solver_class(o["solver"]).first_order
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
    delta = (lam * engine.theta_D / (n - 1))[None] @ engine.solver.inverse
    ones = torch.ones(1, n, dtype=torch.float64, device=device)
    P1 = curvature.precision("diag", engine.probe, engine.theta_D + delta, Xt, ones, engine._prior(n - 1, 1))
    mean, cov = kl_terms(engine.P0, P1, delta)
    _, prior_part = kl_terms(engine.P0, curvature.Diag(engine.P0.ggn, engine._prior(n - 1, 1)), 0 * delta)
    K = engine.probe.n_params
    return {"cov": float(cov[0]), "mean": float(mean[0]), "total": float(mean[0] + cov[0]),
            "cov_prior": float(prior_part[0]), "bound": K / (4 * n ** 2), "n": n, "n_params": K}
