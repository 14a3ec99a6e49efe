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

RUN = MappingProxyType(dict(device="cpu", memory_budget="1GiB"))
"""Run options. Every measure takes them by the same names: ``device``, ``dtype``, ``memory_budget`` (the
one scheduling knob: the memory one chunk of leave-one-out models may take), ``checkpoint`` (a folder of
finished chunks, for resuming), ``progress`` and ``executor`` (who scores the chunks)."""

LSI = MappingProxyType(dict(probe="linear", solver="converged", hessian="diag", dtype="float64",
                            device=RUN["device"], tol=1e-10, memory_budget=RUN["memory_budget"],
                            prior_precision=None))
""":func:`lsi.compute_lsi`'s other defaults."""

SUI = MappingProxyType(dict(probe="mlp", hidden=PAPER["hidden"], seed=PAPER["seed"], l2=0.0, cli_l2=1.0,
                            time="discrete", sigma=1.0, batch_size=256, dtype="float64", device=RUN["device"],
                            memory_budget=RUN["memory_budget"]))
""":func:`lsi.compute_sui`'s defaults; ``cli_l2`` is ``lsi compute --measure sui``'s ``--l2``
(a feature matrix usually gives a singular kernel, which needs ``l2 > 0``)."""

CONTRASTIVE = MappingProxyType(dict(dim=32, temperature=0.5, weight_decay=PAPER["weight_decay"], seed=PAPER["seed"],
                                    solver="converged", tol=1e-9, max_iter=20))
""":func:`lsi.contrastive.leave_one_pair_out`'s defaults: a 32-d shared embedding at temperature 0.5."""

DP = MappingProxyType(dict(lr=PAPER["lr"], momentum=PAPER["momentum"], weight_decay=PAPER["weight_decay"],
                           epochs=700, init_seed=PAPER["seed"]))
""":func:`lsi.privacy.dp_lsi`'s defaults: the paper's optimiser for 700 full-batch DP-SGD steps."""

COMPARE = MappingProxyType(dict(folds=5, sui_l2=SUI["cli_l2"], trak_proj_dim=512, psmi_estimators=500))
""":func:`lsi.compare.scores`'s options of the peer methods (cleanlab folds, SUI's L2, TRAK's projection,
PSMI's random directions); its LSI options are :data:`LSI`'s and :data:`PAPER`'s."""

MAX_MODELS_PER_CHUNK = 256
"""Upper bound on the leave-one-out models (or SUI samples) processed in one chunk."""
