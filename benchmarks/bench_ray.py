"""``lsi compute --ray`` against one process on the same problem: wall time and bit identity, in one run.

Random CIFAR-like features (``--n`` samples, ``--d`` dimensions, 10 classes),
the ``--solver`` tier, the same memory budget (so the same chunks) in every run:

- **one process, 1 thread** and **one process, ``--workers`` threads**;
- **Ray, ``--workers`` tasks of 1 thread** on a local cluster this script starts
  (every task loads the engine; starting the cluster is timed apart).

The Ray table is compared with the one-thread table bit for bit. Result:
``benchmarks/results/ray.json`` with the commit.

Usage: ``python benchmarks/bench_ray.py [--n 4000] [--d 128] [--solver converged] [--workers 2]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import lsi
from lsi.distributed import RayExecutor
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes


def timed(X: np.ndarray, y: np.ndarray, threads: int, **options) -> tuple[float, object]:
    """Seconds and table of one ``compute_lsi`` run with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    table = lsi.compute_lsi(X, y, progress=False, **options)
    return time.perf_counter() - started, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--solver", default="converged")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers, and threads of the fast one-process run")
    parser.add_argument("--memory-budget", default="64MiB", help="sets the chunks (the same in every run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray.json"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    y = np.arange(args.n) % 10
    X = rng.normal(size=(10, args.d))[y] + 2.0 * rng.normal(size=(args.n, args.d))
    options = dict(solver=args.solver, memory_budget=args.memory_budget)
    one_s, one = timed(X, y, 1, **options)
    many_s, _ = timed(X, y, args.workers, **options)
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False, _node_ip_address="127.0.0.1")
    start_s = time.perf_counter() - started
    try:
        ray_s, distributed = timed(X, y, 1, executor=RayExecutor(threads=1), **options)
    finally:
        ray.shutdown()
    columns = ["index", "lsi", "kl_mean", "kl_cov", "grad_norm"]
    identical = bool(distributed[columns].equals(one[columns]))
    print(f"n={args.n} d={args.d} {args.solver}: one process 1 thread {one_s:.1f} s, {args.workers} threads "
          f"{many_s:.1f} s, Ray {args.workers} x 1 thread {ray_s:.1f} s (+ {start_s:.1f} s to start the cluster); "
          f"Ray / one thread = {ray_s / one_s:.2f}, Ray / {args.workers} threads = {ray_s / many_s:.2f}; "
          f"bit-identical to the 1-thread table: {identical}")
    result = {**{k: run_record("cpu")[k] for k in ("commit", "date", "device", "versions")},
              "n": args.n, "d": args.d, "C": 10, "solver": args.solver, "workers": args.workers,
              "memory_budget": args.memory_budget, "one_process_1_thread_s": one_s,
              f"one_process_{args.workers}_threads_s": many_s, "ray_s": ray_s, "ray_start_s": start_s,
              "ray_over_1_thread": ray_s / one_s, f"ray_over_{args.workers}_threads": ray_s / many_s,
              "bit_identical_to_1_thread": identical}
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
