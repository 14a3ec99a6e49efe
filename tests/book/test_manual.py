"""The manual's generated numbers (lsi.book.manual): tables read from benchmark files, nothing typed by hand."""
import json
import re

from lsi.book import manual
from lsi.book.profiles import REPO


def test_a_table_reads_its_file_and_names_its_commit(tmp_path):
    rows = {"provenance": {"commit": "abc123def456", "date": "2026-12-01T10:00:00+00:00"},
            "rows": [{"data": "synthetic", "n": 20000, "d": 512, "tier": "converged", "models_timed": 20000,
                      "converged_s": 416.2, "converged_floor_s": 159.4, "converged_ratio_to_floor": 2.61,
                      "converged_max_grad_norm": 2.8e-12, "peak_rss_gib": 4.1, "gemm_gflops": 103.0,
                      "commit": "abc123def456"}]}
    (tmp_path / "core_rows.json").write_text(json.dumps(rows))
    table = manual.benchmark_table("perf_rows", tmp_path)
    assert "| synthetic | 20,000 | 512 | converged | current | 20,000 | 416 | 159 | 2.61 | 2.80e-12 |" in table
    assert "| - | abc123def456 |" in table  # no load recorded: a dash, never a made-up number
    assert "commit abc123def456, 2026-12-01" in table


def test_a_missing_results_file_says_so_instead_of_a_table(tmp_path):
    assert "is not there" in manual.benchmark_table("perf_ray", tmp_path)


def test_number_formats():
    assert manual.number(20000) == "20,000"
    assert manual.number(0.000123) == "1.23e-04"
    assert manual.number(2.6102) == "2.61"
    assert manual.number(None) == "-"


def test_every_substitution_the_manual_uses_is_generated():
    used = set()
    for page in (REPO / "book" / "manual").glob("*.md"):
        used |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", page.read_text()))
    assert used and used <= set(manual.TABLES) | {"published_table"}


def test_every_benchmark_results_file_has_its_table():
    """A results file without a table in the manual is a number no page shows: give it one."""
    shown = {file for file, _ in manual.TABLES.values()}
    assert {p.name for p in (REPO / "benchmarks" / "results").glob("*.json")} <= shown


def test_readme_is_a_front_page():
    assert len((REPO / "README.md").read_bytes()) <= 10 * 1024
