"""Sphinx extension for the LSI book: a self-contained site whose pages log no errors.

* Jupyter Book 1 always loads ``sphinx-thebe``. Under Sphinx 7 it adds its
  configuration script twice (a JavaScript ``SyntaxError`` on every page), and
  it points at a CDN. The book runs no live kernels, so its scripts are dropped.
* ``pydata-sphinx-theme`` logs a console error ("invalid theme mode") when
  the page's default colour mode is empty; the book sets ``light``.
* Folded solutions (sphinx-exercise with ``:class: dropdown``) are shown when a
  page is printed (``static/offline_book_print.css``), so ``make pdf`` and a
  browser's print both include them.
"""
from __future__ import annotations

from pathlib import Path


def _is_thebe(script) -> bool:
    filename = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return "thebe" in filename or "THEBE_JS_URL" in body


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = [s for s in context["script_files"] if not _is_thebe(s)]
    if not context.get("default_mode"):
        context["default_mode"] = "light"


def _add_static(app, config) -> None:
    config.html_static_path = [*config.html_static_path, str(Path(__file__).parent / "static")]


def setup(app):
    app.connect("html-page-context", _page_context, priority=900)
    app.connect("config-inited", _add_static)
    app.add_css_file("offline_book_print.css")
    return {"parallel_read_safe": True, "parallel_write_safe": True}
