"""A printable PDF of the built book: every page printed by headless Chromium, joined in toc order.

Why Chromium rather than Jupyter Book's LaTeX builder: the HTML site is what
the book is tested and read as (charts are SVG, galleries PNG, math MathJax,
solutions folded); printing it reproduces exactly that, offline, with the
Chromium that the browser test already needs (Debian's ``chromium``, about
360 MB installed). The LaTeX route needs Jupyter Book's recommended texlive
packages (2.4 GB here, by ``apt-get install --assume-no``), an SVG converter
for every chart, and renders the notebooks' HTML tables and galleries
differently from the site.

``build_pdf(html, out)`` prints ``html/<page>.html`` for every page of
``_toc.yml`` that exists in the built site, in toc order, with

    chromium --headless --no-sandbox --disable-gpu --disable-background-networking
             --no-first-run --disable-component-update --disable-sync
             --user-data-dir=<tmp> --host-resolver-rules="MAP * ~NOTFOUND"
             --no-pdf-header-footer --virtual-time-budget=<ms> --print-to-pdf=<page.pdf> file://<page>

(``MAP * ~NOTFOUND`` makes every host name unresolvable, so printing cannot
reach the network), then joins the pages with pypdf, with one bookmark per
page. The book's print stylesheet (``book/_ext/static/offline_book_print.css``)
shows the folded solutions unfolded.
"""
from __future__ import annotations

import html as html_lib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--no-pdf-header-footer")
VIRTUAL_TIME_MS = 15_000
"""Virtual time Chromium gives a page's scripts (MathJax, toggles) before printing; it
runs faster than the clock when the page is idle."""
PAGE_TIMEOUT_S = 300


@dataclass
class PdfReport:
    """What ``build_pdf`` produced."""

    path: Path
    pages: list[tuple[str, str, int]]  # (docname, title, first page number, 0-based)
    n_pages: int
    seconds: float

    @property
    def megabytes(self) -> float:
        return self.path.stat().st_size / 1e6

    def __str__(self) -> str:
        return (f"{self.path}: {len(self.pages)} book pages, {self.n_pages} PDF pages, "
                f"{self.megabytes:.1f} MB, {self.seconds:.0f} s")


def toc_docnames(toc: dict) -> list[str]:
    """Every document of a Jupyter Book ``_toc.yml`` (dict), root first, in reading order."""
    names = [toc["root"]]

    def walk(node) -> None:
        if isinstance(node, list):
            for entry in node:
                walk(entry)
        elif isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                if key in node:
                    walk(node[key])

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(name).with_suffix("")) if Path(name).suffix in (".md", ".ipynb") else name
            for name in names]


def page_title(page: Path) -> str:
    """The page's ``<title>`` without the book's name."""
    found = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"), re.S)
    title = html_lib.unescape(found.group(1)).strip() if found else page.stem
    return title.split(" — ")[0].strip()


def book_title(page: Path) -> str:
    """The book's name, as the site puts it after the page title."""
    found = re.search(r"<title>(.*?)</title>", page.read_text(errors="replace"), re.S)
    parts = html_lib.unescape(found.group(1)).split(" — ") if found else []
    return parts[-1].strip() if len(parts) > 1 else "The LSI book"


def find_chromium(chromium: str | Path | None = None) -> Path:
    path = Path(chromium or os.environ.get("LSI_CHROMIUM") or CHROMIUM)
    if not path.exists():
        raise FileNotFoundError(f"No Chromium at {path}: install Debian's (apt-get install -y chromium) "
                                f"or set LSI_CHROMIUM to a Chromium or Chrome binary.")
    return path


def print_page(page: Path, out: Path, chromium: Path, profile_dir: Path) -> Path:
    """Print one HTML page to ``out`` with headless Chromium; raise if no PDF comes out."""
    command = [str(chromium), *FLAGS, f"--user-data-dir={profile_dir}",
               f"--virtual-time-budget={VIRTUAL_TIME_MS}", f"--print-to-pdf={out}", page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=PAGE_TIMEOUT_S,
                            env={**os.environ, "HOME": str(profile_dir)})
    if result.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"Chromium could not print {page} (exit {result.returncode}):\n"
                           f"{result.stderr[-2000:]}")
    return out


def build_pdf(html: str | Path, out: str | Path, toc: str | Path | dict | None = None,
              chromium: str | Path | None = None) -> PdfReport:
    """Print every page of the built site ``html`` in toc order and join them into ``out``.

    ``toc`` is the book's ``_toc.yml`` (path or dict; default: the repository's);
    pages of the toc that are not in the site (chapters neither executed nor
    published) are left out, like the site leaves them out.
    """
    from pypdf import PdfReader, PdfWriter

    from lsi.book import REPO

    start = time.perf_counter()
    html, out = Path(html), Path(out)
    if not (html / "index.html").is_file():
        raise FileNotFoundError(f"{html} is not a built book (no index.html); run `lsi book build` first.")
    if toc is None or isinstance(toc, (str, Path)):
        toc = yaml.safe_load(Path(toc or REPO / "_toc.yml").read_text())
    docnames = [name for name in toc_docnames(toc) if (html / f"{name}.html").is_file()]
    if not docnames:
        raise ValueError(f"None of the toc's pages is in {html}.")
    browser = find_chromium(chromium)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lsi-pdf-") as scratch:
        scratch = Path(scratch)
        writer, pages = PdfWriter(), []
        for number, name in enumerate(docnames):
            page = html / f"{name}.html"
            printed = print_page(page, scratch / f"{number:03d}.pdf", browser, scratch / "profile")
            first = len(writer.pages)
            writer.append(PdfReader(printed), import_outline=False)
            title = page_title(page)
            writer.add_outline_item(title=title, page_number=first)
            pages.append((name, title, first))
        writer.add_metadata({"/Title": book_title(html / f"{docnames[0]}.html"), "/Creator": "lsi book pdf"})
        partial = out.with_name(f".{out.name}.partial")
        with open(partial, "wb") as handle:
            writer.write(handle)
        os.replace(partial, out)
        n_pages = len(writer.pages)
    return PdfReport(out, pages, n_pages, time.perf_counter() - start)
