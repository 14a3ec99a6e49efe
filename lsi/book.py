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

Chapters publish their scores with :func:`publish_scores` (see
:mod:`lsi.publish`) into the data folder beside the executed chapters
(``book/data`` for ``book/chapters``). The build adds a generated "Take it
away" section to every chapter (downloads, rerun commands, measured wall
times, cite/reuse and data licences) and one sample explorer page per data set
with published scores (``book/explore/<dataset>``).
"""
from __future__ import annotations

import json
import os
import re
import shlex
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
_QUIET_ENV = {"TQDM_DISABLE": "1",  # read by tqdm when the kernel imports it (not by this process's bars)
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Silence library progress bars and chatter in the kernel, so they never reach a page."""
NOISE = re.compile(r"(\d+%\|)|(\|\s*\d+/\d+\s*\[)|(^\s*(Loading weights|Loading checkpoint shards|"
                   r"Fetching \d+ files|Warning: IProgress|huggingface/tokenizers: The current process))")
"""A line of stderr that is library noise (progress bars, weight loading) rather than a message."""

DATA_LICENSES = {
    "digits": "scikit-learn's copy of the UCI optical digits (CC BY 4.0; scikit-learn is BSD-3-Clause)",
    "cifar10": "CIFAR-10 (Krizhevsky 2009): free for research; cite the technical report",
    "cifar10n": "CIFAR-10N human labels (Wei et al. 2022): CC BY-NC 4.0",
    "imdb": "IMDb Large Movie Review Dataset v1 (Maas et al. 2011): research use; cite the ACL 2011 paper",
    "sst2": "SST-2 (Socher et al. 2013): research use; cite the EMNLP 2013 paper",
    "chest_xray": "Pediatric chest X-ray pneumonia (Kermany et al. 2018, Mendeley Data): CC BY 4.0",
    "coco_mini": "COCO 2017 (Lin et al. 2014): annotations CC BY 4.0, images under their Flickr licenses",
}
"""The licence of every data mirror a chapter can list under ``data:`` (from the mirrors' README)."""
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imdb": "IMDb", "sst2": "SST-2",
                  "chest_xray": "chest X-ray", "digits": "digits", "coco": "COCO", "coco_all": "COCO"}


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


def publish_scores(*args, **kwargs) -> Path:
    """Publish a chapter's score table; see :func:`lsi.publish.publish_scores`."""
    from .publish import publish_scores as publish

    return publish(*args, **kwargs)


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
                out: str | Path = PUBLISHED, progress: bool = False, *, allow_dirty: bool = False) -> RunReport:
    """Execute one chapter into ``out/<name>.ipynb``; skip it if its data is unreachable.

    A skipped chapter keeps the published output (notebook and published
    scores): they are copied into ``out`` when ``out`` is not the published
    folder itself. The scores the chapter publishes land in
    ``data_dir(out)/<name>/`` only when the run succeeds, with ``runs.json``
    recording the wall time per profile. ``progress`` shows a bar of the
    cells executed, the time elapsed and the time left. Publishing into
    :data:`PUBLISHED` needs a clean tree (:func:`check_clean_tree`), and a
    chapter whose execution modifies tracked files (other than executed
    chapters and published scores) fails: its recorded provenance would not match its commit.
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
    data = data_dir(out)
    staging = data / f".staging-{chapter.name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    fd, scratch = tempfile.mkstemp(dir=out, prefix=f".{chapter.name}.", suffix=".ipynb")
    os.close(fd)
    start = time.perf_counter()
    env = {**_OFFLINE_ENV, **_QUIET_ENV, "LSI_BOOK_DATA": str(staging), "LSI_BOOK_CHAPTER": chapter.name,
           "LSI_BOOK_PROFILE": profile, "LSI_BOOK_PARAMETERS": json.dumps(parameters, default=str)}
    env_before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        bar = {"desc": f"{chapter.name} [{profile}]", "unit": "cell", "leave": True} if progress else False
        papermill.execute_notebook(str(chapter.notebook), scratch, parameters=parameters,
                                   kernel_name="python3", cwd=str(REPO), progress_bar=bar)
    except Exception as error:  # papermill wraps the cell's exception
        failed = Path(tempfile.gettempdir()) / f"lsi-book-failed-{chapter.name}.ipynb"
        shutil.move(scratch, failed)
        shutil.rmtree(staging, ignore_errors=True)
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
        shutil.rmtree(staging, ignore_errors=True)
        return RunReport(chapter.name, "failed", failed, time.perf_counter() - start,
                         f"executing the chapter modified tracked files ({', '.join(dirtied)}), so the "
                         f"provenance it recorded does not match its commit; a chapter must write only "
                         f"outside the repository's tracked files (executed notebook kept at {failed})")
    seconds = time.perf_counter() - start
    strip_noise(scratch)
    os.chmod(scratch, 0o644)  # mkstemp creates files readable by the owner only
    os.replace(scratch, target)
    _install_data(chapter.name, staging, data, profile, seconds)
    return RunReport(chapter.name, "executed", target, seconds)


def _install_data(name: str, staging: Path, data: Path, profile: str, seconds: float) -> None:
    """Replace the chapter's published scores by this run's, keeping the timing record."""
    from .provenance import git_commit

    final = data / name
    runs = read_runs(final)
    produced = staging / name
    if final.exists():
        shutil.rmtree(final)
    if produced.exists():
        os.replace(produced, final)
    final.mkdir(parents=True, exist_ok=True)
    for path in final.iterdir():
        os.chmod(path, 0o644)
    shutil.rmtree(staging, ignore_errors=True)
    runs[profile] = {"seconds": round(seconds, 1), "commit": git_commit(),
                     "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    record_run(final, runs)


def read_runs(folder: str | Path) -> dict:
    """The measured wall time of a chapter's runs, per profile (``runs.json``)."""
    path = Path(folder) / "runs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record_run(folder: str | Path, runs: dict) -> None:
    path = Path(folder) / "runs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=1, sort_keys=True) + "\n")


