"""Reproducing the book: re-execute every chapter into a separate folder and compare its claims with the published ones.

:func:`reproduce` (``make reproduce``, ``lsi book reproduce``) executes every chapter at a profile into
``_build/reproduce/<profile>/chapters`` (never over the published chapters), one after the other, skipping a
chapter already reproduced there at this commit and fingerprint (so a killed run resumes), with an ETA from
the wall times in the published ``runs.json``. It then compares, claim by claim, what each reproduced chapter
found with what the published one found (:func:`compare_chapter`) and writes the report as JSON
(``data/reproduction.json``, beside the reproduced scores, where a site built from that folder finds it) and
as a page (``reproduction.md``).

**Over several sittings.** ``only=`` (``--chapters``) executes only some chapters; the others keep the
comparison an earlier report at the same commit and profile made of them (the report beside the reproduced
chapters, or the one in ``sittings``). :func:`publish_reproduction` (``--publish DIR``) then copies the reproduced
chapters and the report over the book in ``DIR``, so that a machine that does not keep ``_build`` between
sittings resumes from that book (``sittings``): a chapter published there at this commit and fingerprint whose
comparison its report holds is not executed again, and keeps that comparison (made against the chapter it
replaced). A chapter no report has compared yet is ``not reproduced yet``.

**The claims** are read from each executed notebook's claim boxes: from the records :func:`lsi.book.verdicts.box`
stores in the output's metadata (key :data:`lsi.claims.CLAIMS_METADATA`), or, for chapters executed before
it did, parsed from the box's HTML table (the same fields: claim, this run's numbers, tier, verdict).

**The tolerance** of a number is what its claim declares in its text: a number reported with a bootstrap
interval (``0.62 (95% interval 0.55 to 0.69 ...)``) may move within the published interval (a seeded
stochastic measurement on another machine or library version); every other number must be reproduced digit
for digit, as printed (the exact chapters). A claim is ``identical`` (same numbers and verdict),
``within tolerance``, ``drifted`` (a number left its tolerance), ``verdict changed``, ``missing`` (published,
not reproduced) or ``new``; only the first two count as reproduced.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsi.book.profiles import PUBLISHED, REPO, Chapter, data_dir, load_chapters, missing_data
from lsi.book.records import atomic_write_text, read_runs, record_run, recover_folder, swap_folder

OUT = REPO / "_build" / "reproduce"
REPORT_JSON = "reproduction.json"
REPORT_PAGE = "reproduction.md"
IDENTICAL, WITHIN, DRIFTED, CHANGED, MISSING, NEW = (
    "identical", "within tolerance", "drifted", "verdict changed", "missing", "new")
REPRODUCED = (IDENTICAL, WITHIN)
"""Claim outcomes that count as reproduced."""
NOT_YET = "not reproduced yet"
"""Status of a chapter left out of a sitting (``chapters=``) that no earlier report at this commit compared."""

_NUMBER = r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?"
"""A number as the claims print it (``-0.699``, ``5,000``, ``1e-8``), not digits inside a word (``p99``, ``log10``)."""
NUMBER = re.compile(_NUMBER)
INTERVAL = re.compile(rf"(?P<value>{_NUMBER})%?\s*\([^()]*?interval\s+(?P<low>{_NUMBER})%?\s+to\s+"
                      rf"(?P<high>{_NUMBER})")
"""A number followed by its bootstrap interval, as the claims print it: ``0.62 (95% interval 0.55 to 0.69``."""
_ROW = re.compile(r"<tr><td[^>]*>(?P<sub>&#8627; )?(?P<claim>.*?)</td><td[^>]*>(?P<ours>.*?)</td><td[^>]*>(?P<tier>.*?)</td>"
                  r"<td[^>]*><strong[^>]*>(?P<status>.*?)</strong>(?P<detail>.*?)<br><small>rule: <code>"
                  r"(?P<rule>.*?)</code></small></td></tr>", re.S)


def notebook_claims(notebook: str | Path) -> list[dict[str, Any]]:
    """Every claim in the claim boxes of an executed notebook, in order, as :meth:`lsi.claims.Claim.to_dict` records."""
    import nbformat

    from lsi.claims import CLAIMS_METADATA

    found = []
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        for output in cell.get("outputs", []):
            records = (output.get("metadata") or {}).get("text/html", {}).get(CLAIMS_METADATA)
            if records is not None:
                found += records
            elif "reproduced?</th>" in str(output.get("data", {}).get("text/html", "")):
                found += _parse_box(str(output["data"]["text/html"]))
    return found


def _parse_box(text: str) -> list[dict[str, Any]]:
    """The claims of a box rendered by :func:`lsi.book.verdicts.box` (for notebooks executed before it stored them)."""
    claims = []
    for row in _ROW.finditer(text):
        tier, rule = html.unescape(row["tier"]), html.unescape(row["rule"])
        claims.append({"claim": html.unescape(row["claim"]), "ours": html.unescape(row["ours"]),
                       "tier": "" if tier == "-" else tier, "sub": bool(row["sub"]),
                       "verdict": {"status": html.unescape(row["status"]),
                                   "detail": html.unescape(row["detail"]).removeprefix(": "),
                                   "rule": "" if rule == "by eye" else rule}})
    return claims


@dataclass
class Number:
    """One number of a claim's result, published beside reproduced, and whether it kept its tolerance."""

    published: str
    reproduced: str
    difference: float
    tolerance: str
    within: bool


@dataclass
class ClaimComparison:
    """One claim of a chapter, published beside reproduced."""

    claim: str
    outcome: str
    published: dict[str, Any] | None
    reproduced: dict[str, Any] | None
    numbers: list[Number] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome in REPRODUCED


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def compare_numbers(published: str, reproduced: str) -> tuple[list[Number], str]:
    """Pair the numbers of two renderings of a claim's result and judge each against its tolerance.

    Returns the pairs and a note (non-empty when the two texts do not hold the same count of numbers,
    which is itself a drift: the result changed shape). Interval bounds are the tolerance of the number
    they follow, not numbers judged themselves.
    """
    intervals = {match.start("value"): (_value(match["low"]), _value(match["high"]))
                 for match in INTERVAL.finditer(published)}
    bounds = {m.start(name) for m in INTERVAL.finditer(published) for name in ("low", "high")}
    bounds_now = {m.start(name) for m in INTERVAL.finditer(reproduced) for name in ("low", "high")}
    before = [m for m in NUMBER.finditer(published) if m.start() not in bounds]
    after = [m for m in NUMBER.finditer(reproduced) if m.start() not in bounds_now]
    if len(before) != len(after):
        return [], f"the result holds {len(after)} numbers, the published one {len(before)}"
    numbers = []
    for old, new in zip(before, after):
        difference = _value(new.group()) - _value(old.group())
        if old.start() in intervals:
            low, high = intervals[old.start()]
            numbers.append(Number(old.group(), new.group(), difference, f"published interval {low:g} to {high:g}",
                                  low <= _value(new.group()) <= high))
        else:
            numbers.append(Number(old.group(), new.group(), difference, "identical digits",
                                  old.group() == new.group()))
    return numbers, ""


def compare_claims(published: list[dict], reproduced: list[dict]) -> list[ClaimComparison]:
    """Claim by claim (matched by the claim's text, in order), published beside reproduced."""
    remaining = list(reproduced)
    rows = []
    for old in published:
        new = next((c for c in remaining if c["claim"] == old["claim"]), None)
        if new is None:
            rows.append(ClaimComparison(old["claim"], MISSING, old, None, note="not in the reproduced chapter"))
            continue
        remaining.remove(new)
        numbers, note = compare_numbers(old["ours"], new["ours"])
        if old["verdict"]["status"] != new["verdict"]["status"]:
            outcome = CHANGED
        elif note or not all(n.within for n in numbers):
            outcome = DRIFTED
        elif old["ours"] == new["ours"] and old["verdict"] == new["verdict"] and old.get("tier") == new.get("tier"):
            outcome = IDENTICAL
        else:
            outcome = WITHIN
        rows.append(ClaimComparison(old["claim"], outcome, old, new, numbers, note))
    rows += [ClaimComparison(new["claim"], NEW, None, new, note="not in the published chapter") for new in remaining]
    return rows


@dataclass
class ChapterComparison:
    """A reproduced chapter beside its published run."""

    chapter: str
    status: str
    """``compared``, or why not: ``skipped: <reason>``, ``failed: <message>``, ``not published``."""
    published_commit: str = ""
    reproduced_commit: str = ""
    seconds: float | None = None
    parameters: list[str] = field(default_factory=list)
    """Parameters whose published value differs from the reproduced one (``name: old -> new``)."""
    claims: list[ClaimComparison] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "compared" and all(c.ok for c in self.claims)


def comparison_from_dict(record: dict[str, Any]) -> ChapterComparison:
    """A :class:`ChapterComparison` back from its report record (:meth:`Report.to_dict`)."""
    claims = [ClaimComparison(**{**row, "numbers": [Number(**n) for n in row["numbers"]]})
              for row in record["claims"]]
    return ChapterComparison(**{k: v for k, v in record.items() if k not in ("ok", "claims")}, claims=claims)


def earlier_comparisons(profile: str, commit: str, *reports: Path) -> dict[str, ChapterComparison]:
    """The compared chapters of the reports among ``reports`` written at ``profile`` and ``commit``, a later
    report's comparison of a chapter replacing an earlier one's."""
    found = {}
    for path in reports:
        record = json.loads(path.read_text()) if path.is_file() else {}
        if record.get("profile") == profile and record.get("commit") == commit:
            found |= {c["chapter"]: comparison_from_dict(c) for c in record["chapters"] if c["status"] == "compared"}
    return found


def compare_chapter(name: str, published: str | Path, reproduced: str | Path) -> ChapterComparison:
    """Compare the claims and parameters of the executed chapter ``reproduced`` with its ``published`` version."""
    published, reproduced = Path(published), Path(reproduced)
    if not published.is_file():
        return ChapterComparison(name, "not published")
    before, after = _papermill(published), _papermill(reproduced)
    old, new = before.get("parameters") or {}, after.get("parameters") or {}
    moved = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ChapterComparison(name, "compared", _commit(published, old.get("profile")),
                             _commit(reproduced, new.get("profile")), after.get("duration"), moved,
                             compare_claims(notebook_claims(published), notebook_claims(reproduced)))


def snapshot(notebook: str | Path, folder: str | Path) -> Path:
    """Copy an executed chapter and its ``runs.json`` into ``folder`` (``chapters/``, ``data/``), to compare
    with after a run replaced it; return the copied notebook."""
    import shutil

    notebook, folder = Path(notebook), Path(folder)
    copy = folder / "chapters" / notebook.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, copy)
    runs = data_dir(notebook.parent) / notebook.stem / "runs.json"
    if runs.is_file():
        (folder / "data" / notebook.stem).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs, folder / "data" / notebook.stem / "runs.json")
    return copy


