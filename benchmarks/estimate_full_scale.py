"""FLOP-based estimate of the paper's full-scale CIFAR-10 LSI on one H100 and on a 4-GPU node (not a measurement).

The paper's setting: a linear probe on n = 50,000 CIFAR-10 feature vectors
(ResNet-18, d = 512), C = 10 classes, K = (d + 1) C parameters, one
leave-one-out model per sample, the paper's App. O reports about 18 h on one
H100 (``--paper-hours``). Matrix-product FLOP of each tier (2 FLOP per
multiply-add):

- ``gd`` (the paper's training): every one of the n + 1 models takes E full-batch
  steps, each a forward ``X theta`` and a backward ``X^T G``:
  ``F_gd = (n + 1) * E * 4 n d C``;
- ``converged``: the issue's floor, each left-out model evaluated on all n
  samples at least twice (a step and a gradient check): ``F_conv = n * 2 * 4 n d C``;
  the tier's measured distance from that floor (``converged_ratio_to_floor`` of
  ``benchmarks/results/core_rows.json``: the newest row of the current engine
  with every left-out model timed, at its largest n, against the float64 GEMM
  rate measured in the same run) scales it to what today's engine would take;
- ``newton-step``: the full-data Hessian (``n K^2``), its Cholesky factor
  (``K^3 / 3``) and two triangular solves per sample (``2 n K^2``):
  ``F_ns = K^3 / 3 + 3 n K^2``.

Assumed rates: an H100 SXM's float64 tensor-core peak (67 TFLOP/s, NVIDIA's
data sheet) at ``--efficiency`` of it (default 40%: the batched engine reaches
22-43% of this machine's GEMM peak in benchmarks/results/core.json and
core_scaling.json, and its converged tier 2-3x its FLOP floor in core_rows.json);
a 4-GPU node is 4 such GPUs with one chunk stream each (``lsi compute --ray``),
the driver's full-data fit (one factorisation) not parallelised. Softmax and memory passes are not counted, so the estimates are
lower bounds for the engine, not promises. Writes
``benchmarks/results/full_scale_estimate.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lsi.provenance import git_commit
from lsi.results import atomic_write_bytes

H100_FP64_PEAK = 67e12
"""FLOP/s: H100 SXM5 float64 tensor-core peak (data sheet; the PCIe card: 51e12)."""


def tier_flops(n: int, d: int, C: int, epochs: int) -> dict[str, float]:
    """Matrix-product FLOP of each tier for all n samples (formulas in the module docstring)."""
    K = (d + 1) * C
    pass_ = 4 * n * d * C
    return {"gd": (n + 1) * epochs * pass_, "converged_floor": n * 2 * pass_,
            "newton_step": K ** 3 / 3 + 3 * n * K ** 2}


def converged_ratio(rows_file: Path) -> tuple[float, dict]:
    """Today's converged tier over its floor, measured: of the rows of ``core_rows.json`` where the current
    engine timed every left-out model (none extrapolated), the largest n, and of those the newest."""
    rows = json.loads(rows_file.read_text())["rows"]
    measured = [(i, r) for i, r in enumerate(rows) if r["tier"] == "converged" and r["engine"] == "current"
                and r["models_timed"] == r["n"]]
    if not measured:
        raise ValueError(f"{rows_file} has no fully timed converged row of the current engine; run "
                         f"benchmarks/bench_core.py first.")
    _, row = max(measured, key=lambda item: (item[1]["n"], item[0]))
    return row["converged_ratio_to_floor"], {key: row[key] for key in (
        "n", "d", "C", "converged_s", "converged_floor_s", "gemm_gflops", "commit")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--efficiency", type=float, default=0.4, help="assumed fraction of the GPU's peak")
    parser.add_argument("--gpus", type=int, default=4, help="GPUs of the multi-GPU node")
    parser.add_argument("--paper-hours", type=float, default=18.0, help="the paper's reported CIFAR-10 time")
    parser.add_argument("--rows", type=Path, default=Path("benchmarks/results/core_rows.json"),
                        help="bench_core.py's rows: the converged tier's measured ratio to its floor")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/full_scale_estimate.json"))
    args = parser.parse_args()

    rate = H100_FP64_PEAK * args.efficiency
    flops = tier_flops(args.n, args.d, args.classes, args.epochs)
    ratio, measured = converged_ratio(args.rows)
    flops["converged_today"] = flops["converged_floor"] * ratio
    rows = [{"tier": tier, "flop": f, "h100_s": f / rate, f"node_{args.gpus}gpu_s": f / (rate * args.gpus)}
            for tier, f in flops.items()]
    print(f"n={args.n:,} d={args.d} C={args.classes}; H100 float64 at {args.efficiency:.0%} of "
          f"{H100_FP64_PEAK / 1e12:.0f} TFLOP/s = {rate / 1e12:.1f} TFLOP/s; converged today = "
          f"{ratio:.2g}x its floor ({args.rows.name}, n={measured['n']:,}, all models timed)")
    for row in rows:
        print(f"{row['tier']:>16}: {row['flop']:.3g} FLOP  one H100 {row['h100_s']:9.1f} s  "
              f"{args.gpus} GPUs {row[f'node_{args.gpus}gpu_s']:9.1f} s  "
              f"vs the paper's {args.paper_hours:g} h: {args.paper_hours * 3600 / row['h100_s']:,.0f}x")
    result = {"commit": git_commit(), "kind": "estimate from FLOP counts and assumed rates, not a measurement",
              "setting": {"n": args.n, "d": args.d, "C": args.classes, "epochs": args.epochs},
              "assumed": {"h100_fp64_peak_flops": H100_FP64_PEAK, "efficiency": args.efficiency,
                          "rate_flops": rate, "gpus": args.gpus, "paper_hours": args.paper_hours},
              "converged_ratio_to_floor": ratio, "converged_measured": measured, "tiers": rows}
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
