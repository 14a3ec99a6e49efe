"""LSI under differentially private training (the paper's App. H): DP-SGD leave-one-out with the accountant.

**Training.** Full-batch DP-SGD on a linear probe, exactly opacus's
``make_private(..., poisson_sampling=False, loss_reduction="mean")`` step
followed by PyTorch's ``SGD(lr, momentum, nesterov=True, weight_decay)``:

    g_j   = grad CE_j(theta)                      (per sample; here x~_j (p_j - e_yj)^T in closed form)
    c_j   = min(1, C / (||g_j|| + 1e-6))          (opacus's clip factor, norm over all parameters)
    grad  = (sum_j c_j g_j + sigma C xi_t) / m    (xi_t ~ N(0, I), m the training set's size)
    SGD:  d = grad + lambda theta; buf = mu buf + d; theta -= lr (d + mu buf)

Many models run in lockstep (:func:`lsi.training.train_dp`, one folded GEMM per
step): every (clipping norm, noise multiplier, seed) setting trains its full-data
model, then the runner (:mod:`lsi.runner`) trains one model without each scored
sample, chunk by chunk. **A leave-one-out model draws the same noise
``xi_t`` as its full-data model** (one generator per seed, shared by the whole
grid): the two runs then differ only by the sample, so their KL measures the
sample's own effect rather than the difference between two noise draws.

**Accounting.** Full batch means sampling rate 1 and one step per epoch: the
mechanism is ``epochs`` compositions of the Gaussian mechanism with noise
multiplier sigma. :func:`epsilon` gives its (epsilon, delta) through opacus's
RDP accountant with exactly that history. :func:`per_instance_epsilon`
replaces the worst-case sensitivity C by the sample's own clipped gradient
norm along the full-data trajectory (per-instance RDP in the sense of Wang
2017 and Yu et al. 2022), and :func:`per_instance_kl` is its order-1 limit, the
KL divergence between the two training transcripts, which bounds the KL
between the distributions of the trained parameters.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lsi import curvature, runner
from lsi.defaults import DP, RUN
from lsi.kl import kl_diag
from lsi.probes import LinearProbe
from lsi.training import train_dp
from lsi.validation import check_features, check_labels

UNPAIRED_OFFSET = 10_000
"""Seed offset of the leave-one-out noise streams when ``dp_lsi(paired=False)``."""

DEFAULT_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
"""The RDP orders opacus's accountant uses by default."""

ACCOUNTANT_ORDERS = DEFAULT_ORDERS + list(range(64, 1025))
"""Orders for :func:`epsilon`: opacus's, then every integer to 1,024, so that a weak mechanism (a small
sampling rate, much noise) still has its best order inside the grid."""

PER_INSTANCE_ORDERS = np.concatenate([DEFAULT_ORDERS, np.geomspace(64, 1e30, 9000)])
"""Orders for the per-instance bound: opacus's, then up to 1e30 (steps of 0.7%). A sample with a small
total sensitivity ``b`` has its best order near ``1 + sqrt(log(1/delta) / b)``, beyond opacus's last
(63) for ``b`` below about 1e-3; for a tiny ``b`` the conversion reaches 0 long before 1e30."""


def epsilon(noise: float, steps: int, delta: float, *, sample_rate: float = 1.0) -> float:
    """(epsilon, delta)-DP of ``steps`` Gaussian-mechanism steps with noise multiplier ``noise``,
    from opacus's RDP accountant with history ``[(noise, sample_rate, steps)]`` over
    :data:`ACCOUNTANT_ORDERS`; inf without noise."""
    if noise == 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(float(noise), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta=delta, alphas=ACCOUNTANT_ORDERS))


def per_instance_epsilon(sum_sq_sensitivity: np.ndarray, noise: float, clip: float, delta: float) -> np.ndarray:
    """Per-instance epsilon at ``delta`` from ``sum_t ||c_t g_t||^2`` of each sample (full batch, rate 1).

    Step t is a Gaussian mechanism with sensitivity ``||c_t g_t||`` and noise std
    ``sigma C``; its RDP at order a is ``a ||c_t g_t||^2 / (2 sigma^2 C^2)``, and the
    total converts to (epsilon, delta) with opacus's ``get_privacy_spent`` over
    :data:`PER_INSTANCE_ORDERS`, floored at 0.
    """
    if noise == 0:
        return np.full(len(sum_sq_sensitivity), np.inf)
    from opacus.accountants.analysis.rdp import get_privacy_spent

    orders = PER_INSTANCE_ORDERS
    base = np.asarray(sum_sq_sensitivity, float) / (2 * noise ** 2 * clip ** 2)
    # the conversion can go below 0 at large orders for a tiny b; (0, delta)-DP holds there
    return np.array([max(get_privacy_spent(orders=orders, rdp=orders * b, delta=delta)[0], 0.0) if b > 0 else 0.0
                     for b in base])  # b = 0: the sample never reached the model