def _papermill(notebook: Path) -> dict[str, Any]:
    import nbformat

    return dict(nbformat.read(str(notebook), as_version=4).metadata.get("papermill", {}))


def _commit(notebook: Path, profile: str | None) -> str:
    return (read_runs(data_dir(notebook.parent) / notebook.stem).get(profile) or {}).get("commit", "")


def describe(comparison: ChapterComparison) -> str:
    """The comparison as terminal lines: one per claim, with what moved."""
    head = f"{comparison.chapter}: "
    if comparison.status != "compared":
        return head + comparison.status
    moved = sum(not c.ok for c in comparison.claims)
    lines = [head + (f"{len(comparison.claims)} claims reproduced" if comparison.ok
                     else f"{moved} of {len(comparison.claims)} claims moved beyond their tolerance")]
    if comparison.parameters:
        lines.append("  parameters differ from the published run: " + "; ".join(comparison.parameters))
    for row in comparison.claims:
        lines.append(f"  {row.outcome:<16} {row.claim}")
        if row.outcome in (IDENTICAL, MISSING, NEW):
            continue
        if row.outcome == CHANGED:
            lines.append(f"      verdict: {_verdict(row.published)} -> {_verdict(row.reproduced)}")
        lines.append(f"      published : {row.published['ours']}")
        lines.append(f"      reproduced: {row.reproduced['ours']}")
        for number in row.numbers:
            if number.published != number.reproduced:
                lines.append(f"      {number.published} -> {number.reproduced} ({number.difference:+.3g}; "
                             f"{number.tolerance}: {'within' if number.within else 'outside'})")
        if row.note:
            lines.append(f"      {row.note}")
    return "\n".join(lines)


