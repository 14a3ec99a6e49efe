"""The :class:`Dataset` every loader returns, and the subsetting rules they share.

A data set here is a list of samples with a **stable id** (the original row
index, or the original file path where the source has one), an integer label,
and a way to get the raw sample back: ``ds.image(i)`` gives a PIL image,
``ds.text(i)`` a string. Keeping the id lets an LSI score be joined back to the
raw image or text, whatever subset was scored.

Subsets are never the first N rows: several sources are grouped by class. A
``limit`` draws a fixed-seed *stratified* sample instead, with per-class counts
proportional to the class sizes (largest-remainder rounding).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

KINDS = ("image", "text", "image-text")


@dataclass(eq=False)
class Dataset:
    """Samples of one split of one data set.

    Attributes:
        name, split: registry name and split.
        kind: ``"image"``, ``"text"`` or ``"image-text"``.
        ids: stable original id of each sample (row index or relative path).
        labels: ``int64`` class of each sample, indexing ``classes``.
        classes: class names.
        source: where the samples were read from, e.g. ``"mirror:/…/cifar10/train.parquet"``.
        images: per sample, encoded image bytes, a uint8 array, or a file path.
        texts: per sample, a string.
        extra: other per-sample columns (``captions``, ``categories`` for COCO).
        subset: how the rows were chosen (``{"limit": …, "seed": …}``) or ``None`` for all.
        inputs_of: name of the data set whose inputs these are, when only the labels differ
            (``"cifar10"`` for CIFAR-10N), so both share cached features.
    """

    name: str
    split: str
    kind: str
    ids: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    images: Sequence[Any] | None = None
    texts: Sequence[str] | None = None
    extra: dict[str, Sequence[Any]] = field(default_factory=dict)
    subset: dict | None = None
    inputs_of: str | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, split={self.split!r}, n={len(self)}, kind={self.kind!r}, "
                f"classes={len(self.classes)}, source={self.source!r})")

    def image(self, i: int):
        """Sample ``i`` as a :class:`PIL.Image.Image` (mode as stored: RGB or L)."""
        if self.images is None:
            raise TypeError(f"{self.name} is a {self.kind} data set; it has no images.")
        return to_pil(self.images[i])

    def text(self, i: int) -> str:
        """Sample ``i`` as a string (for COCO: the first of its captions)."""
        if self.texts is None:
            raise TypeError(f"{self.name} is a {self.kind} data set; it has no texts.")
        return str(self.texts[i])

    def take(self, positions: Sequence[int] | np.ndarray, *, subset: dict | None = None) -> "Dataset":
        """A new data set holding the samples at ``positions`` (ids are kept)."""
        positions = np.asarray(positions, dtype=np.int64)
        pick = lambda column: None if column is None else _pick(column, positions)  # noqa: E731
        return replace(self, ids=self.ids[positions], labels=self.labels[positions],
                       images=pick(self.images), texts=pick(self.texts),
                       extra={k: _pick(v, positions) for k, v in self.extra.items()},
                       subset=subset if subset is not None else self.subset)

    def fingerprint(self) -> str:
        """Hash of what fixes the raw inputs: data set, split, kind of source and the ids."""
        digest = hashlib.sha256()
        digest.update(f"{self.inputs_of or self.name}|{self.split}|{self.source.split(':', 1)[0]}".encode())
        digest.update(np.asarray(self.ids).astype(str).astype("U").tobytes())
        return digest.hexdigest()[:16]


def _pick(column: Sequence[Any], positions: np.ndarray) -> Sequence[Any]:
    if isinstance(column, np.ndarray):
        return column[positions]
    return [column[int(p)] for p in positions]


def to_pil(item: Any):
    """Decode one stored image: encoded bytes, an ``{"bytes": …}`` struct, an array or a path."""
    from PIL import Image

    if isinstance(item, dict):
        item = item.get("bytes") or item.get("path")
    if isinstance(item, (bytes, bytearray, memoryview)):
        image = Image.open(io.BytesIO(bytes(item)))
    elif isinstance(item, np.ndarray):
        return Image.fromarray(item)
    elif isinstance(item, (str, Path)):
        image = Image.open(item)
    else:
        raise TypeError(f"Cannot decode an image stored as {type(item).__name__}.")
    image.load()
    return image


def stratified_positions(labels: np.ndarray, limit: int, *, seed: int = 0) -> np.ndarray:
    """Sorted positions of a fixed-seed stratified random subset of size ``limit``.

    Class c of size n_c gets ``floor(limit * n_c / n)`` rows plus one more for
    the classes with the largest remainders, so the subset's class proportions
    match the full split's up to rounding. Rows within a class are drawn
    uniformly without replacement with ``numpy.random.default_rng(seed)``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    limit = int(limit)
    if limit <= 0:
        raise ValueError(f"limit == {limit}, must be a positive number of samples (or None for all).")
    if limit >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = limit * counts / n
    quota = np.floor(exact).astype(np.int64)
    short = limit - quota.sum()
    order = np.lexsort((np.arange(len(classes)), -(exact - quota)))
    quota[order[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
              for c, q in zip(classes, quota) if q > 0]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, test_size: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted (train, test) positions; test is a stratified sample of ``test_size``."""
    test = stratified_positions(labels, test_size, seed=seed)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def select_classes(ds: Dataset, classes: Sequence[int], limit: int | None = None, *, seed: int = 0) -> Dataset:
    """The samples of ``classes`` only (e.g. CIFAR-10 cats and dogs), optionally a stratified
    random ``limit`` of them; labels keep their original values and ids their original ids."""
    pool = ds.take(np.flatnonzero(np.isin(ds.labels, list(classes))))
    if not len(pool):
        raise ValueError(f"{ds.name}/{ds.split} has no samples of classes {list(classes)}.")
    return pool if limit is None else pool.take(stratified_positions(pool.labels, limit, seed=seed))


def apply_limit(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """``ds`` itself when ``limit`` is None, else its stratified subset of ``limit`` rows.

    Strata are the clean labels where the data set has them (CIFAR-10N), so
    every label set of the same images gives the same subset.
    """
    if limit is None or int(limit) >= len(ds):
        return ds
    strata = ds.extra.get("clean_labels", ds.labels)
    return ds.take(stratified_positions(strata, limit, seed=seed),
                   subset={"limit": int(limit), "seed": int(seed)})
