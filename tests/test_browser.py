"""Open every page of the built book in headless Chromium, served on localhost.

Each page must load, request nothing outside localhost, show every chart and
gallery image with a non-zero size, and show no error output. Every chapter
must have exercises whose solutions are folded and unfold on a click. The book is
built from the published chapters (``book/chapters``) into a scratch folder,
or taken from ``$LSI_BOOK_HTML`` (a built ``_build/html`` folder) if set.
Without Debian's ``chromium`` (``apt-get install -y chromium``) the test skips,
except in CI (environment variable ``CI`` set, as ``.ci/run`` does), where a
missing browser is a failure: a skipped browser test would hide a broken book.
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

from lsi import book

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about"}

MISSING = "Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)"


def require_chromium(path: Path = CHROMIUM, environ=os.environ) -> None:
    """Skip without Chromium, but fail in CI (``CI`` set), where the browser must be there."""
    if path.exists():
        return
    if environ.get("CI"):
        pytest.fail(f"CI is set but {MISSING}; .ci/run installs it.", pytrace=False)
    pytest.skip(MISSING)


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(tmp_path):
    absent = tmp_path / "chromium"
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_chromium(absent, {"CI": "1"})
    with pytest.raises(pytest.skip.Exception):
        require_chromium(absent, {})
    require_chromium(Path(__file__), {"CI": "1"})  # present: nothing happens


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_chromium()
    given = os.environ.get("LSI_BOOK_HTML")
    html = Path(given) if given else book.build_site(book.PUBLISHED, tmp_path_factory.mktemp("book"))
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    if os.environ.get("CI"):
        from playwright import sync_api  # in CI a missing playwright is an error, not a skip
    else:
        sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def _offline_context(browser, outside: list[str]):
    """A browser context whose requests outside localhost are recorded in ``outside`` and blocked."""
    context = browser.new_context()

    def guard(route):
        url = urlparse(route.request.url)
        if url.scheme in LOCAL_SCHEMES or url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    return context


def _pages(html: Path) -> list[str]:
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_"))


def test_every_page_loads_offline_with_visible_figures(site, browser):
    html, base = site
    pages = _pages(html)
    assert "index.html" in pages and any(p.startswith("book/chapters/") for p in pages)
    outside: list[str] = []
    context = _offline_context(browser, outside)
    problems = []
    for name in pages:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}")
                if msg.type == "error" else None)
        response = page.goto(f"{base}/{name}", wait_until="networkidle")
        if response is None or not response.ok:
            problems.append(f"{name}: HTTP {response.status if response else 'no response'}")
        images = page.locator("main img")
        for i in range(images.count()):
            image = images.nth(i)
            image.scroll_into_view_if_needed()
            loaded = image.evaluate("img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0")
            box = image.bounding_box()
            if not loaded or not image.is_visible() or not box or box["width"] <= 0 or box["height"] <= 0:
                problems.append(f"{name}: image {image.get_attribute('src')} is not visible")
        if name.startswith("book/chapters/") and images.count() == 0:
            problems.append(f"{name}: a chapter page shows no chart or gallery image")
        shown_errors = page.locator(".output.traceback, .output.stderr, .output.error").count()
        if shown_errors:
            problems.append(f"{name}: {shown_errors} error/stderr output block(s) on the page")
        if "Traceback (most recent call last)" in page.inner_text("body"):
            problems.append(f"{name}: a traceback is printed on the page")
        problems += [f"{name}: {e}" for e in errors]
        page.close()
    context.close()
    assert not outside, f"requests left localhost: {sorted(set(outside))}"
    assert not problems, "\n".join(problems)


def test_every_chapter_has_folded_solutions_that_unfold_on_click(site, browser):
    html, base = site
    chapters = [p for p in _pages(html) if p.startswith("book/chapters/")]
    assert chapters
    outside: list[str] = []
    context = _offline_context(browser, outside)
    problems = []
    for name in chapters:
        page = context.new_page()
        page.goto(f"{base}/{name}", wait_until="networkidle")
        solutions = page.locator("main div.solution.dropdown")
        if page.locator("main div.exercise").count() == 0 or solutions.count() == 0:
            problems.append(f"{name}: no exercises with folded solutions")
            page.close()
            continue
        for i in range(solutions.count()):
            solution = solutions.nth(i)
            content = solution.locator(":scope > .admonition-title ~ *").first
            solution.scroll_into_view_if_needed()
            if content.is_visible():
                problems.append(f"{name}: solution {i + 1} is not folded when the page loads")
                continue
            page.emulate_media(media="print")  # paper cannot be clicked: printing unfolds it
            if not content.is_visible():
                problems.append(f"{name}: solution {i + 1} is not shown when the page is printed")
            page.emulate_media(media="screen")
            solution.locator("button.toggle-button").click()
            try:
                content.wait_for(state="visible", timeout=5000)
            except Exception:  # playwright's TimeoutError
                problems.append(f"{name}: solution {i + 1} does not unfold on a click")
        page.close()
    context.close()
    assert not outside, f"requests left localhost: {sorted(set(outside))}"
    assert not problems, "\n".join(problems)
