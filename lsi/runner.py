"""One chunk-and-resume runner for every per-sample measure (LSI, SUI).

A measure supplies a *score function* ``score(chunk) -> DataFrame`` (one row
per sample position of the chunk) and the memory one sample of a chunk needs;
:func:`run` splits the positions into chunks that fit the memory budget, skips
chunks a :class:`~lsi.results.ChunkStore` already holds, scores the rest,
stores each as it finishes and shows one progress bar.

A run's **identity** (:func:`run_identity`) is what makes two tables parts of
the same run: the measure, the options that change the numbers, a SHA-256 of
the data (features/inputs and labels/targets) and, for a module probe, of the
module's initial weights. It leaves out what does not change the result:
device, memory budget, chunk size, progress. A checkpoint folder and
``lsi merge`` both compare identities, so shards computed on ``cuda:0`` and
``cuda:1`` or with different budgets merge, and shards of different data refuse.

Every table's ``attrs["lsi"]`` follows one **provenance schema**
(:func:`provenance`): ``measure``, ``identity``, ``options`` (all options,
device and budget included), ``commit``, ``date``, ``device``, ``python``,
``versions``, ``n_samples``, ``n_scored``, ``wall_time_s`` and measure-specific
extras. Commit and date are taken when the run starts (:func:`start`): a run of
hours records the code it ran, not a commit made while it was running.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lsi.batching import chunks, models_per_chunk, parse_bytes, resolve_device
from lsi.defaults import MAX_MODELS_PER_CHUNK
from lsi.provenance import run_record
from lsi.results import ChunkStore, concat_tables
from lsi.validation import NonFiniteError

ON_NONFINITE = ("raise", "flag")
"""What a run does with a sample whose scores are NaN or inf: raise :class:`~lsi.validation.NonFiniteError`
naming the samples (the default), or keep the rows and mark them ``True`` in the column ``nonfinite``."""

NOT_IDENTITY = ("device", "memory_budget", "chunk_size", "batch_size", "progress", "checkpoint")
"""Options that change where or how fast a run goes, never its numbers."""


def fingerprint(*arrays: Any) -> str:
    """SHA-256 over arrays (numpy, torch or nested lists), their shapes and dtypes; ``None`` entries count."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none;")
            continue
        if isinstance(array, torch.Tensor):
            array = array.detach().cpu().numpy()
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def module_fingerprint(module: torch.nn.Module | None) -> str | None:
    """SHA-256 of a module's parameters and buffers (names, shapes, values); ``None`` for no module."""
    if module is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"{name}:{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_identity(measure: str, options: dict, *, data: str, module: str | None = None) -> dict:
    """The run's identity: measure, math options (:data:`NOT_IDENTITY` dropped), data and module hashes."""
    math = {k: v for k, v in options.items() if k not in NOT_IDENTITY}
    identity = {"measure": measure, **math, "data_sha256": data}
    if module is not None:
        identity["module_sha256"] = module
    return identity


def chunk_size(bytes_per_sample: int, memory_budget: str | int, limit: int = MAX_MODELS_PER_CHUNK) -> int:
    """Samples per chunk so that one chunk fits ``memory_budget`` (at least 1, at most ``limit``)."""
    return models_per_chunk(int(bytes_per_sample), parse_bytes(memory_budget), limit)


Executor = Callable[[Callable[[np.ndarray, Any], pd.DataFrame], list[np.ndarray], Any],
                    Iterable[tuple[np.ndarray, pd.DataFrame]]]
"""Scores pending chunks: ``executor(score, chunks, bar)`` yields ``(chunk, table)`` as each finishes,
in any order (:func:`serial` here, :class:`lsi.distributed.RayExecutor` on a cluster)."""


def serial(score: Callable[[np.ndarray, Any], pd.DataFrame], pending: list[np.ndarray],
           bar: Any) -> Iterable[tuple[np.ndarray, pd.DataFrame]]:
    """The default :data:`Executor`: score the chunks here, one after another, advancing ``bar`` within each."""
    for chunk in pending:
        yield chunk, score(chunk, bar)


def run(positions: np.ndarray, score: Callable[[np.ndarray, Any], pd.DataFrame], *, size: int,
        identity: dict, checkpoint: str | Path | None = None, progress: bool = True,
        desc: str = "", unit: str = "sample", executor: Executor | None = None,
        finite: tuple[str, ...] = (), on_nonfinite: str = "raise") -> pd.DataFrame:
    """Score ``positions`` chunk by chunk; with ``checkpoint``, store and resume chunks.

    ``score(chunk, bar)`` returns one row per position, with an ``index``
    column; it may advance the progress ``bar`` within a chunk (fractions of a
    sample), which the runner sets to the samples done after each chunk.
    The chunk boundaries depend only on ``positions`` and ``size``, so a rerun
    with the same arguments finds the chunks it finished. ``executor`` scores
    the chunks the store lacks (default :func:`serial`); each is stored as it
    arrives, so the table is the same whichever executor ran it.

    Every chunk's ``finite`` columns are checked as it arrives (and as it is
    read back from the store): with ``on_nonfinite="raise"`` a NaN or inf is a
    :class:`~lsi.validation.NonFiniteError` that names the samples and the
    likely cause, before the chunk is stored; with ``"flag"`` the table gains a
    boolean column ``nonfinite`` (see :data:`ON_NONFINITE`).
    """
    check_on_nonfinite(on_nonfinite)
    check = (lambda table: table) if on_nonfinite == "flag" else (
        lambda table: require_finite(table, finite, identity))
    store = ChunkStore(checkpoint, identity) if checkpoint is not None else None
    tables, pending, done = [], [], 0
    bar = tqdm(total=len(positions), disable=not progress, unit=unit, desc=desc)
    try:
        for chunk in chunks(positions, size):
            stored = store.get(chunk) if store is not None else None
            if stored is not None:
                tables.append(check(stored))
                done += len(chunk)
            else:
                pending.append(chunk)
        bar.n = done
        for chunk, table in (executor or serial)(score, pending, bar):
            tables.append(check(table))
            if store is not None:
                store.put(chunk, table)
            done += len(chunk)
            bar.n = done
            bar.refresh()
    finally:
        bar.close()
    table = concat_tables(tables)
    if on_nonfinite == "flag":
        table["nonfinite"] = ~_finite_rows(table, finite)
    return table


