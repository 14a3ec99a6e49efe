"""Provenance of a run: what produced a table of scores, where and when."""
from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

_PACKAGES = ("lsi", "torch", "numpy", "scipy", "pandas", "scikit-learn")


class Timings(dict):
    """Wall seconds of a chapter's named sections: ``start(name)`` and, later (another cell
    may come between), ``stop()`` store the seconds between the two under ``name``."""

    def start(self, name: str) -> None:
        self._section = (name, time.perf_counter())

    def stop(self) -> None:
        name, started = self._section
        self[name] = time.perf_counter() - started


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the packages that determine the numbers."""
    versions = {}
    for name in _PACKAGES + extra:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


OUTPUTS = ("book/chapters", "book/data")
"""Folders of executed chapters: what the book runner *writes*, never an input of a run.

A chapter published by ``lsi book run`` replaces a tracked file here; counting
that as a modification would make every later chapter of the same run record
``+dirty`` although the code it ran is the commit's."""


def modified_files(path: str | Path | None = None) -> list[str] | None:
    """Tracked files that differ from ``HEAD`` (outside :data:`OUTPUTS`), or ``None`` without git."""
    cwd = Path(path) if path else Path(__file__).resolve().parent
    exclude = [f":(top,exclude){folder}" for folder in OUTPUTS]
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *exclude],
                                cwd=cwd, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted(line[3:] for line in status.splitlines() if line.strip())


def git_commit(path: str | Path | None = None) -> str:
    """The commit of the repository holding this package, with ``+dirty`` if tracked files are modified.

    Executed chapters under :data:`OUTPUTS` do not count (see there).
    """
    cwd = Path(path) if path else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    modified = modified_files(cwd)
    if modified is None:
        return "unknown"
    return commit + ("+dirty" if modified else "")


def device_description(device: str | torch.device) -> str:
    """Human-readable name of the device a run used."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_record(device: str | torch.device, **extra) -> dict:
    """Base metadata for any run: commit, date, device, package versions."""
    return {
        "commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_description(device),
        "python": platform.python_version(),
        "versions": package_versions(),
        **extra,
    }