def _verdict(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    verdict = record["verdict"]
    return verdict["status"] + (f": {verdict['detail']}" if verdict.get("detail") else "")


@dataclass
class Report:
    """The reproduction of a whole book at a profile."""

    profile: str
    commit: str
    date: str
    chapters: list[ChapterComparison]
    published_commits: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.chapters)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["ok"] = self.ok
        for chapter, source in zip(record["chapters"], self.chapters):
            chapter["ok"] = source.ok
        return record

    def to_json(self) -> str:
        """The report as written to ``reproduction.json`` (:meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=1, default=str) + "\n"


def published_commits(chapters: dict[str, Chapter], profile: str,
                      chapters_dir: str | Path = PUBLISHED) -> dict[str, str]:
    """The commit each published chapter's run at ``profile`` recorded (``runs.json``), by chapter."""
    data = data_dir(chapters_dir)
    return {name: (read_runs(data / name).get(profile) or {}).get("commit", "not recorded")
            for name in chapters if (Path(chapters_dir) / f"{name}.ipynb").is_file()}


def commit_warning(commits: dict[str, str]) -> str:
    """A warning when the published chapters do not share one commit (empty when they do)."""
    distinct = sorted(set(commits.values()))
    if len(distinct) <= 1:
        return ""
    return (f"warning: the {len(commits)} published chapters ran on {len(distinct)} different commits "
            f"({', '.join(distinct)}); a reproduction at one commit compares each with code it did not run on.")


