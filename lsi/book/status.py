"""The book's execution status page: for every chapter, the run the site shows and whether it is up to date.

Like QuantEcon's execution statistics. ``book/status.md`` holds the prose and two substitutions that
:func:`lsi.book.site.build_site` fills at build time from the executed chapters and their ``runs.json``:

- ``status_table``: per chapter its profile, commit, date, wall time and peak memory, the machine (cores, GPU), the data
  sets and their hashes, and whether the executed chapter is up to date with its source (its fingerprint,
  :mod:`lsi.book.fingerprint`);
- ``status_commits``: the commits the chapters ran on, with a warning when they are not one.

``book/reproduction.md`` shows ``reproduction_report``: the report of :func:`lsi.book.reproduction.reproduce`
found beside the executed chapters (``data/reproduction.json``), or how to make one.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from lsi.book.fingerprint import freshness
from lsi.book.pages import duration_words
from lsi.book.profiles import Chapter, data_dir
from lsi.book.reproduction import REPORT_JSON, commit_warning, report_markdown
from lsi.book.records import read_runs

DISAGREEMENT_SECONDS = 600
"""``runs.json`` and the notebook's papermill record are said to disagree when their end times differ by
more than this (ten minutes: the same run writes both within seconds)."""


def status_substitutions(chapters_dir: str | Path, chapters: dict[str, Chapter]) -> dict[str, str]:
    """``status_table``, ``status_commits`` and ``reproduction_report`` for the chapters in ``chapters_dir``."""
    import nbformat

    chapters_dir = Path(chapters_dir)
    rows, commits = [], {}
    for name, chapter in chapters.items():
        notebook = chapters_dir / f"{name}.ipynb"
        if not notebook.is_file():
            continue
        meta = nbformat.read(str(notebook), as_version=4).metadata.get("papermill", {})
        profile = (meta.get("parameters") or {}).get("profile", "book")
        run = read_runs(data_dir(chapters_dir) / name).get(profile) or {}
        commits[name] = run.get("commit", "not recorded")
        rows.append(_row(chapter, profile, run, meta, chapters_dir))
    table = ("| chapter | profile | commit | date | wall time | peak memory | machine | data (SHA-256, first 12) "
             "| up to date with its source? |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    distinct = sorted(set(commits.values()))
    warning = commit_warning(commits)
    sentence = (f"All {len(commits)} chapters ran on commit `{distinct[0]}`." if len(distinct) == 1 else
                f"**The {len(commits)} chapters ran on {len(distinct)} different commits** "
                f"({', '.join(f'`{c}`' for c in distinct)}): {warning.split('; ', 1)[-1]}") if commits else (
                "No executed chapter in this build.")
    return {"status_table": table, "status_commits": sentence,
            "reproduction_report": reproduction_section(data_dir(chapters_dir) / REPORT_JSON)}


def _row(chapter: Chapter, profile: str, run: dict[str, Any], meta: dict[str, Any], chapters_dir: Path) -> str:
    seconds = run.get("seconds", meta.get("duration"))
    date = run.get("date") or str(meta.get("end_time", ""))[:19]
    memory = f"{run['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in run else "not recorded"
    machine = run.get("machine")
    machine_text = (f"{machine['cores']} cores, {machine.get('gpu') or 'no GPU'}" if machine else "not recorded")
    data = (run.get("fingerprint") or {}).get("data")
    data_text = ("; ".join(f"{k} `{v[:12]}`" for k, v in sorted(data.items())) or "none"
                 if data is not None else ("not recorded" if chapter.data else "none"))
    fresh = freshness(chapter, profile, chapters_dir)
    state = {"up to date": "yes", "stale": "no: " + "; ".join(fresh.changed),
             "unreachable": "not checked: its data is not reachable where the site was built",
             "unpublished": "not executed"}.get(fresh.state, "")
    if fresh.state == "adopted":
        adopted = run["adopted"]
        state = (f"yes, **adopted** on {adopted['date'][:10]} at `{adopted['commit']}`: not re-executed at this "
                 f"fingerprint ({adopted['source_cells_differing']} of {adopted['source_cells']} source cells "
                 f"differ from the run's)")
    note = _disagreement(run, meta)
    return (f"| {chapter.title} | `{profile}` | `{run.get('commit', 'not recorded')}` | {date[:10]} "
            f"| {duration_words(seconds) if seconds is not None else 'not recorded'} | {memory} | {machine_text} "
            f"| {data_text} | {state}{note} |")


def _disagreement(run: dict[str, Any], meta: dict[str, Any]) -> str:
    """A note when ``runs.json`` records another run than the notebook's papermill metadata."""
    if not run.get("date") or not meta.get("end_time"):
        return ""
    recorded = _dt.datetime.fromisoformat(run["date"].replace("Z", "+00:00"))
    executed = _dt.datetime.fromisoformat(str(meta["end_time"]))
    if abs((recorded - executed).total_seconds()) <= DISAGREEMENT_SECONDS:
        return ""
    return (f"; note: `runs.json` records a run ending {run['date'][:16]}, the notebook one ending "
            f"{str(meta['end_time'])[:16]} ({duration_words(float(meta.get('duration') or 0))})")


def reproduction_section(path: str | Path) -> str:
    """The reproduction report at ``path`` (JSON) as Markdown, or how to make one."""
    path = Path(path)
    if not path.is_file():
        return ("No reproduction report comes with this build. `make reproduce` re-executes every chapter into "
                "`_build/reproduce/book/` and writes the report there (`reproduction.md`, and "
                "`data/reproduction.json`, which a site built from that folder shows on this page).\n")
    return report_markdown(json.loads(path.read_text()))
