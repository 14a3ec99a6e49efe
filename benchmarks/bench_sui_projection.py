"""Projected Jacobian of the pretrained EfficientNet-Lite0 tail: Gaussian vs CountSketch, exact kernel beside.

The ``sui_pretrained`` chapter's setting: CIFAR-10 cats and dogs at ``--size``
pixels through the frozen trunk, the tail (last ``--blocks`` MBConv blocks, head
convolution, new linear layer) linearised at its pretrained weights. In one
process, for each projection dimension: the time of ``lsi.sui.linearize`` with
the Gaussian and with the sparse (CountSketch) projection, and each one's
relative Frobenius error of the kernel ``J R R^T J^T`` against the exact
``J J^T`` (from the unprojected Jacobian, affordable for ``--n`` images). Result:
``benchmarks/results/sui_projection.json`` with the commit.

Usage: ``python benchmarks/bench_sui_projection.py [--n 64] [--dims 256 1024 4096]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lsi.data import load_dataset, select_classes
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes
from lsi.sui import linearize
from lsi.sui import pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="images (the exact Jacobian must fit in memory)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sui_projection.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ds = select_classes(load_dataset("cifar10", "train"), [3, 5], args.n, seed=0)
    trunk, tail = pretrained.split_efficientnet_lite0(args.blocks, seed=0)
    acts = pretrained.trunk_activations(trunk, pretrained.to_pixels([ds.image(i) for i in range(args.n)], args.size))
    started = time.perf_counter()
    exact = linearize(tail, acts, batch_size=16).jac
    exact_s = time.perf_counter() - started
    kernel = exact @ exact.T
    rows = []
    for dim in args.dims:
        row = {"dim": dim}
        for kind in ("gaussian", "sparse"):
            started = time.perf_counter()
            jac = linearize(tail, acts, projection_dim=dim, projection=kind, seed=0, batch_size=16).jac
            row[f"{kind}_s"] = time.perf_counter() - started
            row[f"{kind}_kernel_rel_error"] = float(torch.linalg.norm(jac @ jac.T - kernel) / torch.linalg.norm(kernel))
        row["gaussian_over_sparse_time"] = row["gaussian_s"] / row["sparse_s"]
        rows.append(row)
        print(json.dumps(row))
    result = {**run_record("cpu"),
              "problem": {"images": args.n, "size": args.size, "blocks": args.blocks,
                          "parameters": exact.shape[1], "kernel_rows": exact.shape[0]},
              "exact_jacobian_s": exact_s, "projections": rows, "threads": torch.get_num_threads()}
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
