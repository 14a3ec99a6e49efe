"""The printable book: ``lsi.book.pdf`` prints the built site with headless Chromium and joins the pages.

The slow test prints the book built from the chapters at the ``ci`` profile
(the ``ci_book`` fixture of tests/conftest.py, shared with tests/book/test_book.py,
so no chapter runs twice) and checks that every page of the toc is in the PDF
in order, under its own bookmark, with its title in its text; that every
chart and gallery of every chapter is printed and not blank; and that the
folded solutions are printed unfolded.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
import unicodedata

import numpy as np
import pytest
import yaml

from lsi.book import pdf
from prerequisites import require


def test_toc_docnames_are_in_reading_order():
    toc = {"format": "jb-book", "root": "book/intro",
           "parts": [{"caption": "A", "chapters": [{"file": "book/chapters/a"},
                                                   {"file": "book/b.md", "sections": [{"file": "book/b1"}]}]},
                     {"caption": "B", "chapters": [{"file": "book/glossary"}]}]}
    assert pdf.toc_docnames(toc) == ["book/intro", "book/chapters/a", "book/b", "book/b1", "book/glossary"]


def test_titles_come_from_the_page(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><title>CIFAR-10: the long tail &amp; noise — The Book</title></head></html>")
    assert pdf.page_title(page) == "CIFAR-10: the long tail & noise"
    assert pdf.book_title(page) == "The Book"


def test_missing_browser_and_missing_site_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("LSI_CHROMIUM", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install -y chromium"):
        pdf.find_chromium(tmp_path / "no-chromium")
    with pytest.raises(FileNotFoundError, match="lsi book build"):
        pdf.build_pdf(tmp_path, tmp_path / "book.pdf")


def _chapter_images(html_page) -> list[str]:
    """The ``src`` of every image in the page's article (charts, galleries)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html_page.read_text(), "html.parser")
    article = soup.select_one("article") or soup
    return [img["src"] for img in article.select("img") if img.get("src")]


def _svg_texts(svg_file) -> list[str]:
    """The visible text of an SVG chart (titles, axis titles, tick labels), whitespace removed.

    Vega hides overlapping tick labels with ``opacity="0"``; those are left out.
    """
    svg = svg_file.read_text()
    texts = [html.unescape(t) for attrs, t in re.findall(r"<text([^>]*)>([^<]*)</text>", svg)
             if 'opacity="0"' not in attrs]
    return [re.sub(r"\s+", "", t) for t in texts if t.strip()]


def _page_texts(pdf_path) -> list[str]:
    """The text of every page, extracted by poppler's pdftotext (pages end with a form feed)."""
    text = subprocess.run(["pdftotext", "-enc", "UTF-8", str(pdf_path), "-"], check=True, capture_output=True,
                          text=True).stdout
    return text.split("\f")[:-1]


def _render(pdf_path, first: int, last: int, folder, dpi: int = 40) -> list[np.ndarray]:
    """Pages ``first..last`` (1-based) as greyscale arrays, rendered by poppler's pdftoppm."""
    from PIL import Image

    prefix = folder / f"p{first}"
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-f", str(first), "-l", str(last),
                    str(pdf_path), str(prefix)], check=True, capture_output=True)
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob(f"p{first}-*.png"))]


@pytest.fixture(scope="session")
def printing_tools() -> None:
    """Chromium prints; poppler's pdftoppm renders the pages and pdftotext reads their text back (1.5 s for
    the 511 pages of the whole book, where pypdf's text extraction took 22 s); session-scoped so that it is
    checked before ``ci_book`` runs."""
    require(pdf.CHROMIUM.exists(), "Debian chromium is not installed (apt-get install -y chromium)")
    for tool in ("pdftoppm", "pdftotext"):
        require(shutil.which(tool), f"poppler-utils ({tool}) is not installed (apt-get install -y poppler-utils)")


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the ci_book fixture runs every chapter at ci when this test comes first
def test_pdf_of_the_ci_book_has_every_page_and_visible_figures(printing_tools, ci_book, tmp_path):
    from pypdf import PdfReader

    assert ci_book.html is not None, "a chapter failed at ci; see test_book.py"
    toc = ci_book.site / "source" / "_toc.yml"
    report = pdf.build_pdf(ci_book.html, tmp_path / "book.pdf", toc=toc)
    expected = [n for n in pdf.toc_docnames(yaml.safe_load(toc.read_text()))
                if (ci_book.html / f"{n}.html").is_file()]
    executed = [r.chapter for r in ci_book.reports if r.output is not None]
    assert [name for name, _, _ in report.pages] == expected
    assert {f"book/chapters/{c}" for c in executed} <= set(expected)
    assert {"book/teaching", "book/glossary"} <= set(expected)

    reader = PdfReader(str(report.path))
    assert len(reader.pages) == report.n_pages
    outline = [(item.title, reader.get_destination_page_number(item)) for item in reader.outline]
    assert outline == [(title, first) for _, title, first in report.pages]
    page_texts = _page_texts(report.path)
    assert len(page_texts) == report.n_pages
    starts = [first for _, _, first in report.pages] + [report.n_pages]
    problems = []
    for (name, title, first), end in zip(report.pages, starts[1:]):
        assert end > first, f"{name} has no page"
        # NFKC undoes the typesetter's ligatures ("ﬀ" in "differential" is one glyph in the PDF).
        text = unicodedata.normalize("NFKC", " ".join(page_texts[first:end]))
        words = re.findall(r"\w+", title)
        if not all(word in text for word in words):
            problems.append(f"{name}: its title {title!r} is not in its pages' text")
        if not name.startswith("book/chapters/"):
            continue
        if "Solution to" not in text:
            problems.append(f"{name}: no solution printed")
        images = _chapter_images(ci_book.html / f"{name}.html")
        rasters = [image for i in range(first, end) for image in reader.pages[i].images]
        pngs = [src for src in images if src.lower().endswith(".png")]
        if len(rasters) < len(pngs):
            problems.append(f"{name}: {len(pngs)} PNG galleries/charts in the page, {len(rasters)} in the PDF")
        for image in rasters:
            pixels = np.asarray(image.image.convert("L"), dtype=float)
            if pixels.std() < 1.0:
                problems.append(f"{name}: a printed raster image ({image.name}) is blank")
        # Vector charts (SVG) are drawn into the page, not embedded as images: every text of every
        # chart (title, axis titles, each tick label) must be in the chapter's printed text.
        printed = re.sub(r"\s+", "", text)
        page_dir = (ci_book.html / name).parent
        for src in images:
            if src.lower().endswith(".svg"):
                texts = _svg_texts((page_dir / src).resolve())
                missing = [t for t in texts if t not in printed]
                if not texts or missing:
                    problems.append(f"{name}: chart {src} is not printed (missing {missing[:5]})")
        # And no page of a chapter is blank.
        for number, pixels in enumerate(_render(report.path, first + 1, end, tmp_path), start=first):
            if pixels.min() > 200:  # not a single dark pixel
                problems.append(f"{name}: PDF page {number + 1} is blank")
    assert not problems, "\n".join(problems)
    assert report.megabytes > 0


def test_cli_pdf_refuses_a_folder_that_is_not_a_built_book(tmp_path, capsys):
    from lsi.cli import main

    assert main(["book", "pdf", "--html", str(tmp_path), "--out", str(tmp_path / "b.pdf")]) == 2
    assert "not a built book" in capsys.readouterr().err
    assert not (tmp_path / "b.pdf").exists()
