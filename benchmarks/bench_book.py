"""`make book` on the published chapters: the fingerprint check of every chapter and the site build (issue 26).

Runs ``lsi book build --profile book`` as ``make book`` does, into a scratch build folder, and times it from
the command's start to its end (its Python start-up and imports included; the install is not). Refuses to
run when a chapter's fingerprint changed, because the command would then re-execute that chapter (hours
at the ``book`` profile) instead of measuring the build: the benchmark is of an up-to-date book. Target:
at most 3 minutes on the two cores. Result: ``benchmarks/results/book.json`` with the commit.

    python benchmarks/bench_book.py [--out benchmarks/results/book.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsi import book
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes

TARGET_SECONDS = 180.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/book.json"))
    args = parser.parse_args()

    chapters = book.load_chapters()
    stale = [str(state) for state in (book.freshness(c, "book") for c in chapters.values()) if state.needs_run]
    if stale:
        sys.exit("these chapters would be re-executed, so this would not time the build:\n" + "\n".join(stale))
    with tempfile.TemporaryDirectory() as scratch:
        command = [str(Path(sys.executable).with_name("lsi")), "book", "build", "--profile", "book",
                   "--out", scratch, "--quiet"]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"lsi book build failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.split(":")[0] in chapters]
    record = {**run_record("cpu"), "command": "lsi book build --profile book (what make book runs)",
              "chapters": len(chapters), "re_executed": sum("re-executing" in line for line in lines),
              "seconds": round(seconds, 1), "target_seconds": TARGET_SECONDS,
              "within_target": seconds <= TARGET_SECONDS, "cores": os.cpu_count(),
              "load_average_1min_after": round(os.getloadavg()[0], 1),
              "log": lines}
    print(json.dumps(record, indent=1))
    atomic_write_bytes(args.out, (json.dumps(record, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
