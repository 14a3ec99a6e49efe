"""On-disk feature cache: one ``.npz`` per key, written atomically, resumable by chunks.

The key is a hash of everything that determines the features: data set,
split, the exact samples (a fingerprint of their ids and the kind of source),
the subset rule, a corruption that changes the inputs (lorem ipsum), the
extractor and its weights, the preprocessing, and the versions of the packages
that compute them. Layout::

    <cache_dir>/<dataset>/<split>/<extractor>-<preprocessing>-<key>.npz
    <cache_dir>/<dataset>/<split>/<extractor>-<preprocessing>-<key>.parts/part-<start>.npz

Parts hold finished chunks while an extraction runs, so a killed run resumes;
they are merged and removed at the end. Every file is written through a
temporary file and ``os.replace``, so concurrent runs and interruptions never
leave a partial file behind. Two processes that need the same key at once (chapters run in
parallel) take turns through a lock file beside it (:func:`extraction_lock`): the first
extracts, the second then finds the features in the cache.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..results import atomic_write_bytes

FORMAT = 1


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$LSI_CACHE``, else ``~/.cache/lsi/features``."""
    if cache_dir is None:
        cache_dir = os.environ.get("LSI_CACHE") or Path.home() / ".cache" / "lsi" / "features"
    return Path(cache_dir).expanduser()


def extraction_lock(path: Path) -> FileLock:
    """A lock, across processes, on the cache entry ``path``: held while its features are looked up and,
    on a miss, extracted and saved (``<path>.lock``; the lock file itself is left in place, empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path.with_name(path.name + ".lock")))


def cache_key(fields: dict) -> str:
    """Hex digest (20 chars) of the canonical JSON of ``fields``."""
    text = json.dumps({"format": FORMAT, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(root: Path, dataset: str, split: str, extractor: str, preprocessing: str, key: str) -> Path:
    return root / dataset / split / f"{extractor}-{preprocessing}-{key}.npz"


def save_npz(path: Path, **arrays) -> None:
    """``numpy.savez`` into memory, then an atomic write (no pickles: ``meta`` goes in as JSON)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file, or None if it is missing or unreadable (then it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def save_features(path: Path, features: np.ndarray, ids: np.ndarray, labels: np.ndarray, meta: dict) -> None:
    save_npz(path, features=features, ids=ids, labels=labels,
             meta=np.array(json.dumps(meta, sort_keys=True, default=str)))


def load_features(path: Path, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict] | None:
    """(features, ids, labels, meta) of a finished cache entry with this key, else None."""
    data = load_npz(path) if path.is_file() else None
    if data is None or not {"features", "ids", "labels", "meta"} <= set(data):
        return None
    meta = json.loads(str(data["meta"]))
    if meta.get("cache_key") != key:
        return None
    return data["features"], data["ids"], data["labels"], meta


class Parts:
    """Finished chunks of one extraction in progress, keyed by their first row."""

    def __init__(self, final: Path):
        self.folder = final.with_suffix(".parts")

    def _path(self, start: int) -> Path:
        return self.folder / f"part-{start:09d}.npz"

    def get(self, start: int, size: int) -> np.ndarray | None:
        data = load_npz(self._path(start)) if self._path(start).is_file() else None
        if data is None or "features" not in data or len(data["features"]) != size:
            return None
        return data["features"]

    def put(self, start: int, features: np.ndarray) -> None:
        save_npz(self._path(start), features=features)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
