"""Published LSI values: one Parquet file per data set and setting, shipped in the package.

The files live in ``lsi/published_values/`` (package data: an installed wheel
carries them, read through :mod:`importlib.resources`); ``$LSI_PUBLISHED``
names another folder, and every function takes ``folder=``. Each file
``<name>.parquet`` holds one row per scored sample (the
columns of :func:`lsi.compute_lsi`: ``index, id, label, lsi, kl_mean, kl_cov,
grad_norm``, plus any a chapter added, such as ``original_label`` and
``corrupted``) and, as JSON in the Parquet schema metadata under
``lsi.provenance``, where the values come from:

- ``name``, ``setting`` (one line: data set, samples, features, tier), ``dataset``,
  ``corruption``, ``tier``, ``n_samples`` (the training set), ``n_scored``;
- ``commit``, ``date``, ``device``, ``wall_time_s``, ``versions`` of the run;
- ``parameters`` (the chapter's parameters and the run's options), ``data``;
- ``source``: the file it was published from (chapter and profile, if any);
- ``sha256``: :func:`content_hash` of the rows, which :func:`load` checks.

:func:`names` lists the files, :func:`load` reads one and checks it,
:func:`add` publishes a result table (``lsi compute`` output or a chapter's
score table), :func:`from_chapter` every score table of an executed chapter.
A chapter that reads published values names them in its provenance block with
:func:`cite`; the book's "Take it away" section names the published values that
hold a chapter's own tables (:func:`matching`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lsi.results import METADATA_KEY, PUBLISHED_KEY, atomic_write_bytes

FOLDER = Path(os.environ.get("LSI_PUBLISHED") or str(files("lsi") / "published_values"))
"""The published values: ``$LSI_PUBLISHED`` if set, else the package's ``published_values`` folder."""
KEY = b"lsi.provenance"
PROJECT = Path(os.environ.get("LSI_PROJECT") or ".")
"""The project folder that :func:`from_chapter` reads chapters' tables from and provenance paths are
relative to: ``$LSI_PROJECT``, else the working directory."""
BOOK_DATA = PROJECT / "book" / "data"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def content_hash(frame: pd.DataFrame) -> str:
    """SHA-256 of a table's rows: per column in order its name, dtype and values.

    Numeric and boolean columns enter as their raw bytes (so a single changed
    bit changes the hash); other columns as their values' text, NUL-separated.
    The hash ignores metadata, so it survives re-encoding the Parquet file.
    """
    digest = hashlib.sha256()
    for column in frame.columns:
        values = frame[column].to_numpy()
        digest.update(f"{column}\0{values.dtype.str if values.dtype.kind in 'biufc' else 'text'}\0".encode())
        if values.dtype.kind in "biufc":
            digest.update(np.ascontiguousarray(values).tobytes())
        else:
            digest.update("\0".join(map(str, values)).encode())
    return digest.hexdigest()


def names(folder: str | Path | None = None) -> list[str]:
    """The published values in ``folder`` (default :data:`FOLDER`), sorted by name."""
    return sorted(path.stem for path in _folder(folder).glob("*.parquet"))


def provenance(name: str, folder: str | Path | None = None) -> dict:
    """The provenance record of one published file, without reading its rows."""
    raw = (pq.read_schema(_path(name, folder)).metadata or {}).get(KEY)
    if not raw:
        raise ValueError(f"{_path(name, folder)} has no {KEY.decode()!r} metadata; it was not written by "
                         f"lsi.published.")
    return json.loads(raw)


def load(name: str, folder: str | Path | None = None) -> pd.DataFrame:
    """One published table, its rows checked against the SHA-256 its provenance records.

    The provenance is in ``table.attrs["published"]``. A mismatch (a file
    edited or damaged after publication) is a ``ValueError``.
    """
    record = provenance(name, folder)
    table = pq.read_table(_path(name, folder)).to_pandas()
    found = content_hash(table)
    if found != record.get("sha256"):
        raise ValueError(f"published value {name!r} does not match its provenance: its rows hash to "
                         f"{found[:16]}..., its provenance records {str(record.get('sha256'))[:16]}... The "
                         f"file {_path(name, folder)} was changed after publication; restore it (reinstall "
                         f"the package, or git checkout the file) or republish it.")
    table.attrs["published"] = record
    return table


def cite(*tables: pd.DataFrame) -> dict[str, str]:
    """For a chapter's provenance block: each loaded published table's name, setting and hash prefix."""
    cited = {}
    for table in tables:
        record = table.attrs.get("published")
        if not record:
            raise ValueError("cite() takes tables returned by lsi.published.load().")
        cited[record["name"]] = f"{record['setting']} (commit {record['commit']}, sha256 {record['sha256'][:12]})"
    return cited


def matching(frame: pd.DataFrame, folder: str | Path | None = None) -> str | None:
    """The name of the published value whose rows are exactly ``frame``'s, if any."""
    digest = content_hash(frame)
    return next((name for name in names(folder) if provenance(name, folder).get("sha256") == digest), None)


