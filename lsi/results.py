"""Result tables: atomic writes, Parquet with metadata, resumable chunk stores.

A result is a :class:`pandas.DataFrame` with one row per scored sample and the
run's metadata (options, versions, device, wall time) in ``df.attrs["lsi"]``.
It is stored as Parquet with that metadata in the file's schema, so a table
never travels without its provenance.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

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

    The folder holds ``run.json`` (the options that define the run) and one
    Parquet file per finished chunk, named by its first and last sample
    position. Opening a store with different options than it was created with
    is an error rather than a silent mix of two runs.
    """

    def __init__(self, folder: str | Path, options: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / "run.json"
        wanted = json.loads(json.dumps(options, default=str, sort_keys=True))
        if manifest.exists():
            found = json.loads(manifest.read_text())
            if found != wanted:
                diff = sorted(k for k in set(found) | set(wanted) if found.get(k) != wanted.get(k))
                raise ValueError(
                    f"{self.folder} holds chunks of a run with other options ({', '.join(diff)}). "
                    f"Use another output path, or delete the folder to start over."
                )
        else:
            atomic_write_bytes(manifest, json.dumps(wanted, sort_keys=True, indent=1).encode())

    def _path(self, positions) -> Path:
        return self.folder / f"chunk-{int(positions[0]):09d}-{int(positions[-1]):09d}.parquet"

    def has(self, positions) -> bool:
        return self._path(positions).exists()

    def put(self, positions, table: pd.DataFrame) -> None:
        save_table(table, self._path(positions))

    def get(self, positions) -> pd.DataFrame:
        return load_table(self._path(positions))


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
