"""Benchmarks of the LSI core on this machine, every comparison side by side in one run.

    python benchmarks/bench_core.py [--quick] [--out benchmarks/results/core.json]

1. Matrix-multiply peak (float64 GEMM) of this machine.
2. gd tier on digits (1,797 samples, linear probe, the paper's hyperparameters,
   float64): batched engine vs the authors' per-model loop (deepcopy +
   torch.optim.SGD), both timed on a subset of models and extrapolated to all.
3. converged tier on all of digits vs the gd tier over the same samples;
   its agreement with an independent numpy Newton solve.
4. newton-step tier: time and Spearman against converged.
5. ``--parts rows``: per n (2,000 to 50,000) and tier on synthetic features of CIFAR-like width
   (d = 512, C = 10): seconds, the FLOP floor at the GEMM rate measured in the same process and the ratio
   to it, peak RSS, and the same for a previous commit's engine (``--previous <commit>``, its ``lsi`` from
   ``git archive``). Each row runs in its own process and is appended to ``--out`` at once::

       python benchmarks/bench_core.py --parts rows --sizes 2000,5000 --previous cc6c1dc \
           --out benchmarks/results/core_rows.json

6. ``--parts exact``: only the two rows of the exact tier's targets (issue 28), the converged tier on all
   20,000 models of synthetic n = 20,000, d = 512 and on all 2,000 of the wide CIFAR-10 row (d = 1,280)::

       python benchmarks/bench_core.py --parts exact --out benchmarks/results/core_rows.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

import lsi
from lsi import reference, training
from lsi.data import digits_pixels
from lsi.provenance import git_commit, run_record
from lsi.probes import LinearProbe
from lsi.results import atomic_write_bytes

HYPER = dict(lr=0.04, momentum=0.9, weight_decay=0.01)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def pass_gemm_rate(n: int, d: int, C: int, models: int = 100, repeats: int = 3) -> float:
    """GFLOP/s of one pass-shaped GEMM, ``[X, 1] (n, d+1)`` times ``models`` folded weight matrices, its output
    freshly allocated as the engine's is: what the floor's square-GEMM peak becomes at the passes' shape."""
    X = torch.randn(n, d + 1, dtype=torch.float64)
    W = torch.randn(d + 1, C * models, dtype=torch.float64)
    X @ W
    best = min(timed(lambda: X @ W)[1] for _ in range(repeats))
    return 2 * n * (d + 1) * C * models / best / 1e9


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
    inverse = training.hessian_inverse(probe, theta_D, Xt, Yt, weight_decay=HYPER["weight_decay"])
    rows = np.random.default_rng(0).choice(len(X), size=check, replace=False)
    loo = training.solve_leave_one_out(probe, theta_D, inverse, Xt, Yt, torch.tensor(rows),
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


SYNTHETIC = ("synthetic: n samples in C = 10 classes, x = 0.3 * mu_y + N(0, I), divided by sqrt(d), "
             "mu_c ~ N(0, I), drawn with numpy default_rng(n)")


def synthetic(n: int, d: int = 512, C: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-like width features (see :data:`SYNTHETIC`)."""
    rng = np.random.default_rng(n)
    y = np.arange(n) % C
    X = rng.normal(size=(C, d))[y] * 0.3 + rng.normal(size=(n, d))
    return X / np.sqrt(d), y


CIFAR10 = ("cifar10 train: a stratified subset (seed 0) of the 5,000 images the CIFAR-10 chapter draws "
           "(limit 5000, seed 0), all 1,280 EfficientNet-Lite0 features (standard preprocessing, 224 px), "
           "from the feature cache")


def cifar10_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The wide regime: ``n`` CIFAR-10 images with every encoder feature (see :data:`CIFAR10`)."""
    from lsi.data import load_dataset, stratified_positions
    from lsi.features import extract_features
    images = load_dataset("cifar10", "train", limit=5000, seed=0)
    features = extract_features(images, "efficientnet_lite0", preprocessing="standard", progress=False)
    rows = stratified_positions(features.labels, n, seed=0)
    return np.asarray(features.features[rows], dtype=np.float64), np.asarray(features.labels[rows])


def sklearn_fit_s(X: np.ndarray, y: np.ndarray, weight_decay: float) -> float:
    """Seconds of one scikit-learn multinomial logistic regression (lbfgs) on the same objective's scale."""
    from sklearn.linear_model import LogisticRegression
    model = LogisticRegression(C=1 / (len(X) * weight_decay), max_iter=10_000)
    return timed(lambda: model.fit(X, y))[1]


FLOOR = {
    "converged": "models * 2 * 4 n d C FLOP at the GEMM rate measured in the same process: every left-out model "
                 "evaluated on all n samples twice (a step and the pass that verifies it), each pass a forward and "
                 "a backward product of 2 n d C FLOP. Not counted: the full-data fit and Hessian factorisation, "
                 "and the solves with the K x K factor (2 K^2 FLOP per model and step, K = (d + 1) C)",
    "newton-step": "n K^2 + K^3 / 3 + 2 K^2 models FLOP at the GEMM rate measured in the same process: the "
                   "full-data Hessian as a symmetric rank-n update, its Cholesky factor and one solve per scored "
                   "sample, K = (d + 1) C",
}
"""What each tier's floor counts (recorded in every row)."""


def tier_floor_flop(tier: str, n: int, d: int, C: int, models: int) -> float:
    """FLOP no implementation of a tier can avoid (:data:`FLOOR` says which)."""
    if tier == "converged":
        return models * 2 * 4 * n * d * C
    K = (d + 1) * C
    return n * K ** 2 + K ** 3 / 3 + 2 * K ** 2 * models


def measure_row(data: str, n: int, tier: str, sample: int, audit: int, C: int = 10) -> dict:
    """One tier at one n in this process: seconds, floor, peak RSS; newton-step also against an exact audit."""
    X, y = synthetic(n) if data == "synthetic" else cifar10_features(n)
    d, load = X.shape[1], os.getloadavg()[0]
    peak = matmul_peak()
    models = min(sample or n, n)
    table, seconds = timed(lambda: lsi.compute_lsi(X, y, solver=tier, indices=f"0:{models}", progress=False))
    floor = tier_floor_flop(tier, n, d, C, models) / peak / 1e9
    key = tier.replace("-", "_")
    row = {"n": n, "d": d, "C": C, "tier": tier, "models_timed": models, "gemm_gflops": peak,
           f"{key}_s" if models == n else f"{key}_s_for_models_timed": seconds,
           f"{key}_floor_s": floor, f"{key}_ratio_to_floor": seconds / floor, f"{key}_floor_definition": FLOOR[tier],
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
           "load_average_1min_at_start": load}
    if models < n:
        row[f"{key}_s_extrapolated"] = seconds * n / models
    if tier == "converged":
        steps = table["steps"].to_numpy()
        row |= {"pass_gemm_gflops": pass_gemm_rate(n, d, C),
                "converged_ggn_pass_s": models * 2 * n * d * C / peak / 1e9,
                "converged_ggn_pass_note": "the diagonal GGN of each left-out model at its solution, one more GEMM "
                                           "of 2 n d C FLOP (at the GEMM rate): the exact diagonal posterior needs "
                                           "it; the floor does not count it",
                "converged_max_grad_norm": float(table["grad_norm"].max()),
                "converged_steps_per_solve_mean": float(steps.mean()), "converged_steps_per_solve_max": int(steps.max()),
                "converged_steps_per_solve_counts": {int(k): int(v) for k, v in zip(*np.unique(steps, return_counts=True))},
                "converged_steps_note": "iterations of each leave-one-out solve, one pass over the data each "
                                        "(the first gradient is in closed form); the floor counts 2"}
        if data != "synthetic":
            row["sklearn_fit_s"] = sklearn_fit_s(X, y, HYPER["weight_decay"])
    if audit:
        rows = np.sort(np.random.default_rng(0).choice(models, size=min(audit, models), replace=False))
        exact = lsi.compute_lsi(X, y, solver="converged", indices=rows, progress=False)["lsi"].to_numpy()
        approx = table.set_index("index").loc[rows, "lsi"].to_numpy()
        row |= {"audit_samples": len(rows), "audit_spearman_vs_converged": float(spearmanr(exact, approx).statistic),
                "audit_median_rel_err_vs_converged": float(np.median(np.abs(approx - exact) / exact))}
    return row


EXACT_ROWS = (("synthetic", 20_000), ("cifar10", 2_000))
"""The converged rows of ``--parts exact``: the floor target and the wide target."""


def _archive(commit: str) -> str:
    """The package ``lsi`` of ``commit``, extracted to a temporary folder: a PYTHONPATH for a child process."""
    folder = tempfile.mkdtemp(prefix=f"lsi-{commit}-")
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", commit, "lsi"], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def bench_rows(data: str, sizes: list[int], tiers: list[str], engines: dict[str, str], out: Path, sample: int,
               audit: int) -> None:
    """Every (n, tier, engine) in its own process (clean peak RSS), appended to ``out`` as it finishes;
    rows already in ``out`` for the same commit are kept and skipped, so a stopped run continues.

    The converged tier of the previous engine, and of this one above n = 20,000, is timed on ``sample``
    left-out models and extrapolated linearly (setup included, so an over-estimate)."""
    result = json.loads(out.read_text()) if out.exists() else {"data": {"synthetic": SYNTHETIC, "cifar10": CIFAR10},
                                                                 "rows": []}
    commit = git_commit(Path(__file__).resolve().parent)
    key = lambda r: (r["data"], r["n"], r["tier"], r["engine"])
    done = {key(r) for r in result["rows"] if r["commit"] == commit}
    for n in sizes:
        for tier in tiers:
            for engine, tree in engines.items():
                if (data, n, tier, engine) in done:
                    continue
                sampled = tier == "converged" and (engine != "current" or n > 20_000) and sample < n
                models = sample if sampled else 0
                argv = [sys.executable, __file__, "--row", data, str(n), tier, str(models),
                        str(audit if tier == "newton-step" and engine == "current" else 0)]
                env = {**os.environ, "PYTHONPATH": tree}
                line = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
                row = {"data": data, **json.loads(line), "engine": engine, "commit": commit}
                result["rows"] = [r for r in result["rows"] if key(r) != key(row) or r["commit"] != commit] + [row]
                result["provenance"] = run_record("cpu", script="benchmarks/bench_core.py", parts=["rows"])
                atomic_write_bytes(out, json.dumps(result, indent=1).encode())
                print(json.dumps(row), flush=True)


def markdown(out: Path) -> str:
    """The rows of ``out`` as a Markdown table (what the README shows), newest commit's row per key."""
    rows = {}
    for r in json.loads(out.read_text())["rows"]:
        rows[(r["data"], r["n"], r["tier"], r["engine"])] = r
    lines = ["| data | n | d | tier | engine | seconds | floor (s) | ratio to floor | peak RSS (GiB) | GEMM (GFLOP/s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (data, n, tier, engine), r in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])):
        key = tier.replace("-", "_")
        seconds = r.get(f"{key}_s") or r.get(f"{key}_s_extrapolated")
        note = "" if f"{key}_s" in r else f" (from {r['models_timed']} models)"
        ratio = seconds / (r[f"{key}_floor_s"] * r["n"] / r["models_timed"]) if note else r[f"{key}_ratio_to_floor"]
        floor = r[f"{key}_floor_s"] * r["n"] / r["models_timed"] if note else r[f"{key}_floor_s"]
        lines.append(f"| {data} | {n:,} | {r['d']} | {tier} | {engine} | {seconds:,.0f}{note} | {floor:,.0f} | "
                     f"{ratio:.1f} | {r['peak_rss_gib']:.1f} | {r['gemm_gflops']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer models and sizes (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core.json"))
    parser.add_argument("--parts", default="gd,tiers",
                        help="comma-separated subset of gd, tiers, rows; or exact (the converged rows at synthetic "
                             "n = 20,000 and wide CIFAR-10 n = 2,000); or table (print --out's rows)")
    parser.add_argument("--sizes", default="2000,5000,10000,20000,50000", help="n of the rows part")
    parser.add_argument("--tiers", default="newton-step,converged", help="tiers of the rows part")
    parser.add_argument("--previous", default="", help="a previous commit whose engine (git archive) is timed too")
    parser.add_argument("--sample", type=int, default=128,
                        help="rows part: LOO models timed (then extrapolated) for the previous engine's converged "
                             "tier, and for this one's at n > 20,000")
    parser.add_argument("--audit", type=int, default=200, help="newton-step samples checked against converged")
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "cifar10"],
                        help="rows part: synthetic d = 512 features, or CIFAR-10's 1,280 encoder features (wide)")
    parser.add_argument("--row", nargs=5, help=argparse.SUPPRESS)   # data n tier models audit: one row, in a child
    args = parser.parse_args()
    if args.row:
        data, n, tier, models, audit = args.row
        print(json.dumps(measure_row(data, int(n), tier, int(models), int(audit))))
        return
    parts = set(args.parts.split(","))
    if "table" in parts:
        print(markdown(args.out))
        return
    if "exact" in parts:
        engines = {"current": str(Path(__file__).resolve().parents[1])}
        if args.previous:
            engines[f"previous:{args.previous}"] = _archive(args.previous)
        for data, n in EXACT_ROWS:
            bench_rows(data, [n], ["converged"], engines, args.out, args.sample, audit=0)
        return
    if "rows" in parts:
        sizes = [int(n) for n in args.sizes.split(",")]
        engines = {"current": str(Path(__file__).resolve().parents[1])}
        if args.previous:
            engines[f"previous:{args.previous}"] = _archive(args.previous)
        bench_rows(args.data, sizes, args.tiers.split(","), engines, args.out, args.sample, args.audit)
        return
    X, y, _ = digits_pixels()
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
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
