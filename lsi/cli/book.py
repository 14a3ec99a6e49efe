"""``lsi book``: run the book's chapters with papermill and build the site.

    lsi book list
    lsi book run cifar10 -p n_train=5000 --profile book
    lsi book build --profile ci --out _build/ci
    lsi book build                    # re-executes only the chapters whose fingerprint changed
    lsi book reproduce                # every chapter again into _build/reproduce/book, then a report
    lsi book reproduce --chapters cifar10 imdb --publish   # a sitting of it, published so the next resumes
    lsi book adopt                    # one-off: accept published runs that recorded no fingerprint
    lsi book pdf                      # _build/book.pdf from the published chapters
"""
from __future__ import annotations

import argparse
from pathlib import Path

from lsi import book


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "book", help="run the reproducibility book's notebooks and build the site",
        description="Execute the book's parameterized chapters (notebooks/*.ipynb) with papermill "
                    "under a profile from book/profiles.yaml, then build the HTML book with "
                    "Jupyter Book (execution off, warnings are errors). Chapters whose data "
                    "cannot be reached (LSI_DATA unset or mirror missing) are skipped and keep "
                    "their published output.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="action")

    listing = actions.add_parser("list", help="list chapters, their data and parameters")
    listing.set_defaults(func=_list)

    run = actions.add_parser("run", help="execute one chapter",
                             description="Execute one chapter at a profile, with overrides.")
    run.add_argument("chapter", help="chapter name (see `lsi book list`)")
    run.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                     help="override one parameter (repeatable); values are read as YAML, "
                          "e.g. -p n_train=5000 -p solver=newton-step")
    _profile_and_out(run, out_help="folder for the executed notebook "
                                   "(default: book/chapters for the book profile, "
                                   "_build/<profile>/chapters otherwise); its scores go to OUT/../data")
    run.add_argument("--record-time", action="store_true",
                     help="also record the measured wall time in book/data/<chapter>/runs.json, "
                          "which the book's 'Take it away' section shows (e.g. for a ci run)")
    run.set_defaults(func=_run)

    build = actions.add_parser("build", help="re-execute the chapters that changed, then build the HTML book",
                               description="Re-execute every chapter whose fingerprint (source notebook, "
                                           "parameters, lsi code, data) changed since its run, print one "
                                           "line per chapter saying which and why, then build the site "
                                           "into OUT/html.")
    _profile_and_out(build, out_help="build folder (default: _build for the book profile, "
                                     "_build/<profile> otherwise)")
    build.add_argument("--no-run", action="store_true",
                       help="only build, from the chapters already executed")
    build.add_argument("--all", action="store_true",
                       help="re-execute every chapter, changed or not")
    build.add_argument("--jobs", type=int, default=1,
                       help="chapters executed at once, each with cores/jobs threads (default 1: one after the "
                            "other, as published runs go; more shortens a run of many small chapters, e.g. at ci)")
    build.set_defaults(func=_build)

    reproduce = actions.add_parser(
        "reproduce", help="re-execute every chapter elsewhere and report what moved",
        description="Re-execute every chapter at the profile into a separate folder (never over the "
                    "published chapters), skipping those already reproduced there at this commit, then "
                    "compare every claim with the published chapter and write a report "
                    "(OUT/reproduction.md, OUT/data/reproduction.json). Exit 1 when a verdict changes, a "
                    "number leaves its tolerance or a chapter could not be reproduced.")
    reproduce.add_argument("--profile", default="book", choices=book.PROFILES, help="default: book")
    reproduce.add_argument("--out", type=Path, default=None,
                           help="folder of the reproduction (default: _build/reproduce/<profile>)")
    reproduce.add_argument("--chapters", nargs="+", metavar="CHAPTER", default=None,
                           help="execute only these chapters in this sitting; the others keep the comparison an "
                                "earlier report at this commit made (default: every chapter)")
    reproduce.add_argument("--publish", nargs="?", type=Path, const=book.PUBLISHED, default=None,
                           metavar="CHAPTERS_DIR",
                           help="then copy the chapters reproduced in this sitting and the report over a "
                                "published book (default: this checkout's book/chapters; for a republication at "
                                "an older commit run from a checkout of it, the book/chapters of the checkout "
                                "you commit to); a later sitting at the same commit, with the same --publish, "
                                "resumes from what that book holds")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bar within a chapter")
    reproduce.set_defaults(func=_reproduce)

    adopt = actions.add_parser(
        "adopt", help="one-off: accept published runs as they stand, recording today's fingerprint",
        description="For chapters published before fingerprints were recorded: record today's "
                    "fingerprint for their published run without re-executing them, marked 'adopted' "
                    "(the status page says so). Refused for a run whose parameters differ from the "
                    "profile's. A chapter already up to date is left alone.")
    adopt.add_argument("chapters", nargs="*",
                       help="chapters to adopt (default: every published chapter never executed at a recorded "
                            "fingerprint: none recorded, or adopted before)")
    adopt.add_argument("--profile", default="book", choices=book.PROFILES, help="default: book")
    adopt.set_defaults(func=_adopt)

    status = actions.add_parser("status", help="say which chapters are up to date and which would re-execute",
                                description="One line per chapter, as `lsi book build` prints them, "
                                            "without executing or building anything.")
    _profile_and_out(status, out_help="build folder whose chapters are checked (as for build)")
    status.set_defaults(func=_status)

    pdf = actions.add_parser("pdf", help="a printable PDF of the whole book (headless Chromium, offline)",
                             description="Build the site from the chapters already executed at the "
                                         "profile (nothing is executed), print every page in "
                                         "table-of-contents order with headless Chromium and join "
                                         "them into one PDF with bookmarks. Needs /usr/bin/chromium "
                                         "(apt-get install -y chromium) or LSI_CHROMIUM.")
    _profile_and_out(pdf, out_help="the PDF to write (default: _build/book.pdf for the book profile, "
                                   "_build/<profile>/book.pdf otherwise)")
    pdf.add_argument("--html", type=Path, default=None,
                     help="print this already built site (a _build/html folder) instead of building one")
    pdf.set_defaults(func=_pdf)