def per_instance_kl(sum_sq_sensitivity: np.ndarray, noise: float, clip: float) -> np.ndarray:
    """KL between the training transcripts with and without the sample: RDP of order 1, ``sum ||c g||^2 / (2 sigma^2 C^2)``."""
    if noise == 0:
        return np.full(len(sum_sq_sensitivity), np.inf)
    return np.asarray(sum_sq_sensitivity, float) / (2 * noise ** 2 * clip ** 2)


def dp_lsi(features, labels, *, clips, noises, seeds, scored, lr: float = DP["lr"], momentum: float = DP["momentum"],
           weight_decay: float = DP["weight_decay"], epochs: int = DP["epochs"], init_seed: int = DP["init_seed"],
           delta: float | None = None, paired: bool = True, memory_budget: str | int = RUN["memory_budget"],
           checkpoint: str | Path | None = None, progress: bool = False,
           executor: runner.Executor | None = None) -> pd.DataFrame:
    """LSI of the ``scored`` samples under DP-SGD for every (clip, noise, seed), with privacy accounting.

    Every setting trains its full-data model and the leave-one-out models of the
    scored samples from the same initialisation (``init_seed``) with the same
    noise stream (the seed). The leave-one-out models go through
    :func:`lsi.runner.run` (one position per setting and scored sample, in
    chunks that fit ``memory_budget``; ``checkpoint`` resumes a killed run,
    ``executor`` spreads the chunks). LSI is the diagonal-Laplace KL (prior
    ``m * weight_decay``) at the DP-trained parameters. Columns: ``clip, noise,
    seed, index, label, lsi, kl_mean, kl_cov, eps_instance, kl_bound,
    sensitivity_rms``. ``attrs["lsi"]`` is the runner's provenance with the
    accounting: ``epsilon`` per noise multiplier (``{str(noise): epsilon}``, opacus
    RDP, sampling rate 1, ``epochs`` steps, ``delta`` default 1/n), ``delta``,
    ``steps``, ``sample_rate`` and ``n_models``. ``paired=False`` gives the
    leave-one-out models another noise stream (seed + :data:`UNPAIRED_OFFSET`), to
    show what the pairing removes.
    """
    started = runner.start("cpu")
    X = check_features(features)
    Y, C = check_labels(labels, len(X))
    n = len(X)
    scored = np.asarray(scored, dtype=np.int64)
    if scored.size == 0 or scored.min() < 0 or scored.max() >= n:
        raise ValueError(f"scored must name sample positions in 0..{n - 1}; got {scored.tolist()[:10]}.")
    options = dict(clips=[float(c) for c in clips], noises=[float(s) for s in noises], seeds=[int(s) for s in seeds],
                   scored=scored.tolist(), lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay),
                   epochs=int(epochs), init_seed=int(init_seed), delta=1.0 / n if delta is None else float(delta),
                   paired=bool(paired))
    engine = _DPEngine(torch.as_tensor(X), torch.as_tensor(Y), C, options)
    identity = runner.run_identity("dp-lsi", options, data=runner.fingerprint(X, Y))
    positions = np.arange(len(engine.settings) * len(scored))
    table = runner.run(positions, engine.score, size=runner.chunk_size(engine.bytes_per_model(), memory_budget),
                       identity=identity, checkpoint=checkpoint, progress=progress, desc="DP-SGD leave-one-out",
                       unit="model", executor=executor)
    table["index"] = scored[table["index"].to_numpy() % len(scored)]
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity, options={**options, "memory_budget": memory_budget}, n_samples=n,
        n_scored=len(scored), n_models=len(engine.settings) * (1 + len(scored)),
        epsilon={str(s): epsilon(s, options["epochs"], options["delta"]) for s in options["noises"]},
        delta=options["delta"], steps=options["epochs"], sample_rate=1.0)
    return table


