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
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from lsi import training
from lsi.defaults import LSI, PAPER
from lsi.enums import Architecture, Solver
from lsi.probes import ModuleProbe
from lsi.validation import check_choice

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
    Architecture.MLP: mlp, Architecture.SMALL_CNN: small_cnn, Architecture.RESNET9: resnet9,
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
