"""Cost of SUI for n = 1,000 samples against brute-force LOO retraining of the linearised model.

Data: the first 1,000 sklearn digits, target = digit parity (one-hot, k = 2),
network 64-32-2 (tanh), so the kernel has n*k = 2,000 rows and P = 2,146
parameters. Everything runs in one process, float64, on ``--device``.

Two settings, each with SUI and brute force side by side:

A. converged (t = inf, l2 > 0). SUI: ``compute_sui`` for all 1,000 samples
   (one Cholesky inverse + Schur downdates). Brute force: (i) gradient descent
   on the linearised model without sample i until the gradient norm falls
   below 1e-9 of its start, (ii) a direct solve of each reduced kernel system
   (n separate factorisations). Brute force is timed on ``--brute`` samples and
   extrapolated linearly to all n (the per-sample cost does not depend on i).
B. finite t (t = ``--steps`` GD steps, no L2). SUI: ``compute_sui`` for all
   n samples (dual gradient descent on all reduced problems at once, chunked
   GEMMs), measured; for reference also its other exact path (one
   eigendecomposition per reduced problem, timed on ``--brute`` samples and
   extrapolated). Brute force: literal GD on the linearised model for t steps
   without sample i, timed on ``--brute`` samples and extrapolated.

The brute-force answers are compared with SUI's on the timed samples, so the
script also reports that both compute the same thing.

Usage: ``python benchmarks/bench_sui.py [--n 1000] [--brute 3] [--device cpu]``
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from lsi.data import digits_pixels
from lsi.sui import compute_sui, linearize
from lsi.sui.dynamics import Time, coefficients
from lsi.sui.loo import loo_deltas_exact
from lsi.sui.reference import gd_linearized


def network(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)).double()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def gd_to_tolerance(jac, f0, y, *, l2, drop, tol=1e-9):
    """Literal GD with lr = 1/lambda_max until ||grad|| < tol * ||grad_0||; returns (w - w0, steps)."""
    keep = torch.ones(len(jac), dtype=torch.bool)
    keep[drop * 2:drop * 2 + 2] = False
    jk, rk = jac[keep], (f0 - y).reshape(-1)[keep]
    lr = 1.0 / (float(torch.linalg.matrix_norm(jk, ord=2)) ** 2 + l2)
    u = jac.new_zeros(jac.shape[1])
    g = jk.T @ rk
    g0, steps = float(g.norm()), 0
    while float(g.norm()) > tol * g0:
        u = u - lr * g
        g = jk.T @ (rk + jk @ u) + l2 * u
        steps += 1
    return u, steps


def direct_solve(jac, kernel, f0, y, *, l2, drop):
    """Converged weights of the reduced problem from its own Cholesky factorisation
    (the full kernel is precomputed and sliced, which favours brute force)."""
    keep = torch.ones(len(jac), dtype=torch.bool)
    keep[drop * 2:drop * 2 + 2] = False
    jk, rk = jac[keep], (f0 - y).reshape(-1)[keep]
    a = kernel[keep][:, keep] + l2 * torch.eye(len(jk), dtype=jk.dtype)
    return -jk.T @ torch.cholesky_solve(rk[:, None], torch.linalg.cholesky(a))[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="training samples (default 1000)")
    parser.add_argument("--brute", type=int, default=3, help="samples timed for brute force")
    parser.add_argument("--l2", type=float, default=50.0, help="L2 for the converged setting")
    parser.add_argument("--steps", type=int, default=500, help="GD steps for the finite-t setting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    pixels, digit_labels, _ = digits_pixels()
    x = torch.tensor(pixels[:args.n])
    labels = digit_labels[:args.n] % 2
    y = torch.tensor(np.eye(2)[labels])
    model, n, sample = network(), args.n, list(range(0, args.n, args.n // args.brute))[:args.brute]
    print(f"n={n}, kernel rows n*k={2 * n}, parameters P={sum(p.numel() for p in model.parameters())}, "
          f"threads={torch.get_num_threads()}, device={args.device}")

    lin, t_jac = timed(lambda: linearize(model, x, device=args.device))
    jac, f0 = lin.jac.cpu(), lin.f0.cpu()
    print(f"Jacobian (shared by SUI and brute force): {t_jac:.2f} s")

    # --- A. converged -------------------------------------------------------------
    sui, t_sui = timed(lambda: compute_sui(model, labels, inputs=x, l2=args.l2, device=args.device,
                                           progress=False))
    kernel = jac @ jac.T
    full = -jac.T @ torch.linalg.solve(kernel + args.l2 * torch.eye(2 * n, dtype=jac.dtype),
                                       (f0 - y).reshape(-1))
    gd_times, gd_steps, solve_times, errors = [], [], [], []
    for i in sample:
        (u, steps), dt = timed(lambda: gd_to_tolerance(jac, f0, y, l2=args.l2, drop=i))
        gd_times.append(dt)
        gd_steps.append(steps)
        _, dt = timed(lambda: direct_solve(jac, kernel, f0, y, l2=args.l2, drop=i))
        solve_times.append(dt)
        brute = float(((full - u) ** 2).sum() / 2)
        errors.append(abs(brute - sui["sui_weight"][i]) / sui["sui_weight"][i])
    gd_total, solve_total = np.mean(gd_times) * n, np.mean(solve_times) * n
    print(f"\nA. converged, l2={args.l2}")
    print(f"  SUI (Schur downdates), all {n} samples, measured:   {t_sui:10.2f} s")
    print(f"  brute force GD to tol 1e-9 ({np.mean(gd_steps):.0f} steps/sample), "
          f"{len(sample)} samples timed, extrapolated to {n}: {gd_total:10.1f} s   "
          f"ratio {gd_total / t_sui:8.1f}x")
    print(f"  brute force direct solve per sample, {len(sample)} timed, extrapolated:"
          f"          {solve_total:10.1f} s   ratio {solve_total / t_sui:8.1f}x")
    print(f"  agreement, weight SI (GD vs SUI), max rel. diff on timed samples: {max(errors):.1e}")

    # --- B. finite t --------------------------------------------------------------
    lr = 1.0 / float(torch.linalg.eigvalsh(kernel)[-1])
    sui_t, t_sui_t = timed(lambda: compute_sui(model, labels, inputs=x, t=args.steps, lr=lr,
                                               device=args.device, progress=False))
    residual = (f0 - y).reshape(-1)
    alpha = coefficients(kernel, residual, l2=0.0, t=args.steps, lr=lr, time=Time.DISCRETE)
    idx = torch.tensor(sample)
    _, t_eigh = timed(lambda: loo_deltas_exact(kernel, alpha, residual, idx, 2, t=args.steps,
                                               lr=lr, time=Time.DISCRETE))
    base = gd_linearized(jac, f0, y, lr=lr, steps=args.steps)
    gd_times, errors = [], []
    for i in sample:
        u, dt = timed(lambda: gd_linearized(jac, f0, y, lr=lr, steps=args.steps, drop=i))
        gd_times.append(dt)
        brute = float(((base - u) ** 2).sum() / 2)
        errors.append(abs(brute - sui_t["sui_weight"][i]) / brute)
    eigh_total, gd_total = t_eigh / len(sample) * n, np.mean(gd_times) * n
    print(f"\nB. finite t = {args.steps} steps, lr = 1/lambda_max = {lr:.3g}, no L2")
    print(f"  SUI (dual GD on all reduced problems), all {n} samples, measured: {t_sui_t:10.2f} s")
    print(f"  SUI via one eigh per sample, {len(sample)} timed, extrapolated:      {eigh_total:10.1f} s")
    print(f"  brute force literal GD, {len(sample)} timed, extrapolated to {n}:  {gd_total:10.1f} s   "
          f"ratio brute/SUI {gd_total / t_sui_t:6.2f}x")
    print(f"  agreement, weight SI (GD vs SUI), max rel. diff on timed samples: {max(errors):.1e}")
    print("\nExtrapolated numbers are (mean per-sample time) x n; SUI in A is one measured run.")


if __name__ == "__main__":
    main()
