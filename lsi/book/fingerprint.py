"""A chapter's fingerprint: the hashed inputs that determine its executed output, and whether it is up to date.

Four inputs determine what an executed chapter shows. Each is recorded when the chapter is executed, in
``runs.json`` beside its published scores (``book/data/<chapter>/runs.json``, key ``fingerprint`` of the
profile's entry), and compared with today's before a build:

- ``notebook``: SHA-256 of the source notebook's cells (type, source and tags), so that re-saving a
  notebook (JSON layout, metadata) does not count as an edit;
- ``parameters``: the resolved parameters themselves (``defaults`` <- profile <- overrides), so that a
  change can be named;
- ``code``: SHA-256 of the files of the ``lsi`` package, except the modules that only drive the runs and
  build the site (:data:`BUILD_ONLY`; no chapter imports them). Any change to code a chapter *can*
  import therefore re-executes every chapter: the simple, honest choice (no tracing of which module a
  chapter uses), at the cost of re-executing chapters that a change did not touch;
- ``data``: per data mirror the chapter lists, SHA-256 of its files' names and bytes (the mirrors are
  small: the six here, 90 MB, hash in well under a second), and per published value the chapter's
  parameters name (``lsi.published``), SHA-256 of that file.

A chapter whose published run recorded no fingerprint (the runs before this module) can be *adopted*
(:func:`adopt`, ``lsi book adopt``): its published run is accepted as it stands and today's fingerprint is
recorded with an ``adopted`` note, which the status page shows as "adopted, not re-executed at this
fingerprint". Adoption refuses a chapter whose published run used other parameters than the profile now
resolves, and records how many source cells differ from the notebook today.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lsi.book.profiles import PUBLISHED, Chapter, data_dir

PACKAGE = Path(__file__).resolve().parents[1]
BUILD_ONLY = ("book/site.py", "book/pages.py", "book/pdf.py", "book/manual.py", "book/fingerprint.py",
              "book/reproduction.py", "book/status.py", "cli")
"""Parts of ``lsi`` (relative to the package) left out of the code hash: they run chapters, compare their
claims and build the site, but no chapter imports them, so they cannot change what a chapter shows."""
DATA = ("published_values",)
"""Data shipped inside the package: the published values are part of a chapter's data fingerprint (one hash
per table it reads, :func:`data_hashes`), so a newly published table does not make every chapter stale."""
INJECTED = "injected-parameters"
"""The tag of the cell papermill adds to an executed notebook."""


def notebook_hash(notebook: str | Path) -> str:
    """SHA-256 of a notebook's cells (type, source, tags), without papermill's injected cell and outputs."""
    return _hash_json(_cells(notebook))


def _cells(notebook: str | Path) -> list[list]:
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return [[cell.cell_type, cell.source, sorted(cell.metadata.get("tags", []))] for cell in nb.cells
            if INJECTED not in cell.metadata.get("tags", [])]


def code_hash(package: str | Path = PACKAGE) -> str:
    """SHA-256 of the ``lsi`` package's files (relative path and bytes), :data:`BUILD_ONLY` and :data:`DATA` left
    out."""
    package = Path(package)
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).as_posix()
        if (not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc"
                or any(relative == part or relative.startswith(part + "/") for part in BUILD_ONLY + DATA)):
            continue
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def mirror_hash(path: str | Path) -> str:
    """SHA-256 of a data mirror: of each file under it, its relative path and bytes (or of the file itself).

    Cached in this process while no file's size or modification time changes.
    """
    path = Path(path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"No data mirror at {path}.")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return _files_hash(str(path), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@lru_cache(maxsize=64)
def _files_hash(root: str, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).relative_to(root).as_posix().encode() + b"\0")
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def data_hashes(chapter: Chapter, parameters: dict[str, Any]) -> dict[str, str] | None:
    """Content hashes of the chapter's data mirrors and of the published values its parameters name.

    Mirrors are keyed by their name, published values by ``published/<name>``. ``None`` when a mirror
    cannot be reached (``LSI_DATA`` unset or the mirror absent).
    """
    from lsi import published

    hashes = {}
    root = os.environ.get("LSI_DATA")
    for mirror in chapter.data:
        if not root or not (Path(root) / mirror).exists():
            return None
        hashes[mirror] = mirror_hash(Path(root) / mirror)
    released = set(published.names())
    for value in parameters.values():
        if isinstance(value, str) and value in released:
            path = published.FOLDER / f"{value}.parquet"
            hashes[f"published/{value}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def fingerprint(chapter: Chapter, profile: str, overrides: dict | None = None) -> dict[str, Any]:
    """Today's fingerprint of ``chapter`` at ``profile``: notebook, parameters, code and data (see the module)."""
    parameters = json.loads(json.dumps(chapter.parameters(profile, overrides), default=str))
    return {"notebook": notebook_hash(chapter.notebook), "parameters": parameters, "code": code_hash(),
            "data": data_hashes(chapter, parameters)}