def strip_noise(notebook: str | Path) -> int:
    """Remove library noise (progress bars, weight loading) from stderr outputs; return lines dropped."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    dropped = 0
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                lines = re.split(r"(?<=[\r\n])", output.get("text", ""))
                clean = [line for line in lines if not NOISE.search(line)]
                dropped += len(lines) - len(clean)
                text = "".join(line for line in clean if line.strip("\r\n") or line == "\n")
                if not text.strip():
                    continue
                output["text"] = text
            kept.append(output)
        if cell.cell_type == "code":
            cell["outputs"] = kept
    nbformat.write(nb, str(notebook))
    return dropped


def _skip(chapter: Chapter, target: Path, reason: str) -> RunReport:
    published = PUBLISHED / f"{chapter.name}.ipynb"
    if not published.is_file():
        return RunReport(chapter.name, "skipped", None, 0.0,
                         f"{reason}; no published output either, so it is left out of the book")
    if target.resolve() != published.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(published, target)
        scores = data_dir(PUBLISHED) / chapter.name
        copy = data_dir(target.parent) / chapter.name
        if scores.is_dir() and scores.resolve() != copy.resolve():
            if copy.exists():
                shutil.rmtree(copy)
            shutil.copytree(scores, copy)
    return RunReport(chapter.name, "skipped", target, 0.0,
                     f"{reason}; keeping the published output")


def run_book(profile: str = "book", out: str | Path = PUBLISHED,
             chapters: dict[str, Chapter] | None = None, progress: bool = False, *,
             allow_dirty: bool = False) -> list[RunReport]:
    """Run every chapter at ``profile``, one after the other (refusing a dirty tree up front;
    ``progress``: say what runs and what is left)."""
    chapters = chapters or load_chapters()
    check_clean_tree(out, allow_dirty=allow_dirty)
    reports, names, start = [], list(chapters), time.perf_counter()
    for number, chapter in enumerate(chapters.values(), 1):
        if progress:
            left = ", ".join(names[number:]) or "nothing"
            print(f"[{number}/{len(names)}] {chapter.name} at {profile} "
                  f"({time.perf_counter() - start:.0f}s elapsed; after it: {left})", flush=True)
        report = run_chapter(chapter, profile, out=out, progress=progress, allow_dirty=allow_dirty)
        print(report, flush=True)
        reports.append(report)
    return reports


def build_site(chapters_dir: str | Path = PUBLISHED, out: str | Path = REPO / "_build",
               chapters: dict[str, Chapter] | None = None) -> Path:
    """Build the HTML book from executed chapters into ``out/html``; return that folder.

    The sources are staged in ``out/source`` (``_config.yml``, a ``_toc.yml``
    restricted to the chapters present, ``book/`` pages, the chapters with a
    generated "Take it away" section, the published scores of
    ``data_dir(chapters_dir)`` and one explorer page per data set), then
    ``jb build`` runs with ``-W --keep-going`` (any warning fails the build)
    into ``out/jb``; thumbnails and explorer data are written into the site,
    and the finished site is moved to ``out/html``.
    """
    from . import publish

    chapters_dir, out = Path(chapters_dir), Path(out)
    chapters = chapters if chapters is not None else load_chapters()
    stage, work, html = out / "source", out / "jb", out / "html"
    for folder in (stage, work):
        if folder.exists():
            shutil.rmtree(folder)
    shutil.copytree(REPO / "book", stage / "book",
                    ignore=shutil.ignore_patterns("chapters", "data", "_build", ".*", "__pycache__"))
    data = data_dir(chapters_dir)
    if data.is_dir():
        shutil.copytree(data, stage / "book" / "data", ignore=shutil.ignore_patterns(".*"))
    tables = publish.published_tables(stage / "book" / "data")
    datasets = sorted({info["dataset"] for info, _, _ in tables})
    present = sorted(p.stem for p in chapters_dir.glob("*.ipynb") if not p.name.startswith("."))
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    substitutions = config.setdefault("parse", {}).setdefault("myst_substitutions", {})
    substitutions.update(teaching_substitutions(chapters_dir))
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (stage / "book" / "chapters").mkdir(parents=True, exist_ok=True)
    for name in present:
        notebook = stage / "book" / "chapters" / f"{name}.ipynb"
        shutil.copyfile(chapters_dir / f"{name}.ipynb", notebook)
        add_take_it_away(notebook, chapters.get(name), tables, stage / "book" / "data" / name)
    for dataset in datasets:
        write_explorer_page(stage / "book" / "explore" / f"{dataset}.md", dataset, tables)
    toc = _restrict_toc(yaml.safe_load((REPO / "_toc.yml").read_text()), set(present))
    if datasets:
        toc.setdefault("parts", []).append({"caption": "Explore the samples", "chapters": [
            {"file": f"book/explore/{dataset}"} for dataset in datasets]})
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    built = jb_build(stage, work, out / "build.log")
    samples = publish.write_thumbnails(stage / "book" / "data", built)
    for dataset in datasets:
        images, texts = samples.get(dataset, (set(), {}))
        payload = publish.explorer_payload(tables, dataset, texts=texts, has_thumbs=images)
        (built / "explore-data").mkdir(exist_ok=True)
        (built / "explore-data" / f"{dataset}.js").write_text(
            "window.LSI_EXPLORER = window.LSI_EXPLORER || {};\n"
            f"window.LSI_EXPLORER[{json.dumps(dataset)}] = "
            + json.dumps(payload, separators=(",", ":"), allow_nan=False) + ";\n", encoding="utf-8")
    if html.exists():
        shutil.rmtree(html)
    os.replace(built, html)
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


def write_explorer_page(path: Path, dataset: str, tables: list) -> None:
    """The Markdown page of one data set's sample explorer (its data is written after the build)."""
    title = DATASET_TITLES.get(dataset, dataset)
    sources = sorted({(info["chapter"], info["name"], info.get("corruption", "none"), info.get("tier", ""),
                       info.get("rows", 0)) for info, _, _ in tables if info.get("dataset") == dataset})
    listing = "\n".join(
        f"- chapter `{chapter}`, `{name}.parquet`: {rows:,} samples, corruption `{corruption}`"
        + (f", tier `{tier}`" if tier else "") for chapter, name, corruption, tier, rows in sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""# Explore the {title} samples

Every {title} sample that a chapter of this book scored, with its label, its corruption (if any), its LSI
under each tier the chapter computed, and its rank within its class (1 = most informative). Type in the
search box to find an id{' or a word of the text' if dataset in ('imdb', 'sst2') else ''}; filter by class,
by chapter and corruption, by corrupted or clean labels and by an LSI range; click a column header to sort.
Rows with a corrupted label are shaded, their original class beside the given one.

```{{raw}} html
<div class="lsi-explorer" data-dataset="{dataset}"></div>
<script src="../../explore-data/{dataset}.js"></script>
```

The values come from these published files (download them from their chapter's "Take it away" section):

{listing}
""", encoding="utf-8")


def add_take_it_away(notebook: Path, chapter: Chapter | None, tables: list, data: Path) -> None:
    """Append the generated "Take it away" section to an executed chapter notebook."""
    import nbformat

    from lsi.published import matching

    nb = nbformat.read(str(notebook), as_version=4)
    name = notebook.stem
    meta = nb.metadata.get("papermill", {})
    parameters = {k: v for k, v in (meta.get("parameters") or {}).items()}
    profile = parameters.pop("profile", "book")
    lines = ["## Take it away", ""]
    mine = [(info, path) for info, _, path in tables if info["chapter"] == name]
    released = {path: matching(frame) for info, frame, path in tables if info["chapter"] == name}
    if mine:
        lines += ["**The scores.** Each file holds one row per scored sample and, in its Parquet metadata "
                  "(key `lsi.published`), where it comes from: chapter, profile, parameters, tier, commit, "
                  "date and package versions.", ""]
        for info, path in mine:
            title = DATASET_TITLES.get(info["dataset"], info["dataset"])
            lines.append(f"- {{download}}`{path.name} <../data/{name}/{path.name}>`: {info.get('rows', 0):,} "
                         f"{title} samples, score `{info.get('score', 'lsi')}`"
                         + (f" ({info['tier']} tier)" if info.get("tier") else "")
                         + (f", corruption `{info['corruption']}`" if info.get("corruption", "none") != "none"
                            else "")
                         + (f"; also the published value `lsi.published.load(\"{released[path]}\")`"
                            if released[path] else ""))
        for dataset in sorted({info["dataset"] for info, _ in mine}):
            lines.append(f"- browse every sample in the [{DATASET_TITLES.get(dataset, dataset)} explorer]"
                         f"(../explore/{dataset}.md)")
        lines += ["", "```python", "import pyarrow.parquet as pq, json",
                  f"table = pq.read_table(\"{mine[0][1].name}\")",
                  "provenance = json.loads(table.schema.metadata[b\"lsi.published\"])",
                  "scores = table.to_pandas()", "```", ""]
    else:
        lines += ["**The scores.** This chapter publishes no score table.", ""]
    lines += ["**Rerun it.** From the repository, with the data mirrors under `$LSI_DATA`; every parameter "
              f"at the values of this page (profile `{profile}`); change any of them:", "", "```bash"]
    lsi_cmd = [f"lsi book run {name} --profile {profile}"] + [
        f"-p {shlex.quote(f'{k}={_yaml_value(v)}')}" for k, v in parameters.items()]
    lines.append(" \\\n    ".join(lsi_cmd))
    lines += ["```", "", "which runs papermill underneath (the runner also sets `LSI_BOOK_DATA` so that the "
              "scores land beside the notebook):", "", "```bash"]
    source = Path("notebooks") / f"{name}.ipynb"
    if chapter and chapter.notebook.is_relative_to(REPO):
        source = chapter.notebook.relative_to(REPO)
    elif chapter:
        source = chapter.notebook
    pm_cmd = [f"papermill {source} book/chapters/{name}.ipynb --cwd . -p profile {profile}"] + [
        (f"-y {shlex.quote(f'{k}: {_yaml_value(v)}')}" if isinstance(v, (list, dict))
         else f"-p {k} {shlex.quote(_yaml_value(v))}") for k, v in parameters.items()]
    lines.append(" \\\n    ".join(pm_cmd))
    lines += ["```", "", "**Wall time on this machine** (2 CPU cores, no GPU), as measured by the runs:", "",
              "| profile | wall time | measured |", "|---|---|---|"]
    runs = read_runs(data)
    if meta.get("duration") is not None:
        runs[profile] = {"seconds": float(meta["duration"]), "date": str(meta.get("end_time", ""))[:19],
                         "source": "this page's papermill metadata"}
    for which in ("ci", "book"):
        run = runs.get(which)
        lines.append(f"| `{which}` | {_duration(run['seconds'])} | {run.get('date', '')[:10]}"
                     f"{', commit ' + run['commit'] if run.get('commit') else ''} |" if run
                     else f"| `{which}` | not recorded | run `lsi book run {name} --profile {which}"
                          f"{' --record-time' if which == 'ci' else ''}` |")
    estimate = chapter.paper_estimate if chapter else ""
    lines.append(f"| `paper` | {estimate or 'no estimate stated'} | estimate for one GPU |")
    licences = [DATA_LICENSES.get(m, f"`{m}`: see its source") for m in (chapter.data if chapter else ())]
    lines += ["", "**Cite / reuse.** The numbers on this page were computed by this book's code "
              "(the `lsi` package) at the commit and with the parameters in the provenance block above; "
              "when you reuse them, cite the LSI paper (Kaiser et al., *Data Informativeness Through a "
              "Bayesian Lens*) and the data set"
              + (": " + "; ".join(licences) + "." if licences else
                 ": scikit-learn's embedded digits (BSD-3-Clause; UCI optical digits, CC BY 4.0).")]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines))
    cell.metadata["tags"] = ["take-it-away"]
    nb.cells.append(cell)
    nbformat.write(nb, str(notebook))


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


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
