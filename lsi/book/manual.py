"""Numbers of the manual pages, generated from the files that hold them.

The manual (``book/manual/``) never types a measured number: its tables are MyST substitutions that the build
fills from the benchmark results (``benchmarks/results/*.json``, each written by a script in ``benchmarks/``
with the commit it ran on) and from the published values (``published/``, each with its provenance).
:func:`substitutions` returns them all; a results file that is missing gives a line saying so instead of a
table, so a page never shows a number that no file backs.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lsi.book.profiles import REPO

RESULTS = REPO / "benchmarks" / "results"

Column = tuple[str, Callable[[dict], Any]]
"""A table column: its title and how to read its cell from one record."""


def number(value: Any, digits: int = 3) -> str:
    """A measured number for a table: thousands separators for large values, ``digits`` significant ones below."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e7):
        return f"{value:.2e}"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown_table(records: Sequence[dict], columns: Sequence[Column]) -> str:
    """A Markdown table, one row per record; a cell whose field is absent reads "-"."""
    def cell(record: dict, read: Callable[[dict], Any]) -> str:
        try:
            return number(read(record))
        except (KeyError, TypeError, ZeroDivisionError):
            return "-"

    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r, read) for _, read in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"


def source_line(name: str, data: dict) -> str:
    """Where a table comes from: the results file, the commit and date it records (or that it records none)."""
    meta = data.get("provenance", data)
    commit = meta.get("commit") or f"no commit recorded ({meta.get('note', 'predates commit recording')})"
    date = str(meta.get("date", ""))[:10]
    return f"*From `benchmarks/results/{name}`, commit {commit}{', ' + date if date else ''}.*\n"


def _core(data: dict) -> str:
    gd, tiers, peak = data["gd"], data["tiers"], data["machine"]["matmul_peak_gflops_float64"]
    records = [
        {"what": "float64 matrix-multiply peak (GEMM)", "gflops": peak},
        {"what": f"`gd` tier, batched engine ({gd['models_timed_batched']} models at once)",
         "gflops": gd["gflops_batched"], "share": gd["fraction_of_peak_batched"],
         "seconds": gd["seconds_per_model_batched"], "unit": "per leave-one-out model (1,000 epochs)"},
        {"what": "the authors' loop (one model at a time)", "gflops": gd["gflops_loop"],
         "share": gd["fraction_of_peak_loop"], "seconds": gd["seconds_per_model_loop"], "unit": "per model"},
        {"what": "batched vs per-model loop, all samples", "seconds": gd["all_samples_batched_s"],
         "unit": f"vs {number(gd['all_samples_loop_s'])} s ({number(gd['speedup_batched_vs_loop'])}x)"},
        {"what": "`converged` tier, all samples", "seconds": tiers["converged_s"],
         "unit": f"{number(tiers['converged_speedup_vs_gd_all_samples'])}x faster than batched `gd`; "
                 f"largest gradient norm {number(tiers['converged_max_grad_norm'])}"},
        {"what": "`newton-step` tier, all samples", "seconds": tiers["newton_step_s"],
         "unit": f"Spearman with `converged` {number(tiers['newton_step_spearman_vs_converged'], 5)}"},
    ]
    return markdown_table(records, [
        ("what", lambda r: r["what"]), ("GFLOP/s", lambda r: r["gflops"]),
        ("share of peak", lambda r: f"{100 * r['share']:.0f}%"), ("seconds", lambda r: r["seconds"]),
        ("", lambda r: r["unit"])])


def _scaling(data: dict) -> str:
    return markdown_table(data["scaling"], [
        ("n", lambda r: r["n"]), ("d", lambda r: r["d"]),
        ("`newton-step`, all samples (s)", lambda r: r["newton_step_s"]),
        ("`converged`, all samples (s, extrapolated)", lambda r: r["converged_s_extrapolated"]),
        ("`gd`, 1,000 epochs, all samples (s, extrapolated)", lambda r: r["gd_1000_epochs_s_extrapolated"])])


def _tier_value(row: dict, what: str) -> Any:
    tier = row["tier"].replace("-", "_")
    return row.get(f"{tier}_{what}")


def _rows(data: dict) -> str:
    return markdown_table(data["rows"], [
        ("data", lambda r: r["data"]), ("n", lambda r: r["n"]), ("d", lambda r: r["d"]),
        ("tier", lambda r: r["tier"]), ("engine", lambda r: r.get("engine", "current")),
        ("models timed", lambda r: r["models_timed"]),
        ("seconds", lambda r: _tier_value(r, "s") or _tier_value(r, "s_extrapolated")),
        ("floor (s)", lambda r: _tier_value(r, "floor_s")),
        ("ratio to floor", lambda r: _tier_value(r, "ratio_to_floor")),
        ("largest gradient norm", lambda r: _tier_value(r, "max_grad_norm")),
        ("passes per model", lambda r: _tier_value(r, "steps_per_solve_mean")),
        ("GGN pass (s)", lambda r: _tier_value(r, "ggn_pass_s")),
        ("peak RSS (GiB)", lambda r: r["peak_rss_gib"]), ("GEMM GFLOP/s", lambda r: r["gemm_gflops"]),
        ("pass GEMM GFLOP/s", lambda r: r["pass_gemm_gflops"]),
        ("load at start", lambda r: r["load_average_1min_at_start"]), ("commit", lambda r: r["commit"])])


