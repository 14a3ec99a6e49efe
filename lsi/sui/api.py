"""The front door: :func:`compute_sui`, one row of smooth unique information per sample."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from lsi import runner
from lsi.defaults import SUI
from lsi.enums import DType, Probe
from lsi.probes import make_probe
from lsi.validation import (check_choice, check_features, check_indices, check_labels,
                            check_positive)

from .dynamics import Time, apply_phi, check_step_size
from .linearize import Linearization, linearize
from .loo import loo_deltas
from .measures import LyapunovMetric, functional_si, weight_si


class FlatProbe(torch.nn.Module):
    """An :mod:`lsi.probes` probe as a module with one flat parameter ``theta``.

    It starts from the same seeded initialisation as the LSI probe of the same
    kind, so SUI and LSI linearise/train the same network.
    """

    def __init__(self, kind: str, n_features: int, n_classes: int, hidden: int, seed: int):
        super().__init__()
        self.probe = make_probe(kind, n_features, n_classes, hidden)
        self.theta = torch.nn.Parameter(self.probe.init(seed, dtype=torch.float64, device="cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe.logits(self.theta[None], x)[0]


def _one_hot_targets(labels: np.ndarray, k: int, n_classes: int, targets: Any) -> np.ndarray:
    if targets is not None:
        array = check_features(targets, name="targets")
        if array.shape != (len(labels), k):
            raise ValueError(f"targets must have shape (n_samples, n_outputs) = {(len(labels), k)}, "
                             f"got {array.shape}.")
        return array
    if n_classes != k:
        raise ValueError(
            f"The model has {k} outputs but the labels have {n_classes} classes, so they cannot "
            f"be one-hot regression targets; pass targets= of shape (n_samples, {k})."
        )
    return np.eye(k)[labels]


def _check_time(t: float, time: Time) -> float:
    if t is None or (isinstance(t, float) and math.isinf(t)):
        return math.inf
    t = check_positive(t, name="t")
    if time is Time.DISCRETE and t != int(t):
        raise ValueError(f"t == {t} must be a whole number of steps for time='discrete'.")
    return t


@dataclass
class _Fitted:
    """The full-data solution that every leave-one-out problem is derived from."""

    kernel: torch.Tensor        # Theta (nk, nk)
    cross: torch.Tensor         # Theta(x, X) at the functional points (mk, nk)
    a: torch.Tensor             # Theta + l2 I
    residual: torch.Tensor      # f0(X) - Y, flattened
    alpha: torch.Tensor         # phi_t(A) r0
    inverse: torch.Tensor | None
    k: int
    t: float
    lr: float | None
    time: Time

    @classmethod
    def build(cls, jac, residual, k, cross_jac, *, l2, t, lr, time) -> "_Fitted":
        kernel = jac @ jac.T
        cross = kernel if cross_jac is None else cross_jac @ jac.T
        a = kernel + l2 * torch.eye(len(kernel), dtype=kernel.dtype, device=kernel.device)
        check_step_size(a, t=t, lr=lr, time=time)
        if math.isinf(t):
            inverse = _inverse(a)
            alpha = inverse @ residual
        else:
            inverse, alpha = None, apply_phi(a, residual, t=t, lr=lr, time=time)
        return cls(kernel, cross, a, residual, alpha, inverse, k, t, lr, time)

    def trained_residual(self) -> torch.Tensor:
        """``f_t(X) - Y = r0 - Theta alpha``."""
        return self.residual - self.kernel @ self.alpha

    def bytes_per_sample(self) -> int:
        """Memory one sample of a chunk needs: its columns of ``A^-1`` (t = inf), its dual
        iterates (discrete GD) or its reduced matrix and eigenvectors (exact path)."""
        size, item = len(self.a), self.a.element_size()
        if math.isinf(self.t):
            return item * size * (self.k + 4)
        if self.time is Time.DISCRETE and self.t <= 4 * size:
            return item * size * 6
        return item * 4 * size * size

    def deltas(self, samples: torch.Tensor) -> torch.Tensor:
        return loo_deltas(self.a, self.alpha, self.residual, samples, self.k, t=self.t, lr=self.lr,
                          time=self.time, inverse=self.inverse)


def _model_and_inputs(model_or_features, labels, inputs, heldout, probe, hidden, seed):
    """Validated (model, training inputs, heldout, labels, n_classes, kind) for either path."""
    if isinstance(model_or_features, torch.nn.Module):
        if inputs is None:
            raise ValueError("Pass the model's training inputs as inputs= when giving a model.")
        train_inputs = torch.as_tensor(inputs)
        labels, n_classes = check_labels(labels, len(train_inputs))
        held = None if heldout is None else torch.as_tensor(heldout)
        return model_or_features, train_inputs, held, labels, n_classes, "module"
    train_inputs = torch.from_numpy(check_features(model_or_features))
    labels, n_classes = check_labels(labels, len(train_inputs))
    kind = check_choice(probe, Probe, name="probe").value
    model = FlatProbe(kind, train_inputs.shape[1], n_classes, hidden, seed)
    held = None
    if heldout is not None:
        held = torch.from_numpy(check_features(heldout, name="heldout"))
        if held.shape[1] != train_inputs.shape[1]:
            raise ValueError(f"heldout has {held.shape[1]} feature columns, the training "
                             f"features {train_inputs.shape[1]}; they must match.")
    return model, train_inputs, held, labels, n_classes, kind


def compute_sui(model_or_features: torch.nn.Module | Any, labels: Any, *, inputs: Any = None,
                heldout: Any = None, targets: Any = None, probe: str = SUI["probe"], hidden: int = SUI["hidden"],
                t: float = math.inf, lr: float | None = None, l2: float = SUI["l2"],
                time: str = SUI["time"], sigma: float = SUI["sigma"], lyapunov: bool = False,
                params: list[str] | None = None, projection_dim: int | None = None,
                projection: str = "gaussian", indices: Any = None, seed: int = SUI["seed"], device: str = SUI["device"],
                dtype: str = SUI["dtype"], batch_size: int = SUI["batch_size"],
                memory_budget: str | int = SUI["memory_budget"],
                checkpoint: str | None = None, progress: bool = True, ids: Any = None,
                executor: runner.Executor | None = None, on_nonfinite: str = "raise") -> pd.DataFrame:
    """Smooth unique information (Harutyunyan et al., ICLR 2021) of each training sample.

    The network is linearised around its weights ``w0`` and trained with
    squared error, **summed** over samples, by gradient descent (see
    :mod:`lsi.sui.dynamics`); removing sample ``i`` changes the weights by
    ``dw_i`` and the function by ``df_i``, computed in closed form for every
    sample at once (:mod:`lsi.sui.loo`). Columns:

    - ``sui_weight = ||dw_i||^2 / (2 sigma^2)``
    - ``sui_functional = mean_x ||df_i(x)||^2 / (2 sigma^2)`` over ``heldout``
      points (the training inputs if ``heldout`` is None; see ``attrs``)
    - ``sui_weight_lyapunov = 1/2 dw_i^T Sigma^-1 dw_i`` if ``lyapunov``, with
      Sigma from the SGD-noise Lyapunov equation (:mod:`lsi.sui.measures`)

    Args:
        model_or_features: a ``torch.nn.Module`` (then ``inputs`` holds its
            training inputs), or an (n, d) feature array; features get a probe
            (``probe`` "mlp" or "linear", ``hidden`` units) built with LSI's
            seeded initialisation ``seed``.
        labels: integer classes 0..C-1; one-hot rows are the regression
            targets unless ``targets`` (n, k) is given.
        heldout: evaluation points for the functional SI (model inputs, or
            features on the features path).
        t, lr, time: training time, ``t`` steps of size ``lr`` ("discrete") or
            gradient flow to time ``lr*t`` ("continuous"). ``t=inf`` (default)
            is the converged solution, for all samples from one factorisation
            (Schur-complement downdates). A finite ``t`` needs ``lr`` and
            solves every reduced problem exactly: dual gradient descent in
            GEMMs (discrete, ``t <= 4nk``, O(t (nk)^2) per sample) or one
            eigendecomposition per sample (O((nk)^3)); see :mod:`lsi.sui.loo`.
        l2: L2 pull towards ``w0`` (same value in every leave-one-out problem).
        params, projection_dim, projection: linearise only these parameters /
            in a seeded random subspace of this dimension, ``"gaussian"`` or
            ``"sparse"`` (CountSketch) (large models; :mod:`lsi.sui.linearize`).
        indices: which samples to score (all by default); ``checkpoint``: a
            folder where finished chunks are kept so a killed run resumes;
            ``executor``: who scores the chunks (:func:`lsi.runner.run`).
        memory_budget: samples per chunk follow from the memory budget (:mod:`lsi.runner`, shared with
            :func:`lsi.compute_lsi`); a budget below one sample's need gives chunks of one.
        on_nonfinite: a sample whose SUI is NaN or inf is a
            :class:`lsi.validation.NonFiniteError` naming it (``"raise"``, default), or
            is kept and marked in a boolean column ``nonfinite`` (``"flag"``).
    """
    started = runner.start(device)
    runner.check_on_nonfinite(on_nonfinite)
    torch_dtype = getattr(torch, check_choice(dtype, DType, name="dtype").value)
    model, train_inputs, heldout, labels, n_classes, kind = _model_and_inputs(
        model_or_features, labels, inputs, heldout, probe, hidden, seed)
    lin_args = dict(params=params, projection_dim=projection_dim, projection=projection, seed=seed,
                    batch_size=batch_size, device=device, dtype=torch_dtype, progress=progress)
    train = linearize(model, train_inputs, **lin_args)
    held = None if heldout is None else linearize(model, heldout, **lin_args)
    module = runner.module_fingerprint(model) if kind == "module" else None
    context = dict(model=kind, hidden=hidden, params=params, projection_dim=projection_dim,
                   projection=projection, seed=seed, dtype=dtype,
                   data_sha256=runner.fingerprint(train_inputs, heldout), module_sha256=module,
                   batch_size=batch_size, started=started)
    return compute_sui_linearized(train, labels, heldout=held, targets=targets, t=t, lr=lr, l2=l2,
                                  time=time, sigma=sigma, lyapunov=lyapunov, indices=indices,
                                  device=device, memory_budget=memory_budget,
                                  checkpoint=checkpoint, progress=progress, ids=ids, context=context,
                                  executor=executor, on_nonfinite=on_nonfinite)


def compute_sui_linearized(train: Linearization, labels: Any, *, heldout: Linearization | None = None,
                           targets: Any = None, t: float = math.inf, lr: float | None = None,
                           l2: float = SUI["l2"], time: str = SUI["time"], sigma: float = SUI["sigma"],
                           lyapunov: bool = False, indices: Any = None, device: str = SUI["device"],
                           memory_budget: str | int = SUI["memory_budget"],
                           checkpoint: str | None = None, progress: bool = True, ids: Any = None,
                           context: dict | None = None, executor: runner.Executor | None = None,
                           on_nonfinite: str = "raise") -> pd.DataFrame:
    """:func:`compute_sui` from a network already linearised on the training (and held-out) inputs.

    ``train``/``heldout`` come from :func:`lsi.sui.linearize` (any ``params``,
    ``projection_dim``); one linearisation then serves many runs (several ``t``,
    ``l2``, label sets or subsets: take rows with :meth:`Linearization.take`).
    The other arguments and the columns are those of :func:`compute_sui`;
    ``context`` (used by :func:`compute_sui`) adds how the Jacobian was made to
    the provenance.
    """
    context = dict(context or {})
    started = context.pop("started", None) or runner.start(device)
    data_sha = context.pop("data_sha256", None)
    module = context.pop("module_sha256", None)
    batch_size = context.pop("batch_size", None)
    time_mode = check_choice(time, Time, name="time")
    t = _check_time(t, time_mode)
    l2 = check_positive(l2, name="l2", allow_zero=True)
    sigma = check_positive(sigma, name="sigma")
    if lr is not None:
        lr = check_positive(lr, name="lr")
    if lyapunov and math.isinf(t) and l2 == 0:
        raise ValueError("lyapunov=True needs SGD noise, which vanishes at t=inf without l2 "
                         "(the linearised model fits every target); use a finite t or l2 > 0.")
    n, k = len(train.f0), train.n_outputs
    labels, n_classes = check_labels(labels, n)
    positions = check_indices(indices, n)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"ids has {len(ids)} entries for {n} samples; give one id per sample.")
    y = torch.as_tensor(_one_hot_targets(labels, k, n_classes, targets), dtype=train.jac.dtype,
                        device=train.jac.device)
    jac = train.jac
    fit = _Fitted.build(jac, (train.f0 - y).reshape(-1), k, None if heldout is None else heldout.jac,
                        l2=l2, t=t, lr=lr, time=time_mode)
    metric = LyapunovMetric(jac, fit.trained_residual(), k, l2=l2) if lyapunov else None
    kernel, cross = fit.kernel, fit.cross

    options = dict(**{"model": "linearization", **context}, t=t, lr=lr, l2=l2, time=time_mode.value,
                   sigma=sigma, lyapunov=bool(lyapunov), n_samples=n, n_outputs=k,
                   n_parameters=jac.shape[1],
                   functional_points="heldout" if heldout is not None else "train",
                   n_functional_points=len(cross) // k, loss="sum of 1/2 squared errors")
    if data_sha is None:
        data_sha = runner.fingerprint(jac, train.f0, None if heldout is None else heldout.jac)
    identity = runner.run_identity("sui", options, data=runner.fingerprint(data_sha, y), module=module)

    def score(chunk: np.ndarray, bar) -> pd.DataFrame:
        table = pd.DataFrame({"index": chunk, "id": ids[chunk], "label": labels[chunk]})
        deltas = fit.deltas(torch.as_tensor(chunk, device=kernel.device))
        table["sui_weight"] = weight_si(kernel, deltas, sigma).cpu().numpy()
        table["sui_functional"] = functional_si(cross, deltas, k, sigma).cpu().numpy()
        if metric is not None:
            table["sui_weight_lyapunov"] = metric(deltas).cpu().numpy()
        return table

    size = runner.chunk_size(fit.bytes_per_sample(), memory_budget)
    result = runner.run(positions, score, size=size, identity=identity, checkpoint=checkpoint,
                        progress=progress, desc="SUI", executor=executor, on_nonfinite=on_nonfinite,
                        finite=("sui_weight", "sui_functional", *(("sui_weight_lyapunov",) if lyapunov else ())))
    result.attrs["lsi"] = runner.provenance(
        started, identity=identity,
        options={**options, "device": str(device), "memory_budget": memory_budget, "chunk_size": size,
                 "batch_size": batch_size},
        n_samples=n, n_scored=len(result))
    return result


def _inverse(a: torch.Tensor) -> torch.Tensor:
    """``A^-1`` by Cholesky; a clear error if the kernel is (numerically) singular.

    A Cholesky pivot ``L_jj^2`` is the Schur complement of row ``j`` given the
    rows before it; one below ``1e-10`` of the largest diagonal entry of ``A``
    means that row is (nearly) a combination of the others.
    """
    factor, info = torch.linalg.cholesky_ex(a)
    pivots = torch.diagonal(factor).pow(2)
    if int(info) != 0 or float(pivots.min()) < 1e-10 * float(torch.diagonal(a).max()):
        raise ValueError(
            "Theta + l2*I is (nearly) singular: more kernel rows (samples x outputs) than "
            "effective parameters, or duplicate samples, so the converged leave-one-out problem "
            "has no stable solution. Use l2 > 0 (e.g. 1e-3 times the mean diagonal of the "
            "kernel) or a finite t."
        )
    return torch.cholesky_inverse(factor)


def compute_sui_features(features: Any, labels: Any, **options: Any) -> pd.DataFrame:
    """SUI of a probe on frozen feature vectors: :func:`compute_sui` on an (n, d) array.

    This is the path of ``lsi compute --measure sui``; ``options`` are those of
    :func:`compute_sui` (``probe``, ``hidden``, ``l2``, ``t``, ``lr``, ``heldout``, ...).
    """
    if isinstance(features, torch.nn.Module):
        raise TypeError("compute_sui_features takes an (n, d) feature array; "
                        "use compute_sui(model, labels, inputs=...) for a network.")
    return compute_sui(features, labels, **options)