def reproduce(profile: str = "book", out: str | Path | None = None, chapters: dict[str, Chapter] | None = None,
              published: str | Path | None = None, progress: bool = True, only: Sequence[str] | None = None,
              sittings: str | Path | None = None) -> Report:
    """Re-execute every chapter at ``profile`` into ``out/chapters``, then compare it with the published book.

    ``out`` defaults to ``_build/reproduce/<profile>`` and may not hold the published chapters
    (``published``, default :data:`PUBLISHED`). A chapter already reproduced there at this commit and
    fingerprint is not executed again, nor is one that an earlier sitting published into ``sittings``
    (default: ``published``; :func:`publish_reproduction`) at this commit and fingerprint with its comparison;
    one whose data cannot be reached is reported as not reproduced. ``only`` executes just these chapters;
    the others keep an earlier report's comparison at this commit, or are ``not reproduced yet``.
    Writes ``out/data/reproduction.json`` and ``out/reproduction.md`` and returns the report.
    """
    from lsi.book import run
    from lsi.provenance import git_commit

    chapters = chapters if chapters is not None else load_chapters()
    published = Path(published) if published is not None else PUBLISHED
    out = Path(out) if out is not None else OUT / profile
    target = out / "chapters"
    if target.resolve() == Path(published).resolve():
        raise ValueError(f"out={out} would reproduce over the published chapters; choose another folder.")
    commits = published_commits(chapters, profile, published)
    warning = commit_warning(commits)
    if warning:
        print(warning, flush=True)
    expected = {name: (read_runs(data_dir(published) / name).get(profile) or {}).get("seconds")
                for name in chapters}
    unknown = sorted(set(only or ()) - set(chapters))
    if unknown:
        raise ValueError(f"Unknown chapter(s) {', '.join(unknown)}; choose among {', '.join(chapters)}.")
    commit, start, results = git_commit(), time.perf_counter(), []
    sittings = Path(sittings) if sittings is not None else published
    by_book = earlier_comparisons(profile, commit, data_dir(sittings) / REPORT_JSON)
    earlier = by_book | earlier_comparisons(profile, commit, out / "data" / REPORT_JSON)
    kept = {name for name, chapter in chapters.items()
            if name in by_book and _published_here(name, chapter, profile, commit, sittings)}
    sitting = [name for name in chapters if name not in kept and (only is None or name in only)]
    for name, chapter in chapters.items():
        if name in kept:
            results.append(by_book[name])
            print(f"{name}: reproduced and published at this commit before; its comparison is kept", flush=True)
            continue
        if name not in sitting:
            results.append(earlier.get(name) or ChapterComparison(name, NOT_YET, commits.get(name, "")))
            continue
        reason = missing_data(chapter)
        done = reason is None and _published_here(name, chapter, profile, commit, target)
        if progress:
            print(_progress(sitting, name, expected, time.perf_counter() - start, done), flush=True)
        if reason:
            results.append(ChapterComparison(name, f"skipped: {reason}", commits.get(name, "")))
            print(f"{name}: not reproduced: {reason}", flush=True)
            continue
        if not done:
            report = run.run_chapter(chapter, profile, out=target, progress=progress)
            if report.status != "executed":
                results.append(ChapterComparison(name, f"{report.status}: {report.message}", commits.get(name, "")))
                print(report, flush=True)
                continue
        results.append(compare_chapter(name, published / f"{name}.ipynb", target / f"{name}.ipynb"))
        print(describe(results[-1]), flush=True)
    report = Report(profile, commit, _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    results, commits)
    write_report(report, out)
    return report


