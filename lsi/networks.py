"""Pixel models for the probe-to-network experiments: an MLP, the paper's small CNN, a ResNet-9 and a ResNet-18.

Every model is a :class:`Network`: a feature ``body`` followed by one linear
``head``, ``logits = head(body(x))`` for CIFAR-sized inputs ``x`` of shape
``(n, 3, 32, 32)``. The split gives the "last layer" of the paper's Appendix D:
``body`` outputs the features on which the head is a multinomial logistic regression.

Weights are drawn by :func:`build` from a local ``torch.Generator`` on the CPU
and then moved, so a seed gives the same network on every device and the
caller's random state is untouched. The draws follow PyTorch's default
initialisation (``kaiming_uniform_(a=sqrt(5))`` weights and ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))`` biases for convolutions and linear layers; unit scale and zero
shift for normalisation layers).

No model has batch normalisation: its batch statistics couple the samples, so a
sample given weight 0 in the loss would still act on the others through them, and
leave-one-out by a weight mask would not be leave-one-out. The ResNets use
per-sample group normalisation instead (see :func:`resnet9`).
"""
from __future__ import annotations

import math
import time
from copy import deepcopy
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from lsi import curvature, runner, training
from lsi.defaults import LSI, PAPER
from lsi.enums import Architecture, Solver
from lsi.kl import kl_terms
from lsi.probes import ModuleProbe
from lsi.validation import check_choice, check_indices

IMAGE_SHAPE = (3, 32, 32)
"""Input shape of every model: CIFAR-10 pixels, channels first."""


class Network(nn.Module):
    """``logits = head(body(x))``; :meth:`features` is ``body(x)``, the input of the last layer."""

    def __init__(self, body: nn.Module, head: nn.Linear):
        super().__init__()
        self.body, self.head = body, head

    def features(self, x: Tensor) -> Tensor:
        """The penultimate representation, ``(n, head.in_features)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class Residual(nn.Module):
    """``x + f(x)``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return x + self.inner(x)


def mlp(n_classes: int, width: Sequence[int] = (512, 256, 128)) -> Network:
    """Flattened pixels ``3072 -> width[0] -> ... -> width[-1] -> C`` with ReLU between the layers.

    The default widths are those of the authors' public code (``SmallMLP``); the
    paper only names "an MLP".
    """
    sizes = [math.prod(IMAGE_SHAPE), *width]
    layers: list[nn.Module] = [nn.Flatten()]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return Network(nn.Sequential(*layers), nn.Linear(sizes[-1], n_classes))


def small_cnn(n_classes: int, width: Sequence[int] = (16, 32, 64)) -> Network:
    """The paper's CNN of Appendix D: three ``conv 3x3 (padding 1) -> ReLU -> max-pool 2`` stages and a linear head.

    The paper says only "3 convolutional layers with one fully connected layer as
    head"; the channel widths (16, 32, 64), the 3x3 kernels with padding 1, the
    ReLUs and the 2x2 max-pools are those of the authors' public code
    (``SmallCNN``). A 32 px input leaves ``width[-1] x 4 x 4`` features for the
    head: 1,024 at the default widths, 33,834 parameters in all for 10 classes.
    """
    if len(width) != 3:
        raise ValueError(f"width={tuple(width)!r} must give the channels of the 3 convolutions, e.g. (16, 32, 64).")
    channels = [IMAGE_SHAPE[0], *width]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    side = IMAGE_SHAPE[1] // 2 ** len(width)
    return Network(nn.Sequential(*layers, nn.Flatten()), nn.Linear(width[-1] * side * side, n_classes))


def smooth_cnn(n_classes: int, width: Sequence[int] = (16, 32, 64)) -> Network:
    """:func:`small_cnn` made smooth: ``conv 3x3 (padding 1) -> GELU -> average-pool 2``, three times, and a linear head.

    The same widths, kernels and head as the paper's CNN, so the same parameter count
    (11,162 at widths (8, 16, 32), 33,834 at (16, 32, 64)). ReLU and max-pooling are
    piecewise linear: the objective has kinks, its minimum can sit on one, and no
    gradient tolerance certifies it. GELU and averaging are infinitely differentiable,
    so Newton's method converges quadratically to an optimum whose gradient norm is
    limited only by the floating-point resolution (:func:`fit_certified`).
    """
    if len(width) != 3:
        raise ValueError(f"width={tuple(width)!r} must give the channels of the 3 convolutions, e.g. (16, 32, 64).")
    channels = [IMAGE_SHAPE[0], *width]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU(), nn.AvgPool2d(2)]
    side = IMAGE_SHAPE[1] // 2 ** len(width)
    return Network(nn.Sequential(*layers, nn.Flatten()), nn.Linear(width[-1] * side * side, n_classes))


def _conv_norm_relu(c_in: int, c_out: int, *, pool: bool = False) -> nn.Sequential:
    """``conv 3x3 (no bias) -> GroupNorm -> ReLU [-> max-pool 2]``, the ResNet-9 building block."""
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(c_out, 8), c_out), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


