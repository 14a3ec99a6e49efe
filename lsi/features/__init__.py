"""Frozen-encoder features of a data set, cached on disk: ``extract_features``.

>>> fs = extract_features("cifar10", "efficientnet_lite0", limit=2000)
>>> fs.features.shape, fs.labels[:5], fs.ids[:5], fs.meta["cache_path"]

The features of the samples are computed once per cache key (see
:mod:`lsi.features.cache`) in batches under ``torch.inference_mode`` and then
reused by notebooks and CLI runs alike. Corruptions (:mod:`lsi.corruptions`):
lorem ipsum changes the encoder inputs and is part of the key; label flips,
human labels and feature noise are applied to the cached clean features, seeded,
and the result records ``clean_labels`` and ``changed``.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import corruptions
from ..data import Dataset, apply_limit, load_dataset
from ..validation import check_choice
from .cache import Parts, cache_key, cache_path, cache_root, extraction_lock, load_features, save_features
from .extractors import EXTRACTORS, Encoder, get_extractor, package_version
from .preprocessing import Preprocessing

CHUNK = 2048
_PACKAGES = ("torch", "torchvision", "pillow", "numpy")


@dataclass(eq=False)
class FeatureSet:
    """Features of one data set split, with everything needed to join them back to the samples.

    ``features`` is float32 (n, d); ``labels`` int64 (possibly corrupted);
    ``ids`` the samples' original ids; ``clean_labels`` and ``changed`` (sorted
    positions altered by a corruption) are set when a corruption was applied.
    """

    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    classes: list[str]
    meta: dict
    clean_labels: np.ndarray | None = None
    changed: np.ndarray | None = None
    texts: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"FeatureSet({self.meta.get('dataset')!r}/{self.meta.get('split')!r}, "
                f"{self.meta.get('extractor')!r}, features={self.features.shape}, "
                f"corruption={self.meta.get('corruption')})")


def _versions() -> dict[str, str]:
    """Versions of the packages every extractor's output depends on (decoding, resizing, torch)."""
    return {name: package_version(name) for name in _PACKAGES}


@contextmanager
def _threads(num_threads: int | None):
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_chunk(encoder: Encoder, ds: Dataset, rows: np.ndarray, transform, batch_size: int,
                  bar) -> np.ndarray:
    """Features of ``rows``; texts are batched in order of length to limit padding."""
    if encoder.modality == "text":
        order = np.argsort([len(ds.text(r)) for r in rows], kind="stable")
    else:
        order = np.arange(len(rows))
    pieces = []
    for start in range(0, len(rows), batch_size):
        batch_rows = rows[order[start:start + batch_size]]
        if encoder.modality == "text":
            inputs = [ds.text(r) for r in batch_rows]
        else:
            inputs = encoder.prepare(torch.stack([transform(ds.image(r)) for r in batch_rows]))
        pieces.append(encoder(inputs).float().cpu().numpy())
        bar.update(len(batch_rows))
    out = np.concatenate(pieces)
    result = np.empty_like(out)
    result[order] = out
    return result


def _lorem(ds: Dataset, spec: dict) -> tuple[Dataset, np.ndarray]:
    if ds.kind != "text":
        raise ValueError(f"corruption 'lorem' adds texts; {ds.name} is a {ds.kind} data set.")
    added = corruptions.add_lorem_ipsum(ds.texts, ds.labels, spec["n"], n_classes=len(ds.classes),
                                        seed=spec["seed"])
    ids = np.concatenate([np.asarray(ds.ids).astype(str),
                          [f"lorem/{i:05d}" for i in range(len(added.changed))]])
    new = Dataset(ds.name, ds.split, ds.kind, ids, added.labels, ds.classes, ds.source,
                  texts=added.texts, subset=ds.subset)
    return new, added.changed


DEFAULT_EXTRACTOR = {"image": "efficientnet_lite0", "image-text": "efficientnet_lite0", "text": "minilm"}


def _extractor_for(ds: Dataset, extractor: str | None):
    spec = get_extractor(extractor or DEFAULT_EXTRACTOR[ds.kind])
    if spec.modality == "image" and ds.images is None:
        raise ValueError(f"{spec.name} encodes images, but {ds.name} is a {ds.kind} data set; "
                         f"use a text extractor such as 'minilm'.")
    if spec.modality == "text" and ds.texts is None:
        raise ValueError(f"{spec.name} encodes texts, but {ds.name} is a {ds.kind} data set; "
                         f"use an image extractor such as 'efficientnet_lite0'.")
    return spec


def _preprocessing_name(modality: str, pre: Preprocessing, image_size: int | None) -> str:
    """``text``, ``authors``, ``standard`` or ``standard<size>``: the preprocessing part of the key."""
    if image_size is None:
        return pre.value if modality == "image" else "text"
    if modality != "image" or pre is not Preprocessing.STANDARD:
        raise ValueError("image_size applies to image extractors with preprocessing='standard' only.")
    return f"standard{int(image_size)}"


