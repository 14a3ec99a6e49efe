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
- ``source``: the file it was published from (chapter and profile, if any), as a
  path relative to the project (no machine's absolute paths: see :func:`portable`);
- ``file``: the file's own name, ``<name>.parquet``; ``format``: :data:`FORMAT`;
- ``rows_sha256``: :func:`content_hash` of the rows;
- ``sha256``: :func:`record_hash`, the SHA-256 of the whole meaning: every field
  above (``rows_sha256`` included), so an edited row, an edited provenance field
  or a renamed file fails :func:`load`.

:func:`names` lists the files, :func:`load` reads one and checks it,
:func:`add` publishes a result table (``lsi compute`` output or a chapter's
score table), :func:`from_chapter` every score table of an executed chapter,
:func:`migrate` re-hashes a file published before ``sha256`` covered the provenance.
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
FORMAT = 2
"""Provenance format: 2 = ``sha256`` covers rows and provenance (1, unmarked: the rows only)."""
DROPPED = ("cache_path",)
"""Provenance fields left out when publishing: local paths whose content another field identifies
(the feature cache's ``cache_key``)."""


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


def record_hash(record: dict) -> str:
    """SHA-256 of a record's canonical JSON (sorted keys, no spaces), ``sha256`` itself left out."""
    meaning = {key: value for key, value in record.items() if key != "sha256"}
    return hashlib.sha256(json.dumps(meaning, sort_keys=True, separators=(",", ":"), default=str).encode()
                          ).hexdigest()


def names(folder: str | Path | None = None) -> list[str]:
    """The published values in ``folder`` (default :data:`FOLDER`), sorted by name; a missing folder is an error."""
    where = _folder(folder)
    if not where.is_dir():
        raise FileNotFoundError(f"The published values' folder {where} does not exist; check --folder.")
    return sorted(path.stem for path in where.glob("*.parquet"))


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
    verify(name, record, table)
    table.attrs["published"] = record
    return table


def verify(name: str, record: dict, table: pd.DataFrame) -> None:
    """A ``ValueError`` unless ``table`` and ``record`` are what was published as ``name``."""
    restore = "restore it (git checkout published/) or republish it"
    if "rows_sha256" not in record:
        raise ValueError(f"published value {name!r} predates hashed provenance (format 1: its hash covers "
                         f"its rows only). Check it, then run 'lsi published migrate {name}'.")
    found = content_hash(table)
    if found != record["rows_sha256"]:
        raise ValueError(f"published value {name!r} does not match its provenance: its rows hash to "
                         f"{found[:16]}..., its provenance records {str(record['rows_sha256'])[:16]}... The "
                         f"file was changed after publication; {restore}.")
    if record_hash(record) != record.get("sha256"):
        raise ValueError(f"published value {name!r} does not match its provenance: the provenance was edited "
                         f"after publication (it hashes to {record_hash(record)[:16]}..., it records "
                         f"{str(record.get('sha256'))[:16]}...); {restore}.")
    if record.get("name") != name or record.get("file") != f"{name}.parquet":
        raise ValueError(f"published value {name!r} was published as {record.get('file')!r} (name "
                         f"{record.get('name')!r}): the file was renamed; {restore}.")


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
    return next((name for name in names(folder) if provenance(name, folder).get("rows_sha256") == digest), None)


def publish(frame: pd.DataFrame, record: dict, folder: str | Path | None = None) -> Path:
    """Write ``frame`` as ``<folder>/<record['name']>.parquet`` with ``record`` and its hash, atomically."""
    name = record.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"name={name!r} must be lower-case letters, digits, '.', '_' or '-'.")
    if not record.get("setting"):
        raise ValueError("A published value needs a 'setting': data set, samples, features and tier in one line.")
    check_dataset(record.get("dataset"), f"the record of {name!r}")
    frame = frame.reset_index(drop=True)
    return _write(pa.Table.from_pandas(frame, preserve_index=False),
                  {**record, "rows_sha256": content_hash(frame)}, folder)


def _write(arrow: pa.Table, record: dict, folder: str | Path | None) -> Path:
    """``arrow`` with ``record`` (made portable, named after its file, hashed whole) as ``<name>.parquet``."""
    record = portable({key: value for key, value in record.items() if key != "sha256"})
    record = {**record, "file": f"{record['name']}.parquet", "format": FORMAT}
    record["sha256"] = record_hash(record)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),  # pandas' dtypes stay
                                           KEY: json.dumps(record).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink)
    path = _folder(folder) / record["file"]
    atomic_write_bytes(path, sink.getvalue().to_pybytes())
    return path


def migrate(name: str, folder: str | Path | None = None) -> Path:
    """Re-hash a value published before ``sha256`` covered the provenance (format 1), rows untouched.

    The rows must still match the hash recorded at publication (an edited file
    is refused, not laundered); the record gains ``rows_sha256``, ``file`` and
    ``format``, loses machine paths (:func:`portable`), and ``sha256`` becomes
    :func:`record_hash`. The Arrow table is written back as read, so every row
    and dtype stays bit for bit. A value already in format 2 is only verified.
    """
    path = _path(name, folder)
    record = provenance(name, folder)
    arrow = pq.read_table(path)
    if "rows_sha256" in record:
        verify(name, record, arrow.to_pandas())
        return path
    rows = content_hash(arrow.to_pandas())
    if rows != record.get("sha256") or record.get("name") != name:
        raise ValueError(f"published value {name!r} does not match the hash of its rows recorded at publication "
                         f"(or was renamed); restore it (git checkout published/) before migrating.")
    return _write(arrow, {**record, "rows_sha256": rows}, folder)


