"""Options as string enums: ``"diag"`` and ``Hessian.DIAG`` are interchangeable."""
from __future__ import annotations

from enum import Enum


class Probe(str, Enum):
    """The model trained on frozen features."""

    LINEAR = "linear"
    """Multinomial logistic regression: one ``Linear(d -> C)`` layer."""
    MLP = "mlp"
    """``Linear(d -> h)``, an activation (ReLU, the paper's; or GELU / softplus), ``Linear(h -> C)``."""


class Solver(str, Enum):
    """How the leave-one-out optima are obtained."""

    GD = "gd"
    """The paper's training: full-batch SGD with Nesterov momentum for E epochs from one seeded init."""
    CONVERGED = "converged"
    """Each LOO problem warm-started at the full-data optimum and solved to a gradient tolerance."""
    NEWTON_STEP = "newton-step"
    """One Newton step from the full-data optimum for every sample at once (screening tier)."""
    WARM_START = "warm-start"
    """First-order ``converged`` for networks too large to factorise their Hessian: the full-data model
    trained ``epochs`` steps from the seeded init and on to gradient norm ``tol/10``; each LOO model
    continues the same Nesterov updates from it until its gradient norm is below ``tol``."""


class Hessian(str, Enum):
    """Structure of the posterior precision."""

    DIAG = "diag"
    """Diagonal of the GGN plus the prior: what the paper uses."""
    KFAC = "kfac"
    """Per-layer Kronecker factors of the GGN plus the prior."""
    FULL = "full"
    """The exact GGN plus the prior; small models only."""


class DType(str, Enum):
    """Floating-point precision of training and curvature."""

    FLOAT64 = "float64"
    """Default: LOO differences are tiny and need double precision."""
    FLOAT32 = "float32"
    """Faster, especially on GPUs; the KL is still accumulated in float64."""


class Architecture(str, Enum):
    """Pixel models of :mod:`lsi.networks` (CIFAR-sized inputs)."""

    MLP = "mlp"
    """Flattened pixels through ReLU hidden layers (512, 256, 128 by default)."""
    SMALL_CNN = "small_cnn"
    """The paper's CNN: three conv-ReLU-max-pool stages and a linear head (App D)."""
    SMOOTH_CNN = "smooth_cnn"
    """The paper's CNN made twice differentiable: GELU for ReLU, average- for max-pooling (App D at an optimum)."""
    RESNET9 = "resnet9"
    """The DAWNBench ResNet-9, with group normalisation in place of batch normalisation."""
    RESNET18 = "resnet18"
    """ResNet-18 in its 32 px variant (3x3 stem, no max-pool), group normalisation; the paper profile's network."""