def extract_features(dataset: str | Dataset, extractor: str | None = None, split: str = "train", *,
                     limit: int | None = None, seed: int = 0, preprocessing: str = "standard",
                     corruption: str | dict | None = None, device: str | torch.device = "cpu",
                     batch_size: int | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True, root: str | Path | None = None,
                     num_threads: int | None = None, image_size: int | None = None) -> FeatureSet:
    """Features of a data set split under a frozen pretrained encoder, from the cache if present.

    Args:
        dataset: a registry name (see :data:`lsi.data.DATASETS`) or a loaded :class:`~lsi.data.Dataset`.
        extractor: a key of :data:`EXTRACTORS`; default the offline one for the data set's kind
            (``efficientnet_lite0`` for images, ``minilm`` for texts).
        split, limit, seed, root: passed to :func:`lsi.data.load_dataset` (``limit`` draws a
            fixed-seed stratified subset, also of a given Dataset). ``seed`` also seeds the
            corruption unless it has its own.
        preprocessing: ``"standard"`` or ``"authors"`` for image encoders (ignored for text).
        corruption: None, or ``"flip[:fraction]"``, ``"lorem[:n]"``, ``"noise:class:variance"``,
            ``"human[:aggre|worse|random1..3]"`` (CIFAR-10 train only), or the same as a dict.
        device: where the encoder runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``…).
        batch_size: default 256 for raw 32x32 pixels, 64 for other images, 32 for texts.
        cache_dir: default ``$LSI_CACHE`` or ``~/.cache/lsi/features``.
        progress: show a tqdm bar while encoding.
        num_threads: torch CPU threads during encoding (default: leave torch's setting).
        image_size: input size for ``standard`` preprocessing instead of the encoder's own
            (224). Smaller is faster (cost ~ size^2) and less accurate; part of the cache key.
    """
    pre = check_choice(preprocessing, Preprocessing, name="preprocessing")
    if isinstance(dataset, Dataset):
        ds = apply_limit(dataset, limit, seed)
    else:
        ds = load_dataset(dataset, split, limit=limit, seed=seed, root=root)
    spec = _extractor_for(ds, extractor)
    pre_name = _preprocessing_name(spec.modality, pre, image_size)
    cspec = corruptions.parse_corruption(corruption, seed=seed)
    added = None
    if cspec and cspec["kind"] == "lorem":
        ds, added = _lorem(ds, cspec)
    inputs = ds.inputs_of or ds.name
    fields = {"inputs": inputs, "split": ds.split, "fingerprint": ds.fingerprint(), "subset": ds.subset,
              "inputs_corruption": cspec if added is not None else None, "extractor": spec.name,
              "preprocessing": pre_name, "encoder": spec.identity(), "versions": _versions()}
    key = cache_key(fields)
    path = cache_path(cache_root(cache_dir), inputs, ds.split, spec.name, pre_name, key)
    ids = np.asarray(ds.ids)
    ids = ids.astype(str) if ids.dtype == object else ids
    with extraction_lock(path):
        hit = load_features(path, key)
        if hit is None:
            features, computed = _compute(ds, spec, pre, image_size, device, batch_size, progress, num_threads,
                                          path)
            save_features(path, features, ids, ds.labels, {**computed, **fields, "cache_key": key})
            Parts(path).clear()
        else:
            features, computed = hit[0], hit[3]
    meta = {**computed, **fields, "dataset": ds.name, "source": ds.source, "n": len(ds), "cache_key": key,
            "cache_path": str(path), "cache_hit": hit is not None}
    fs = FeatureSet(features, ds.labels.copy(), ids, list(ds.classes), meta,
                    texts=list(ds.texts) if ds.texts is not None else None)
    return _corrupt(fs, cspec, added, root)


def _compute(ds: Dataset, spec, pre: Preprocessing, image_size, device, batch_size, progress, num_threads,
             path: Path) -> tuple[np.ndarray, dict]:
    device = torch.device(device)
    start = time.perf_counter()
    with _threads(num_threads), torch.inference_mode():
        encoder = spec.build().to(device)
        transform = encoder.transform(pre, image_size) if spec.modality == "image" else None
        if batch_size is None:
            raw_small = pre is Preprocessing.AUTHORS or spec.name == "pixels"
            batch_size = 32 if spec.modality == "text" else 256 if raw_small else 64
        parts = Parts(path)
        chunks = []
        unit = "text" if spec.modality == "text" else "img"
        with tqdm(total=len(ds), desc=f"{spec.name} {ds.name}/{ds.split}", unit=unit,
                  disable=not progress) as bar:
            for first in range(0, len(ds), CHUNK):
                rows = np.arange(first, min(first + CHUNK, len(ds)))
                done = parts.get(first, len(rows))
                if done is None:
                    done = _encode_chunk(encoder, ds, rows, transform, batch_size, bar)
                    parts.put(first, done)
                else:
                    bar.update(len(rows))
                chunks.append(done)
    features = np.concatenate(chunks).astype(np.float32, copy=False)
    meta = {"device": str(device), "batch_size": batch_size, "num_threads": torch.get_num_threads(),
            "dim": int(features.shape[1]),
            "wall_time_s": round(time.perf_counter() - start, 3)}
    return features, meta


def _corrupt(fs: FeatureSet, cspec: dict | None, added: np.ndarray | None, root) -> FeatureSet:
    if cspec is None:
        return fs
    fs.meta["corruption"] = cspec
    kind = cspec["kind"]
    if kind == "lorem":
        fs.changed = added
    elif kind == "flip":
        fs.clean_labels = fs.labels
        fs.labels, fs.changed = corruptions.flip_labels(fs.labels, cspec["fraction"],
                                                        n_classes=len(fs.classes), seed=cspec["seed"])
    elif kind == "human":
        if fs.meta["dataset"] != "cifar10" or fs.meta["split"] != "train":
            raise ValueError("corruption 'human' (CIFAR-10N labels) applies to dataset cifar10, split "
                             f"train only; got {fs.meta['dataset']}/{fs.meta['split']}.")
        fs.clean_labels = fs.labels
        fs.labels, fs.changed = corruptions.human_labels(fs.ids, cspec["label_set"], root=root)
    elif kind == "noise":
        fs.features, fs.changed = corruptions.add_feature_noise(fs.features, fs.labels, cspec["target_class"],
                                                                cspec["variance"], seed=cspec["seed"])
    return fs


__all__ = ["DEFAULT_EXTRACTOR", "EXTRACTORS", "FeatureSet", "Preprocessing", "extract_features"]