def check_on_nonfinite(on_nonfinite: str) -> str:
    """``on_nonfinite`` if it is one of :data:`ON_NONFINITE`; a clear ``ValueError`` otherwise."""
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite={on_nonfinite!r} is not valid; choose one of 'raise', 'flag'.")
    return on_nonfinite


def _finite_rows(table: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Rows whose ``columns`` are all finite."""
    values = table[list(columns)].to_numpy(dtype=np.float64) if columns else np.zeros((len(table), 0))
    return np.isfinite(values).all(axis=1)


def require_finite(table: pd.DataFrame, columns: tuple[str, ...], identity: dict) -> pd.DataFrame:
    """``table`` if its ``columns`` are finite; else a :class:`NonFiniteError` naming samples and likely cause."""
    bad = ~_finite_rows(table, columns)
    if not bad.any():
        return table
    rows = table.loc[bad]
    which = [c for c in columns if not np.isfinite(rows[c].to_numpy(dtype=np.float64)).all()]
    shown = rows["index"].head(10).tolist()
    raise NonFiniteError(
        f"{identity.get('measure', 'the measure')} is NaN or inf ({', '.join(which)}) for {int(bad.sum())} "
        f"sample(s) at positions {shown}{' ...' if bad.sum() > len(shown) else ''}. Likely cause: "
        f"{likely_cause(identity)}. Pass on_nonfinite='flag' to keep these rows, marked in the column 'nonfinite'.")


def likely_cause(identity: dict) -> str:
    """Why a run's numbers may have overflowed, from the options its identity records."""
    causes = []
    if identity.get("lr") is not None and identity.get("solver", "gd") in ("gd", "warm-start"):
        causes.append(f"training diverged at lr={identity['lr']:g} (use a smaller lr)")
    if identity.get("dtype") == "float32":
        causes.append("float32 overflow or round-off (use dtype='float64')")
    causes.append("features on a very large scale (standardise them)")
    return "; or ".join(causes)


def start(device: str | torch.device) -> dict:
    """What a run records as it starts: :func:`lsi.provenance.run_record` and the clock (for :func:`provenance`).

    The first check of a run's arguments: an unknown or unavailable ``device`` is a clear ``ValueError``.
    """
    return {**run_record(resolve_device(device)), "clock": time.perf_counter()}


def provenance(started: dict, *, identity: dict, options: dict, n_samples: int, n_scored: int,
               **extra) -> dict:
    """The one metadata schema of a result table (see the module docstring); ``started`` is :func:`start`'s."""
    record = {key: value for key, value in started.items() if key != "clock"}
    return {**record, "measure": identity["measure"], "identity": identity, "options": options,
            "n_samples": int(n_samples), "n_scored": int(n_scored),
            "wall_time_s": round(time.perf_counter() - started["clock"], 3), **extra}


def check_same_run(tables: Iterable[pd.DataFrame], names: Iterable[str] | None = None) -> dict:
    """The common identity of tables that are shards of one run; a clear error otherwise."""
    tables = list(tables)
    names = [str(n) for n in names] if names is not None else [f"table {i}" for i in range(len(tables))]
    identities = [_identity_of(t, name) for t, name in zip(tables, names)]
    first = identities[0]
    for name, other in zip(names[1:], identities[1:]):
        if other == first:
            continue
        if first.get("measure") != other.get("measure"):
            raise ValueError(f"{name} holds {other.get('measure')!r} scores and {names[0]} "
                             f"{first.get('measure')!r} scores; merge only shards of one measure.")
        if first.get("data_sha256") != other.get("data_sha256"):
            raise ValueError(f"{name} was computed on different data than {names[0]} (the SHA-256 of "
                             f"features and labels differs); merge only shards of one data set.")
        if first.get("module_sha256") != other.get("module_sha256"):
            raise ValueError(f"{name} was computed with a module of other weights than {names[0]}; "
                             f"merge only shards of one model.")
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        shown = ", ".join(f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in diff)
        raise ValueError(f"{name} and {names[0]} were computed with different options ({shown}); "
                         f"merge only shards of one run.")
    return first


def _identity_of(table: pd.DataFrame, name: str) -> dict:
    """A table's identity; tables written before identities existed fall back to their options.

    A table with neither (not written by ``lsi compute``, or its metadata lost)
    has no identity to compare, which is an error: two such tables would compare equal.
    """
    meta = table.attrs.get("lsi") or {}
    identity = meta.get("identity") or {k: v for k, v in (meta.get("options") or {}).items()
                                        if k not in NOT_IDENTITY}
    if not identity:
        raise ValueError(f"{name} carries no lsi run identity (no 'identity' or 'options' in its 'lsi' "
                         f"metadata); merge only tables written by 'lsi compute'.")
    return identity
