"""Chapters of the book and their parameters under each profile (``book/profiles.yaml``).

A run resolves ``defaults`` <- ``profiles[profile]`` <- command-line overrides and checks every name
against the notebook's ``parameters`` cell (an unknown name is an error). The paper's hyperparameters come
from :data:`lsi.defaults.PAPER` for every chapter that declares them, unless its ``defaults`` set others.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lsi.defaults import PAPER


def project_root() -> Path:
    """The folder of the book's sources (``book/profiles.yaml``, ``notebooks/``, ``_toc.yml``).

    ``$LSI_PROJECT`` if set; else the checkout this package was imported from, when it holds the book;
    else the nearest folder at or above the working directory that does.
    """
    if os.environ.get("LSI_PROJECT"):
        return Path(os.environ["LSI_PROJECT"]).resolve()
    candidates = [Path(__file__).resolve().parents[2], *[Path.cwd(), *Path.cwd().parents]]
    for folder in candidates:
        if (folder / "book" / "profiles.yaml").is_file():
            return folder
    return Path.cwd()


REPO = project_root()
PROFILES_FILE = REPO / "book" / "profiles.yaml"
PUBLISHED = REPO / "book" / "chapters"
PROFILES = ("ci", "book", "paper")
RESERVED = ("profile",)
"""Parameters every chapter has and the runner sets itself."""


@dataclass(frozen=True)
class Chapter:
    """One notebook of the book and its parameters under each profile."""

    name: str
    title: str
    notebook: Path
    data: tuple[str, ...]
    defaults: dict[str, Any]
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper_estimate: str = ""
    """What the chapter states the ``paper`` profile costs on one GPU (``paper_estimate:``)."""

    def parameters(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resolved parameters: defaults <- profile <- overrides, with ``profile`` set."""
        if profile not in PROFILES:
            raise ValueError(f"profile={profile!r} is not valid; choose one of {', '.join(PROFILES)}.")
        overrides = dict(overrides or {})
        _check_names(overrides, self.defaults, f"chapter {self.name!r} (command line)")
        resolved = {**self.defaults, **self.profiles.get(profile, {})}
        for name, value in overrides.items():
            resolved[name] = _coerce(value, self.defaults[name], name)
        return {"profile": profile, **resolved}



def load_chapters(path: str | Path = PROFILES_FILE) -> dict[str, Chapter]:
    """Read ``profiles.yaml`` and check it against each notebook's ``parameters`` cell."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No profile file at {path}.")
    spec = yaml.safe_load(path.read_text()) or {}
    chapters = {}
    for name, entry in (spec.get("chapters") or {}).items():
        notebook = (REPO / entry["notebook"]).resolve()  # relative to the repository
        defaults = dict(entry.get("defaults") or {})
        profiles = {p: dict(v or {}) for p, v in (entry.get("profiles") or {}).items()}
        unknown_profiles = set(profiles) - set(PROFILES)
        if unknown_profiles:
            raise ValueError(f"{path}: chapter {name!r} has unknown profiles "
                             f"{sorted(unknown_profiles)}; valid: {', '.join(PROFILES)}.")
        for profile, values in profiles.items():
            _check_names(values, defaults, f"{path}: chapter {name!r}, profile {profile!r}")
        declared = notebook_parameters(notebook)
        _check_names(defaults, declared, f"{path}: chapter {name!r} (defaults)")
        defaults = {**{k: v for k, v in PAPER.items() if k in declared}, **defaults}
        chapters[name] = Chapter(name, entry.get("title", name), notebook,
                                 tuple(entry.get("data") or ()), defaults, profiles,
                                 str(entry.get("paper_estimate") or ""))
    if not chapters:
        raise ValueError(f"{path} lists no chapters under 'chapters:'.")
    return chapters


def notebook_parameters(notebook: str | Path) -> dict[str, Any]:
    """Names and default values in the notebook's cell tagged ``parameters``."""
    import papermill

    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"Chapter notebook {notebook} does not exist.")
    found = papermill.inspect_notebook(str(notebook))
    if not found:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'; tag the cell that "
                         f"sets the chapter's parameters.")
    missing = [name for name in RESERVED if name not in found]
    if missing:
        raise ValueError(f"{notebook}'s parameters cell must define {missing}.")
    return {name: info["default"] for name, info in found.items()}


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Parse ``name=value`` strings; values are read as YAML (numbers, booleans, lists)."""
    overrides = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"Expected -p name=value, got {pair!r} (e.g. -p n_train=5000).")
        if name.strip() in RESERVED:
            raise ValueError(f"{name.strip()!r} is set by the runner; use --profile instead.")
        overrides[name.strip()] = yaml.safe_load(text) if text.strip() else ""
    return overrides


def _check_names(given: dict, known: dict, where: str) -> None:
    unknown = sorted(set(given) - set(known) - set(RESERVED))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {unknown}; "
                         f"known parameters: {', '.join(sorted(set(known) - set(RESERVED)))}.")


def _coerce(value: Any, default: Any, name: str) -> Any:
    """Give an override the type of the default it replaces, or raise."""
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        raise TypeError(f"Parameter {name} expects {type(default).__name__}, got {value!r}.")
    if isinstance(default, float) and isinstance(value, (int, str)):
        try:  # YAML 1.1 reads "1e-8" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if isinstance(default, str):
        return str(value)
    raise TypeError(f"Parameter {name} expects {type(default).__name__} "
                    f"(default {default!r}), got {value!r}.")


def missing_data(chapter: Chapter) -> str | None:
    """Why the chapter's data cannot be reached, or ``None`` when it can."""
    if not chapter.data:
        return None
    root = os.environ.get("LSI_DATA")
    if not root:
        return f"needs the {', '.join(chapter.data)} mirror(s) but LSI_DATA is not set"
    absent = [name for name in chapter.data if not (Path(root) / name).exists()]
    if absent:
        return f"mirror(s) {', '.join(absent)} not found under LSI_DATA={root}"
    return None


def data_dir(chapters_dir: str | Path) -> Path:
    """The folder of published scores beside a folder of executed chapters."""
    return Path(chapters_dir).resolve().parent / "data"