def resnet9(n_classes: int, width: int = 64) -> Network:
    """The DAWNBench ResNet-9 (Page, "How to train your ResNet", 2018) with channels ``w, 2w, 4w, 8w``.

    prep ``conv(3 -> w)``; layer 1 ``conv(w -> 2w) + pool`` and a residual block of two
    ``conv(2w -> 2w)``; layer 2 ``conv(2w -> 4w) + pool``; layer 3 ``conv(4w -> 8w) + pool``
    and a residual block of two ``conv(8w -> 8w)``; global max-pool; linear head
    ``8w -> C``. ``width=64`` is the original (6.6 M parameters); narrow widths
    suit the CPU. Departures from the original, both for leave-one-out by sample
    weights: group normalisation with ``gcd(channels, 8)`` groups replaces batch
    normalisation (per-sample statistics), and the head has no fixed 0.125
    output scaling.
    """
    w = int(width)
    body = nn.Sequential(
        _conv_norm_relu(3, w),
        _conv_norm_relu(w, 2 * w, pool=True),
        Residual(nn.Sequential(_conv_norm_relu(2 * w, 2 * w), _conv_norm_relu(2 * w, 2 * w))),
        _conv_norm_relu(2 * w, 4 * w, pool=True),
        _conv_norm_relu(4 * w, 8 * w, pool=True),
        Residual(nn.Sequential(_conv_norm_relu(8 * w, 8 * w), _conv_norm_relu(8 * w, 8 * w))),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
    )
    return Network(body, nn.Linear(8 * w, n_classes))


class BasicBlock(nn.Module):
    """ResNet-18's block: ``relu(x' + f(x))`` with ``f`` two ``conv 3x3 -> GroupNorm`` (a ReLU between) and
    ``x'`` the input, or a ``conv 1x1 -> GroupNorm`` projection when the stride or the width changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        norm = lambda c: nn.GroupNorm(math.gcd(c, 8), c)
        self.inner = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), norm(c_out), nn.ReLU(),
                                   nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), norm(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.shortcut(x) + self.inner(x))


def resnet18(n_classes: int, width: int = 64) -> Network:
    """ResNet-18 for 32 px inputs (He et al. 2016, the usual CIFAR variant) with channels ``w, 2w, 4w, 8w``.

    Stem ``conv 3x3 (3 -> w) -> GroupNorm -> ReLU`` (no 7x7 convolution and no
    max-pool, which would shrink a 32 px image too early); four stages of two
    :class:`BasicBlock`, strides 1, 2, 2, 2; global average pool; linear head
    ``8w -> C``. ``width=64`` is the standard network (11.2 M parameters). As in
    :func:`resnet9`, group normalisation replaces batch normalisation.
    """
    w = int(width)
    widths, layers = [w, 2 * w, 4 * w, 8 * w], [_conv_norm_relu(3, w)]
    for c_in, c_out, stride in zip([w, *widths[:-1]], widths, [1, 2, 2, 2]):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Network(body, nn.Linear(8 * w, n_classes))


ARCHITECTURES: dict[Architecture, Callable[..., Network]] = {
    Architecture.MLP: mlp, Architecture.SMALL_CNN: small_cnn, Architecture.SMOOTH_CNN: smooth_cnn,
    Architecture.RESNET9: resnet9,
    Architecture.RESNET18: resnet18}


def initialise(net: nn.Module, generator: torch.Generator) -> None:
    """Draw every parameter as PyTorch's ``reset_parameters`` would, from ``generator``, in module order."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build(name: str, *, n_classes: int = 10, width: int | Sequence[int] | None = None, seed: int = 0,
          device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> Network:
    """The front door: ``"mlp"``, ``"small_cnn"``, ``"resnet9"`` or ``"resnet18"`` with seeded weights.

    ``width`` is the architecture's width argument (hidden sizes for the MLP,
    three channel counts for the CNN, the base width ``w`` of the ResNets);
    ``None`` keeps the default. The module is created on the meta device (no
    draws from the global generator), materialised on the CPU in float32,
    initialised from ``torch.Generator().manual_seed(seed)`` and then cast to
    ``dtype`` and moved to ``device``: the weights are those of the float32
    module PyTorch builds after ``torch.manual_seed(seed)``, rounded to ``dtype``.
    """
    key = check_choice(name, Architecture, name="network")
    with torch.device("meta"):
        net = ARCHITECTURES[key](n_classes, *([] if width is None else [width]))
    net = net.to_empty(device="cpu").to(torch.float32)  # whatever the default dtype
    initialise(net, torch.Generator().manual_seed(int(seed)))
    return net.to(device=device, dtype=dtype)


def head_parameters(net: Network) -> list[str]:
    """Names (in ``named_parameters`` order) of the last layer's parameters: ``head.weight``, ``head.bias``."""
    return [name for name, _ in net.named_parameters() if name.startswith("head.")]


def with_parameters(net: Network, theta: Tensor) -> Network:
    """A copy of ``net`` holding the flat parameter vector ``theta`` (``parameters()`` order, as
    :class:`lsi.probes.ModuleProbe` flattens it), in ``theta``'s dtype and on its device."""
    copy = deepcopy(net).to(device=theta.device, dtype=theta.dtype)
    nn.utils.vector_to_parameters(theta, copy.parameters())
    return copy


