"""Result tables: atomic writes, Parquet with metadata, resumable chunk stores.

A result is a :class:`pandas.DataFrame` with one row per scored sample and the
run's metadata (options, versions, device, wall time) in ``df.attrs["lsi"]``.
It is stored as Parquet with that metadata in the file's schema, so a table
never travels without its provenance.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"lsi"
"""Parquet schema-metadata key of a result table's run identity and provenance."""
PUBLISHED_KEY = b"lsi.published"
"""Parquet schema-metadata key of a score table a book chapter publishes for readers."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file.

    The file gets the permissions a plain ``open(path, "wb")`` would give it
    (``0o666`` less the umask), not the private ``0o600`` of a temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path, *, name: str = "--out") -> Path:
    """``path`` if a file can be written there, checked before a long computation; a clear error otherwise.

    The nearest existing folder on the way to ``path`` must accept a new file
    (a probe file is created and removed there); nothing else is created.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{name} {path} is a folder; give a file name, e.g. {path / 'scores.parquet'}.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{name} {path} cannot be written: {folder} is a file, not a folder.")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".lsi-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise PermissionError(f"{name} {path} cannot be written: {folder} does not accept new files "
                              f"({error.strerror}). Choose another {name}.") from None
    return path


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it; it is restored at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write ``table`` and its ``attrs["lsi"]`` metadata to Parquet, atomically."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(table.attrs.get("lsi", {}), default=str).encode()
    arrow = arrow.replace_schema_metadata(meta)
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return Path(path)


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`save_table`, metadata included."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No result table at {path}.")
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from error
    table = arrow.to_pandas()
    raw = (arrow.schema.metadata or {}).get(METADATA_KEY)
    table.attrs["lsi"] = json.loads(raw) if raw else {}
    return table


class ChunkStore:
    """A folder of finished chunks for one run, so a killed run resumes.

    The folder holds ``run.json`` (the run's identity) and one Parquet file per
    finished chunk. A chunk's file is keyed by what it holds: its name carries
    its first and last position and the first 16 hex digits of
    ``SHA-256(identity, positions)``, and its metadata records both hashes, so
    two runs of other positions that share a first and last position (e.g.
    ``indices=[0, 5, 9]`` and ``range(10)``) never read each other's chunk.

    - Opening a store with another identity than its ``run.json`` records is an
      error rather than a silent mix of two runs.
    - A ``run.json`` that cannot be read (truncated, not JSON) is rewritten with a
      warning; the chunks stay, each checked against the identity on load.
    - :meth:`get` verifies a chunk's stored positions and identity; a chunk that
      is unreadable (a truncated Parquet file) or does not match is reported
      with a warning and treated as missing, so the run recomputes it.
    """

    def __init__(self, folder: str | Path, identity: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "run.json"
        wanted = json.loads(json.dumps(identity, default=str, sort_keys=True))
        self.identity_sha256 = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()
        found = _read_manifest(manifest)
        if found is not None and found != wanted:
            diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
            raise ValueError(
                f"{self.folder} holds chunks of a run with other options ({', '.join(diff)}). "
                f"Use another output path, or delete the folder to start over."
            )
        if found is None:
            atomic_write_bytes(manifest, json.dumps(wanted, sort_keys=True, indent=1).encode())

    def key(self, positions) -> str:
        """SHA-256 of the run identity and the chunk's positions (int64 bytes)."""
        array = np.ascontiguousarray(np.asarray(positions, dtype=np.int64))
        return hashlib.sha256(self.identity_sha256.encode() + array.tobytes()).hexdigest()

    def _path(self, positions) -> Path:
        return (self.folder /
                f"chunk-{int(positions[0]):09d}-{int(positions[-1]):09d}-{self.key(positions)[:16]}.parquet")

    def put(self, positions, table: pd.DataFrame) -> None:
        """Store one finished chunk, atomically, with its key in the metadata."""
        stored = table.copy()
        stored.attrs = {"lsi": {"chunk": {"key": self.key(positions), "identity_sha256": self.identity_sha256,
                                          "n_positions": len(positions)}}}
        save_table(stored, self._path(positions))

    def get(self, positions) -> pd.DataFrame | None:
        """The stored table of ``positions``, or ``None`` if it is missing, unreadable or not theirs."""
        path = self._path(positions)
        if not path.exists():
            return None
        try:
            table = load_table(path)
        except ValueError as error:
            return _discard(path, f"it cannot be read ({error})")
        chunk = table.attrs.get("lsi", {}).get("chunk", {})
        if chunk.get("key") != self.key(positions):
            return _discard(path, "its metadata does not record this run and these positions")
        if "index" not in table or not np.array_equal(table["index"].to_numpy(), np.asarray(positions)):
            return _discard(path, "its rows are not the positions it is named after")
        table.attrs = {}
        return table


def _read_manifest(path: Path) -> dict | None:
    """A store's recorded identity; ``None`` (with a warning if the file exists) when it cannot be read."""
    if not path.exists():
        return None
    try:
        found = json.loads(path.read_text())
        if isinstance(found, dict):
            return found
        reason = f"it holds a {type(found).__name__}, not an object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = str(error)
    warnings.warn(f"{path} is damaged ({reason}); it is rewritten, and every stored chunk is checked "
                  f"against this run before it is reused.", RuntimeWarning, stacklevel=3)
    return None


def _discard(path: Path, reason: str) -> None:
    """Warn that a stored chunk is not reused (it is recomputed and overwritten)."""
    warnings.warn(f"Chunk {path} is recomputed: {reason}.", RuntimeWarning, stacklevel=3)
    return None


def concat_tables(tables: Iterable[pd.DataFrame], key: str = "index") -> pd.DataFrame:
    """Join shards or chunks into one table sorted by ``key``; duplicates are an error."""
    tables = list(tables)
    if not tables:
        raise ValueError("Nothing to merge: no tables were given.")
    joined = pd.concat(tables, ignore_index=True).sort_values(key, kind="stable")
    duplicated = joined[key].duplicated()
    if duplicated.any():
        raise ValueError(
            f"The shards overlap: {key} {joined[key][duplicated].head(5).tolist()} appear twice."
        )
    joined = joined.reset_index(drop=True)
    joined.attrs = dict(tables[0].attrs)
    return joined
