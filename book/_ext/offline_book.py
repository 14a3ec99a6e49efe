"""Sphinx extension for the LSI book: a self-contained site whose pages log no errors.

* Jupyter Book 1 always loads ``sphinx-thebe``. Under Sphinx 7 it adds its
  configuration script twice (a JavaScript ``SyntaxError`` on every page), and
  it points at a CDN. The book runs no live kernels, so its scripts are dropped.
* ``pydata-sphinx-theme`` logs a console error ("invalid theme mode") when
  the page's default colour mode is empty; the book sets ``light``.
* Interactive charts and the sample explorer: pages holding an
  ``lsi.plots`` chart block load ``_static/lsi/vega.js`` (vega, vega-lite and
  vega-embed, bundled by ``vl-convert``: one local copy for every chart of the
  site, never a CDN) and ``lsi-charts.js``; explorer pages load
  ``lsi-explorer.js``. The files are written when the build finishes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "lsi_static"


def _is_thebe(script) -> bool:
    filename = str(getattr(script, "filename", "") or "")
    body = str(getattr(script, "attributes", {}).get("body", ""))
    return "thebe" in filename or "THEBE_JS_URL" in body


def _page_context(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"][:] = [s for s in context["script_files"] if not _is_thebe(s)]
    if not context.get("default_mode"):
        context["default_mode"] = "light"
    body = context.get("body") or ""
    charts, explorer = 'class="lsi-chart"' in body, 'class="lsi-explorer"' in body
    if charts or explorer:
        app.add_css_file("lsi/lsi.css")
    if charts:
        app.add_js_file("lsi/vega.js")
        app.add_js_file("lsi/lsi-charts.js")
    if explorer:
        app.add_js_file("lsi/lsi-explorer.js")


def _write_static(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import vl_convert

    target = Path(app.outdir) / "_static" / "lsi"
    target.mkdir(parents=True, exist_ok=True)
    for source in STATIC.iterdir():
        shutil.copyfile(source, target / source.name)
    # The bundle declares top-level names (``_``, ``n``, ...): a function scope keeps them off the
    # page's globals (Sphinx's own scripts use ``_``); it sets window.vegaEmbed, vega and vegaLite.
    bundle = vl_convert.javascript_bundle()
    (target / "vega.js").write_text(f"(function () {{\n{bundle}\n}})();\n", encoding="utf-8")


def setup(app):
    app.connect("html-page-context", _page_context, priority=900)
    app.connect("build-finished", _write_static)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