def _profile_and_out(parser: argparse.ArgumentParser, out_help: str) -> None:
    parser.add_argument("--allow-dirty", action="store_true",
                        help="publish into book/chapters from a tree with uncommitted changes "
                             "(the chapter's provenance then says +dirty); refused by default")
    parser.add_argument("--profile", default="book", choices=book.PROFILES,
                        help="ci: minutes on 2 cores; book: the published book; "
                             "paper: the paper's scale, for a GPU (default: book)")
    parser.add_argument("--out", type=Path, default=None, help=out_help)
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (cells executed, time elapsed and left)")


def _default_out(profile: str) -> Path:
    return book.REPO / "_build" if profile == "book" else book.REPO / "_build" / profile


def _chapters_dir(profile: str, build_out: Path) -> Path:
    """The book profile publishes into book/chapters; other profiles stay in the build folder."""
    return book.PUBLISHED if profile == "book" else build_out / "chapters"


def _list(args: argparse.Namespace) -> int:
    for chapter in book.load_chapters().values():
        reason = book.missing_data(chapter)
        published = (book.PUBLISHED / f"{chapter.name}.ipynb").is_file()
        print(f"{chapter.name}: {chapter.title}")
        print(f"  notebook : {chapter.notebook.relative_to(book.REPO)}")
        print(f"  data     : {', '.join(chapter.data) or 'none (ships with scikit-learn)'}"
              f" -> {'reachable' if reason is None else reason}")
        print(f"  published: {'yes' if published else 'no'}")
        for profile in book.PROFILES:
            values = chapter.parameters(profile)
            values.pop("profile")
            print(f"  {profile:<5}    : " + ", ".join(f"{k}={v}" for k, v in values.items()))
    return 0


