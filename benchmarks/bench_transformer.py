"""Seconds per sample: the one-step KFAC LSI estimate against a real leave-one-out fine-tune.

The problem: SST-2 training sentences through all-MiniLM-L6-v2, frozen except for a
rank-``--rank`` LoRA-FA adapter in the last block and a linear head
(:mod:`lsi.transformer`), objective mean cross-entropy + (wd/2)||theta||^2, the
full-data fine-tune solved by Newton-CG to gradient norm ``--tol``.

- **estimate**: ``compute_finetune_lsi(solver="newton-step", hessian="kfac")`` for
  ``--estimates`` samples (one Newton step in the KFAC metric without the sample,
  plus the KL), per sample = total / count.
- **real fine-tune**: ``compute_finetune_lsi(solver="converged", hessian="kfac")`` for
  ``--refits`` samples at evenly spaced ranks of the estimate (each a Newton-CG
  fine-tune without the sample, warm-started at theta_D, to the same tolerance, plus
  the KFAC at its solution and the KL), per sample = total / count.

Both run side by side in one process on the same fit; the JSON also gives their
agreement on the refitted samples. Caching the MiniLM activations and the full-data
fine-tune are timed separately (shared by both). Result:
``benchmarks/results/transformer.json`` with the commit.

Usage: ``python benchmarks/bench_transformer.py [--n 800] [--rank 16] [--estimates 200] [--refits 10]``
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from lsi import stats
from lsi import transformer as tr
from lsi.data import load_dataset
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=800, help="SST-2 training sentences (stratified, seed 0)")
    parser.add_argument("--rank", type=int, default=16, help="adapter rank")
    parser.add_argument("--estimates", type=int, default=200, help="samples scored by the estimate")
    parser.add_argument("--refits", type=int, default=10, help="samples refitted for real")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--tol", type=float, default=1e-9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/transformer.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]  # another job on the cores slows both sides alike; the record says how busy they were

    sentences = load_dataset("sst2", "train", limit=args.n, seed=0)
    inputs, cache_s = timed(lambda: tr.minilm_inputs(sentences.texts, rank=args.rank, seed=0))
    head = tr.probe_head(inputs, sentences.labels, weight_decay=args.weight_decay)
    fit, fit_s = timed(lambda: tr.fine_tune(inputs, sentences.labels, weight_decay=args.weight_decay,
                                            tol=args.tol, head=head))
    scored = np.linspace(0, len(sentences.labels) - 1, args.estimates).astype(int)
    estimate, estimate_s = timed(lambda: tr.compute_finetune_lsi(fit, indices=scored, progress=False))
    picks = scored[stats.spread_across(estimate["lsi"], args.refits)]
    truth, truth_s = timed(lambda: tr.compute_finetune_lsi(fit, solver="converged", indices=picks, progress=False))
    paired = estimate.set_index("index").loc[truth["index"], "lsi"].to_numpy()

    result = {
        **run_record("cpu"),
        "problem": {"data": f"sst2 train, stratified subset of {len(sentences.labels)} (seed 0)",
                    "encoder": "all-MiniLM-L6-v2, frozen up to the last block's feed-forward output",
                    "trained": f"LoRA-FA adapter rank {args.rank} + linear head", "parameters": fit.fine_tune.K,
                    "weight_decay": args.weight_decay, "tol": args.tol},
        "shared": {"cache_activations_s": cache_s, "full_data_fine_tune_s": fit_s,
                   "full_data_newton_steps": fit.newton_steps, "full_data_grad_norm": fit.grad_norm},
        "estimate": {"how": "compute_finetune_lsi(solver='newton-step', hessian='kfac')", "samples": len(estimate),
                     "total_s": estimate_s, "seconds_per_sample": estimate_s / len(estimate)},
        "real_fine_tune": {"how": "compute_finetune_lsi(solver='converged', hessian='kfac'), warm-started at "
                                  "theta_D, same tolerance", "samples": len(truth), "total_s": truth_s,
                           "seconds_per_sample": truth_s / len(truth),
                           "max_grad_norm": float(truth["grad_norm"].max()),
                           "mean_newton_steps": float(truth["newton_steps"].mean())},
        "speedup_per_sample": (truth_s / len(truth)) / (estimate_s / len(estimate)),
        "agreement_on_refits": stats.agreement(paired, truth["lsi"]),
        "threads": torch.get_num_threads(),
        "load_average_1min_at_start": load,
    }
    print(json.dumps(result, indent=1))
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
