"""Resume returns the rows asked for: chunks keyed by their positions and the run, checked on load,
and a damaged chunk or manifest recomputed with a warning (issue 23, item 1)."""
import json

import numpy as np
import pandas as pd
import pytest

import lsi
from core_data import blobs
from lsi.sui import compute_sui

X, Y = blobs(24, 3, 3)
LSI = dict(solver="newton-step", progress=False, memory_budget=10**9)
SUI = dict(probe="linear", l2=1e-3, progress=False, memory_budget=10**9)


def _lsi(checkpoint=None, **options):
    return lsi.compute_lsi(X, Y, checkpoint=checkpoint, **{**LSI, **options})


def _sui(checkpoint=None, **options):
    return compute_sui(X, Y, checkpoint=checkpoint, **{**SUI, **options})


MEASURES = {"lsi": _lsi, "sui": _sui}


def _values(table):
    """The rows alone (the metadata holds wall times)."""
    return pd.DataFrame(table.to_dict("list"))


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_a_run_of_other_positions_with_the_same_ends_gets_its_own_rows(measure, tmp_path):
    compute = MEASURES[measure]
    few = compute(tmp_path / "run", indices=[0, 5, 23])
    assert list(few["index"]) == [0, 5, 23]
    everything = compute(tmp_path / "run")  # same first and last position: one chunk each, 0..23
    assert list(everything["index"]) == list(range(24))
    pd.testing.assert_frame_equal(_values(everything), _values(compute()))
    pd.testing.assert_frame_equal(_values(compute(tmp_path / "run", indices=[0, 5, 23])), _values(few))


def _only_chunk(folder):
    (chunk,) = folder.glob("chunk-*.parquet")
    return chunk


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_a_truncated_chunk_is_recomputed_with_a_warning(measure, tmp_path):
    compute = MEASURES[measure]
    expected = compute(tmp_path / "run")
    chunk = _only_chunk(tmp_path / "run")
    chunk.write_bytes(chunk.read_bytes()[:200])
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        resumed = compute(tmp_path / "run")
    pd.testing.assert_frame_equal(_values(resumed), _values(expected))
    assert lsi.load_table(chunk)["index"].tolist() == list(range(24))  # rewritten whole


@pytest.mark.parametrize("measure", sorted(MEASURES))
def test_a_chunk_whose_rows_are_not_its_positions_is_recomputed(measure, tmp_path):
    compute = MEASURES[measure]
    expected = compute(tmp_path / "run")
    chunk = _only_chunk(tmp_path / "run")
    stored = lsi.load_table(chunk)
    lsi.save_table(stored.iloc[::2], chunk)  # metadata kept, rows missing
    with pytest.warns(RuntimeWarning, match="not the positions"):
        resumed = compute(tmp_path / "run")
    pd.testing.assert_frame_equal(_values(resumed), _values(expected))


@pytest.mark.parametrize("measure", sorted(MEASURES))
@pytest.mark.parametrize("damage", [b"", b'{"measure": "lsi", ', b"[1, 2]"])
def test_a_damaged_manifest_is_rewritten_and_the_chunks_reused(measure, damage, tmp_path):
    compute = MEASURES[measure]
    expected = compute(tmp_path / "run")
    manifest = tmp_path / "run" / "run.json"
    recorded = json.loads(manifest.read_text())
    manifest.write_bytes(damage)
    with pytest.warns(RuntimeWarning, match="damaged"):
        resumed = compute(tmp_path / "run")
    pd.testing.assert_frame_equal(_values(resumed), _values(expected))
    assert json.loads(manifest.read_text()) == recorded


def test_a_chunk_of_another_run_is_not_reused_after_the_manifest_is_lost(tmp_path):
    _lsi(tmp_path / "run", weight_decay=0.02)
    (tmp_path / "run" / "run.json").unlink()  # the folder no longer says which run its chunks are from
    resumed = _lsi(tmp_path / "run")
    pd.testing.assert_frame_equal(_values(resumed), _values(_lsi()))
