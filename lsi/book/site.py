"""Building the HTML book: stage the sources and executed chapters, then ``jb build``.

The site is built from a staging copy of ``_config.yml``, ``_toc.yml``, ``book/`` and the executed
chapters with ``jb build`` (execution off, warnings are errors). The build adds a generated "Take it away"
section to every chapter and one sample explorer page per data set with published scores
(``book/explore/<dataset>``), and fills the execution status page (``book/status.md``) and the
reproduction report (``book/reproduction.md``) from the executed chapters (:mod:`lsi.book.status`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from lsi.book import chapter_data, manual
from lsi.book.pages import add_take_it_away, duration_words, time_to_learn, write_explorer_page
from lsi.book.profiles import PUBLISHED, REPO, Chapter, data_dir, load_chapters
from lsi.book.run import OFFLINE_ENV
from lsi.book.status import status_substitutions

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
    tables = chapter_data.published_tables(stage / "book" / "data")
    datasets = sorted({info["dataset"] for info, _, _ in tables})
    present = sorted(p.stem for p in chapters_dir.glob("*.ipynb") if not p.name.startswith("."))
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    substitutions = config.setdefault("parse", {}).setdefault("myst_substitutions", {})
    substitutions.update(teaching_substitutions(chapters_dir))
    substitutions.update(manual.substitutions())
    substitutions.update(status_substitutions(chapters_dir, chapters))
    (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (stage / "book" / "chapters").mkdir(parents=True, exist_ok=True)
    for name in present:
        notebook = stage / "book" / "chapters" / f"{name}.ipynb"
        shutil.copyfile(chapters_dir / f"{name}.ipynb", notebook)
        add_take_it_away(notebook, chapters.get(name), tables, stage / "book" / "data" / name)
    for dataset in datasets:
        write_explorer_page(stage / "book" / "explore" / f"{dataset}.md", dataset, tables)
    toc = restrict_toc(yaml.safe_load((REPO / "_toc.yml").read_text()), set(present))
    if datasets:
        toc.setdefault("parts", []).append({"caption": "Explore the samples", "chapters": [
            {"file": f"book/explore/{dataset}"} for dataset in datasets]})
    (stage / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    built = jb_build(stage, work, out / "build.log")
    samples = chapter_data.write_thumbnails(stage / "book" / "data", built)
    for dataset in datasets:
        images, texts = samples.get(dataset, (set(), {}))
        payload = chapter_data.explorer_payload(tables, dataset, texts=texts, has_thumbs=images)
        (built / "explore-data").mkdir(exist_ok=True)
        (built / "explore-data" / f"{dataset}.js").write_text(
            "window.LSI_EXPLORER = window.LSI_EXPLORER || {};\n"
            f"window.LSI_EXPLORER[{json.dumps(dataset)}] = "
            + json.dumps(payload, separators=(",", ":"), allow_nan=False) + ";\n", encoding="utf-8")
    if html.exists():
        shutil.rmtree(html)
    os.replace(built, html)
    return html


def jb_build(source: str | Path, work: str | Path, log: str | Path, timeout: float = 1800) -> Path:
    """``jb build source`` into ``work/_build/html`` with warnings as errors; return that folder.

    The full output is written to ``log``; any ``WARNING`` or ``ERROR`` line,
    or a non-zero exit, raises with the first lines of them; a build still running
    after ``timeout`` seconds is stopped and raises :class:`TimeoutError`.
    """
    command = [str(Path(sys.executable).with_name("jb")), "build", str(source),
               "--path-output", str(work), "--builder", "html", "-W", "--keep-going"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **OFFLINE_ENV})
    except subprocess.TimeoutExpired as expired:
        Path(log).write_text(_text(expired.stdout) + _text(expired.stderr))
        raise TimeoutError(f"jb build did not finish within {timeout:g} s and was stopped; its output so far is "
                           f"in {log}. A full book builds in minutes: look there for the page it hung on.") from None
    text = result.stdout + result.stderr
    Path(log).write_text(text)
    warnings = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
    if result.returncode != 0 or warnings:
        shown = "\n".join(warnings[:20]) or text[-3000:]
        raise RuntimeError(f"jb build failed (exit {result.returncode}); see {log}:\n{shown}")
    return Path(work) / "_build" / "html"


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


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
                run = f"{duration_words(float(meta['duration']))} at `{profile}`"
            data = ", ".join(chapter.data) or "none to download"
            rows.append(f"| [{chapter.title}](chapters/{name}) | {time_to_learn(chapter.notebook)} "
                        f"| {run} | {data} |")
        values[f"run_{name}"] = run
        values[f"link_{name}"] = (f"[{chapter.title}](chapters/{name})" if notebook.is_file()
                                  else f"*{chapter.title}* (not in this build)")
    values["chapter_table"] = ("| chapter | time to learn | run time here | data mirrors |\n"
                               "|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return values


def restrict_toc(toc: dict, present: set[str]) -> dict:
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


