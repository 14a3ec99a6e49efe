"""``lsi merge``: join the shards of a run written with ``lsi compute --indices``."""
from __future__ import annotations

import argparse
from pathlib import Path

from lsi.results import check_writable, concat_tables, load_table, save_table
from lsi.runner import check_same_run

SHARD_RECORD = ("device", "commit", "date", "wall_time_s", "options", "execution")
"""What the merged table records of each shard (the shared fields are those of shard 0)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="join shard tables into one",
        description="Join tables from 'lsi compute --indices a:b' runs. The shards must be parts of one run "
                    "(same data, same options that change the numbers; device and memory budget may differ) "
                    "and must not overlap. The merged table records each shard's file name, device, commit, "
                    "date and wall time; its own wall time is their sum.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("shards", nargs="+", type=Path, help="shard Parquet files")
    parser.add_argument("--out", type=Path, required=True, help="merged Parquet file")
    parser.set_defaults(func=run)


def run(args) -> int:
    check_writable(args.out)
    tables = [load_table(path) for path in args.shards]
    check_same_run(tables, args.shards)
    merged = concat_tables(tables)
    merged.attrs["lsi"] = {**merged.attrs["lsi"], "n_scored": len(merged),
                           "wall_time_s": round(sum(float(t.attrs["lsi"].get("wall_time_s") or 0) for t in tables), 3),
                           "shards": [{"file": p.name, "n_scored": len(t),
                                       **{key: t.attrs["lsi"].get(key) for key in SHARD_RECORD}}
                                      for p, t in zip(args.shards, tables)]}
    save_table(merged, args.out)
    print(f"merged {len(tables)} shards, {len(merged)} rows, into {args.out}")
    return 0
