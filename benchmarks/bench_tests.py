"""How long the test suite takes: `make test-fast` or a warm `make test` in this checkout, or a cold `make test` in a fresh clone (issue 23).

``--suite fast`` runs ``make test-fast`` here (the environment already installed); ``--suite warm`` runs
``make test`` here (installed, features already extracted: a developer's rerun). ``--suite full`` clones
the current commit into a scratch folder with ``../shared`` beside it and runs ``.ci/run`` there, exactly what
CI runs: under ``CI=1`` the virtual environment is created and installed from scratch (pip's download cache is
used when present) and the feature cache starts empty (``LSI_CACHE`` in the scratch folder), then ``make test`` runs every chapter at ``ci`` and builds the book and opens it in a browser. Targets: at most 2 minutes for ``fast`` and 20 minutes for
``full`` and ``warm`` on the two cores. The record says how busy the machine was (load average before and after), the
commit, pytest's summary line and its slowest tests. Result: ``benchmarks/results/tests_<suite>.json``.

    python benchmarks/bench_tests.py --suite fast
    python benchmarks/bench_tests.py --suite warm   # make test here, about 15 minutes; run it alone
    python benchmarks/bench_tests.py --suite full   # CI's own run, about 20 minutes; run it alone
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lsi.book.profiles import REPO
from lsi.provenance import run_record
from lsi.results import atomic_write_bytes

TARGET_SECONDS = {"fast": 120.0, "warm": 1200.0, "full": 1200.0}
COMMANDS = {"fast": ["make", "test-fast"], "warm": ["make", "test"], "full": ["bash", ".ci/run"]}


def _clone(target: Path) -> Path:
    """A clean clone of the current commit, with the shared folder a sibling of the clone as in CI."""
    clone = target / REPO.name
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (target / "shared").symlink_to(shared)
    return clone


def _summary(output: str) -> dict:
    """pytest's final counts and the lines of its ``--durations`` table."""
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output.splitlines()[-1] if output else "")
    slowest = [line.strip() for line in output.splitlines() if re.match(r"^\d+\.\d+s (call|setup|teardown) ", line)]
    return {"counts": {kind: int(n) for n, kind in counts}, "slowest": slowest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(TARGET_SECONDS), default="fast",
                        help="fast: make test-fast here; warm: make test here; full: a cold make test in a fresh "
                             "clone, CI's own run (default: fast)")
    parser.add_argument("--out", type=Path, help="result file (default: benchmarks/results/tests_<suite>.json)")
    args = parser.parse_args()
    out = args.out or REPO / "benchmarks" / "results" / f"tests_{args.suite}.json"
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        where = _clone(Path(scratch)) if args.suite == "full" else REPO
        command = COMMANDS[args.suite]
        env = os.environ.copy()
        if args.suite == "full":  # a fresh machine: no features extracted yet
            env["LSI_CACHE"] = str(Path(scratch) / "feature-cache")
        if args.suite == "warm":  # as .ci/run sets them: a missing prerequisite fails, nothing goes online
            env.update(CI="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        started = time.perf_counter()
        result = subprocess.run(command, cwd=where, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
    output = result.stdout.strip()
    record = {**run_record("cpu"), "command": " ".join(command) + {"full": " in a fresh clone (install included)",
                                                                   "warm": " here (installed, feature cache warm)"
                                                                   }.get(args.suite, ""),
              "exit_code": result.returncode, "seconds": round(seconds, 1),
              "target_seconds": TARGET_SECONDS[args.suite], "within_target": seconds <= TARGET_SECONDS[args.suite],
              "cores": os.cpu_count(), "load_average_1min_before": round(load_before, 2),
              "load_average_1min_after": round(os.getloadavg()[0], 2), **_summary(output)}
    print(json.dumps(record, indent=1))
    atomic_write_bytes(out, (json.dumps(record, indent=1) + "\n").encode())
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed (exit {result.returncode}):\n{output[-3000:]}\n{result.stderr[-2000:]}")


if __name__ == "__main__":
    main()
