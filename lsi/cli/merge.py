"""``lsi merge``: join the shards of a run written with ``lsi compute --indices``."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsi.results import concat_tables, load_table, save_table
from lsi.runner import check_same_run


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="join shard tables into one",
        description="Join tables from 'lsi compute --indices a:b' runs. The shards must be parts of one run "
                    "(same data, same options that change the numbers; device and memory budget may differ) "
                    "and must not overlap.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("shards", nargs="+", type=Path, help="shard Parquet files")
    parser.add_argument("--out", type=Path, required=True, help="merged Parquet file")
    parser.set_defaults(func=run)


def run(args) -> int:
    tables = [load_table(path) for path in args.shards]
    check_same_run(tables, args.shards)
    merged = concat_tables(tables)
    merged.attrs["lsi"]["n_scored"] = len(merged)
    merged.attrs["lsi"]["shards"] = [
        {"path": str(p), "device": t.attrs["lsi"].get("device"), "options": t.attrs["lsi"].get("options"),
         "commit": t.attrs["lsi"].get("commit"), "n_scored": len(t)} for p, t in zip(args.shards, tables)]
    save_table(merged, args.out)
    print(f"merged {len(tables)} shards, {len(merged)} rows, into {args.out}")
    return 0
