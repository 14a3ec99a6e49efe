"""Smooth unique information (SUI; Harutyunyan et al., ICLR 2021).

How much one training sample informs a network's weights, or the function
those weights compute. The network is linearised around its weights ``w0``,
``f(x) ~ f0(x) + J(x)(w - w0)``, and trained with summed squared error by
gradient descent, which has closed forms at every step ``t``
(:mod:`~lsi.sui.dynamics`). The change caused by removing sample ``i`` follows
for all samples from one factorisation of the tangent kernel
(:mod:`~lsi.sui.loo`, Schur complement) and is turned into information by
Gaussian smoothing (:mod:`~lsi.sui.measures`):

    SI_weight(i)     = ||w_t(D) - w_t(D\\i)||^2 / (2 sigma^2)
    SI_functional(i) = mean_x ||f_t(x; D) - f_t(x; D\\i)||^2 / (2 sigma^2)

Modules: :mod:`~lsi.sui.linearize` (Jacobians with torch.func),
:mod:`~lsi.sui.dynamics`, :mod:`~lsi.sui.loo`, :mod:`~lsi.sui.measures`,
:mod:`~lsi.sui.reference` (brute-force retraining), :mod:`~lsi.sui.summarize`
(greedy data summarisation), :mod:`~lsi.sui.api` (:func:`compute_sui`).
"""
from .api import FlatProbe, compute_sui, compute_sui_features, compute_sui_linearized
from .dynamics import Time, predictions_at, weights_at
from .linearize import Linearization, Projection, linearize
from .summarize import removal_order, summarisation_curve, summarisation_variants

__all__ = ["compute_sui", "compute_sui_features", "compute_sui_linearized", "Projection", "FlatProbe", "Time", "weights_at", "predictions_at", "linearize", "Linearization",
           "removal_order", "summarisation_curve", "summarisation_variants"]