class _DPEngine:
    """The full-data models of every setting, and the runner's score function for the leave-one-out ones.

    Position ``p`` is the leave-one-out model of setting ``p // len(scored)`` without
    sample ``scored[p % len(scored)]``.
    """

    def __init__(self, X: Tensor, Y: Tensor, n_classes: int, options: dict):
        self.X, self.Y, self.o = X.to(torch.float64), Y.to(torch.long), options
        n, d = X.shape
        self.probe = LinearProbe(d, n_classes)
        self.theta0 = self.probe.init(options["init_seed"], dtype=torch.float64, device="cpu")
        self.settings = [(c, s, seed) for c in options["clips"] for s in options["noises"] for seed in options["seeds"]]
        self.streams = options["seeds"] + [s + UNPAIRED_OFFSET for s in options["seeds"]]
        self.scored = np.asarray(options["scored"])
        ones = torch.ones(len(self.settings), n, dtype=torch.float64)
        self.theta_D, sums = self._train(ones, np.arange(len(self.settings)), full_data=True)
        self.sensitivity = sums.numpy()                                    # (settings, n): sum_t ||c_t g_t||^2
        self.P0 = curvature.diag(self.probe, self.theta_D, self.X, ones, self._prior(n, len(self.settings)))

    def _prior(self, m: int, count: int) -> Tensor:
        return torch.full((count,), m * self.o["weight_decay"], dtype=torch.float64)

    def _train(self, w: Tensor, setting: np.ndarray, *, full_data: bool) -> tuple[Tensor, Tensor | None]:
        """DP-SGD of the models ``w`` of the given settings; full-data models also sum their sensitivities."""
        o, seeds = self.o, self.o["seeds"]
        clip = torch.tensor([self.settings[g][0] for g in setting], dtype=torch.float64)
        noise = torch.tensor([self.settings[g][1] for g in setting], dtype=torch.float64)
        unpaired = 0 if o["paired"] or full_data else len(seeds)
        stream = torch.tensor([seeds.index(self.settings[g][2]) + unpaired for g in setting])
        track = torch.full((len(setting),), full_data)
        return train_dp(self.X, self.Y, self.theta0, w, clip, noise, stream, self.streams, lr=o["lr"],
                        momentum=o["momentum"], weight_decay=o["weight_decay"], epochs=o["epochs"], track=track)

    def bytes_per_model(self) -> int:
        """Memory of one model in a DP-SGD step: its logits, residuals and gradient norms over the ``n``
        samples, and a handful of parameter-sized tensors (noise, gradient, momentum, curvature)."""
        n, K, C = len(self.X), self.probe.n_params, self.probe.n_classes
        return 8 * (3 * n * C + 3 * n + 8 * K)

    def score(self, chunk: np.ndarray, bar=None) -> pd.DataFrame:
        """One row per leave-one-out model of ``chunk`` (positions as in the class docstring)."""
        n, o = len(self.X), self.o
        setting, sample = chunk // len(self.scored), self.scored[chunk % len(self.scored)]
        w = torch.ones(len(chunk), n, dtype=torch.float64)
        w[torch.arange(len(chunk)), torch.as_tensor(sample)] = 0
        theta, _ = self._train(w, setting, full_data=False)
        P1 = curvature.diag(self.probe, theta, self.X, w, self._prior(n - 1, len(chunk)))
        frames = []
        for g in np.unique(setting):
            rows = np.flatnonzero(setting == g)
            clip, noise, seed = self.settings[g]
            P0 = curvature.Diag(self.P0.ggn[g:g + 1], self.P0.prior[g:g + 1])
            mean, cov = kl_diag(P0, curvature.Diag(P1.ggn[rows], P1.prior[rows]), theta[rows] - self.theta_D[g])
            sens = self.sensitivity[g, sample[rows]]
            frames.append(pd.DataFrame({
                "clip": clip, "noise": noise, "seed": seed, "index": chunk[rows], "label": self.Y[sample[rows]].numpy(),
                "lsi": (mean + cov).numpy(), "kl_mean": mean.numpy(), "kl_cov": cov.numpy(),
                "eps_instance": per_instance_epsilon(sens, noise, clip, o["delta"]),
                "kl_bound": per_instance_kl(sens, noise, clip),
                "sensitivity_rms": np.sqrt(sens / o["epochs"]) / clip}))
        return pd.concat(frames, ignore_index=True)


__all__ = ["ACCOUNTANT_ORDERS", "DEFAULT_ORDERS", "PER_INSTANCE_ORDERS", "UNPAIRED_OFFSET", "dp_lsi", "scaled_cost",
           "epsilon", "per_instance_epsilon", "per_instance_kl"]


def scaled_cost(seconds: float, *, n: int, n_scored: int, n_settings: int, n_seeds: int, n_params: int,
                epochs: int, to: dict) -> dict:
    """CPU time of :func:`dp_lsi` at another scale, from a measured run.

    One step of one model costs ``~ n * K`` (the folded GEMMs), and there are
    ``settings * seeds * (1 + n_scored)`` models times ``epochs`` steps; ``to``
    overrides any of ``n, n_scored, n_settings, n_seeds, n_params, epochs``.
    """
    here = dict(n=n, n_scored=n_scored, n_settings=n_settings, n_seeds=n_seeds, n_params=n_params, epochs=epochs)
    there = {**here, **to}

    def work(s):
        return s["n"] * s["n_params"] * s["n_settings"] * s["n_seeds"] * (1 + s["n_scored"]) * s["epochs"]

    return {**there, "cpu_hours": seconds * work(there) / work(here) / 3600,
            "models": there["n_settings"] * there["n_seeds"] * (1 + there["n_scored"])}