def fit(net: Network, inputs: Tensor, labels: Tensor, *, solver: str = "gd", epochs: int = PAPER["epochs"],
        lr: float = PAPER["lr"], momentum: float = PAPER["momentum"], weight_decay: float = PAPER["weight_decay"],
        tol: float = LSI["tol"]) -> Network:
    """The full-data network ``theta_D`` that ``lsi.compute_lsi(inputs, labels, probe=net, ...)`` computes.

    ``epochs`` full-batch Nesterov steps from ``net``'s weights on the mean
    cross-entropy plus ``(lambda/2) ||theta||^2`` (:func:`lsi.training.fit_first_order`,
    in the dtype and on the device of ``inputs``); with ``solver="warm-start"``,
    then on to gradient norm ``tol/10``, as that tier does (``tol`` is ignored by ``"gd"``).
    Returns a new network (``net`` is untouched) whose :meth:`Network.features`
    are the frozen features of the "last layer" LSI.
    """
    solver = check_choice(solver, Solver, name="solver").value
    if solver not in ("gd", "warm-start"):
        raise ValueError(f"solver={solver!r} does not train networks; choose 'gd' or 'warm-start'.")
    probe = ModuleProbe(net, net.head.out_features)
    theta0 = probe.init(0, dtype=inputs.dtype, device=inputs.device)
    theta = training.fit_first_order(probe, theta0, inputs, labels, lr=lr, momentum=momentum,
                                     weight_decay=weight_decay, epochs=epochs,
                                     tol=tol / 10 if solver == "warm-start" else None)
    return with_parameters(net, theta)


