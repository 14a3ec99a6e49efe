"""Real data sets behind one front door: ``load_dataset(name, split)``.

>>> ds = load_dataset("cifar10", "train", limit=1000)   # stratified, seed 0
>>> ds.ids[:3], ds.labels[:3], ds.classes[ds.labels[0]], ds.image(0).size

Each sample keeps its original id (row index or file path). The offline
mirror under ``$LSI_DATA`` is used first, then the official source (cached
under ``$LSI_DOWNLOADS``); with neither, a :class:`SourceUnavailableError`
explains how to get the data. ``DATASETS`` lists what is available.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from . import coco, images, texts
from .base import Dataset, apply_limit, select_classes, stratified_positions, stratified_split, to_pil
from .sources import SourceUnavailableError, data_root


@dataclass(frozen=True)
class DatasetSpec:
    """A registry entry: what the data set is, its splits, and where it comes from."""

    name: str
    kind: str
    splits: tuple[str, ...]
    loader: Callable[[str, Path | None], Dataset]
    offline: str
    online: str
    description: str


def _spec(name, kind, splits, loader, offline, online, description):
    return name, DatasetSpec(name, kind, tuple(splits), loader, offline, online, description)


DATASETS: dict[str, DatasetSpec] = dict([
    _spec("digits", "image", ["train"], images.load_digits, "embedded in scikit-learn", "-",
          "1,797 8x8 handwritten digits, 10 classes"),
    _spec("cifar10", "image", ["train", "test"], images.load_cifar10, "mirror cifar10/",
          "torchvision download", "CIFAR-10, 32x32, 10 classes"),
    _spec("cifar100", "image", ["train", "test"], images.load_cifar100, "none",
          "torchvision download", "CIFAR-100, 32x32, 100 classes"),
    *[_spec("cifar10n" if s == "aggre" else f"cifar10n-{s}", "image", ["train"],
            partial(images.load_cifar10n, label_set=s), "mirror cifar10/ + cifar10n/",
            "torchvision download + CIFAR-10_human.pt",
            f"CIFAR-10 training images with CIFAR-10N '{s}' human labels")
      for s in images.CIFAR10N_LABELS],
    _spec("imagenette", "image", ["train", "val"], images.load_imagenette, "none",
          "official fast.ai archive (as torchvision.datasets.Imagenette)", "10 easy ImageNet classes"),
    _spec("imagewoof", "image", ["train", "val"], images.load_imagewoof, "none",
          "official fast.ai archive", "10 ImageNet dog breeds"),
    _spec("chest_xray", "image", ["train", "test"], images.load_chest_xray, "mirror chest_xray/",
          "official archive, extracted by hand", "pediatric chest X-rays: normal, bacterial, viral"),
    _spec("imdb", "text", ["train", "test"], texts.load_imdb, "mirror imdb/", "hub stanfordnlp/imdb",
          "movie reviews, positive/negative"),
    _spec("sst2", "text", ["train", "validation", "test"], texts.load_sst2, "mirror sst2/",
          "hub SetFit/sst2", "sentences, positive/negative"),
    _spec("coco", "image-text", ["train", "val"], coco.load_coco, "mirror coco_mini/",
          "official COCO 2017, extracted by hand", "images with bananas or elephants and their captions"),
    _spec("coco_all", "image-text", ["train", "val"], coco.load_coco_all, "mirror coco_mini/",
          "official COCO 2017, extracted by hand", "all images with captions; other/banana/elephant"),
])


SPLIT_ALIASES = {"test": ("val",), "val": ("validation",), "validation": ("val",)}
"""A split a data set lacks is read as its counterpart: ``test`` -> ``val`` for Imagenette, COCO."""


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``, or a ValueError listing the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown data set {name!r}; choose one of {', '.join(DATASETS)}.") from None


def load_dataset(name: str, split: str = "train", *, limit: int | None = None, seed: int = 0,
                 root: str | Path | None = None) -> Dataset:
    """Load one split of a registered data set.

    Args:
        name: a key of :data:`DATASETS`.
        split: one of the data set's splits (``DATASETS[name].splits``); ``test`` means ``val``
            where there is no ``test`` (Imagenette, Imagewoof, COCO), and ``val``/``validation``
            are interchangeable.
        limit: if given, a fixed-seed stratified random subset of this many
            samples (never the first N rows); ids stay the original ones.
        seed: seed of that subset.
        root: mirror folder; defaults to ``$LSI_DATA``.

    Raises:
        SourceUnavailableError: neither the mirror nor the official source is
            available; the message says how to get the data.
        ValueError: unknown name or split, or a damaged mirror file.
    """
    spec = get_spec(name)
    split = next((alias for alias in SPLIT_ALIASES.get(split, ()) if split not in spec.splits
                  and alias in spec.splits), split)
    if split not in spec.splits:
        raise ValueError(f"{name} has no split {split!r}; choose one of {', '.join(spec.splits)}.")
    ds = spec.loader(split, data_root(root))
    return apply_limit(ds, limit, seed)


def digits_pixels(limit: int | None = None, seed: int = 0):
    """The embedded digits as one feature array: ``(features, labels, ids)``.

    ``features`` are the stored uint8 pixels (scikit-learn's 0..16 scaled to
    0..255 and rounded, see :func:`lsi.data.images.load_digits`) divided by 255,
    shape ``(n, 64)``, float64. The command line (``lsi compute --dataset
    digits``), the book and the tests use this one array.
    """
    import numpy as np

    ds = load_dataset("digits", limit=limit, seed=seed)
    return ds.images.reshape(len(ds), -1).astype(np.float64) / 255.0, ds.labels, ds.ids


__all__ = ["DATASETS", "Dataset", "DatasetSpec", "SourceUnavailableError", "apply_limit", "digits_pixels",
           "get_spec", "load_dataset", "select_classes", "stratified_positions", "stratified_split", "to_pil"]
