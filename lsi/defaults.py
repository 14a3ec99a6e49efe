"""Every default written once: the paper's hyperparameters and the run options.

The front doors (:func:`lsi.compute_lsi`, :func:`lsi.compute_sui`), the command
line (``lsi compute``) and the book runner (:mod:`lsi.book`, for chapters that
declare these parameters) all read them from here, so they cannot drift apart.

``PAPER`` is the paper's Appendix N: full-batch SGD with Nesterov momentum,
learning rate 0.04, momentum 0.9, weight decay 0.01, 1,000 epochs, one hidden
layer of 32 units for the MLP probe, seed 0.
"""
from __future__ import annotations

from types import MappingProxyType

PAPER = MappingProxyType(dict(lr=0.04, momentum=0.9, weight_decay=0.01, epochs=1000, hidden=32, seed=0))
"""The paper's training hyperparameters (Appendix N)."""

LSI = MappingProxyType(dict(probe="linear", solver="converged", hessian="diag", dtype="float64",
                            device="cpu", tol=1e-10, memory_budget="1GiB", prior_precision=None))
""":func:`lsi.compute_lsi`'s other defaults."""

SUI = MappingProxyType(dict(probe="mlp", hidden=PAPER["hidden"], seed=PAPER["seed"], l2=0.0, cli_l2=1.0,
                            time="discrete", sigma=1.0, batch_size=256, dtype="float64", device="cpu",
                            memory_budget="1GiB"))
""":func:`lsi.compute_sui`'s defaults; ``cli_l2`` is ``lsi compute --measure sui``'s ``--l2``
(a feature matrix usually gives a singular kernel, which needs ``l2 > 0``)."""

MAX_MODELS_PER_CHUNK = 256
"""Upper bound on the leave-one-out models (or SUI samples) processed in one chunk."""
