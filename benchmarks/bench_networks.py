"""Leave-one-out training of the paper's small CNN: many models at once (vmap) against one at a time.

The problem: ``--n`` CIFAR-10 training images (raw pixels in [0, 1], 32 x 32,
a stratified subset), the small CNN of :mod:`lsi.networks` at each of
``--widths``, ``--models`` leave-one-out copies, ``--epochs`` full-batch
Nesterov steps (lr 0.04, momentum 0.9, weight decay 0.01) from one shared
initialisation, in ``--dtype``.

- **batched**: :func:`lsi.training.train_gd` on :class:`lsi.probes.ModuleProbe`:
  the copies' weights stacked, each with its own 0/1 sample-weight mask,
  gradients by ``torch.func.vmap`` over ``functional_call`` (what
  ``compute_lsi(probe=net, solver="gd")`` runs).
- **chunks of one**: the same :func:`~lsi.training.train_gd`, one model per call
  (what ``compute_lsi`` does when its ``memory_budget`` holds one model).
- **per-model loop**: the authors' procedure, one deep copy of the network
  per left-out sample trained by ``torch.optim.SGD(nesterov=True)`` on the data
  without it (:func:`lsi.reference.retrain_loop`).

All three run in the same process, one after the other, for each width; the
script prints the ratios (loop time / batched time: above 1 means batching
helps) and the largest parameter difference from the loop. Result:
``benchmarks/results/networks.json`` with the commit.

Usage: ``python benchmarks/bench_networks.py [--n 128] [--models 16] [--epochs 5] [--widths 4,8,8 16,32,64]``
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lsi import networks, reference, training
from lsi.data import stratified_positions
from lsi.features import extract_features
from lsi.probes import ModuleProbe
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes


def cifar_images(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-stratified CIFAR-10 training images ``(n, 3, 32, 32)`` in [0, 1] and their labels."""
    pixels = extract_features("cifar10", "pixels", limit=5000, seed=0, preprocessing="authors", progress=False)
    keep = stratified_positions(pixels.labels, n, seed=0)
    X = torch.as_tensor(pixels.features[keep], dtype=dtype).reshape(n, *networks.IMAGE_SHAPE)
    return X, torch.as_tensor(pixels.labels[keep])


def time_all(net: networks.Network, X: torch.Tensor, Y: torch.Tensor, models: int, hyper: dict,
             warm_up: bool = True) -> dict:
    """Seconds of the batched, the chunk-of-one and the per-model training of the same ``models`` LOO copies,
    after an untimed one-epoch, two-model round of each (first-call costs of vmap and autograd)."""
    if warm_up:
        time_all(net, X, Y, 2, {**hyper, "epochs": 1}, warm_up=False)
    left_out = list(range(models))
    probe = ModuleProbe(net, net.head.out_features)
    theta0 = probe.init(0, dtype=X.dtype, device=X.device)
    w = training.loo_weights(len(X), torch.tensor(left_out), dtype=X.dtype, device=X.device)
    started = time.perf_counter()
    batched = training.train_gd(probe, theta0, X, Y, w, **hyper)
    batched_s = time.perf_counter() - started
    started = time.perf_counter()
    ones = torch.cat([training.train_gd(probe, theta0, X, Y, w[b:b + 1], **hyper) for b in range(models)])
    ones_s = time.perf_counter() - started
    started = time.perf_counter()
    loop = reference.retrain_loop(net, X, Y, left_out, **hyper)
    loop_s = time.perf_counter() - started
    loop_theta = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in loop])
    return {"parameters": probe.n_params, "batched_s": batched_s, "chunks_of_one_s": ones_s,
            "per_model_loop_s": loop_s, "speedup": loop_s / batched_s, "speedup_chunks_of_one": loop_s / ones_s,
            "max_abs_parameter_difference": float(torch.maximum((batched - loop_theta).abs().max(),
                                                                (ones - loop_theta).abs().max()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=128, help="training images")
    parser.add_argument("--models", type=int, default=16, help="leave-one-out copies")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--widths", nargs="+", default=["4,8,8", "16,32,64"],
                        help="channel widths of the 3 convolutions, one run per entry (16,32,64 is the paper's)")
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/networks.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dtype = getattr(torch, args.dtype)
    X, Y = cifar_images(args.n, dtype)
    hyper = dict(lr=0.04, momentum=0.9, weight_decay=0.01, epochs=args.epochs)
    runs = {}
    for text in args.widths:
        width = tuple(int(c) for c in text.split(","))
        net = networks.build("small_cnn", n_classes=10, width=width, seed=0, dtype=dtype)
        runs[text] = time_all(net, X, Y, args.models, hyper)
        r = runs[text]
        print(f"width {text}: batched {r['batched_s']:.2f} s, chunks of one {r['chunks_of_one_s']:.2f} s, "
              f"per-model loop {r['per_model_loop_s']:.2f} s; speed-up of batching x{r['speedup']:.2f} "
              f"(chunks of one x{r['speedup_chunks_of_one']:.2f})")
    result = {
        **run_record("cpu"),
        "problem": {"data": "cifar10 train pixels in [0, 1] (authors' preprocessing), stratified subset of the "
                            "cached 5,000 (seed 0)", "n": args.n, "network": "small_cnn", "models": args.models,
                    "epochs": args.epochs, "dtype": args.dtype, **{k: v for k, v in hyper.items() if k != "epochs"}},
        "batched": "lsi.training.train_gd on ModuleProbe: stacked weights, 0/1 sample masks, torch.func.vmap",
        "chunks_of_one": "the same train_gd, one model per call (compute_lsi with a memory budget of one model)",
        "per_model_loop": "lsi.reference.retrain_loop: one torch.optim.SGD(nesterov=True) copy per left-out sample",
        "by_width": runs,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    atomic_write_bytes(args.out, json.dumps(result, indent=1).encode())


if __name__ == "__main__":
    main()