def _run(args: argparse.Namespace) -> int:
    chapters = book.load_chapters()
    if args.chapter not in chapters:
        raise ValueError(f"Unknown chapter {args.chapter!r}; choose one of {', '.join(chapters)}.")
    import tempfile

    from lsi.book import reproduction

    out = args.out or _chapters_dir(args.profile, _default_out(args.profile))
    published = book.PUBLISHED / f"{args.chapter}.ipynb"
    with tempfile.TemporaryDirectory() as before:
        if published.is_file():  # copied first: a run at the book profile replaces the published chapter
            published = reproduction.snapshot(published, before)
        report = book.run_chapter(chapters[args.chapter], args.profile,
                                  book.parse_overrides(args.parameter), out=out, allow_dirty=args.allow_dirty,
                                  progress=not args.quiet)
        print(report)
        if report.status == "executed":
            print("against the published chapter:")
            print(reproduction.describe(reproduction.compare_chapter(args.chapter, published, report.output)))
    if args.record_time and report.status == "executed":
        published = book.data_dir(book.PUBLISHED) / args.chapter
        runs = book.read_runs(published)
        runs[args.profile] = book.read_runs(book.data_dir(out) / args.chapter)[args.profile]
        book.record_run(published, runs)
        print(f"wall time at {args.profile} recorded in {published / 'runs.json'}")
    return 1 if report.status == "failed" else 0


def _build(args: argparse.Namespace) -> int:
    out = args.out or _default_out(args.profile)
    chapters_dir = _chapters_dir(args.profile, out)
    failed = False
    if not args.no_run:
        run = book.run_book if args.all else book.run_stale
        reports = run(args.profile, out=chapters_dir, allow_dirty=args.allow_dirty, progress=not args.quiet,
                      jobs=args.jobs)
        failed = any(r.status == "failed" for r in reports)
    html = book.build_site(chapters_dir, out)
    print(f"book built: {html / 'index.html'}")
    return 1 if failed else 0


def _reproduce(args: argparse.Namespace) -> int:
    report = book.reproduce(args.profile, out=args.out, progress=not args.quiet, only=args.chapters,
                            sittings=args.publish)
    moved = [c.chapter for c in report.chapters if not c.ok]
    print(f"reproduction report: {(args.out or book.reproduction.OUT / args.profile) / 'reproduction.md'}")
    if args.publish:
        published = book.reproduction.publish_reproduction(report, args.out, args.publish)
        print(f"published over the book: {', '.join(published) or 'no chapter reproduced in this sitting'}; "
              f"the report: {book.data_dir(args.publish) / book.reproduction.REPORT_JSON}")
    print("everything reproduced within its tolerance" if report.ok else
          f"not reproduced within tolerance: {', '.join(moved)}")
    return 0 if report.ok else 1


def _adopt(args: argparse.Namespace) -> int:
    chapters = book.load_chapters()
    unknown = sorted(set(args.chapters) - set(chapters))
    if unknown:
        raise ValueError(f"Unknown chapter(s) {', '.join(unknown)}; choose among {', '.join(chapters)}.")
    names = args.chapters or [name for name in chapters if _never_fingerprinted(name, args.profile)]
    if not names:
        print(f"every published chapter was executed at a recorded fingerprint ({args.profile}); nothing to adopt")
    for name in names:
        state = book.freshness(chapters[name], args.profile)
        if state.state in ("up to date", "adopted"):
            print(f"{state}; nothing to adopt")
        else:
            print(book.adopt(chapters[name], args.profile) + f" (was: {'; '.join(state.changed) or state.state})")
    return 0


def _never_fingerprinted(name: str, profile: str) -> bool:
    """A published chapter whose run recorded no fingerprint, or only an adopted one."""
    record = book.read_runs(book.data_dir(book.PUBLISHED) / name).get(profile) or {}
    return (book.PUBLISHED / f"{name}.ipynb").is_file() and (not record.get("fingerprint") or "adopted" in record)


def _status(args: argparse.Namespace) -> int:
    out = args.out or _default_out(args.profile)
    for chapter in book.load_chapters().values():
        print(book.freshness(chapter, args.profile, _chapters_dir(args.profile, out)).line("would re-execute"))
    return 0


def _pdf(args: argparse.Namespace) -> int:
    from lsi.book import pdf

    build_out = _default_out(args.profile)
    target = args.out or build_out / "book.pdf"
    toc = None
    if args.html is None:
        chapters_dir = _chapters_dir(args.profile, build_out)
        if not any(chapters_dir.glob("*.ipynb")):
            raise FileNotFoundError(f"No executed chapters in {chapters_dir}; run "
                                    f"`lsi book build --profile {args.profile}` first.")
        html = book.build_site(chapters_dir, build_out)
        toc = build_out / "source" / "_toc.yml"  # restricted to the chapters present
    else:
        html = args.html
    report = pdf.build_pdf(html, target, toc=toc)
    print(report)
    return 0