def train(net: Network, inputs: Tensor, labels: Tensor, *, epochs: int, lr: float = PAPER["lr"],
          momentum: float = PAPER["momentum"], weight_decay: float = PAPER["weight_decay"],
          batch_size: int | None = None, seed: int = 0) -> Network:
    """A copy of ``net`` trained by ``SGD(lr, momentum, nesterov=True, weight_decay)`` on the mean cross-entropy.

    The paper's procedure (Appendix N) with an optional mini-batch schedule, for
    the learnability experiments where a network is trained on a subset and
    then evaluated: ``batch_size=None`` takes one full-batch step per epoch
    (the same trajectory as :func:`fit`); otherwise every epoch visits the samples in
    batches of ``batch_size``, in an order drawn from ``torch.Generator().manual_seed(seed)``.
    The copy lives in ``inputs``' dtype and on its device; ``net`` is untouched.
    """
    model = deepcopy(net).to(device=inputs.device, dtype=inputs.dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True,
                                weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(int(seed))
    size = len(inputs) if batch_size is None else int(batch_size)
    for _ in range(epochs):
        order = torch.arange(len(inputs)) if batch_size is None else torch.randperm(len(inputs), generator=generator)
        for batch in order.to(inputs.device).split(size):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    return model


def train_and_evaluate(name: str, train_inputs, train_labels, test_inputs, test_labels, *, n_classes: int = 10,
                       width: int | Sequence[int] | None = None, seed: int = 0, epochs: int,
                       batch_size: int | None = None, lr: float = PAPER["lr"], momentum: float = PAPER["momentum"],
                       weight_decay: float = PAPER["weight_decay"], device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Build network ``name`` from ``seed`` (:func:`build`), :func:`train` it on the training images and
    return its accuracy on them (the learnability of the set) and on the test images.

    Images come as arrays of shape ``(n, 3, 32, 32)`` or flattened channels-first ``(n, 3072)`` (as the
    ``pixels`` extractor gives them); ``seed`` also orders the mini-batches. Returns ``train_accuracy``,
    ``test_accuracy`` and ``wall_time_s`` (build, training and both evaluations).
    """
    start = time.perf_counter()

    def tensors(inputs, labels) -> tuple[Tensor, Tensor]:
        x = torch.as_tensor(inputs, dtype=dtype, device=device).reshape(-1, *IMAGE_SHAPE)
        return x, torch.as_tensor(labels, dtype=torch.long, device=device)

    (X, y), (Xt, yt) = tensors(train_inputs, train_labels), tensors(test_inputs, test_labels)
    net = build(name, n_classes=n_classes, width=width, seed=seed, device=device, dtype=dtype)
    net = train(net, X, y, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                batch_size=batch_size, seed=seed)
    return {"train_accuracy": accuracy(net, X, y), "test_accuracy": accuracy(net, Xt, yt),
            "wall_time_s": time.perf_counter() - start}


@torch.no_grad()
def accuracy(net: nn.Module, inputs: Tensor, labels: Tensor, *, batch_size: int = 1024) -> float:
    """Share of ``inputs`` whose largest logit is the label, evaluated ``batch_size`` at a time."""
    hits = sum(int((net(x).argmax(1) == y).sum()) for x, y in zip(inputs.split(batch_size), labels.split(batch_size)))
    return hits / len(inputs)


def forward_flops(net: nn.Module, shape: Sequence[int] = IMAGE_SHAPE) -> int:
    """Multiply-adds x 2 of one forward pass on one input of ``shape``, counted over the convolutions and
    linear layers (``2 * outputs * fan_in`` each; activations, pooling and normalisation are not counted).

    A training step costs about three forward passes per sample (forward,
    and a backward pass of about twice its cost), which turns this count into the
    time estimates of the probe-to-network chapters.
    """
    counts: list[int] = []

    def count(module: nn.Module, _inputs, output: Tensor) -> None:
        counts.append(2 * output.numel() * module.weight[0].numel())

    shadow = deepcopy(net).to(device="meta", dtype=torch.float32)  # shapes only: nothing is computed
    for module in shadow.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.register_forward_hook(count)
    shadow(torch.empty(1, *shape, device="meta", dtype=torch.float32))
    return sum(counts)


CERTIFIED_TOL = 1e-6
"""Gradient norm of the mean objective to which :func:`fit_certified` and :func:`leave_one_out_lsi` solve."""


class GaussNewtonModule(ModuleProbe):
    """A :class:`ModuleProbe` whose dense ``hessian`` is the generalised Gauss-Newton matrix.

    The exact Hessian of a network costs one Hessian-vector product per parameter
    (11,162 passes over the data for the half-width CNN: hours on a CPU); the GGN
    ``sum_j J_j^T (diag p_j - p_j p_j^T) J_j`` costs C per-sample Jacobian passes and
    is positive semi-definite. Here it only preconditions: the Newton steps of
    :func:`newton_pcg` use exact Hessian-vector products, and the stopping test is
    the exact gradient.
    """

    def hessian(self, theta, X, Y, w, *, chunk: int = 64):
        return self.ggn_full(theta, X, w, chunk=chunk)


def _objective(probe: ModuleProbe, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, weight_decay: float) -> Tensor:
    """``L(theta) = sum_j w_j CE_j(theta) / sum_j w_j + (lambda/2) ||theta||^2`` at one ``theta``."""
    return (probe.ce(theta[None], X, Y)[0] * w).sum() / w.sum() + 0.5 * weight_decay * theta.dot(theta)


def _gradient(probe: ModuleProbe, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, weight_decay: float) -> Tensor:
    """``grad L(theta)`` of :func:`_objective` at one ``theta``."""
    return training.objective_grad(probe, theta[None], X, Y, w[None], weight_decay)[0]


def _lbfgs(params: list[Tensor], steps: int, *, tol: float) -> torch.optim.LBFGS:
    """The L-BFGS both stages of the fit use: unit step, strong Wolfe line search, 50 pairs, at most ``steps``
    iterations and ``2 steps`` evaluations, stopping at a gradient entry of at most ``tol`` in absolute value."""
    return torch.optim.LBFGS(params, lr=1, max_iter=steps, max_eval=2 * steps, tolerance_grad=tol,
                             tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe")


def newton_pcg(probe: ModuleProbe, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, *, weight_decay: float,
               precondition: Callable[[Tensor], Tensor], tol: float, max_newton: int = 30,
               cg_iter: int = 50) -> tuple[Tensor, float]:
    """Newton's method on ``L`` (:func:`_objective`) with exact Hessian-vector products, from ``theta``.

    Each step solves ``H s = -g`` by conjugate gradients preconditioned with
    ``precondition`` (an approximate ``H^-1``: the Gauss-Newton matrix's Cholesky
    solve), to a residual of ``min(0.1, sqrt||g||) ||g||`` (superlinear convergence),
    then backtracks on ``L`` (Armijo). Where the whole step's predicted decrease ``-g.s`` is below what
    evaluating ``L`` resolves (:data:`ROUND_OFF` ``eps |L|``: only near the optimum), Armijo cannot judge it,
    and the full step is taken if it lowers ``||g||``. Stops at ``||g|| <= tol``, after ``max_newton``
    steps, or when no step lowers ``L`` (or there ``||g||``) any more: the float64 floor. Returns
    ``(theta, ||g||)`` at the last iterate: the caller judges the norm.
    """
    m = w.sum()
    for step_count in range(max_newton + 1):
        g = _gradient(probe, theta, X, Y, w, weight_decay)
        norm = float(g.norm())
        if norm <= tol or step_count == max_newton:  # the norm returned is always that of the theta returned
            break
        hvp = lambda v: probe.hvp(theta, X, Y, w, v[None])[0] / m + weight_decay * v
        step = training.preconditioned_cg(hvp, -g, precondition, tol=min(0.1, norm ** 0.5) * norm, max_iter=cg_iter)
        value, slope, t = _objective(probe, theta, X, Y, w, weight_decay), float(g @ step), 1.0
        if slope >= 0:  # not a descent direction: fall back on the preconditioned gradient
            step = -precondition(g)
            slope = float(g @ step)
        if -slope <= ROUND_OFF * torch.finfo(theta.dtype).eps * abs(float(value)):
            # The whole step's decrease is below what evaluating L resolves (near the optimum, where a Newton
            # step gains g^T H^-1 g / 2 ~ 1e-17): the gradient, not L, judges it; no gain is the float64 floor.
            if float(_gradient(probe, theta + step, X, Y, w, weight_decay).norm()) >= norm:
                break
            theta = theta + step
            continue
        while t > 1e-10 and _objective(probe, theta + t * step, X, Y, w, weight_decay) > value + 1e-4 * t * slope:
            t /= 2
        if t <= 1e-10:
            break
        theta = theta + t * step
    return theta, norm


ROUND_OFF = 1024
"""Multiples of the machine epsilon times ``|L|`` below which a change of ``L`` may be round-off: the objective
sums ``n`` cross-entropies and the weight norm, each rounded, so its error grows with ``n`` (pairwise: ``log n``)."""


def fit_certified(net: Network, inputs: Tensor, labels: Tensor, *, weight_decay: float = PAPER["weight_decay"],
                  tol: float = CERTIFIED_TOL, lbfgs_steps: int = 1000, metric_steps: int = 0,
                  max_newton: int = 30) -> tuple[Network, dict]:
    """The full-data optimum of a smooth network, certified by its gradient norm.

    Minimises ``L(theta) = (1/n) sum_j CE_j + (lambda/2) ||theta||^2`` from ``net``'s
    weights in three stages, each until ``||grad L|| <= tol``:

    1. L-BFGS (strong Wolfe line search), at most ``lbfgs_steps`` iterations;
    2. L-BFGS in the metric of the Gauss-Newton matrix (:func:`lbfgs_gauss_newton`), at most
       ``metric_steps`` iterations: where plain L-BFGS crawls along a long curved valley;
    3. :func:`newton_refreshed`: Newton's method with exact Hessian-vector products, preconditioned by the
       Cholesky factor of the Gauss-Newton matrix, at most ``max_newton`` steps (quadratic convergence once
       in the optimum's basin).

    If no step lowers ``L`` any more first, the returned ``grad_norm`` is the tightest float64 reaches and
    ``reached_tol`` is False. ``trivial`` is True when the fit ended at a network that predicts every class
    alike (``L >= ln C``, the zero network's value): a strict local minimum at large ``lambda``, which a
    gradient norm alone would certify. ``inputs`` should be float64. Returns a new network (``net`` is
    untouched) and ``{"grad_norm", "reached_tol", "objective", "trivial", "lbfgs_steps", "metric_steps",
    "newton_steps", "wall_time_s"}``.
    """
    start = time.perf_counter()
    model = deepcopy(net).to(device=inputs.device, dtype=inputs.dtype)
    params = list(model.parameters())

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), labels) + 0.5 * weight_decay * sum(
            p.pow(2).sum() for p in params)
        loss.backward()
        return loss

    optimizer = _lbfgs(params, lbfgs_steps, tol=tol)
    optimizer.step(closure)
    lbfgs_iterations = optimizer.state[params[0]].get("n_iter", 0)
    probe = GaussNewtonModule(model, model.head.out_features)
    theta = nn.utils.parameters_to_vector(params).detach()
    w = torch.ones(len(inputs), dtype=inputs.dtype, device=inputs.device)
    theta, _, metric_iterations = lbfgs_gauss_newton(probe, theta, inputs, labels, w, weight_decay=weight_decay,
                                                     tol=tol, steps=metric_steps)
    theta, grad_norm, newton_steps = newton_refreshed(probe, theta, inputs, labels, w, weight_decay=weight_decay,
                                                      tol=tol, max_newton=max_newton)
    objective = float(_objective(probe, theta, inputs, labels, w, weight_decay))
    return with_parameters(model, theta), {"grad_norm": grad_norm, "reached_tol": grad_norm <= tol,
                                           "objective": objective,
                                           "trivial": objective >= math.log(model.head.out_features) - 1e-12,
                                           "lbfgs_steps": int(lbfgs_iterations), "metric_steps": metric_iterations,
                                           "newton_steps": newton_steps, "wall_time_s": time.perf_counter() - start}


def lbfgs_gauss_newton(probe: GaussNewtonModule, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, *,
                       weight_decay: float, tol: float, steps: int,
                       round_steps: int | None = None) -> tuple[Tensor, float, int]:
    """L-BFGS on ``L`` (:func:`_objective`) in the metric of the Gauss-Newton matrix, from ``theta``.

    Each round factors ``G = GGN / m + lambda I = R R^T`` (Cholesky) at its first iterate ``theta_r`` and runs
    L-BFGS on ``y -> L(theta_r + R^-T y)``, whose gradient is ``R^-1 grad L`` and whose Gauss-Newton matrix at
    ``y = 0`` is the identity: the layers' very different curvature scales, which plain L-BFGS must learn
    from 50 pairs, are taken out by one factorisation. A round ends after ``round_steps`` iterations
    (default :data:`ROUND_STEPS`) and the factor is refreshed. Stops as soon as an evaluated point has
    ``||grad L|| <= tol``, or after ``steps`` iterations in all. Returns ``(theta, ||grad L||, iterations)``.
    """
    round_steps = round_steps or ROUND_STEPS
    grad = lambda t: _gradient(probe, t, X, Y, w, weight_decay)
    grad_norm, done = float(grad(theta).norm()), 0
    while done < steps and grad_norm > tol:
        factor = _gauss_newton_factor(probe, theta, X, Y, w, weight_decay)
        to_theta = lambda y, origin=theta, factor=factor: origin + torch.linalg.solve_triangular(
            factor.T, y[:, None], upper=True)[:, 0]
        y = torch.zeros_like(theta, requires_grad=True)
        budget = min(round_steps, steps - done)
        optimizer = _lbfgs([y], budget, tol=0.0)
        reached: list[tuple[Tensor, float]] = []

        def closure():
            point = to_theta(y.detach())
            g = grad(point)
            if float(g.norm()) <= tol:
                reached.append((point, float(g.norm())))
                raise _Reached
            y.grad = torch.linalg.solve_triangular(factor, g[:, None], upper=False)[:, 0]
            return _objective(probe, point, X, Y, w, weight_decay).detach()

        previous = theta
        try:
            optimizer.step(closure)
        except _Reached:
            pass
        done += max(1, optimizer.state[y].get("n_iter", 0))
        if reached:
            return reached[0][0], reached[0][1], done
        theta = to_theta(y.detach())
        grad_norm = float(grad(theta).norm())
        if torch.equal(theta, previous):
            break
    return theta, grad_norm, done


class _Reached(Exception):
    """Raised inside an L-BFGS closure at a point within the tolerance, to stop there."""


ROUND_STEPS = 200
"""L-BFGS iterations of :func:`lbfgs_gauss_newton` between two Gauss-Newton factorisations."""


def newton_refreshed(probe: GaussNewtonModule, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor, *,
                     weight_decay: float, tol: float, max_newton: int) -> tuple[Tensor, float, int]:
    """:func:`newton_pcg` on the objective weighted by ``w``, preconditioned by the Cholesky factor of its own
    Gauss-Newton matrix at the current iterate, refactored every :data:`REFRESH_EVERY` steps, until
    ``||grad L|| <= tol``, ``max_newton`` steps, or no step lowers ``L`` even with a fresh factor (the float64
    floor). Returns ``(theta, ||grad L||, Newton steps taken)``."""
    grad_norm = float(_gradient(probe, theta, X, Y, w, weight_decay).norm())
    newton_steps = 0
    while newton_steps < max_newton and grad_norm > tol:
        factor = _gauss_newton_factor(probe, theta, X, Y, w, weight_decay)
        precondition = lambda v, factor=factor: torch.cholesky_solve(v[:, None], factor)[:, 0]
        refresh = min(REFRESH_EVERY, max_newton - newton_steps)
        previous, (theta, grad_norm) = theta, newton_pcg(
            probe, theta, X, Y, w, weight_decay=weight_decay, precondition=precondition, tol=tol, max_newton=refresh)
        newton_steps += refresh
        if torch.equal(theta, previous):
            break
    return theta, grad_norm, newton_steps


REFRESH_EVERY = 3
"""Newton steps of :func:`newton_refreshed` between two Gauss-Newton preconditioners: far from the optimum the
curvature changes from step to step, near it one factor serves until the end."""


def _gauss_newton_factor(probe: GaussNewtonModule, theta: Tensor, X: Tensor, Y: Tensor, w: Tensor,
                         weight_decay: float) -> Tensor:
    """Cholesky factor of the mean-form Gauss-Newton matrix ``GGN / m + lambda I`` at ``theta``."""
    ggn = probe.hessian(theta, X, Y, w) / w.sum()
    ggn.diagonal().add_(weight_decay)
    return torch.linalg.cholesky(ggn)


def _solve_left_out(probe: GaussNewtonModule, theta_D: Tensor, X: Tensor, Y: Tensor, w: Tensor, *,
                    weight_decay: float, tol: float, precondition: Callable[[Tensor], Tensor],
                    refresh: bool = True) -> tuple[Tensor, float]:
    """One left-out network from ``theta_D``: :func:`newton_pcg` preconditioned by the full-data factor downdated
    for the sample (cheap, enough for most); with ``refresh``, one that stops short of ``tol`` (a sample whose
    removal moves the network far) continues with :func:`newton_refreshed`, its own Gauss-Newton factor
    refreshed as it goes (a dense factorisation every few steps: worth it only from a certified ``theta_D``).
    Where that stalls too (a flat, indefinite stretch the first steps led into, which the round-off of the
    preconditioner alone can decide), the refreshed Newton steps start over from ``theta_D``; the better end counts."""
    theta, grad_norm = newton_pcg(probe, theta_D, X, Y, w, weight_decay=weight_decay, tol=tol,
                                  precondition=precondition)
    if refresh and grad_norm > tol:
        theta, grad_norm, _ = newton_refreshed(probe, theta, X, Y, w, weight_decay=weight_decay, tol=tol,
                                               max_newton=LEFT_OUT_REFRESHED_STEPS)
    if refresh and grad_norm > tol:
        restart, restart_norm, _ = newton_refreshed(probe, theta_D, X, Y, w, weight_decay=weight_decay, tol=tol,
                                                    max_newton=LEFT_OUT_REFRESHED_STEPS)
        if restart_norm < grad_norm:
            theta, grad_norm = restart, restart_norm
    return theta, grad_norm


LEFT_OUT_REFRESHED_STEPS = 30
"""Newton steps with refreshed factors a left-out network gets after the downdated preconditioner leaves it short."""


def _weights(net: Network, inputs: Tensor) -> Tensor:
    """``net``'s parameters as one flat vector, on ``inputs``' device and in its dtype."""
    return nn.utils.parameters_to_vector(net.parameters()).detach().to(device=inputs.device, dtype=inputs.dtype)


DENSE_HESSIAN_LIMIT = 6000
"""Parameter counts up to which :func:`smallest_hessian_eigenvalue` forms the dense Hessian (K products, a
K x K float64 matrix: 288 MB at the limit) and takes its exact eigenvalues."""


def smallest_hessian_eigenvalue(net: Network, inputs: Tensor, labels: Tensor, *,
                                weight_decay: float = PAPER["weight_decay"], tol: float = 1e-8,
                                dense_limit: int = DENSE_HESSIAN_LIMIT, chunk: int = 16) -> float:
    """Smallest eigenvalue of the exact Hessian of ``L`` (:func:`_objective`, all samples) at ``net``'s weights.

    The second-order half of a certificate: a gradient norm alone admits saddle points (a negative value) and
    optima so flat that the norm does not pin them down (:func:`lsi.claims.determined`). Up to ``dense_limit``
    parameters, the dense Hessian from ``K`` exact Hessian-vector products (``chunk`` at a time) and its
    eigenvalues by LAPACK: exact, whatever the spectrum (about 13 minutes for the quarter-width CNN, K = 4,146,
    on 400 images on two CPU cores). Above it, Lanczos iteration (``scipy.sparse.linalg.eigsh``,
    ``which="SA"``, to relative ``tol``) on the same products; Lanczos needs about ``sqrt(width / gap)``
    products, so a few eigenvalues crowded near zero under a wide spectrum (a flat minimum) make it slow.
    """
    probe = ModuleProbe(net, net.head.out_features)
    theta = _weights(net, inputs)
    w = torch.ones(len(inputs), dtype=inputs.dtype, device=inputs.device)
    if len(theta) <= dense_limit:
        hessian = probe.hessian(theta, inputs, labels, w, chunk=chunk) / len(inputs)
        hessian.diagonal().add_(weight_decay)                          # + lambda I, without a second K x K matrix
        return float(torch.linalg.eigvalsh(0.5 * (hessian + hessian.T))[0])
    from scipy.sparse.linalg import LinearOperator, eigsh

    def apply(v: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=theta.dtype, device=theta.device)
        return (probe.hvp(theta, inputs, labels, w, v[None])[0] / len(inputs) + weight_decay * v).cpu().numpy()

    operator = LinearOperator((len(theta), len(theta)), matvec=apply, dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(len(theta))
    return float(eigsh(operator, k=1, which="SA", tol=tol, v0=start, return_eigenvectors=False)[0])


def leave_one_out_lsi(net: Network, inputs: Tensor, labels: Tensor, indices: Sequence[int], *,
                      weight_decay: float = PAPER["weight_decay"], tol: float = CERTIFIED_TOL,
                      ids: Sequence | None = None, marginals: dict[str, list[str]] | None = None,
                      chunk: int = 16, checkpoint: str | None = None, progress: bool = False,
                      executor: Callable | None = None) -> pd.DataFrame:
    """Exact LSI of the samples ``indices`` of a smooth network at its full-data optimum (diagonal Laplace).

    ``net`` holds ``theta_D`` (from :func:`fit_certified`). Each left-out network is
    warm-started at ``theta_D`` and solved by :func:`newton_pcg` on its own objective
    (exact Hessian-vector products) to ``||grad L_{D\\i}|| <= tol``, preconditioned by
    the full-data Gauss-Newton matrix with the sample's own curvature removed
    (:class:`lsi.training.LeaveOneOutHessian`: one inverse for all samples, a
    rank-C Woodbury downdate each); if ``theta_D`` itself is within ``tol``, one left short of ``tol``
    continues with its own Gauss-Newton factor (:func:`_solve_left_out`). A network that still stops short keeps its gradient
    norm in ``grad_norm``: the verdict rules judge it (:func:`lsi.claims.converged`).
    The posteriors are the diagonal GGN Laplace of :func:`lsi.compute_lsi` with prior
    precision ``m * weight_decay``; ``lsi = KL`` between the left-out and the full-data
    posterior. ``marginals`` adds ``lsi_<name>`` columns, the same KL over the named
    parameters' coordinates (``networks.head_parameters``: the authors' last-layer LSI).

    The samples (sorted and unique, :func:`lsi.validation.check_indices`) go through :func:`lsi.runner.run`
    ``chunk`` at a time: with ``checkpoint`` (a folder) every finished chunk is stored under the run's identity
    (data, ``theta_D``, options), and a rerun after a kill solves only the chunks that are missing; ``executor``
    scores them elsewhere (:data:`lsi.runner.Executor`). Returns the columns ``index, id, label, lsi, kl_mean,
    kl_cov, grad_norm, displacement`` (``||theta_-i - theta_D||``, what :func:`lsi.claims.determined` sets the
    gradient norm's distance bound against) and ``attrs["lsi"]``: the runner's provenance with ``full_data_grad_norm``,
    ``max_grad_norm`` (over the full-data and every left-out network) and ``tol``.
    """
    probe = GaussNewtonModule(net, net.head.out_features)
    theta_D = _weights(net, inputs)
    started = runner.start(inputs.device)
    options = {"weight_decay": weight_decay, "tol": tol, "marginals": marginals or {}, "hessian": "diag"}
    identity = runner.run_identity("lsi-network", options, data=runner.fingerprint(inputs, labels),
                                   module=runner.fingerprint(theta_D))
    n = len(inputs)
    ones = torch.ones(n, dtype=inputs.dtype, device=inputs.device)
    full_grad_norm = float(_gradient(probe, theta_D, inputs, labels, ones, weight_decay).norm())
    scorer = _LeftOutScorer(probe, theta_D, inputs, labels, weight_decay=weight_decay, tol=tol, ids=ids,
                            marginals=marginals or {}, refresh=full_grad_norm <= tol)
    table = runner.run(check_indices(indices, n), scorer.score, size=chunk, identity=identity,
                       checkpoint=checkpoint, progress=progress, desc="left-out networks", unit="network",
                       executor=executor, finite=("lsi", "kl_mean", "kl_cov"))
    table.attrs["lsi"] = runner.provenance(
        started, identity=identity, options=options, n_samples=n, n_scored=len(table), n_params=len(theta_D),
        full_data_grad_norm=full_grad_norm, tol=tol,
        max_grad_norm=max(full_grad_norm, float(table["grad_norm"].max())))
    return table


class _LeftOutScorer:
    """Scores chunks of left-out samples for :func:`leave_one_out_lsi`: what every chunk shares (the full-data
    posterior, the Gauss-Newton inverse, the marginal coordinates) is computed once, on the first chunk."""

    def __init__(self, probe: GaussNewtonModule, theta_D: Tensor, X: Tensor, Y: Tensor, *, weight_decay: float,
                 tol: float, ids: Sequence | None, marginals: dict[str, list[str]], refresh: bool):
        self.probe, self.theta_D, self.X, self.Y = probe, theta_D, X, Y
        self.weight_decay, self.tol, self.ids, self.refresh = weight_decay, tol, ids, refresh
        self.marginals, self._shared = marginals, None

    def _prior(self, m: int, count: int) -> Tensor:
        return torch.full((count,), self.weight_decay * m, dtype=torch.float64, device=self.X.device)

    def shared(self) -> tuple[Tensor, curvature.Diag, dict[str, Tensor]]:
        """``(GGN inverse, full-data posterior, coordinates of each marginal)``, computed on first use."""
        if self._shared is None:
            probe, n = self.probe, len(self.X)
            inverse = training.hessian_inverse(probe, self.theta_D, self.X, self.Y, weight_decay=self.weight_decay)
            ones = torch.ones(1, n, dtype=self.X.dtype, device=self.X.device)
            P0 = curvature.diag(probe, self.theta_D[None], self.X, ones, self._prior(n, 1))
            offsets = np.cumsum([0, *probe.sizes])
            coords = {name: torch.as_tensor(np.concatenate([np.arange(offsets[k], offsets[k + 1])
                                                            for k, part in enumerate(probe.names) if part in names]),
                                            device=self.X.device)
                      for name, names in self.marginals.items()}
            self._shared = inverse, P0, coords
        return self._shared

    def score(self, rows: np.ndarray, bar: Any) -> pd.DataFrame:
        """One row per left-out sample of ``rows``; ``bar`` advances by one per network solved."""
        inverse, P0, coords = self.shared()
        probe, X, n = self.probe, self.X, len(self.X)
        excluded = torch.as_tensor(rows, device=X.device)
        downdated = training.LeaveOneOutHessian(probe, self.theta_D, inverse, X, excluded)
        w = training.loo_weights(n, excluded, dtype=X.dtype, device=X.device)
        solved = []
        for b in range(len(rows)):
            solved.append(_solve_left_out(probe, self.theta_D, X, self.Y, w[b], weight_decay=self.weight_decay,
                                          tol=self.tol, refresh=self.refresh,
                                          precondition=lambda v, b=b: downdated.solve(v[None], torch.tensor([b]))[0]))
            bar.update(1)
        theta = torch.stack([t for t, _ in solved])
        delta, grad_norm = theta - self.theta_D, np.array([g for _, g in solved])
        P1 = curvature.Diag(probe.ggn_diag(theta, X, w), self._prior(n - 1, len(rows)))
        mean, cov = kl_terms(P0, P1, delta)
        marginal = {f"lsi_{name}": sum(kl_terms(curvature.Diag(P0.ggn[:, c], P0.prior),
                                                curvature.Diag(P1.ggn[:, c], P1.prior), delta[:, c])).cpu().numpy()
                    for name, c in coords.items()}
        return pd.DataFrame({
            "index": rows, "id": rows if self.ids is None else np.asarray(self.ids)[rows],
            "label": self.Y[excluded].cpu().numpy(), "lsi": (mean + cov).cpu().numpy(),
            "kl_mean": mean.cpu().numpy(), "kl_cov": cov.cpu().numpy(), "grad_norm": grad_norm,
            "displacement": delta.norm(dim=1).cpu().numpy(), **marginal})