def portable(value: Any, key: str = "") -> Any:
    """``value`` with no machine's absolute paths: each becomes relative to the project, the data mirror
    (``$LSI_DATA``), the downloads or the feature cache when it lies inside one, else its file name;
    the fields of :data:`DROPPED` are left out."""
    if isinstance(value, dict):
        return {str(k): portable(v, str(k)) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, (list, tuple)):
        return [portable(v, key) for v in value]
    if isinstance(value, str):
        return _ABSOLUTE.sub(lambda match: match.group(1) + relative_to_a_root(match.group(2)), value)
    return json.loads(json.dumps(value, default=str))


_ABSOLUTE = re.compile(r"(^|[\s:=(\[,'\"])(/(?!/)[^\s:'\",)\]]+)")
"""An absolute path inside a string: at its start or after a separator (``mirror:/data/x``), never a URL's ``//``."""


def relative_to_a_root(path: str) -> str:
    """``path`` relative to the project, the data mirror, the downloads or the feature cache (the first that
    holds it), else its file name."""
    from .data.sources import data_root, download_root
    from .features.cache import cache_root

    resolved = Path(path)
    for root in (PROJECT.resolve(), data_root(), download_root(), cache_root()):
        if root is not None:
            for base in {Path(root), Path(root).resolve()}:
                if resolved.is_relative_to(base) and resolved != base:
                    return str(resolved.relative_to(base))
    return resolved.name


def record_of(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Rows and a provenance record (without name, setting and hash) of a result table.

    ``path`` is a chapter's score table (metadata ``lsi.published``, from
    :func:`lsi.book.chapter_data.publish_scores`) or an ``lsi compute``/``lsi merge``
    output (metadata ``lsi``).
    """
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"{path} is not a readable Parquet file: {error}") from error
    meta = arrow.schema.metadata or {}
    chapter = json.loads(meta[PUBLISHED_KEY]) if PUBLISHED_KEY in meta else None
    run = chapter["run"] if chapter else json.loads(meta.get(METADATA_KEY, b"{}"))
    if not run:
        raise ValueError(f"{path} carries no run metadata (neither {PUBLISHED_KEY.decode()!r} nor "
                         f"{METADATA_KEY.decode()!r}); publish tables written by lsi.")
    options = run.get("options") or {}
    data = run.get("data") if isinstance(run.get("data"), dict) else {}
    record = {
        "dataset": check_dataset(chapter["dataset"] if chapter else data.get("dataset", "features"), path),
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


def prepare(path: str | Path, *, name: str | None = None, setting: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Rows and record of a result table, ready for :func:`publish`; ``name`` and ``setting`` default to
    :func:`default_name`, :func:`describe`."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"result table {path} does not exist.")
    frame, record = record_of(path)
    record["name"] = name or default_name(record)
    record["setting"] = setting or describe(record)
    if not _NAME.match(record["name"]):
        raise ValueError(f"name={record['name']!r} must be lower-case letters, digits, '.', '_' or '-'.")
    return frame, record


def add(path: str | Path, *, name: str | None = None, setting: str | None = None,
        folder: str | Path | None = None) -> Path:
    """Publish one result table (:func:`prepare`, then :func:`publish`)."""
    return publish(*prepare(path, name=name, setting=setting), folder)


def from_chapter(chapter: str, *, data: str | Path = BOOK_DATA, folder: str | Path | None = None) -> list[Path]:
    """Publish every score table an executed chapter wrote to ``<data>/<chapter>/``."""
    return [add(path, folder=folder) for path in chapter_tables(chapter, data)]


def chapter_tables(chapter: str, data: str | Path = BOOK_DATA) -> list[Path]:
    """The score tables an executed chapter wrote; ``chapter`` must be one of the chapters ``data``
    holds (a folder name, no path)."""
    known = sorted(p.name for p in Path(data).iterdir() if p.is_dir()) if Path(data).is_dir() else []
    if not isinstance(chapter, str) or not _NAME.match(chapter) or chapter not in known:
        raise ValueError(f"chapter {chapter!r} has no data in {data}; executed chapters there: "
                         f"{', '.join(known) or 'none'}.")
    tables = sorted(path for path in (Path(data) / chapter).glob("*.parquet")
                    if not path.name.endswith(".thumbs.parquet"))
    if not tables:
        raise FileNotFoundError(f"{Path(data) / chapter} holds no score tables; execute the chapter first.")
    return tables


def _folder(folder: str | Path | None) -> Path:
    """``folder``, or :data:`FOLDER` (looked up at call time, so tests can point it elsewhere)."""
    return Path(FOLDER if folder is None else folder)


def check_dataset(name: Any, where: Any) -> str:
    """``name`` if it is a registered data set (:data:`lsi.data.DATASETS`) or ``"features"`` (an .npz file's);
    a ``ValueError`` otherwise. Dataset names read from metadata go into file paths and HTML attributes,
    so they are checked where they are read."""
    from .data import DATASETS

    if name == "features" or (isinstance(name, str) and name in DATASETS):
        return name
    raise ValueError(f"{where} names the data set {name!r}, which is not registered; expected one of "
                     f"{', '.join(DATASETS)} or 'features'.")


def _path(name: str, folder: str | Path | None) -> Path:
    """The file of the published value ``name``, which must be one of :func:`names` (no paths)."""
    known = names(folder)
    if name not in known:
        raise FileNotFoundError(f"No published value {name!r} in {_folder(folder)}; known: {', '.join(known) or 'none'}.")
    return _folder(folder) / f"{name}.parquet"


def _relative(path: str | Path) -> str:
    """``path`` relative to :data:`PROJECT` when it lies inside it (provenance without machine paths)."""
    path, project = Path(path).resolve(), PROJECT.resolve()
    return str(path.relative_to(project)) if path.is_relative_to(project) else str(path)
