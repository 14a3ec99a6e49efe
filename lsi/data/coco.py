"""COCO image-caption pairs with their object categories.

``coco`` is the paper's subset: images with a banana or an elephant instance
(label 0 banana, 1 elephant; an image with both counts as elephant).
``coco_all`` keeps every image, labelled 0 "other", 1 banana, 2 elephant.
Ids are COCO ``image_id``s. ``ds.text(i)`` is the first caption; all five are
in ``ds.extra["captions"][i]`` and the categories in ``ds.extra["categories"][i]``.

Offline: the ``coco_mini`` mirror (159 images: train 80, val 79). Online: the
official 2017 annotations and images, extracted under ``$LSI_DOWNLOADS/coco``
(``annotations/captions_<split>2017.json``, ``annotations/instances_<split>2017.json``,
``<split>2017/*.jpg``); their 19 GB are not downloaded automatically.

:func:`caption_dataset` and :func:`assemble_pairs` turn the splits into image-caption
:class:`Pairs`, the inputs of :mod:`lsi.contrastive`; :func:`lsi.features.pairs.coco_pairs`
encodes them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Dataset
from .sources import SourceUnavailableError, download_root, mirror_file, mirror_hint, read_parquet

ALL_CLASSES = ["other", "banana", "elephant"]


def category_label(categories: list[str]) -> int:
    """0 other, 1 banana, 2 elephant (elephant wins when both are present)."""
    return 2 if "elephant" in categories else 1 if "banana" in categories else 0


def _official(split: str) -> tuple[list, list, list, list, str]:
    folder = download_root() / "coco"
    captions_file = folder / "annotations" / f"captions_{split}2017.json"
    instances_file = folder / "annotations" / f"instances_{split}2017.json"
    if not (captions_file.is_file() and instances_file.is_file()):
        raise SourceUnavailableError(
            f"coco ({split}) is not available and has no automatic download (about 19 GB). "
            f"{mirror_hint('coco_mini')} Or extract the official COCO 2017 annotations and "
            f"{split}2017 images from cocodataset.org into {folder}.")
    captions, categories = defaultdict(list), defaultdict(set)
    for ann in json.loads(captions_file.read_text())["annotations"]:
        captions[ann["image_id"]].append(ann["caption"].strip())
    instances = json.loads(instances_file.read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}
    for ann in instances["annotations"]:
        categories[ann["image_id"]].add(names[ann["category_id"]])
    image_ids = sorted(img["id"] for img in instances["images"])
    files = {img["id"]: str(folder / f"{split}2017" / img["file_name"]) for img in instances["images"]}
    return (image_ids, [files[i] for i in image_ids], [captions[i] for i in image_ids],
            [sorted(categories[i]) for i in image_ids], f"official:{folder}")


def load_coco_all(split: str, root: Path | None) -> Dataset:
    path = mirror_file(root, "coco_mini", f"{split}.parquet")
    if path is not None:
        table = read_parquet(path, ["image", "image_id", "captions", "categories"])
        image_ids = table.column("image_id").to_pylist()
        images = table.column("image").combine_chunks().field("bytes").to_pylist()
        captions = table.column("captions").to_pylist()
        categories = table.column("categories").to_pylist()
        source = f"mirror:{path}"
    else:
        image_ids, images, captions, categories, source = _official(split)
    labels = np.asarray([category_label(c) for c in categories], dtype=np.int64)
    return Dataset("coco_all", split, "image-text", np.asarray(image_ids, dtype=np.int64), labels,
                   list(ALL_CLASSES), source, images=images, texts=[c[0] for c in captions],
                   extra={"captions": captions, "categories": categories})


def load_coco(split: str, root: Path | None) -> Dataset:
    """The paper's filter: images with bananas or elephants, labelled 0 banana / 1 elephant."""
    full = load_coco_all(split, root)
    keep = np.flatnonzero(full.labels > 0)
    if len(keep) == 0:
        raise ValueError(f"coco ({split}) from {full.source} has no image with a banana or an elephant.")
    ds = full.take(keep)
    ds.name, ds.labels, ds.classes = "coco", ds.labels - 1, ["banana", "elephant"]
    ds.source += " (bananas/elephants filter)"
    return ds


@dataclass
class Pairs:
    """Image-caption pairs of a COCO split set: per-pair features and how to show them."""

    image_features: np.ndarray
    text_features: np.ndarray
    image_of_pair: np.ndarray     #: row of the image in ``images`` for each pair
    image_ids: np.ndarray         #: COCO image id per pair
    captions: list[str]
    categories: list[list[str]]   #: per pair, its image's COCO categories
    images: list                  #: encoded image per image row (decode with ``lsi.data.base.to_pil``)
    encoders: tuple[str, str]
    note: str = ""


def caption_dataset(ds: Dataset) -> Dataset:
    """The captions of a ``coco``/``coco_all`` split as a text data set: one sample per caption, in image
    order, id ``<image id>/<k>`` (label 0: captions have no class of their own)."""
    captions = [c for cs in ds.extra["captions"] for c in cs]
    ids = np.array([f"{i}/{k}" for i, cs in zip(ds.ids, ds.extra["captions"]) for k in range(len(cs))])
    return Dataset(f"{ds.name}_captions", ds.split, "text", ids, np.zeros(len(ids), dtype=np.int64), ["caption"],
                   ds.source, texts=captions)


def assemble_pairs(datasets: list[Dataset], image_features: np.ndarray, text_features: np.ndarray,
                   encoders: tuple[str, str], note: str = "") -> Pairs:
    """The image-caption pairs of ``datasets`` (splits in order) from one feature row per image and one per
    caption (:func:`caption_dataset` order); each pair gets its image's features."""
    counts = [len(cs) for ds in datasets for cs in ds.extra["captions"]]
    image_of_pair = np.repeat(np.arange(len(counts)), counts)
    images = [img for ds in datasets for img in ds.images]
    image_ids = np.concatenate([np.asarray(ds.ids) for ds in datasets])[image_of_pair]
    captions = [c for ds in datasets for cs in ds.extra["captions"] for c in cs]
    categories = [list(ds.extra["categories"][i]) for ds in datasets for i, cs in enumerate(ds.extra["captions"])
                  for _ in cs]
    return Pairs(np.asarray(image_features)[image_of_pair], np.asarray(text_features), image_of_pair, image_ids,
                 captions, categories, images, encoders, note)
