"""Where samples come from: the offline mirror first, then the official source.

* **Mirror**: Parquet files under ``root`` (default ``$LSI_DATA``), laid out as
  ``<root>/<folder>/<split>.parquet`` (see ``shared/data/README.md``).
* **Official source**: torchvision downloads, the official archives or the
  Hugging Face hub, cached under ``$LSI_DOWNLOADS`` (default
  ``~/.cache/lsi/downloads``); once there, they are used without a network.
* **Neither**: :class:`SourceUnavailableError` within seconds. The offline state
  is checked first (``HF_HUB_OFFLINE``, ``LSI_OFFLINE``) and a host is probed
  with one short TCP connection before any download starts, so a machine
  without internet never waits on library retries.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


class SourceUnavailableError(FileNotFoundError):
    """Neither the mirror nor the official source of some data or weights can be reached."""


def data_root(root: str | Path | None = None) -> Path | None:
    """The mirror folder: ``root`` if given, else ``$LSI_DATA``, else None."""
    if root is None:
        root = os.environ.get("LSI_DATA") or None
    return None if root is None else Path(root).expanduser().resolve()


def download_root() -> Path:
    """Where official downloads are kept: ``$LSI_DOWNLOADS`` or ``~/.cache/lsi/downloads``."""
    return Path(os.environ.get("LSI_DOWNLOADS") or Path.home() / ".cache" / "lsi" / "downloads")


def mirror_file(root: Path | None, folder: str, filename: str) -> Path | None:
    """Path of a mirror file if the mirror has it, else None."""
    if root is None:
        return None
    path = root / folder / filename
    return path if path.is_file() else None


def read_parquet(path: Path, columns: list[str]) -> pa.Table:
    """Read ``columns`` of a mirror Parquet file, with a clear error if it is damaged."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(
            f"The mirror file {path} is not a readable Parquet file ({error}). "
            f"Restore it from the mirror's source, or delete it (and unset LSI_DATA) "
            f"to use the official download instead."
        ) from error
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"The mirror file {path} lacks the column(s) {missing}; it has {table.column_names}. "
            f"Expected the schema described in the mirror README ({columns})."
        )
    return table.select(columns)


def offline(hub: bool = False) -> bool:
    """True if the environment says not to use the network (``LSI_OFFLINE``, and ``HF_HUB_OFFLINE`` for the hub)."""
    names = ("LSI_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if hub else ("LSI_OFFLINE",)
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)


def reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One TCP connection attempt to ``host``; name lookup included, it gives up after ``timeout`` s."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def require_online(what: str, host: str, how: str, *, hub: bool = False) -> None:
    """Raise :class:`SourceUnavailableError` unless ``host`` can be used for a download now."""
    if offline(hub=hub):
        reason = "the environment says offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / LSI_OFFLINE)"
    elif not reachable(host):
        reason = f"{host} cannot be reached from this machine"
    else:
        return
    raise SourceUnavailableError(f"{what} is not available: no local copy, and {reason}. {how}")


def hub_file(repo_id: str, filename: str, *, what: str, how: str, revision: str | None = None) -> Path:
    """A file of a Hugging Face hub *dataset* repo: from the local hub cache, else downloaded."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision,
                                    local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached; decide below whether to download
        pass
    require_online(what, "huggingface.co", how, hub=True)
    return Path(hf_hub_download(repo_id, filename, repo_type="dataset", revision=revision))


@dataclass(frozen=True)
class Archive:
    """An official archive pinned by its SHA-256 (and size in bytes, to report a truncated download)."""

    url: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        """The top folder the archive extracts to: its name without ``.tgz``/``.tar.gz``."""
        return self.name.removesuffix(".tgz").removesuffix(".tar.gz")


COMPLETE = ".lsi-complete"
"""Marker file written into an extracted folder last; a folder without it is an interrupted extraction."""


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_archive(archive: Archive, folder: Path) -> Path:
    """``folder/<archive name>``, checked against its pinned SHA-256; downloaded (again) if absent or damaged.

    A file that does not match (a truncated or corrupted earlier download) is
    replaced; the download goes to ``<name>.part`` and is renamed only once its
    SHA-256 matches, so a killed download never passes for a finished one.
    """
    path = folder / archive.name
    if path.is_file() and file_sha256(path) == archive.sha256:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with urllib.request.urlopen(archive.url, timeout=60) as response, open(part, "wb") as handle:
        shutil.copyfileobj(response, handle, 2 ** 20)
    found, size = file_sha256(part), part.stat().st_size
    if found != archive.sha256:
        part.unlink()
        raise OSError(f"The download of {archive.url} does not match its pinned SHA-256 ({size:,} bytes of "
                      f"{archive.size:,}; SHA-256 {found[:16]}... instead of {archive.sha256[:16]}...). "
                      f"Retry; if it persists, the file at the source has changed.")
    os.replace(part, path)
    return path


def extract_once(archive_path: Path, archive: Archive, folder: Path) -> Path:
    """``folder/<archive.folder>``, extracted from ``archive_path`` unless a complete extraction is there.

    Extraction uses :mod:`tarfile`'s ``"data"`` filter (leading ``/`` stripped,
    a member or link reaching outside the folder refused, no device files) into a temporary
    folder beside the target, which is renamed into place and then marked
    complete (:data:`COMPLETE`); a folder without the marker is removed first.
    """
    target = folder / archive.folder
    if (target / COMPLETE).is_file():
        return target
    staging = folder / f".{archive.folder}.extracting"
    for stale in (staging, target):
        if stale.exists():
            shutil.rmtree(stale)
    try:
        with tarfile.open(archive_path) as tar:
            tar.extractall(staging, filter="data")
        extracted = staging / archive.folder
        if not extracted.is_dir():
            raise ValueError(f"{archive_path} holds no top folder {archive.folder}/; it is not {archive.url}.")
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (target / COMPLETE).write_text(f"{archive.sha256}  {archive.name}\n")
    return target


def mirror_hint(folder: str) -> str:
    """The sentence every 'not available' message ends with."""
    return (f"Point LSI_DATA (or root=) at a folder holding the offline mirror '{folder}/' "
            f"(see shared/data/README.md), or run once on a machine with internet access so the "
            f"official copy is cached under {download_root()}.")