def _extractors(data: dict) -> str:
    throughput = markdown_table(data["throughput"], [
        ("extractor", lambda r: r["extractor"]), ("input", lambda r: r["input"]), ("items", lambda r: r["n"]),
        ("items/s (wall)", lambda r: r["per_s_wall"]), ("items/s (own cores)", lambda r: r["per_s_own_cores"]),
        ("50,000 items, minutes (own cores)", lambda r: r["minutes_50k_own_cores"])])
    preprocessing = markdown_table(data.get("cifar10_preprocessing", []), [
        ("input", lambda r: r["input"]), ("preprocessing", lambda r: r["preprocessing"]),
        ("features exactly zero", lambda r: f"{100 * r['zero_fraction']:.1f}%"),
        ("test accuracy (logistic regression)", lambda r: r["test_accuracy"])])
    return throughput + "\n" + preprocessing


def _loo(data: dict) -> str:
    refit, ours = data["refit_per_model"], data["lsi_converged"]
    return markdown_table([
        {"how": refit["how"], "models": refit["models_timed"], "per": refit["seconds_per_model"],
         "all": refit["all_samples_s_extrapolated"]},
        {"how": ours["how"], "models": ours["models"], "per": ours["seconds_per_model"], "all": ours["total_s"]},
    ], [("how", lambda r: r["how"]), ("models timed", lambda r: r["models"]),
        ("seconds per model", lambda r: r["per"]), ("all samples (s)", lambda r: r["all"])]) + (
        f"\nSpeed-up per model: {number(data['speedup_per_model'])}x; largest relative parameter difference "
        f"{number(data['max_relative_parameter_difference'])}; problem: n = {number(data['problem']['n'])}, "
        f"{data['problem']['features']}.\n")


def _networks(data: dict) -> str:
    records = [{"width": width, **row} for width, row in data["by_width"].items()]
    return markdown_table(records, [
        ("widths", lambda r: r["width"]), ("parameters", lambda r: r["parameters"]),
        ("batched (vmap) s", lambda r: r["batched_s"]), ("one model per chunk s", lambda r: r["chunks_of_one_s"]),
        ("authors' loop s", lambda r: r["per_model_loop_s"]),
        ("speed-up batched / loop", lambda r: r["speedup"]),
        ("speed-up one per chunk / loop", lambda r: r["speedup_chunks_of_one"]),
        ("largest parameter difference", lambda r: r["max_abs_parameter_difference"])])


def _transformer(data: dict) -> str:
    estimate, real = data["estimate"], data["real_fine_tune"]
    agreement = data["agreement_on_refits"]
    return markdown_table([estimate, real], [
        ("how", lambda r: r["how"]), ("samples", lambda r: r["samples"]), ("total (s)", lambda r: r["total_s"]),
        ("seconds per sample", lambda r: r["seconds_per_sample"])]) + (
        f"\nSpeed-up per sample: {number(data['speedup_per_sample'])}x. On the refitted samples the estimate "
        f"agrees with the real fine-tunes at Spearman {number(agreement['spearman'])}, median relative error "
        f"{number(agreement['median_rel_error'])}; largest gradient norm of a real fine-tune "
        f"{number(real['max_grad_norm'])}. Shared by both: caching the activations "
        f"{number(data['shared']['cache_activations_s'])} s, the full-data fine-tune "
        f"{number(data['shared']['full_data_fine_tune_s'])} s. Problem: {data['problem']['data']}, "
        f"{data['problem']['trained']}, {number(data['problem']['parameters'])} trained parameters; load average "
        f"at start {number(data.get('load_average_1min_at_start'))} on {data['threads']} threads.\n")


def _ray(data: dict) -> str:
    return markdown_table([data], [
        ("n", lambda r: r["n"]), ("d", lambda r: r["d"]), ("workers", lambda r: r["workers"]),
        ("one process, 1 thread (s)", lambda r: r["one_process_1_thread_s"]),
        ("one process, 2 threads (s)", lambda r: r["one_process_2_threads_s"]),
        ("Ray (s)", lambda r: r["ray_s"]), ("Ray start (s)", lambda r: r["ray_start_s"]),
        ("bit-identical to 1 thread", lambda r: "yes" if r["bit_identical_to_1_thread"] else "no")])