def publish(frame: pd.DataFrame, record: dict, folder: str | Path | None = None) -> Path:
    """Write ``frame`` as ``<folder>/<record['name']>.parquet`` with ``record`` and its hash, atomically."""
    name = record.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name={name!r} must be lower-case letters, digits, '.', '_' or '-'.")
    if not record.get("setting"):
        raise ValueError("A published value needs a 'setting': data set, samples, features and tier in one line.")
    frame = frame.reset_index(drop=True)
    record = {**record, "sha256": content_hash(frame)}
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),  # pandas' dtypes stay
                                           KEY: json.dumps(record, default=str).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink)
    path = _folder(folder) / f"{name}.parquet"
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def record_of(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Rows and a provenance record (without name, setting and hash) of a result table.

    ``path`` is a chapter's score table (metadata ``lsi.published``, from
    :func:`lsi.book.chapter_data.publish_scores`) or an ``lsi compute``/``lsi merge``
    output (metadata ``lsi``).
    """
    arrow = pq.read_table(path)
    meta = arrow.schema.metadata or {}
    chapter = json.loads(meta[PUBLISHED_KEY]) if PUBLISHED_KEY in meta else None
    run = chapter["run"] if chapter else json.loads(meta.get(METADATA_KEY, b"{}"))
    if not run:
        raise ValueError(f"{path} carries no run metadata (neither {PUBLISHED_KEY.decode()!r} nor "
                         f"{METADATA_KEY.decode()!r}); publish tables written by lsi.")
    options = run.get("options") or {}
    data = run.get("data") if isinstance(run.get("data"), dict) else {}
    record = {
        "dataset": chapter["dataset"] if chapter else data.get("dataset", "features"),
        "corruption": chapter["corruption"] if chapter else (data.get("corruption") or "none"),
        "tier": (chapter or {}).get("tier") or options.get("solver"),
        "score": (chapter or {}).get("score", "lsi"),
        "n_samples": run.get("n_samples"), "n_scored": int(arrow.num_rows),
        "commit": run.get("commit"), "date": run.get("date"), "device": run.get("device"),
        "wall_time_s": run.get("wall_time_s"), "versions": run.get("versions"),
        "parameters": {**((chapter or {}).get("parameters") or {}), **{f"run.{k}": v for k, v in options.items()}},
        "data": data or None, "classes": (chapter or {}).get("classes"),
        "source": {"file": _relative(path), "chapter": (chapter or {}).get("chapter"),
                   "profile": (chapter or {}).get("profile"), "published_by_chapter": (chapter or {}).get("date")},
        "published": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return arrow.to_pandas(), record


def describe(record: dict) -> str:
    """A one-line setting from a record, e.g. ``cifar10, 5,000 samples scored of 5,000, ..., newton-step tier``."""
    p, data = record.get("parameters") or {}, record.get("data") or {}
    features = p.get("extractor") or data.get("extractor")
    width = p.get("feature_dim") or data.get("principal_components")   # a chapter's, or `lsi compute --components`
    described = (f"{features} features" if features else "features") + (f" ({width}-d)" if width else "")
    parts = [f"{record['dataset']}",
             f"{record['n_scored']:,} samples scored of {record['n_samples']:,}",
             *([described] if features or width else []),
             f"{record['tier']} tier" + (f", {p['run.hessian']} Hessian" if p.get("run.hessian") else ""),
             *([f"corruption {record['corruption']}"] if record.get("corruption", "none") != "none" else [])]
    source = record.get("source") or {}
    if source.get("chapter"):
        parts.append(f"from the {source['chapter']} chapter ({source.get('profile') or '?'} profile)")
    return ", ".join(parts)


def default_name(record: dict) -> str:
    """``<dataset>[-<corruption>]-<n_scored>[of<n_samples>]-<tier>``, e.g. ``cifar10-flip-0.1-500of5000-converged``."""
    corruption = record.get("corruption", "none")
    scored, total = record["n_scored"], record["n_samples"]
    parts = [record["dataset"], *([corruption.replace(":", "-")] if corruption != "none" else []),
             f"{scored}" if scored == total else f"{scored}of{total}", str(record["tier"])]
    return re.sub(r"[^a-z0-9_.-]", "-", "-".join(parts).lower())


def add(path: str | Path, *, name: str | None = None, setting: str | None = None,
        folder: str | Path | None = None) -> Path:
    """Publish one result table; ``name`` and ``setting`` default to :func:`default_name`, :func:`describe`."""
    frame, record = record_of(path)
    record["name"] = name or default_name(record)
    record["setting"] = setting or describe(record)
    return publish(frame, record, folder)


def from_chapter(chapter: str, *, data: str | Path = BOOK_DATA, folder: str | Path | None = None) -> list[Path]:
    """Publish every score table an executed chapter wrote to ``<data>/<chapter>/``."""
    tables = sorted(path for path in (Path(data) / chapter).glob("*.parquet")
                    if not path.name.endswith(".thumbs.parquet"))
    if not tables:
        raise FileNotFoundError(f"{Path(data) / chapter} holds no score tables; execute the chapter first.")
    return [add(path, folder=folder) for path in tables]


def _folder(folder: str | Path | None) -> Path:
    """``folder``, or :data:`FOLDER` (looked up at call time, so tests can point it elsewhere)."""
    return Path(FOLDER if folder is None else folder)


def _path(name: str, folder: str | Path | None) -> Path:
    path = _folder(folder) / f"{name}.parquet"
    if not path.is_file():
        known = names(folder)
        raise FileNotFoundError(f"No published value {name!r} in {_folder(folder)}; known: {', '.join(known) or 'none'}.")
    return path


def _relative(path: str | Path) -> str:
    """``path`` relative to :data:`PROJECT` when it lies inside it (provenance without machine paths)."""
    path, project = Path(path).resolve(), PROJECT.resolve()
    return str(path.relative_to(project)) if path.is_relative_to(project) else str(path)
