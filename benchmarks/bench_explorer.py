"""How fast the sample explorer opens and filters 50,200 rows (issue 16), in headless Chromium.

Builds the fixture book of tests/book_fixture.py (a CIFAR-10 explorer of 50,200 rows), opens its explorer
page offline and applies the filters that tests/book/test_browser.py checks for correctness: the first
filter, class + corrupted, a score range, a search. The page records its own times (``data-ready-ms``:
navigation start to the table shown; ``data-filter-ms``: the last filter). The times are printed and
written to ``benchmarks/results/explorer.json`` with the run's record. Timings on shared cores vary, so
they live here, not in a test. Needs Debian's chromium and playwright (the test extra).

    python benchmarks/bench_explorer.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from lsi.provenance import run_record
from lsi.results import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fixture book

RESULT = REPO / "benchmarks" / "results" / "explorer.json"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def time_explorer(base: str) -> dict[str, float]:
    """One pass: milliseconds to the table and after each filter."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/book/explore/cifar10.html", wait_until="networkidle")
        status = page.locator(".lsi-x-status")
        status.wait_for()

        def filtered_ms() -> float:
            return float(status.get_attribute("data-filter-ms"))

        times = {"ready": float(page.get_attribute(".lsi-explorer", "data-ready-ms")), "first filter": filtered_ms()}
        page.select_option(".lsi-x-class", label="cat")
        page.select_option(".lsi-x-corr", value="1")
        times["class+corrupted"] = filtered_ms()
        page.fill(".lsi-x-lo", "0.001")
        page.fill(".lsi-x-hi", "0.01")
        times["range"] = filtered_ms()
        page.select_option(".lsi-x-class", label="all classes")
        page.fill(".lsi-x-search", "100042")
        times["search"] = filtered_ms()
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fresh browser passes; the median is reported")
    args = parser.parse_args()
    import book_fixture

    with tempfile.TemporaryDirectory() as scratch:
        html = book_fixture.build_fixture_site(Path(scratch))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        passes = [time_explorer(f"http://127.0.0.1:{server.server_address[1]}") for _ in range(args.repeats)]
        server.shutdown()
    median = {key: float(np.median([p[key] for p in passes])) for key in passes[0]}
    print("explorer, 50,200 rows, median ms over", args.repeats, "passes:", json.dumps(median))
    result = {"rows": 50_200, "median_ms": median, "passes_ms": passes, **run_record("cpu")}
    atomic_write_bytes(RESULT, (json.dumps(result, indent=1) + "\n").encode())
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
