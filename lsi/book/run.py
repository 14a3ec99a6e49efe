"""Executing chapters: papermill runs into a folder of executed chapters, skips, run records.

A chapter is executed with papermill and written atomically. A chapter whose data cannot be reached is
*skipped and reported*, and its previously published output is kept. The scores a chapter publishes land
beside the executed chapters (``book/data/<chapter>/``) only when the run succeeds, with ``runs.json``
recording per profile the wall time, commit, date, machine and the chapter's fingerprint
(:mod:`lsi.book.fingerprint`). :func:`run_stale` executes only the chapters whose fingerprint changed.

Nothing is lost on a crash: the executed notebook and ``runs.json`` are written beside their target and
renamed over it (``os.replace``, then the folder is fsynced), and a chapter's data folder is replaced by two
renames in one folder (:func:`swap_folder`), so that it is always either the old folder or the new one. The
notebook is replaced before the data: a crash between the two leaves the new notebook with the old
fingerprint, which the next build re-executes, never the reverse.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lsi.book import fingerprint as _fingerprint
from lsi.book.records import _fsync_file, _fsync_folder, read_runs, record_run, recover_folder, swap_folder
from lsi.book.profiles import PUBLISHED, REPO, Chapter, data_dir, load_chapters, missing_data

CELL_TIMEOUT = 7200.0
"""Seconds one cell may run before its chapter fails (``$LSI_CELL_TIMEOUT`` overrides it): a hung cell ends
the run instead of holding it. The longest cells (a sweep at the ``book`` profile) take well under an hour."""

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                # tqdm.auto warns at import when ipywidgets is absent; the chapters show no bars.
                "PYTHONWARNINGS": "ignore:IProgress not found"}
_QUIET_ENV = {"TQDM_DISABLE": "1",  # read by tqdm when the kernel imports it (not by this process's bars)
              "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "TOKENIZERS_PARALLELISM": "false"}
"""Silence library progress bars and chatter in the kernel, so they never reach a page."""
NOISE = re.compile(r"(\d+%\|)|(\|\s*\d+/\d+\s*\[)|(^\s*(Loading weights|Loading checkpoint shards|"
                   r"Fetching \d+ files|Warning: IProgress|huggingface/tokenizers: The current process))")
"""A line of stderr that is library noise (progress bars, weight loading) rather than a message."""


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
                out: str | Path = PUBLISHED, progress: bool = False, *, allow_dirty: bool = False,
                cell_timeout: float | None = None, threads: int | None = None) -> RunReport:
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
    A cell running longer than ``cell_timeout`` seconds (default :data:`CELL_TIMEOUT`) fails the chapter.
    ``threads`` caps the kernel's threads (``OMP_NUM_THREADS``, read by torch and numpy at import; default:
    all cores), for chapters that run side by side (:func:`run_book`'s ``jobs``).
    """
    import papermill
    from nbclient.exceptions import CellTimeoutError

    out = Path(out)
    parameters = chapter.parameters(profile, overrides)
    target = out / f"{chapter.name}.ipynb"
    reason = missing_data(chapter)
    if reason:
        return _skip(chapter, target, reason)
    modified_before = check_clean_tree(out, allow_dirty=allow_dirty)
    inputs = _fingerprint.fingerprint(chapter, profile, overrides)
    out.mkdir(parents=True, exist_ok=True)
    data = data_dir(out)
    recover_folder(data / chapter.name)
    staging = data / f".staging-{chapter.name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    fd, scratch = tempfile.mkstemp(dir=out, prefix=f".{chapter.name}.", suffix=".ipynb")
    os.close(fd)
    start = time.perf_counter()
    env = {**OFFLINE_ENV, **_QUIET_ENV, "LSI_BOOK_DATA": str(staging), "LSI_BOOK_CHAPTER": chapter.name,
           "LSI_BOOK_PROFILE": profile, "LSI_BOOK_PARAMETERS": json.dumps(parameters, default=str),
           **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {})}
    env_before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    memory = PeakMemory()
    try:
        bar = {"desc": f"{chapter.name} [{profile}]", "unit": "cell", "leave": True} if progress else False
        cell_timeout = cell_timeout or float(os.environ.get("LSI_CELL_TIMEOUT", CELL_TIMEOUT))
        with memory:
            papermill.execute_notebook(str(chapter.notebook), scratch, parameters=parameters,
                                       kernel_name="python3", cwd=str(REPO), progress_bar=bar,
                                       execution_timeout=cell_timeout)
    except Exception as error:  # papermill wraps the cell's exception
        failed = Path(tempfile.gettempdir()) / f"lsi-book-failed-{chapter.name}.ipynb"
        shutil.move(scratch, failed)
        shutil.rmtree(staging, ignore_errors=True)
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        if isinstance(error, CellTimeoutError):
            first_line = f"a cell ran over its {cell_timeout:g} s timeout (cell_timeout, $LSI_CELL_TIMEOUT)"
        return RunReport(chapter.name, "failed", failed, time.perf_counter() - start,
                         f"{first_line} (executed notebook kept at {failed})")
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    from lsi.provenance import git_commit, modified_files

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
    portable_paths(scratch, chapter.notebook, target)
    os.chmod(scratch, 0o644)  # mkstemp creates files readable by the owner only
    _fsync_file(scratch)
    os.replace(scratch, target)
    _fsync_folder(out)
    record = {"seconds": round(seconds, 1), "peak_memory_gib": round(memory.peak / 2 ** 30, 2),
              "commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine(), "fingerprint": inputs}
    _install_data(chapter.name, staging, data, record, profile)
    return RunReport(chapter.name, "executed", target, seconds)


def _install_data(name: str, staging: Path, data: Path, record: dict, profile: str) -> None:
    """Replace the chapter's published scores by this run's, its ``runs.json`` gaining ``record`` at ``profile``.

    The new folder is completed in the staging area (scores and ``runs.json``, which keeps the other
    profiles' records) and then swapped in whole (:func:`swap_folder`).
    """
    final, produced = data / name, staging / name
    runs = read_runs(final)
    runs[profile] = record
    produced.mkdir(parents=True, exist_ok=True)
    for path in produced.iterdir():
        os.chmod(path, 0o644)
    record_run(produced, runs)
    swap_folder(produced, final)
    shutil.rmtree(staging, ignore_errors=True)


class PeakMemory:
    """The largest resident memory (bytes, in ``peak``) of the processes this process starts while the ``with``
    block runs (the chapter's kernel and whatever it starts; children from before are left out), sampled every
    ``interval`` seconds by a background thread: a lower bound, which misses a peak shorter than ``interval``."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak = interval, 0
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "PeakMemory":
        import psutil

        self._before = {child.pid for child in psutil.Process().children(recursive=True)}
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            started = [child for child in me.children(recursive=True) if child.pid not in self._before]
            self.peak = max(self.peak, _resident(started))
            if self._stop.wait(self.interval):
                return


def _resident(processes: list) -> int:
    """Summed resident memory of ``processes``, leaving out any that ended meanwhile."""
    import psutil

    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def machine() -> dict:
    """The machine of a run: CPU cores and the GPU's name (``None`` without one)."""
    import torch

    return {"cores": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


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


LOCAL_PATH = re.compile(r"(?<![\w.~$])/(?:root|home|work|tmp|Users|var/folders)/[^\s\"'<>)\]]*")
"""An absolute path under a home, work or temporary folder (a URL's path has a host before it)."""


def portable_paths(notebook: str | Path, source: Path, target: Path) -> int:
    """No published page names a folder of the machine it ran on: papermill's input and output paths are
    recorded relative to the project, and every local path in a cell's output (:data:`LOCAL_PATH`, e.g. a
    data set's ``mirror:/…/sst2/train.parquet``) becomes relative to the project, the data mirror, the
    downloads or the feature cache (:func:`lsi.published.relative_to_a_root`). Returns the paths rewritten."""
    import nbformat

    from lsi.published import relative_to_a_root

    def portable(path: Path) -> str:
        path = Path(path).resolve()
        root = REPO.resolve()
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name

    count = 0

    def rewrite(value):
        nonlocal count
        if isinstance(value, str):
            found = LOCAL_PATH.findall(value)
            count += len(found)
            return LOCAL_PATH.sub(lambda match: relative_to_a_root(match.group(0)), value) if found else value
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        return value

    nb = nbformat.read(str(notebook), as_version=4)
    record = nb.metadata.setdefault("papermill", {})
    record["input_path"], record["output_path"] = portable(source), portable(target)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell["outputs"] = [nbformat.from_dict(rewrite(dict(output))) for output in cell.get("outputs", [])]
    nbformat.write(nb, str(notebook))
    return count


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
             allow_dirty: bool = False, jobs: int = 1) -> list[RunReport]:
    """Run every chapter at ``profile`` (refusing a dirty tree up front; ``progress``: say what runs and what
    is left), ``jobs`` at a time (:func:`run_chapters`)."""
    jobs = check_jobs(jobs)
    chapters = chapters or load_chapters()
    check_clean_tree(out, allow_dirty=allow_dirty)
    return run_chapters(list(chapters.values()), profile, out, progress=progress, allow_dirty=allow_dirty,
                        jobs=jobs)


def run_stale(profile: str = "book", out: str | Path = PUBLISHED,
              chapters: dict[str, Chapter] | None = None, progress: bool = False, *,
              allow_dirty: bool = False, jobs: int = 1) -> list[RunReport]:
    """Execute only the chapters whose fingerprint changed since their run in ``out`` (what ``make book`` does),
    ``jobs`` at a time (:func:`run_chapters`).

    Prints one line per chapter: ``published at <commit>, up to date`` or ``re-executing: <what changed>``
    (:func:`lsi.book.fingerprint.freshness`); returns the reports of the chapters executed.
    """
    jobs = check_jobs(jobs)
    chapters = chapters or load_chapters()
    states = [_fingerprint.freshness(chapter, profile, out) for chapter in chapters.values()]
    if any(state.needs_run for state in states):
        check_clean_tree(out, allow_dirty=allow_dirty)
    for state in states:
        print(state, flush=True)
    stale = [chapter for chapter, state in zip(chapters.values(), states) if state.needs_run]
    return run_chapters(stale, profile, out, progress=progress, allow_dirty=allow_dirty, jobs=jobs)


def run_chapters(chapters: list[Chapter], profile: str, out: str | Path, *, progress: bool = False,
                 allow_dirty: bool = False, jobs: int = 1) -> list[RunReport]:
    """:func:`run_chapter` for each of ``chapters``, reports in their order, each printed as it is known.

    ``jobs=1`` runs them one after the other, each kernel with every core: how published runs go, so that
    the wall time each records is its own. ``jobs > 1`` runs that many at once, each in its own process
    (a kernel's environment is set per process) with ``cores // jobs`` threads: the kernels' start-up,
    plotting and other single-threaded work overlap, which is what shortens a run of many small chapters
    (the ``ci`` profile in ``make test``). Chapters reading the same features wait for one another's
    extraction (:func:`lsi.features.cache.extraction_lock`) instead of extracting twice.
    """
    jobs = check_jobs(jobs)
    options = {"out": out, "allow_dirty": allow_dirty}
    if jobs == 1:
        reports, start = [], time.perf_counter()
        for number, chapter in enumerate(chapters, 1):
            if progress:
                left = ", ".join(c.name for c in chapters[number:]) or "nothing"
                print(f"[{number}/{len(chapters)}] {chapter.name} at {profile} "
                      f"({time.perf_counter() - start:.0f}s elapsed; after it: {left})", flush=True)
            reports.append(run_chapter(chapter, profile, progress=progress, **options))
            print(reports[-1], flush=True)
        return reports
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_chapter, chapter, profile, threads=threads, **options) for chapter in chapters]
        reports = []
        for future in futures:
            reports.append(future.result())
            print(reports[-1], flush=True)
    return reports


def check_jobs(jobs: int) -> int:
    """``jobs`` as a positive whole number of chapters run at once."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive whole number of chapters run at once.")
    return jobs


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
