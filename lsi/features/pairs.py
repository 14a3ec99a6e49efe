"""Encoded image-caption pairs: :func:`coco_pairs`, the inputs of :mod:`lsi.contrastive`."""
from __future__ import annotations

import numpy as np

from ..data import load_dataset
from ..data.coco import Pairs, assemble_pairs, caption_dataset
from . import extract_features


def coco_pairs(splits=("train", "val"), *, encoders=("clip_image", "clip_text"),
               fallback=("efficientnet_lite0", "minilm"), root=None) -> Pairs:
    """Every image-caption pair of the ``coco_all`` splits, encoded by ``encoders`` where their
    weights load, else by ``fallback`` (with the reason in ``note``). Features are cached."""
    datasets = [load_dataset("coco_all", split, root=root) for split in splits]
    try:
        return _encode(datasets, *encoders)
    except Exception as error:  # noqa: BLE001 - weights not loadable offline: use the fallback
        note = f"{encoders[0]}/{encoders[1]} unavailable ({type(error).__name__}: {str(error)[:160]})"
    return _encode(datasets, *fallback, note=note)


def _encode(datasets: list, image_encoder: str, text_encoder: str, note: str = "") -> Pairs:
    images = [extract_features(ds, image_encoder, progress=False).features for ds in datasets]
    texts = [extract_features(caption_dataset(ds), text_encoder, progress=False).features for ds in datasets]
    return assemble_pairs(datasets, np.concatenate(images), np.concatenate(texts), (image_encoder, text_encoder),
                          note)
