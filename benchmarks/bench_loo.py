"""Time per leave-one-out model: one refit per left-out sample against lsi's converged tier.

The problem: multinomial logistic regression on n CIFAR-10 feature vectors
(EfficientNet-Lite0, top ``--dim`` principal components, 10 classes), objective
mean cross-entropy + (wd/2)||theta||^2 with the bias penalised, solved exactly
for each of the n data sets D\\i.

- **Refit per model**: scikit-learn ``LogisticRegression`` (lbfgs, C = 1/((n-1) wd),
  no separate intercept: a column of ones, so the bias is penalised), cloned
  and fitted on D\\i from scratch. This is what pyDVL's LOO valuation
  (``compute_loo``) runs for each left-out sample, minus pyDVL's own
  scheduling; pyDVL itself cannot be installed here (no release runs with
  numpy 2), so the refit is timed directly. Timed on ``--refits`` samples and
  reported per model.
- **lsi converged**: ``compute_lsi(solver="converged")`` for all n samples (every
  LOO optimum to gradient norm 1e-10, plus the Laplace KL), per model = total / n.

Both give the same LOO optima: the script reports the largest parameter
difference on the refitted samples. Result: ``benchmarks/results/loo.json``
with the commit.

Usage: ``python benchmarks/bench_loo.py [--n 2000] [--dim 64] [--refits 20]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

import lsi
from lsi import stats, training
from lsi.data import stratified_positions
from lsi.features import extract_features
from lsi.probes import make_probe
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="training samples (from the cached 5,000)")
    parser.add_argument("--dim", type=int, default=64, help="principal components of the features")
    parser.add_argument("--refits", type=int, default=20, help="left-out samples refitted by scikit-learn")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/loo.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    fs = extract_features("cifar10", "efficientnet_lite0", limit=5000, seed=0, progress=False)
    keep = stratified_positions(fs.labels, args.n, seed=0)
    X, y = stats.principal_components(fs.features[keep], args.dim), fs.labels[keep]
    n, wd = len(y), args.weight_decay

    started = time.perf_counter()
    table = lsi.compute_lsi(X, y, solver="converged", weight_decay=wd, progress=False)
    lsi_s = time.perf_counter() - started

    Xa = np.hstack([X, np.ones((n, 1))])
    model = LogisticRegression(C=1 / ((n - 1) * wd), fit_intercept=False, tol=1e-10, max_iter=10_000)
    probe = make_probe("linear", X.shape[1], int(y.max()) + 1)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(y)
    theta_D, _ = training.fit_optimum(probe, probe.init(0, dtype=torch.float64, device="cpu"), Xt, Yt,
                                      weight_decay=wd)
    inverse = training.hessian_inverse(probe, theta_D, Xt, Yt, weight_decay=wd)
    samples = np.linspace(0, n - 1, args.refits).astype(int)
    loo = training.solve_leave_one_out(probe, theta_D, inverse, Xt, Yt, torch.as_tensor(samples),
                                       weight_decay=wd, tol=1e-10)
    times, differences = [], []
    for row, i in enumerate(samples):
        mask = np.arange(n) != i
        started = time.perf_counter()
        fitted = clone(model).fit(Xa[mask], y[mask])
        times.append(time.perf_counter() - started)
        ours = (theta_D + loo.delta[row]).view(X.shape[1] + 1, -1).numpy()
        differences.append(float(np.abs(fitted.coef_.T - ours).max() / np.abs(ours).max()))

    result = {
        **run_record("cpu"),
        "problem": {"data": "cifar10 train, cached 5,000 (seed 0), stratified subset", "n": n,
                    "features": f"efficientnet_lite0, top {args.dim} principal components",
                    "classes": int(y.max()) + 1, "parameters": probe.n_params, "weight_decay": wd},
        "refit_per_model": {"how": "sklearn LogisticRegression(lbfgs, tol 1e-10) cloned and fitted on D\\i "
                                   "(what pyDVL's compute_loo runs per sample; pyDVL not installable with numpy 2)",
                            "models_timed": len(samples), "seconds_per_model": float(np.mean(times)),
                            "all_samples_s_extrapolated": float(np.mean(times) * n)},
        "lsi_converged": {"how": "compute_lsi(solver='converged'), all n LOO optima + Laplace KL",
                          "models": n, "total_s": lsi_s, "seconds_per_model": lsi_s / n,
                          "max_grad_norm": float(table["grad_norm"].max())},
        "speedup_per_model": float(np.mean(times) / (lsi_s / n)),
        "max_relative_parameter_difference": float(max(differences)),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
