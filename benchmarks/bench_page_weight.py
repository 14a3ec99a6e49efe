"""Page weight of the built book with interactive charts vs static SVG only (issue 16).

Builds the site twice from the same executed chapters: as the book ships (interactive charts, their SVG
kept as fallback) and with every chart reduced to its static SVG (the book before issue 16). Each page is
opened in headless Chromium with the network blocked; every response body is counted (uncompressed bytes,
as served by Python's http.server, which does not compress), split into the page's HTML, the vega bundle,
other scripts and styles, and images.

    python benchmarks/bench_page_weight.py [CHAPTERS_DIR] [PAGE ...]

CHAPTERS_DIR defaults to book/chapters (its published scores are read from CHAPTERS_DIR/../data).
"""
from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

import nbformat

from lsi import book


def static_only(source: Path, target: Path) -> None:
    """Copy the chapters with every chart's text/html output dropped (its SVG stays)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.ipynb"):
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                if "lsi-chart" in str(data.get("text/html", "")) and "image/svg+xml" in data:
                    del data["text/html"]
        nbformat.write(nb, str(target / path.name))
    data = book.data_dir(source)
    if data.is_dir():
        shutil.copytree(data, book.data_dir(target), dirs_exist_ok=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def weigh(html: Path, pages: list[str]) -> dict[str, dict[str, int]]:
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    out = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"])
        for name in pages:
            context = browser.new_context()
            context.route("**/*", lambda route: route.continue_()
                          if urlparse(route.request.url).hostname in ("127.0.0.1", None) else route.abort())
            page = context.new_page()
            sizes = {"html": 0, "vega bundle": 0, "explorer data": 0, "other scripts and styles": 0,
                     "images and fonts": 0}
            packed = [0]

            def count(response, sizes=sizes, packed=packed):
                try:
                    body = response.body()
                except Exception:
                    return
                url = response.url.split("?")[0]
                kind = ("html" if url.endswith(".html") else "vega bundle" if url.endswith("lsi/vega.js")
                        else "explorer data" if "/explore-data/" in url
                        else "other scripts and styles" if url.endswith((".js", ".css"))
                        else "images and fonts")
                sizes[kind] += len(body)
                packed[0] += len(gzip.compress(body))

            page.on("response", count)
            page.goto(f"{base}/{name}", wait_until="networkidle")
            page.wait_for_timeout(500)
            sizes["total"] = sum(sizes.values())
            sizes["total gzip"] = packed[0]
            out[name] = sizes
            context.close()
        browser.close()
    server.shutdown()
    return out


def main(argv: list[str]) -> None:
    chapters = Path(argv[0]) if argv else book.PUBLISHED
    pages = argv[1:] or [f"book/chapters/{p.stem}.html" for p in sorted(chapters.glob("*.ipynb"))]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        static_only(chapters, scratch / "static" / "chapters")
        builds = {"interactive": book.build_site(chapters, scratch / "site-interactive"),
                  "static SVG only": book.build_site(scratch / "static" / "chapters", scratch / "site-static")}
        print("bytes per page load, uncompressed (and the total if served gzip-compressed)")
        print(f"{'page':<32} {'build':<16} {'html':>9} {'vega':>9} {'expl.data':>9} {'theme js+css':>12} "
              f"{'img+font':>9} {'total':>10} {'gzip':>9}")
        for page in pages:
            for label, html in builds.items():
                s = weigh(html, [page])[page]
                print(f"{page:<32} {label:<16} {s['html']:>9,} {s['vega bundle']:>9,} {s['explorer data']:>9,} "
                      f"{s['other scripts and styles']:>12,} {s['images and fonts']:>9,} {s['total']:>10,} "
                      f"{s['total gzip']:>9,}")


if __name__ == "__main__":
    main(sys.argv[1:])