def _book(data: dict) -> str:
    return markdown_table([data], [
        ("chapters", lambda r: r["chapters"]), ("re-executed", lambda r: r["re_executed"]),
        ("wall time (s)", lambda r: r["seconds"]), ("target (s)", lambda r: r["target_seconds"]),
        ("cores", lambda r: r["cores"])])


def _tests(data: dict) -> str:
    return markdown_table([data], [
        ("command", lambda r: r["command"]), ("exit", lambda r: r["exit_code"]),
        ("passed", lambda r: r["counts"].get("passed", 0)), ("failed", lambda r: r["counts"].get("failed", 0)),
        ("wall time (s)", lambda r: r["seconds"]), ("target (s)", lambda r: r["target_seconds"]),
        ("load before", lambda r: r["load_average_1min_before"])])


def _full_scale(data: dict) -> str:
    return markdown_table(data["tiers"], [
        ("tier", lambda r: r["tier"]), ("FLOP", lambda r: float(r["flop"])),
        ("one H100 (s)", lambda r: r["h100_s"]), ("4-GPU node (s)", lambda r: r["node_4gpu_s"])]) + (
        f"\nAssumed: {number(data['assumed']['h100_fp64_peak_flops'])} FLOP/s float64 peak at "
        f"{100 * data['assumed']['efficiency']:.0f}% efficiency; the converged tier at its measured "
        f"{number(data['converged_ratio_to_floor'])}x its floor. {data['kind'].capitalize()}.\n")


def _stages(data: dict) -> str:
    floor = data["floor_s"]
    rows = [{"stage": stage, "seconds": seconds, "floor": seconds / floor}
            for stage, seconds in sorted(data["stages_s"].items(), key=lambda item: -item[1])]
    rows += [{"stage": "least possible: the floor's two passes, the GGN pass and the K x K products at the GEMM rate",
              "seconds": data["unavoidable_s"], "floor": data["unavoidable_over_floor"]},
             {"stage": "the floor: two passes per model at the GEMM rate", "seconds": floor, "floor": 1.0}]
    return markdown_table(rows, [("stage", lambda r: r["stage"]), ("seconds", lambda r: r["seconds"]),
                                 ("x the floor", lambda r: r["floor"])]) + (
        f"\n{data['models']:,} models at n = {data['n']:,}, d = {data['d']}, K = {data['K']:,}; "
        f"{number(data['steps_per_solve_mean'])} steps per solve, largest gradient norm "
        f"{number(data['max_grad_norm'])}, GEMM {number(data['gemm_gflops'])} GFLOP/s.\n")


TABLES: dict[str, tuple[str, Callable[[dict], str]]] = {
    "perf_core": ("core.json", _core),
    "perf_core_shared": ("core_2026-11-29.json", _core),
    "perf_scaling": ("core_scaling.json", _scaling),
    "perf_rows": ("core_rows.json", _rows),
    "perf_converged_stages": ("converged_stages.json", _stages),
    "perf_extractors": ("extractors.json", _extractors),
    "perf_loo": ("loo.json", _loo),
    "perf_networks": ("networks.json", _networks),
    "perf_transformer": ("transformer.json", _transformer),
    "perf_ray": ("ray.json", _ray),
    "perf_full_scale": ("full_scale_estimate.json", _full_scale),
    "perf_book": ("book.json", _book),
    "perf_tests_full": ("tests_full.json", _tests),
    "perf_tests_warm": ("tests_warm.json", _tests),
    "perf_tests_fast": ("tests_fast.json", _tests),
}
"""Substitution name -> (results file, renderer)."""


def benchmark_table(name: str, results: Path = RESULTS) -> str:
    """The Markdown of one benchmark table with its source line, or a line saying which file is missing."""
    file, render = TABLES[name]
    path = Path(results) / file
    if not path.is_file():
        return f"*`benchmarks/results/{file}` is not there: run its benchmark script to make this table.*\n"
    data = json.loads(path.read_text())
    return render(data) + "\n" + source_line(file, data)


def published_table(folder: Path | None = None) -> str:
    """Every published value file: name, setting, samples scored, device, wall time and commit (its provenance)."""
    from lsi import published

    records = [published.provenance(name, folder) for name in published.names(folder)]
    if not records:
        return "*No published values in this checkout.*\n"
    return markdown_table(records, [
        ("name", lambda r: f"`{r['name']}`"), ("setting", lambda r: r["setting"]),
        ("scored", lambda r: r["n_scored"]), ("of", lambda r: r["n_samples"]),
        ("device", lambda r: r["device"]), ("wall time (s)", lambda r: r["wall_time_s"]),
        ("commit", lambda r: r["commit"])])


def substitutions(results: Path = RESULTS) -> dict[str, str]:
    """Every generated table of the manual, by its MyST substitution name."""
    return {**{name: benchmark_table(name, results) for name in TABLES}, "published_table": published_table()}
