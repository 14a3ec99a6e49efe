"""A chapter's run records on disk, written so that a crash never leaves half of one.

``runs.json`` beside a chapter's published scores holds, per profile, the wall time, commit, date, machine
and fingerprint of its last run (:func:`read_runs`, :func:`record_run`); files are written beside and
renamed over (:func:`atomic_write_text`), and a chapter's data folder is replaced whole (:func:`swap_folder`).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def swap_folder(new: Path, final: Path) -> None:
    """Put folder ``new`` in the place of ``final``, so that ``final`` is always whole: the old or the new one.

    Two renames in one folder: ``final`` -> ``.replaced-<name>``, ``new`` -> ``final``; then the parent
    folder is fsynced and the old folder deleted. If the second rename fails, the old folder is put back at
    once; if the process dies between the two, :func:`recover_folder` (run before every chapter) puts it back.
    """
    old = final.with_name(f".replaced-{final.name}")
    recover_folder(final)
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(new, final)
    except BaseException:
        if old.exists():
            os.replace(old, final)
        raise
    _fsync_folder(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(final: Path) -> None:
    """Finish an interrupted :func:`swap_folder`: the old folder back if ``final`` is missing, else drop it."""
    old = final.with_name(f".replaced-{final.name}")
    if not old.exists():
        return
    if final.exists():
        shutil.rmtree(old)
    else:
        os.replace(old, final)
        _fsync_folder(final.parent)


def read_runs(folder: str | Path) -> dict:
    """The records of a chapter's runs, per profile (``runs.json``): wall time, commit, date, machine, fingerprint."""
    path = Path(folder) / "runs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record_run(folder: str | Path, runs: dict) -> None:
    """Write ``runs.json`` atomically: beside it, fsynced, renamed over it, the folder fsynced."""
    atomic_write_text(Path(folder) / "runs.json", json.dumps(runs, indent=1, sort_keys=True) + "\n")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves the old file or the new one, never a part."""
    from lsi.results import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))
    _fsync_folder(Path(path).parent)


def _fsync_file(path: str | Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
