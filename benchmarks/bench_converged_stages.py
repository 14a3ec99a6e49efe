"""Where the converged tier's time goes: wall time per stage of the leave-one-out solves, beside its FLOP floor.

    python benchmarks/bench_converged_stages.py [--n 20000] [--models 1024] \
        [--out benchmarks/results/converged_stages.json]

The data are ``bench_core``'s synthetic features of CIFAR-like width (d = 512, C = 10). Each stage of
:func:`lsi.training.solve_leave_one_out` is timed by wrapping the function that does it (in this process only):
the passes over the data that verify each step and give the next gradient, the diagonal-GGN pass at each
solution, the chord solves with the Woodbury-downdated ``M^-1``, their set-up, the closed-form first step and
the Anderson mixing. Beside them: ``bench_core``'s floor (two passes of ``4 n d C`` FLOP per model at the GEMM
rate measured in the same process) and the FLOP of what the floor leaves out but the exact diagonal posterior
cannot skip: the GGN pass (``2 n d C``) and the ``K x K`` products (``2 K^2`` per model for the set-up and per
chord solve). Their sum at the GEMM rate is the least time any implementation of this algorithm can take.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import lsi
from lsi import probes, training
from lsi.provenance import git_commit, run_record
from lsi.results import atomic_write_bytes

from bench_core import matmul_peak, synthetic

STAGES = {(training.LeaveOneOutHessian, "__init__"): "set-up of the downdate (A J_i^T, C x C factors)",
          (training.LeaveOneOutHessian, "solve_at_optimum"): "first step (closed form)",
          (training.LeaveOneOutHessian, "solve"): "chord solves (g A + downdate)",
          (training.AndersonMixing, "step"): "Anderson mixing",
          (training, "gradient_at_optimum"): "first gradient (closed form)",
          (training, "solve_leave_one_out"): "all leave-one-out solves"}


def timed_stages() -> collections.Counter:
    """Wrap every stage of :data:`STAGES` and the linear probe's passes with a timer; return the seconds spent."""
    spent = collections.Counter()

    def wrap(owner, name, label):
        function = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            spent[label] += time.perf_counter() - start
            return result
        setattr(owner, name, timed)

    for (owner, name), label in STAGES.items():
        wrap(owner, name, label)
    passes = probes.LinearProbe.grad_and_ggn_diag

    def grad_and_ggn_diag(self, theta, X, Y, w):
        start = time.perf_counter()
        g, ggn = passes(self, theta, X, Y, w)
        spent["passes over the data (a step's check and the next gradient)"] += time.perf_counter() - start

        def ggn_timed(rows):
            start = time.perf_counter()
            result = ggn(rows)
            spent["diagonal GGN pass at the solutions"] += time.perf_counter() - start
            return result
        return g, ggn_timed
    probes.LinearProbe.grad_and_ggn_diag = grad_and_ggn_diag
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="samples (default 20,000)")
    parser.add_argument("--models", type=int, default=1024, help="leave-one-out models timed (default 1,024)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "converged_stages.json")
    args = parser.parse_args()
    X, y = synthetic(args.n)
    d, C = X.shape[1], 10
    K = (d + 1) * C
    spent = timed_stages()
    peak = matmul_peak()
    start = time.perf_counter()
    table = lsi.compute_lsi(X, y, solver="converged", indices=f"0:{args.models}", progress=False)
    total = time.perf_counter() - start
    steps = float(table["steps"].mean())
    floor = args.models * 2 * 4 * args.n * d * C / peak / 1e9
    unavoidable = floor + args.models * (2 * args.n * d * C + 2 * K ** 2 * (1 + steps)) / peak / 1e9
    solves = spent["all leave-one-out solves"]
    result = {"n": args.n, "d": d, "C": C, "K": K, "models": args.models, "gemm_gflops": peak,
              "steps_per_solve_mean": steps, "max_grad_norm": float(table["grad_norm"].max()),
              "total_s": total, "leave_one_out_solves_s": solves,
              "outside_the_solves_s": total - solves,
              "outside_note": "the full-data fit, the K x K factorisation and the KL terms: paid once per run or "
                              "per chunk, so their share falls as the models timed grow",
              "floor_s": floor, "solves_over_floor": solves / floor,
              "unavoidable_s": unavoidable, "unavoidable_over_floor": unavoidable / floor,
              "unavoidable_note": "the floor plus the diagonal GGN pass (2 n d C per model) and the K x K products "
                                  "(2 K^2 per model for the set-up and per chord solve), all at the GEMM rate",
              "stages_s": dict(spent), "commit": git_commit(Path(__file__).resolve().parent),
              "provenance": run_record("cpu")}
    atomic_write_bytes(args.out, (json.dumps(result, indent=1, default=str) + "\n").encode())
    print(f"{args.models:,} models, n = {args.n:,}, d = {d}: solves {solves:.2f} s = {solves / floor:.2f} x the floor "
          f"({floor:.2f} s at {peak:.0f} GFLOP/s); the unavoidable FLOP alone are {unavoidable / floor:.2f} x it")
    for stage, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {seconds:7.2f} s  {stage}")


if __name__ == "__main__":
    main()
