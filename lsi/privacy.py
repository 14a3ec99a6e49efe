"""LSI under differentially private training (the paper's App. H): DP-SGD leave-one-out with the accountant.

**Training.** Full-batch DP-SGD on a linear probe, exactly opacus's
``make_private(..., poisson_sampling=False, loss_reduction="mean")`` step
followed by PyTorch's ``SGD(lr, momentum, nesterov=True, weight_decay)``:

    g_j   = grad CE_j(theta)                      (per sample; here x~_j (p_j - e_yj)^T in closed form)
    c_j   = min(1, C / (||g_j|| + 1e-6))          (opacus's clip factor, norm over all parameters)
    grad  = (sum_j c_j g_j + sigma C xi_t) / m    (xi_t ~ N(0, I), m the training set's size)
    SGD:  d = grad + lambda theta; buf = mu buf + d; theta -= lr (d + mu buf)

Many models run in lockstep, as the probe engine batches leave-one-out models:
every (clipping norm, noise multiplier, seed) setting trains its full-data
model and one model without each scored sample, all in one folded GEMM per
step (:func:`train_dp`). **A leave-one-out model draws the same noise
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
import time

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lsi import curvature
from lsi.kl import kl_diag
from lsi.probes import LinearProbe

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
    """Full-batch DP-SGD for ``B`` linear-probe models in lockstep.

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


def dp_lsi(features, labels, *, clips, noises, seeds, scored, lr: float = 0.04, momentum: float = 0.9,
           weight_decay: float = 0.01, epochs: int = 700, init_seed: int = 0, delta: float | None = None,
           max_models: int = 512, paired: bool = True) -> pd.DataFrame:
    """LSI of the ``scored`` samples under DP-SGD for every (clip, noise, seed), with privacy accounting.

    Every setting trains its full-data model and the leave-one-out models of the
    scored samples from the same initialisation (``init_seed``) with the same
    noise stream (the seed); models are batched ``max_models`` at a time. LSI is
    the diagonal-Laplace KL (prior ``m * weight_decay``) at the DP-trained
    parameters. Columns: ``clip, noise, seed, index, label, lsi, kl_mean, kl_cov,
    eps_instance, kl_bound, clipped_share``; ``attrs["dp"]`` holds epsilon per
    setting (opacus RDP, sampling rate 1, ``epochs`` steps, ``delta`` default 1/n),
    the number of models and the wall time. ``paired=False`` gives the leave-one-out
    models another noise stream (seed + :data:`UNPAIRED_OFFSET`), to show what the pairing removes.
    """
    started = time.perf_counter()
    X = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    Y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n, d = X.shape
    probe = LinearProbe(d, int(Y.max()) + 1)
    theta0 = probe.init(init_seed, dtype=torch.float64, device="cpu")
    delta = 1.0 / n if delta is None else delta
    scored = np.asarray(scored, dtype=np.int64)
    seeds = [int(s) for s in seeds]
    specs = [(float(c), float(s), seed, excluded) for c in clips for s in noises for seed in seeds
             for excluded in [-1, *scored.tolist()]]
    thetas, tracked = [], {}
    for start in range(0, len(specs), max_models):
        chunk = specs[start:start + max_models]
        w = torch.ones(len(chunk), n, dtype=torch.float64)
        for b, spec in enumerate(chunk):
            if spec[3] >= 0:
                w[b, spec[3]] = 0
        clip = torch.tensor([s[0] for s in chunk], dtype=torch.float64)
        noise = torch.tensor([s[1] for s in chunk], dtype=torch.float64)
        stream = torch.tensor([seeds.index(s[2]) + (0 if paired or s[3] < 0 else len(seeds)) for s in chunk])
        streams = seeds + [s + UNPAIRED_OFFSET for s in seeds]
        track = torch.tensor([s[3] < 0 for s in chunk])
        theta, sums = train_dp(X, Y, theta0, w, clip, noise, stream, streams, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, epochs=epochs, track=track)
        thetas.append(theta)
        for row, b in enumerate(torch.nonzero(track).flatten().tolist()):
            tracked[chunk[b][:3]] = sums[row].numpy()
    theta_all = torch.cat(thetas)
    rows = []
    group = 1 + len(scored)
    for g in range(0, len(specs), group):
        clip, noise, seed, _ = specs[g]
        theta_D, theta_loo = theta_all[g], theta_all[g + 1:g + group]
        ones = torch.ones(1, n, dtype=torch.float64)
        w = torch.ones(len(scored), n, dtype=torch.float64)
        w[torch.arange(len(scored)), torch.as_tensor(scored)] = 0
        P0 = curvature.diag(probe, theta_D[None], X, ones, torch.tensor([n * weight_decay], dtype=torch.float64))
        P1 = curvature.diag(probe, theta_loo, X, w,
                            torch.full((len(scored),), (n - 1) * weight_decay, dtype=torch.float64))
        mean, cov = kl_diag(P0, P1, theta_loo - theta_D)
        sens = tracked[(clip, noise, seed)][scored]
        frame = pd.DataFrame({"clip": clip, "noise": noise, "seed": seed, "index": scored,
                              "label": Y[scored].numpy(), "lsi": (mean + cov).numpy(),
                              "kl_mean": mean.numpy(), "kl_cov": cov.numpy(),
                              "eps_instance": per_instance_epsilon(sens, noise, clip, delta),
                              "kl_bound": per_instance_kl(sens, noise, clip),
                              "sensitivity_rms": np.sqrt(sens / epochs) / clip})
        rows.append(frame)
    table = pd.concat(rows, ignore_index=True)
    table.attrs["dp"] = {
        "epsilon": {(float(c), float(s)): epsilon(float(s), epochs, delta) for c in clips for s in noises},
        "delta": delta, "steps": epochs, "sample_rate": 1.0, "n": n, "n_models": len(specs),
        "wall_time_s": round(time.perf_counter() - started, 3),
    }
    return table


__all__ = ["ACCOUNTANT_ORDERS", "DEFAULT_ORDERS", "PER_INSTANCE_ORDERS", "UNPAIRED_OFFSET", "dp_lsi", "scaled_cost", "epsilon", "per_instance_epsilon", "per_instance_kl",
           "train_dp"]


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
