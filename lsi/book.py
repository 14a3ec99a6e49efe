"""The reproducibility book: parameterized chapters run by papermill, built by Jupyter Book.

A *chapter* is a notebook in ``notebooks/`` with exactly one cell tagged
``parameters``; sources are stored without outputs. ``book/profiles.yaml``
lists every chapter, the data mirrors it needs and its parameters under each
named *profile*:

- ``ci``: small subsets, a few minutes per chapter on 2 CPU cores (the tests);
- ``book``: what the published book shows (``book/chapters/``);
- ``paper``: the paper's full scale, meant for a GPU.

The paper's hyperparameters come from :data:`lsi.defaults.PAPER` for every
chapter that declares them, unless its ``defaults`` set other values.
A run resolves ``defaults`` <- ``profiles[profile]`` <- command-line overrides,
checks every name against the notebook's ``parameters`` cell (an unknown name
is an error), executes the notebook with papermill and writes it atomically.
A chapter whose data cannot be reached is *skipped and reported*, and its
previously published output is kept. The site is then built from a staging
copy of ``_config.yml``, ``_toc.yml``, ``book/`` and the executed chapters
with ``jb build`` (execution off, warnings are errors).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lsi.defaults import PAPER

REPO = Path(__file__).resolve().parent.parent
PROFILES_FILE = REPO / "book" / "profiles.yaml"
PUBLISHED = REPO / "book" / "chapters"
PROFILES = ("ci", "book", "paper")
RESERVED = ("profile",)
"""Parameters every chapter has and the runner sets itself."""

_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                # tqdm.auto warns at import when ipywidgets is absent; the chapters show no bars.
                "PYTHONWARNINGS": "ignore:IProgress not found"}


@dataclass(frozen=True)
class Chapter:
    """One notebook of the book and its parameters under each profile."""

    name: str
    title: str
    notebook: Path
    data: tuple[str, ...]
    defaults: dict[str, Any]
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

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


@dataclass
class RunReport:
    """What happened to one chapter in a run."""

    chapter: str
    status: str  # "executed", "skipped" or "failed"
    output: Path | None
    seconds: float = 0.0
    message: str = ""

    def __str__(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        note = f": {self.message}" if self.message else ""
        return f"{self.chapter:<18} {self.status:<8} {self.seconds:7.1f}s{where}{note}"


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
                                 tuple(entry.get("data") or ()), defaults, profiles)
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


class DirtyTreeError(RuntimeError):
    """The repository has uncommitted changes, so a published chapter would record a commit it did not run."""


def check_clean_tree(out: str | Path, *, allow_dirty: bool = False) -> list[str]:
    """Refuse to publish into :data:`PUBLISHED` from a tree with modified tracked files.

    A chapter records ``git describe``-style provenance; executed from a
    modified tree it would say ``+dirty`` and point at no commit that
    reproduces it. Other output folders (the ``ci`` runs, scratch builds) are
    always allowed. Returns the modified files (empty when clean).
    """
    from lsi.provenance import modified_files

    modified = modified_files(REPO) or []
    publishing = Path(out).resolve() == PUBLISHED.resolve()
    if modified and publishing and not allow_dirty:
        shown = ", ".join(modified[:8]) + (" ..." if len(modified) > 8 else "")
        raise DirtyTreeError(
            f"The working tree has uncommitted changes ({shown}); a published chapter records the commit it "
            f"ran on. Commit (or stash) them first, or pass allow_dirty=True (--allow-dirty) to publish a "
            f"chapter whose provenance says +dirty.")
    return modified


def run_chapter(chapter: Chapter, profile: str = "book", overrides: dict | None = None,
                out: str | Path = PUBLISHED, *, allow_dirty: bool = False) -> RunReport:
    """Execute one chapter into ``out/<name>.ipynb``; skip it if its data is unreachable.

    A skipped chapter keeps the published output: it is copied into ``out``
    when ``out`` is not the published folder itself. Publishing into
    :data:`PUBLISHED` needs a clean tree (:func:`check_clean_tree`), and a
    chapter whose execution modifies tracked files (other than executed
    chapters) fails: its recorded provenance would not match its commit.
    """
    import papermill

    out = Path(out)
    parameters = chapter.parameters(profile, overrides)
    target = out / f"{chapter.name}.ipynb"
    reason = missing_data(chapter)
    if reason:
        return _skip(chapter, target, reason)
    modified_before = check_clean_tree(out, allow_dirty=allow_dirty)
    out.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=out, prefix=f".{chapter.name}.", suffix=".ipynb")
    os.close(fd)
    start = time.perf_counter()
    env_before = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        papermill.execute_notebook(str(chapter.notebook), scratch, parameters=parameters,
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False)
    except Exception as error:  # papermill wraps the cell's exception
        failed = Path(tempfile.gettempdir()) / f"lsi-book-failed-{chapter.name}.ipynb"
        shutil.move(scratch, failed)
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        return RunReport(chapter.name, "failed", failed, time.perf_counter() - start,
                         f"{first_line} (executed notebook kept at {failed})")
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    from lsi.provenance import modified_files

    dirtied = sorted(set(modified_files(REPO) or []) - set(modified_before))
    if dirtied:
        failed = Path(tempfile.gettempdir()) / f"lsi-book-failed-{chapter.name}.ipynb"
        shutil.move(scratch, failed)
        return RunReport(chapter.name, "failed", failed, time.perf_counter() - start,
                         f"executing the chapter modified tracked files ({', '.join(dirtied)}), so the "
                         f"provenance it recorded does not match its commit; a chapter must write only "
                         f"outside the repository's tracked files (executed notebook kept at {failed})")
    os.chmod(scratch, 0o644)  # mkstemp creates files readable by the owner only
    os.replace(scratch, target)
    return RunReport(chapter.name, "executed", target, time.perf_counter() - start)


def _skip(chapter: Chapter, target: Path, reason: str) -> RunReport:
    published = PUBLISHED / f"{chapter.name}.ipynb"
    if not published.is_file():
        return RunReport(chapter.name, "skipped", None, 0.0,
                         f"{reason}; no published output either, so it is left out of the book")
    if target.resolve() != published.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(published, target)
    return RunReport(chapter.name, "skipped", target, 0.0,
                     f"{reason}; keeping the published output")


def run_book(profile: str = "book", out: str | Path = PUBLISHED,
             chapters: dict[str, Chapter] | None = None, *, allow_dirty: bool = False) -> list[RunReport]:
    """Run every chapter at ``profile``, one after the other (refusing a dirty tree up front)."""
    chapters = chapters or load_chapters()
    check_clean_tree(out, allow_dirty=allow_dirty)
    reports = []
    for chapter in chapters.values():
        report = run_chapter(chapter, profile, out=out, allow_dirty=allow_dirty)
        print(report, flush=True)
        reports.append(report)
    return reports


def build_site(chapters_dir: str | Path = PUBLISHED, out: str | Path = REPO / "_build") -> Path:
    """Build the HTML book from executed chapters into ``out/html``; return that folder.

    The sources are staged in ``out/source`` (``_config.yml``, a ``_toc.yml``
    restricted to the chapters present, ``book/`` pages and the chapters), then
    ``jb build`` runs with ``-W --keep-going`` (any warning fails the build)
    into ``out/jb``, and the finished site is moved to ``out/html``.
    """
    chapters_dir, out = Path(chapters_dir), Path(out)
    stage, work, html = out / "source", out / "jb", out / "html"
    for folder in (stage, work):
        if folder.exists():
            shutil.rmtree(folder)
    shutil.copytree(REPO / "book", stage / "book",
                    ignore=shutil.ignore_patterns("chapters", "_build", ".*", "__pycache__"))
    present = sorted(p.stem for p in chapters_dir.glob("*.ipynb") if not p.name.startswith("."))
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    substitutions = config.setdefault("parse", {}).setdefault("myst_substitutions", {})
    substitutions.update(teaching_substitutions(chapters_dir))
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (stage / "book" / "chapters").mkdir(parents=True, exist_ok=True)
    for name in present:
        shutil.copyfile(chapters_dir / f"{name}.ipynb", stage / "book" / "chapters" / f"{name}.ipynb")
    toc = _restrict_toc(yaml.safe_load((REPO / "_toc.yml").read_text()), set(present))
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    jb_build(stage, work, out / "build.log")
    if html.exists():
        shutil.rmtree(html)
    os.replace(work / "_build" / "html", html)
    return html


def jb_build(source: str | Path, work: str | Path, log: str | Path) -> Path:
    """``jb build source`` into ``work/_build/html`` with warnings as errors; return that folder.

    The full output is written to ``log``; any ``WARNING`` or ``ERROR`` line,
    or a non-zero exit, raises with the first lines of them.
    """
    command = [str(Path(sys.executable).with_name("jb")), "build", str(source),
               "--path-output", str(work), "--builder", "html", "-W", "--keep-going"]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, **_OFFLINE_ENV})
    text = result.stdout + result.stderr
    Path(log).write_text(text)
    warnings = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    if result.returncode != 0 or warnings:
        shown = "\n".join(warnings[:20]) or text[-3000:]
        raise RuntimeError(f"jb build failed (exit {result.returncode}); see {log}:\n{shown}")
    return Path(work) / "_build" / "html"


def teaching_substitutions(chapters_dir: str | Path = PUBLISHED,
                           chapters: dict[str, Chapter] | None = None) -> dict[str, str]:
    """MyST substitutions for the teaching page, from the executed chapters in ``chapters_dir``.

    - ``run_<chapter>``: e.g. "2 min 19 s at `book`", papermill's measured
      duration of that executed notebook and its profile ("not run" without one);
    - ``link_<chapter>``: a link to the chapter, or its title marked "not in this
      build" when the build has no such chapter (so that links never dangle);
    - ``chapter_table``: a Markdown table of every chapter present, in the order
      of ``profiles.yaml``: title (linked), its "Time to learn", its run time, its data.

    ``build_site`` puts them in the staged ``_config.yml``, so the teaching page
    states the times of the very run the site shows, and a new chapter appears
    in its table without editing the page.
    """
    import nbformat

    chapters = chapters or load_chapters()
    values, rows = {}, []
    for name, chapter in chapters.items():
        notebook = Path(chapters_dir) / f"{name}.ipynb"
        run = "not run"
        if notebook.is_file():
            meta = nbformat.read(str(notebook), as_version=4).metadata.get("papermill", {})
            if meta.get("duration") is not None:
                profile = (meta.get("parameters") or {}).get("profile", "?")
                run = f"{_duration(float(meta['duration']))} at `{profile}`"
            data = ", ".join(chapter.data) or "none to download"
            rows.append(f"| [{chapter.title}](chapters/{name}) | {time_to_learn(chapter.notebook)} "
                        f"| {run} | {data} |")
        values[f"run_{name}"] = run
        values[f"link_{name}"] = (f"[{chapter.title}](chapters/{name})" if notebook.is_file()
                                  else f"*{chapter.title}* (not in this build)")
    values["chapter_table"] = ("| chapter | time to learn | run time here | data mirrors |\n"
                               "|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return values


def time_to_learn(notebook: str | Path) -> str:
    """The "Time to learn" a chapter states in its Prerequisites cell, or "not stated"."""
    import re

    import nbformat

    for cell in nbformat.read(str(notebook), as_version=4).cells:
        found = re.search(r"\*\*Time to learn\*\*:?\s*([^\n]+?)\.?\s*$", cell.source, re.M)
        if cell.cell_type == "markdown" and found:
            return found.group(1).strip()
    return "not stated"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" if minutes >= 10 else f"{minutes} min {rest} s"


def _restrict_toc(toc: dict, present: set[str]) -> dict:
    """Drop toc entries pointing at chapters that were neither executed nor published."""
    def keep(entry: dict) -> bool:
        name = entry.get("file", "")
        return not name.startswith("book/chapters/") or Path(name).stem in present

    def prune(node: Any) -> Any:
        if isinstance(node, list):
            kept = [prune(e) for e in node if not isinstance(e, dict) or keep(e)]
            return [e for e in kept if not (isinstance(e, dict) and e.get("chapters") == [])]
        if isinstance(node, dict):
            return {k: prune(v) for k, v in node.items()}
        return node

    return prune(toc)


def error_cells(notebook: str | Path) -> list[str]:
    """Error outputs in an executed notebook, as ``"cell N: ename: evalue"`` strings."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    errors = []
    for number, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append(f"cell {number}: {output.get('ename')}: {output.get('evalue')}")
    return errors