def _published_here(name: str, chapter: Chapter, profile: str, commit: str, folder: Path) -> bool:
    """Whether ``folder`` holds ``name`` executed at ``profile``, this commit and today's fingerprint."""
    from lsi.book.fingerprint import fingerprint

    record = read_runs(data_dir(folder) / name).get(profile) or {}
    return ((folder / f"{name}.ipynb").is_file() and record.get("commit") == commit
            and record.get("fingerprint") == fingerprint(chapter, profile))


def publish_reproduction(report: Report, out: str | Path | None = None,
                         published: str | Path | None = None) -> list[str]:
    """Copy the chapters ``report`` reproduced into ``out`` over the published book ``published`` (default
    :data:`PUBLISHED`), with the report.

    A republication at one commit ``X`` that spans sittings runs in a checkout of ``X`` (whose published
    chapters are the ones to compare with) and publishes into the checkout that records the sittings
    (``lsi book reproduce --publish ../main/book/chapters``), which :func:`reproduce` reads as ``sittings``.

    Each chapter executed and compared in this sitting (its notebook in ``out/chapters``, its run at the
    report's commit) replaces the published notebook and scores; its ``runs.json`` keeps the published
    records of the other profiles. The report's JSON goes beside the published chapters, where the book's
    reproduction page and the next sitting (:func:`reproduce`) find it. Returns the chapters published.
    """
    import shutil

    out = Path(out) if out is not None else OUT / report.profile
    published = Path(published) if published is not None else PUBLISHED
    source, target = out / "chapters", data_dir(published)
    names = [c.chapter for c in report.chapters if c.status == "compared" and c.reproduced_commit == report.commit
             and (source / f"{c.chapter}.ipynb").is_file()
             and (read_runs(data_dir(source) / c.chapter).get(report.profile) or {}).get("commit") == report.commit]
    for name in names:
        recover_folder(target / name)
        staging = target / f".staging-{name}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(data_dir(source) / name, staging)
        runs = read_runs(target / name)
        runs[report.profile] = read_runs(staging)[report.profile]
        record_run(staging, runs)
        atomic_write_text(published / f"{name}.ipynb", (source / f"{name}.ipynb").read_text())
        swap_folder(staging, target / name)
    atomic_write_text(target / REPORT_JSON, report.to_json())
    return names


