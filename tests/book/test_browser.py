"""Open every page of the built book in headless Chromium, served on localhost.

Each page must load, request nothing outside localhost, show every chart and
gallery image with a non-zero size, and show no error output. Every chapter
must have exercises whose solutions are folded and unfold on a click. The book is
built from the published chapters (``book/chapters``) into a scratch folder,
or taken from ``$LSI_BOOK_HTML`` (a built ``_build/html`` folder) if set.
Without Debian's ``chromium`` (``apt-get install -y chromium``) the test skips,
except in CI (``CI=1``, as ``.ci/run`` sets), where a missing browser is a failure
(tests/prerequisites.py): a skipped browser test would hide a broken book.
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
from prerequisites import require, require_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # builds the published book, drives Chromium

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about"}

MISSING = "Debian chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)"


def require_chromium() -> None:
    """Skip without Chromium, but fail in CI, where the browser must be there."""
    require(CHROMIUM.exists(), MISSING)


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
    sync_api = require_module("playwright.sync_api", "the test extra: pip install -e '.[test]'")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield chromium
        chromium.close()


def _offline_context(browser, outside: list[str], **options):
    """A browser context whose requests outside localhost are recorded in ``outside`` and blocked."""
    context = browser.new_context(**options)

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


@pytest.fixture(scope="module")
def visited(site, browser) -> dict:
    """Every page of the book opened once: ``{"outside": [...], "figures": {page: problems},
    "solutions": {chapter page: problems}}``. One visit per page serves both tests below (each
    page of the published book takes seconds to load and settle)."""
    html, base = site
    pages = _pages(html)
    outside: list[str] = []
    context = _offline_context(browser, outside)
    figures, solutions = {}, {}
    for name in pages:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}")
                if msg.type == "error" else None)
        response = page.goto(f"{base}/{name}", wait_until="networkidle")
        figures[name] = _figure_problems(page, name, response) + [f"{name}: {e}" for e in errors]
        if name.startswith("book/chapters/"):
            solutions[name] = _solution_problems(page, name)
        page.close()
    context.close()
    return {"pages": pages, "outside": outside, "figures": figures, "solutions": solutions}


def _figure_problems(page, name: str, response) -> list[str]:
    """The page answered, shows every image with a size, a chapter shows a chart or a gallery, no error output."""
    problems = []
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
    skipped = page.locator("main", has_text="This chapter is skipped: the data is not available").count() > 0
    if (name.startswith("book/chapters/") and not skipped
            and images.count() + page.locator("main .lsi-chart").count() == 0):
        problems.append(f"{name}: a chapter page shows no chart or gallery image")
    shown_errors = page.locator(".output.traceback, .output.stderr, .output.error").count()
    if shown_errors:
        problems.append(f"{name}: {shown_errors} error/stderr output block(s) on the page")
    if "Traceback (most recent call last)" in page.inner_text("body"):
        problems.append(f"{name}: a traceback is printed on the page")
    return problems


def _solution_problems(page, name: str) -> list[str]:
    """The chapter has exercises whose solutions are folded, printed unfolded, and unfold on a click."""
    solutions = page.locator("main div.solution.dropdown")
    if page.locator("main div.exercise").count() == 0 or solutions.count() == 0:
        return [f"{name}: no exercises with folded solutions"]
    problems = []
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
    return problems


def test_every_page_loads_offline_with_visible_figures(visited):
    assert "index.html" in visited["pages"] and any(p.startswith("book/chapters/") for p in visited["pages"])
    assert not visited["outside"], f"requests left localhost: {sorted(set(visited['outside']))}"
    problems = [problem for found in visited["figures"].values() for problem in found]
    assert not problems, "\n".join(problems)


def test_every_chapter_has_folded_solutions_that_unfold_on_click(visited):
    assert visited["solutions"]
    problems = [problem for found in visited["solutions"].values() for problem in found]
    assert not problems, "\n".join(problems)


# --- Interactive charts, the sample explorer and the downloads (issue 16), on a tiny fixture book ----------

ARTIFACTS = Path(os.environ.get("LSI_TEST_ARTIFACTS") or book.REPO / "_build" / "test-artifacts" / "browser")
"""Screenshots of a chart tooltip and an explorer page are saved here (printed by the tests)."""


@pytest.fixture(scope="module")
def fixture_site(tmp_path_factory):
    """The fixture book (tests/book_fixture.py): one chapter, explorers for CIFAR-10 (50,200 rows), IMDb, chest X-ray."""
    import book_fixture

    html = book_fixture.build_fixture_site(tmp_path_factory.mktemp("fixture-book"))
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def offline_page(browser):
    """A page whose requests outside localhost are blocked and recorded, with its console errors."""
    outside: list[str] = []
    errors: list[str] = []
    context = _offline_context(browser, outside, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
    yield page
    context.close()
    assert not outside, f"requests left localhost: {sorted(set(outside))}"
    assert not errors, "\n".join(errors)


def test_chart_hover_shows_the_sample_offline(fixture_site, offline_page):
    html, base = fixture_site
    page = offline_page
    page.goto(f"{base}/book/chapters/cifar10.html", wait_until="networkidle")
    page.wait_for_selector(".lsi-chart.lsi-live", timeout=20_000)
    charts = page.locator(".lsi-chart")
    assert charts.count() == 2 and page.locator(".lsi-chart.lsi-live").count() == 2
    assert page.locator(".lsi-chart.lsi-live .lsi-chart-static").first.is_hidden()
    assert page.locator(".output.stderr, .output.traceback").count() == 0  # the tqdm bar is not on the page
    strip = charts.nth(0)
    strip.scroll_into_view_if_needed()
    points = strip.locator(".lsi-chart-live g.mark-symbol path")
    assert points.count() == 200
    tooltip = page.locator("#vg-tooltip-element")
    for i in range(0, 200, 7):  # points overlap; hover until one shows its tooltip
        points.nth(i).hover(force=True)
        if tooltip.is_visible():
            break
    assert tooltip.is_visible(), "no tooltip on hover"
    thumbnail = tooltip.locator("img")
    thumbnail.wait_for(timeout=5000)
    page.wait_for_function("() => { const i = document.querySelector('#vg-tooltip-element img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=5000)
    text = tooltip.inner_text()
    assert "rank in its class" in text and "lsi" in text and "digit" in text
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chart-tooltip.png"))
    print(f"screenshot: {ARTIFACTS / 'chart-tooltip.png'}")
    # Print (the PDF build) shows the static SVG, not the live chart.
    page.emulate_media(media="print")
    assert page.locator(".lsi-chart-static svg").first.is_visible()
    assert page.locator(".lsi-chart-live").first.is_hidden()


def test_explorer_filters_sorts_and_pages(fixture_site, offline_page):
    """What the explorer shows; how fast it filters is timed by benchmarks/bench_explorer.py, not here."""
    html, base = fixture_site
    page = offline_page
    page.goto(f"{base}/book/explore/cifar10.html", wait_until="networkidle")
    status = page.locator(".lsi-x-status")
    status.wait_for()
    total = 50_200
    assert f"of {total:,} samples match" in status.inner_text()
    rows = page.locator(".lsi-x-table tbody tr")
    assert rows.count() == 50
    page.select_option(".lsi-x-group", label="cifar10: none")  # the fixture chapter's 200 digits
    assert page.locator(".lsi-x-table tbody img").count() == 50
    page.wait_for_function("() => [...document.querySelectorAll('.lsi-x-table tbody img')]"
                           ".every(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width >= 40)",
                           timeout=10_000)
    page.select_option(".lsi-x-group", label="all")
    assert page.input_value(".lsi-x-tier") == "0"  # the tier with the most samples comes first
    page.select_option(".lsi-x-tier", label="LSI (newton-step)")
    page.select_option(".lsi-x-class", label="cat")
    page.select_option(".lsi-x-corr", value="1")
    page.fill(".lsi-x-lo", "0.001")
    page.fill(".lsi-x-hi", "0.01")
    shown = page.evaluate("""() => [...document.querySelectorAll('.lsi-x-table tbody tr')].map(tr =>
        [...tr.children].map(td => td.textContent))""")
    assert shown, "the filter left no rows"
    header = page.evaluate("() => [...document.querySelectorAll('.lsi-x-table thead th')].map(th => th.textContent)")
    score_col = header.index("LSI (newton-step)")
    for row in shown:
        assert row[2] == "cat" and row[3] != "" and 0.001 <= float(row[score_col]) <= 0.01, row
    matched = int(status.inner_text().split(" of ")[0].replace(",", ""))
    # the same count from the data itself
    expected = page.evaluate(f"""() => {{ const d = window.LSI_EXPLORER.cifar10, c = d.columns, s = d.scores["LSI (newton-step)"];
        let k = 0; for (let i = 0; i < d.rows; i++) if (d.classes[c.cls[i]] === "cat" && c.corr[i] === 1
            && s[i] !== null && s[i] >= 0.001 && s[i] <= 0.01) k++; return k; }}""")
    assert matched == expected
    page.fill(".lsi-x-lo", "")
    page.fill(".lsi-x-hi", "")
    page.select_option(".lsi-x-corr", value="all")
    page.click(".lsi-x-next")
    assert "page 2 of" in page.inner_text(".lsi-x-page")
    page.click("th[data-key='score0']")  # ascending
    values = [float(v) for v in page.evaluate(f"""() => [...document.querySelectorAll('.lsi-x-table tbody tr')]
        .map(tr => tr.children[{score_col}].textContent).filter(v => v !== '')""")]
    assert values == sorted(values)
    page.select_option(".lsi-x-class", label="all classes")
    page.fill(".lsi-x-search", "100042")
    assert page.locator(".lsi-x-table tbody tr").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.fill(".lsi-x-search", "")
    page.select_option(".lsi-x-group", label="cifar10: none")
    page.screenshot(path=str(ARTIFACTS / "explorer.png"), full_page=False)
    print(f"screenshot: {ARTIFACTS / 'explorer.png'}")
    # A histogram bin links here with its range.
    page.goto(f"{base}/book/explore/cifar10.html#lo=0.001&hi=0.002", wait_until="networkidle")
    assert page.input_value(".lsi-x-lo") == "0.001" and page.input_value(".lsi-x-hi") == "0.002"
    for dataset, rows_expected in (("imdb", 300), ("chest_xray", 120)):
        page.goto(f"{base}/book/explore/{dataset}.html", wait_until="networkidle")
        assert f"of {rows_expected:,} samples match" in page.inner_text(".lsi-x-status")
        if dataset == "imdb":
            assert "a rather long text" in page.locator(".lsi-x-table tbody td.lsi-x-text").first.inner_text()
    assert page.locator(".lsi-x-table tbody img").count() == 50  # chest X-ray thumbnails


def test_take_it_away_downloads_resolve(fixture_site, offline_page):
    html, base = fixture_site
    page = offline_page
    page.goto(f"{base}/book/chapters/cifar10.html", wait_until="networkidle")
    section = page.locator("section#take-it-away")
    assert section.count() == 1
    text = section.inner_text()
    assert "lsi book run cifar10 --profile ci" in text and "-p n_train=200" in text and "papermill" in text
    assert "about 1 minute on one GPU (fixture)" in text  # the chapter's paper estimate
    links = section.locator("a.download")
    assert links.count() == 1
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href")
        response = page.request.get(f"{base}/book/chapters/{href}")
        assert response.ok and response.body()[:4] == b"PAR1", href
    explorer = section.locator("a[href*='explore/cifar10']")
    assert explorer.count() == 1