def changes(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a recorded fingerprint and today's, in words (empty: nothing)."""
    if not recorded:
        return ["no fingerprint recorded"]
    found = []
    if recorded.get("notebook") != current["notebook"]:
        found.append("notebook edited")
    before, now = recorded.get("parameters") or {}, current["parameters"]
    moved = [f"{name} {before.get(name)!r} -> {now.get(name)!r}" for name in sorted(set(before) | set(now))
             if before.get(name) != now.get(name)]
    if moved:
        found.append("parameters changed (" + ", ".join(moved) + ")")
    if recorded.get("code") != current["code"]:
        found.append("lsi code changed")
    if current["data"] is not None:
        data_before = recorded.get("data") or {}
        moved = sorted(name for name in set(data_before) | set(current["data"])
                       if data_before.get(name) != current["data"].get(name))
        if moved:
            found.append("data changed (" + ", ".join(moved) + ")")
    return found


@dataclass
class Freshness:
    """Whether a chapter's executed output at a profile matches its inputs today."""

    chapter: str
    state: str
    """``up to date``, ``adopted`` (up to date by adoption), ``stale``, ``unpublished`` or ``unreachable``
    (its data cannot be reached here, so it is kept as published and not checked)."""
    commit: str = ""
    changed: list[str] = field(default_factory=list)

    @property
    def needs_run(self) -> bool:
        return self.state in ("stale", "unpublished")

    def __str__(self) -> str:
        return self.line()

    def line(self, rerun: str = "re-executing") -> str:
        """One line for the build's log; ``rerun`` names what happens to a chapter that changed."""
        where = f"published at {self.commit or 'an unrecorded commit'}"
        if self.state == "up to date":
            return f"{self.chapter}: {where}, up to date"
        if self.state == "adopted":
            return f"{self.chapter}: {where}, up to date (adopted, not re-executed at this fingerprint)"
        if self.state == "unreachable":
            return f"{self.chapter}: {where}; its data is not reachable here, so it is kept as published"
        if self.state == "unpublished":
            return f"{self.chapter}: {rerun}: not executed yet at this profile"
        return f"{self.chapter}: {rerun}: {'; '.join(self.changed)}"


def freshness(chapter: Chapter, profile: str, chapters_dir: str | Path = PUBLISHED) -> Freshness:
    """Compare the fingerprint recorded for the executed chapter in ``chapters_dir`` with today's."""
    from lsi.book.records import read_runs

    record = read_runs(data_dir(chapters_dir) / chapter.name).get(profile) or {}
    commit = record.get("commit", "")
    if not (Path(chapters_dir) / f"{chapter.name}.ipynb").is_file():
        return Freshness(chapter.name, "unpublished")
    current = fingerprint(chapter, profile)
    if current["data"] is None:
        return Freshness(chapter.name, "unreachable", commit)
    found = changes(record.get("fingerprint"), current)
    if found:
        return Freshness(chapter.name, "stale", commit, found)
    return Freshness(chapter.name, "adopted" if record.get("adopted") else "up to date", commit)


def adopt(chapter: Chapter, profile: str = "book", chapters_dir: str | Path = PUBLISHED) -> str:
    """Accept the executed chapter in ``chapters_dir`` as it stands: record today's fingerprint, marked adopted.

    For runs published before fingerprints were recorded. Refused (``ValueError``) when the chapter is not
    executed there, when its data cannot be reached (no data hash to record), or when its run used other
    parameters than ``profile`` resolves today. The ``adopted`` note records the date, the commit adopting
    it, and how many of the executed notebook's cells differ from today's source notebook. Returns a line
    saying what was adopted.
    """
    from lsi.book.records import read_runs, record_run
    from lsi.provenance import git_commit

    notebook = Path(chapters_dir) / f"{chapter.name}.ipynb"
    if not notebook.is_file():
        raise ValueError(f"{chapter.name}: no executed chapter at {notebook} to adopt; execute it instead.")
    current = fingerprint(chapter, profile)
    if current["data"] is None:
        raise ValueError(f"{chapter.name}: its data ({', '.join(chapter.data)}) is not reachable, so there is "
                         f"no data hash to record; set LSI_DATA to the mirrors and adopt it again.")
    ran_with = _executed_parameters(notebook)
    moved = sorted(k for k in set(ran_with) | set(current["parameters"])
                   if ran_with.get(k) != current["parameters"].get(k))
    if moved:
        raise ValueError(f"{chapter.name}: its published run used other parameters than the {profile!r} "
                         f"profile resolves today ({', '.join(moved)}); re-execute it instead of adopting it.")
    executed, source = _cells(notebook), _cells(chapter.notebook)
    differ = sum(a != b for a, b in zip(executed, source)) + abs(len(executed) - len(source))
    folder = data_dir(chapters_dir) / chapter.name
    runs = read_runs(folder)
    entry = runs.setdefault(profile, {})
    entry["fingerprint"] = current
    entry["adopted"] = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "commit": git_commit(), "source_cells_differing": differ,
                        "source_cells": len(source),
                        "note": "published run accepted as it stands; not re-executed at this fingerprint"}
    record_run(folder, runs)
    return (f"{chapter.name}: adopted the run published at {entry.get('commit', 'an unrecorded commit')} "
            f"({differ} of {len(source)} source cells differ from today's notebook)")


def _executed_parameters(notebook: Path) -> dict[str, Any]:
    import nbformat

    meta = nbformat.read(str(notebook), as_version=4).metadata.get("papermill", {})
    return json.loads(json.dumps(meta.get("parameters") or {}, default=str))


def _hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
