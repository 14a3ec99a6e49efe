"""``lsi published``: list, check and add the published LSI values (``published/``, :mod:`lsi.published`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsi import published


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "published", help="list, check or add published LSI values",
        description="Published LSI values: one Parquet file per data set and setting, with the run's provenance "
                    "and a SHA-256 of its rows and provenance in the file's metadata. 'list' shows them, 'check' loads "
                    "every one and verifies its hash, 'add FILE' publishes an 'lsi compute'/'lsi merge' output or a "
                    "chapter's score table, 'chapter NAME' every score table an executed chapter wrote, 'migrate "
                    "[NAME ...]' re-hashes values published before the hash covered the provenance (rows "
                    "untouched; all of them without NAME).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("action", choices=["list", "check", "add", "chapter", "migrate"])
    parser.add_argument("targets", nargs="*", help="add: result tables; chapter: chapter names; migrate: names")
    parser.add_argument("--name", help="add: the published name (default <dataset>[-<corruption>]-<n>-<tier>)")
    parser.add_argument("--setting", help="add: one line describing the setting (default: from the metadata)")
    parser.add_argument("--folder", type=Path, default=published.FOLDER, help="the published values' folder")
    parser.add_argument("--book-data", type=Path, default=published.BOOK_DATA,
                        help="chapter: the executed chapters' data folder")
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.action in ("add", "chapter") and not args.targets:
        raise ValueError(f"'lsi published {args.action}' needs at least one "
                         f"{'result table' if args.action == 'add' else 'chapter name'}.")
    if args.name and (args.action != "add" or len(args.targets) != 1):
        raise ValueError("--name names one table: use it with 'add' and a single file.")
    if args.action in ("list", "check") and args.targets:
        raise ValueError(f"'lsi published {args.action}' takes no names; it covers every value in --folder.")
    if args.action in ("add", "chapter"):  # every table read and checked before the first is written
        tables = args.targets if args.action == "add" else [
            path for chapter in args.targets for path in published.chapter_tables(chapter, args.book_data)]
        prepared = [published.prepare(table, name=args.name, setting=args.setting) for table in tables]
        paths = [published.publish(frame, record, args.folder) for frame, record in prepared]
    elif args.action == "migrate":
        paths = [published.migrate(name, args.folder) for name in args.targets or published.names(args.folder)]
    else:
        for name in published.names(args.folder):
            if args.action == "check":
                published.load(name, args.folder)
            record = published.provenance(name, args.folder)
            print(f"{name}: {record['setting']} [commit {record['commit']}, sha256 {record['sha256'][:12]}"
                  f"{', checked' if args.action == 'check' else ''}]")
        return 0
    for path in paths:
        print(f"published {path.stem}: {published.provenance(path.stem, args.folder)['setting']}")
    return 0