def _progress(sitting: list[str], name: str, expected: dict, elapsed: float, done: bool) -> str:
    """The line printed before chapter ``name`` of this sitting's chapters: its place, and the time left for
    it and the sitting's later chapters by their published wall times."""
    from lsi.book.pages import duration_words

    number = sitting.index(name) + 1
    left = [expected[n] for n in sitting[number - 1 + done:]]  # a chapter reproduced before costs nothing
    known = sum(s for s in left if s)
    eta = duration_words(known) + (" (+ chapters with no recorded time)" if None in left else "")
    this = "already reproduced at this commit, skipped" if done else (
        f"published run took {duration_words(expected[name])}" if expected[name] else "no recorded wall time")
    return (f"[{number}/{len(sitting)}] {name}: {this}; elapsed {duration_words(elapsed)}, "
            f"left about {eta} by the published wall times")


def write_report(report: Report, out: str | Path) -> tuple[Path, Path]:
    """Write the report as ``out/data/reproduction.json`` and ``out/reproduction.md``; return both paths."""
    out = Path(out)
    record = out / "data" / REPORT_JSON
    page = out / REPORT_PAGE
    atomic_write_text(record, report.to_json())
    atomic_write_text(page, "# Reproduction report\n\n" + report_markdown(report.to_dict()))
    return record, page


def report_markdown(record: dict[str, Any]) -> str:
    """The report (as written to JSON) as Markdown: a summary, then per chapter a table of its claims."""
    chapters = record["chapters"]
    compared = [c for c in chapters if c["status"] == "compared"]
    claims = [row for c in compared for row in c["claims"]]
    counts = {outcome: sum(row["outcome"] == outcome for row in claims)
              for outcome in (IDENTICAL, WITHIN, DRIFTED, CHANGED, MISSING, NEW)}
    lines = [f"Reproduced at the `{record['profile']}` profile on commit `{record['commit']}` "
             f"({record['date'][:10]}): {len(compared)} of {len(chapters)} chapters re-executed and compared; "
             f"of their {len(claims)} claims " + ", ".join(f"{n} {o}" for o, n in counts.items() if n) + ".",
             "", "**" + ("Everything reproduced within its tolerance." if record["ok"] else
                         "Some results moved beyond their tolerance, or were not reproduced (below).") + "**", "",
             "A number reported with a bootstrap interval may move within the published interval; every other "
             "number must reproduce digit for digit.", ""]
    warning = commit_warning(record["published_commits"])
    if warning:
        lines += [f"```{{warning}}\n{warning.removeprefix('warning: ')}\n```", ""]
    for chapter in chapters:
        lines += [f"## {chapter['chapter']}", ""]
        if chapter["status"] != "compared":
            lines += [f"Not reproduced: {_cell(chapter['status'])}.", ""]
            continue
        lines.append(f"Published at `{chapter['published_commit'] or 'an unrecorded commit'}`, reproduced at "
                     f"`{chapter['reproduced_commit']}`.")
        if chapter["parameters"]:
            lines.append("Parameters that differ: " + "; ".join(f"`{p}`" for p in chapter["parameters"]) + ".")
        lines += ["", "| claim | published | reproduced | difference | within tolerance? | verdict |",
                  "|---|---|---|---|---|---|"]
        for row in chapter["claims"]:
            old, new = row["published"], row["reproduced"]
            moved = "; ".join(f"{n['published']} -> {n['reproduced']} ({n['difference']:+.3g}, {n['tolerance']})"
                              for n in row["numbers"] if n["published"] != n["reproduced"]) or row["note"] or "none"
            verdict = (_verdict(old) if old and new and old["verdict"] == new["verdict"]
                       else f"{_verdict(old)} -> {_verdict(new)}")
            lines.append(f"| {_cell(row['claim'])} | {_cell(old['ours'] if old else '-')} "
                         f"| {_cell(new['ours'] if new else '-')} | {_cell(moved)} | **{row['outcome']}** "
                         f"| {_cell(verdict)} |")
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
