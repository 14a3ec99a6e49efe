"""Benchmarks of the LSI core on this machine, every comparison side by side in one run.

    python benchmarks/bench_core.py [--quick] [--out benchmarks/results/core.json]

1. Matrix-multiply peak (float64 GEMM) of this machine.
2. gd tier on digits (1,797 samples, linear probe, the paper's hyperparameters,
   float64): batched engine vs the authors' per-model loop (deepcopy +
   torch.optim.SGD), both timed on a subset of models and extrapolated to all.
3. converged tier on all of digits vs the gd tier over the same samples;
   its agreement with an independent numpy Newton solve.
4. newton-step tier: time and Spearman against converged.
5. Scaling with n on random features of CIFAR-like width (d = 512, C = 10).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import lsi
from lsi import reference, training
from lsi.data import digits_pixels
from lsi.provenance import run_record
from lsi.probes import LinearProbe
from lsi.results import atomic_write_bytes

HYPER = dict(lr=0.04, momentum=0.9, weight_decay=0.01)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def matmul_peak(size: int = 2048, repeats: int = 3) -> float:
    """Best float64 GEMM rate in GFLOP/s."""
    A = torch.randn(size, size, dtype=torch.float64)
    A @ A
    best = min(timed(lambda: A @ A)[1] for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def gd_flops(n: int, d: int, C: int, models: int, epochs: int) -> float:
    """GEMM flops of the batched gd engine: forward and backward product per epoch."""
    return 2 * 2 * n * (d + 1) * C * models * epochs


def bench_gd(X, y, models: int, loop_models: int, epochs: int) -> dict:
    Xt, Yt = torch.tensor(X), torch.tensor(y)
    n, d, C = len(X), X.shape[1], 10
    probe = LinearProbe(d, C)
    theta0 = probe.init(0, dtype=torch.float64, device="cpu")
    w = training.loo_weights(n, torch.arange(models), dtype=torch.float64, device="cpu")
    training.train_gd(probe, theta0, Xt, Yt, w, epochs=2, **HYPER)
    _, batched = timed(lambda: training.train_gd(probe, theta0, Xt, Yt, w, epochs=epochs, **HYPER))
    initial = reference.linear_model(d, C, seed=0)
    reference.retrain_loop(initial, Xt, Yt, [0], epochs=5, **HYPER)      # warm-up: the first call is slow
    _, looped = timed(lambda: reference.retrain_loop(initial, Xt, Yt, list(range(loop_models)), epochs=epochs, **HYPER))
    per_batched, per_loop = batched / models * 1000 / epochs, looped / loop_models * 1000 / epochs
    return {"models_timed_batched": models, "models_timed_loop": loop_models, "epochs_timed": epochs,
            "note": "seconds are per model for the paper's 1000 epochs, extrapolated linearly from epochs_timed",
            "seconds_per_model_batched": per_batched, "seconds_per_model_loop": per_loop,
            "gflops_batched": gd_flops(n, d, C, models, epochs) / batched / 1e9,
            "gflops_loop": gd_flops(n, d, C, loop_models, epochs) / looped / 1e9,
            "all_samples_batched_s": per_batched * n, "all_samples_loop_s": per_loop * n,
            "speedup_batched_vs_loop": per_loop / per_batched}


def bench_tiers(X, y, check: int) -> dict:
    converged, t_conv = timed(lambda: lsi.compute_lsi(X, y, solver="converged", progress=False))
    screening, t_newton = timed(lambda: lsi.compute_lsi(X, y, solver="newton-step", progress=False))
    probe = LinearProbe(X.shape[1], 10)
    Xt, Yt = torch.tensor(X), torch.tensor(y)
    theta_D, _ = training.fit_optimum(probe, torch.zeros(probe.n_params, dtype=torch.float64), Xt, Yt,
                                      weight_decay=HYPER["weight_decay"], tol=1e-13)
    factor = training.factor_hessian(probe, theta_D, Xt, Yt, weight_decay=HYPER["weight_decay"])
    rows = np.random.default_rng(0).choice(len(X), size=check, replace=False)
    loo = training.solve_leave_one_out(probe, theta_D, factor, Xt, Yt, torch.tensor(rows),
                                       weight_decay=HYPER["weight_decay"])
    errors = []
    for i, delta in zip(rows, loo.delta.numpy()):
        keep = np.arange(len(X)) != i
        exact = reference.newton_logistic(X[keep], y[keep], 10, HYPER["weight_decay"]) - theta_D.numpy()
        errors.append(np.linalg.norm(delta - exact) / np.linalg.norm(exact))
    return {"converged_s": t_conv, "converged_max_grad_norm": float(converged["grad_norm"].max()),
            "converged_vs_numpy_newton_max_rel_err_delta": float(max(errors)), "checked_samples": check,
            "newton_step_s": t_newton,
            "newton_step_spearman_vs_converged": float(spearmanr(converged["lsi"], screening["lsi"]).statistic)}


def bench_scaling(sizes: list[int], d: int = 512, C: int = 10, sample: int = 128, gd_epochs: int = 5) -> list[dict]:
    """Seconds for each tier at each n; gd and converged timed on ``sample`` LOO models, extrapolated."""
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        y = np.arange(n) % C
        X = rng.normal(size=(C, d))[y] * 0.3 + rng.normal(size=(n, d))
        X /= np.sqrt(d)
        k = min(sample, n)
        row = {"n": n, "d": d, "C": C}
        _, t = timed(lambda: lsi.compute_lsi(X, y, solver="newton-step", progress=False))
        row["newton_step_s"] = t
        if n <= 20_000:
            _, t = timed(lambda: lsi.compute_lsi(X, y, solver="converged", indices=f"0:{k}", progress=False))
            row["converged_s_extrapolated"] = t * n / k
            _, t = timed(lambda: lsi.compute_lsi(X, y, solver="gd", epochs=gd_epochs, indices=f"0:{k}", progress=False))
            row["gd_1000_epochs_s_extrapolated"] = t * (1000 / gd_epochs) * n / k
            row["gd_gflops"] = gd_flops(n, d, C, k, gd_epochs) / t / 1e9
        rows.append(row)
        print(row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer models and sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core.json"))
    parser.add_argument("--parts", default="gd,tiers,scaling", help="comma-separated subset of gd, tiers, scaling")
    args = parser.parse_args()
    X, y, _ = digits_pixels()
    parts = set(args.parts.split(","))
    peak = matmul_peak()
    print(f"float64 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    result = {"provenance": run_record("cpu", script="benchmarks/bench_core.py", parts=sorted(parts),
                                       quick=args.quick),
              "machine": {"threads": torch.get_num_threads(), "matmul_peak_gflops_float64": peak}}
    if "gd" in parts:
        gd = bench_gd(X, y, models=64 if args.quick else 256, loop_models=2 if args.quick else 4,
                      epochs=50 if args.quick else 200)
        for name in ("batched", "loop"):
            gd[f"fraction_of_peak_{name}"] = gd[f"gflops_{name}"] / peak
        print("gd tier:", json.dumps(gd, indent=1))
        result["gd"] = gd
    if "tiers" in parts:
        tiers = bench_tiers(X, y, check=5 if args.quick else 20)
        if "gd" in result:
            tiers["converged_speedup_vs_gd_all_samples"] = result["gd"]["all_samples_batched_s"] / tiers["converged_s"]
        print("tiers:", json.dumps(tiers, indent=1))
        result["tiers"] = tiers
    if "scaling" in parts:
        result["scaling"] = bench_scaling([500, 2000] if args.quick else [500, 2000, 5000, 10000, 20000])
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
