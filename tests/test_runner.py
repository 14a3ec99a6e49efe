"""The one runner of LSI and SUI: chunks, resume, run identity, provenance schema."""
import os
import stat

import numpy as np
import pandas as pd
import pytest
import torch

import lsi
from core_data import blobs
from lsi import runner
from lsi.results import atomic_write_bytes
from lsi.sui import compute_sui

SCHEMA = {"measure", "identity", "options", "commit", "date", "device", "python", "versions", "n_samples",
          "n_scored", "wall_time_s"}


def _score(calls):
    def score(chunk, bar):
        calls.append(list(chunk))
        return pd.DataFrame({"index": chunk, "value": np.asarray(chunk, dtype=float) ** 2})
    return score


def test_run_chunks_stores_and_resumes(tmp_path):
    positions, identity = np.arange(10), {"measure": "test", "data_sha256": "x"}
    calls = []
    first = runner.run(positions[:6], _score(calls), size=3, identity=identity, checkpoint=tmp_path, progress=False)
    assert calls == [[0, 1, 2], [3, 4, 5]]
    calls.clear()
    table = runner.run(positions, _score(calls), size=3, identity=identity, checkpoint=tmp_path, progress=False)
    assert calls == [[6, 7, 8], [9]]  # only the chunks not stored yet
    assert list(table["index"]) == list(range(10)) and np.array_equal(table["value"], np.arange(10.0) ** 2)
    pd.testing.assert_frame_equal(table.iloc[:6], first)
    with pytest.raises(ValueError, match="other options"):
        runner.run(positions, _score(calls), size=3, identity={**identity, "data_sha256": "y"}, checkpoint=tmp_path)


def test_an_executor_gets_only_the_missing_chunks_and_may_finish_them_in_any_order(tmp_path):
    positions, identity = np.arange(10), {"measure": "test", "data_sha256": "x"}
    runner.run(positions[:3], _score([]), size=3, identity=identity, checkpoint=tmp_path, progress=False)
    handed = []

    def backwards(score, pending, bar):  # a cluster returns chunks as they finish: here last first
        handed.extend(list(chunk) for chunk in pending)
        for chunk in reversed(pending):
            yield chunk, score(chunk, None)

    table = runner.run(positions, _score([]), size=3, identity=identity, checkpoint=tmp_path, progress=False,
                       executor=backwards)
    assert handed == [[3, 4, 5], [6, 7, 8], [9]]
    pd.testing.assert_frame_equal(table, runner.run(positions, _score([]), size=3, identity=identity, progress=False))
    assert sorted(p.name[:26] for p in tmp_path.glob("chunk-*")) == [
        f"chunk-{a:09d}-{b:09d}-" for a, b in ((0, 2), (3, 5), (6, 8), (9, 9))]


def test_chunk_size_follows_the_budget():
    assert runner.chunk_size(1000, "10KiB") == 10
    assert runner.chunk_size(1000, 10) == 1          # at least one
    assert runner.chunk_size(1, "1GiB") == lsi.defaults.MAX_MODELS_PER_CHUNK


def test_identity_leaves_out_device_and_budget_but_not_data():
    a = runner.run_identity("lsi", {"lr": 0.04, "device": "cuda:0", "memory_budget": 1}, data="d")
    b = runner.run_identity("lsi", {"lr": 0.04, "device": "cuda:1", "memory_budget": 2}, data="d")
    assert a == b == {"measure": "lsi", "lr": 0.04, "data_sha256": "d"}
    X = np.arange(6.0).reshape(3, 2)
    assert runner.fingerprint(X, [0, 1, 0]) != runner.fingerprint(X, [0, 1, 1])
    assert runner.fingerprint(X) != runner.fingerprint(X.astype(np.float32))
    assert runner.fingerprint(X) != runner.fingerprint(X.reshape(2, 3))
    assert runner.fingerprint(torch.tensor(X)) == runner.fingerprint(X)
    module = torch.nn.Linear(2, 2)
    before = runner.module_fingerprint(module)
    with torch.no_grad():
        module.weight[0, 0] += 1e-6
    assert runner.module_fingerprint(module) != before


def test_checkpoint_resumes_across_budgets_and_refuses_other_data(tmp_path):
    X, y = blobs(30, 3, 3)
    options = dict(solver="gd", epochs=20, progress=False, checkpoint=tmp_path / "run")
    plain = lsi.compute_lsi(X, y, solver="gd", epochs=20, progress=False)
    lsi.compute_lsi(X, y, memory_budget="1GiB", **options)
    again = lsi.compute_lsi(X, y, memory_budget="2GiB", **options)  # same run: the chunks are reused
    pd.testing.assert_frame_equal(again, plain, check_exact=True)
    with pytest.raises(ValueError, match="other options"):
        lsi.compute_lsi(X + 1e-9, y, **options)


def test_lsi_and_sui_tables_share_one_provenance_schema():
    X, y = blobs(12, 3, 2)
    tables = {"lsi": lsi.compute_lsi(X, y, progress=False),
              "sui": compute_sui(X, y, probe="linear", l2=0.1, progress=False)}
    for measure, table in tables.items():
        meta = table.attrs["lsi"]
        assert SCHEMA <= set(meta), measure
        assert meta["measure"] == meta["identity"]["measure"] == measure
        assert meta["n_scored"] == len(table) == meta["n_samples"] == 12
        assert "device" not in meta["identity"] and "memory_budget" not in meta["identity"]
        assert len(meta["identity"]["data_sha256"]) == 64
    runner.check_same_run([tables["lsi"], tables["lsi"]])
    with pytest.raises(ValueError, match="one measure"):
        runner.check_same_run([tables["lsi"], tables["sui"]])
    other = lsi.compute_lsi(X, y, weight_decay=0.02, progress=False)
    with pytest.raises(ValueError, match="weight_decay: 0.01 vs 0.02"):
        runner.check_same_run([tables["lsi"], other], ["a.parquet", "b.parquet"])


def test_sui_module_identity_includes_the_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    labels = np.arange(8) % 2
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    first = compute_sui(model, labels, inputs=x, l2=0.1, progress=False)
    with torch.no_grad():
        model[0].bias += 1e-3
    second = compute_sui(model, labels, inputs=x, l2=0.1, progress=False)
    with pytest.raises(ValueError, match="module of other weights"):
        runner.check_same_run([first, second])


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_an_atomic_write_gets_the_permissions_of_a_plain_one(tmp_path, mask):
    previous = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"values")
        with open(tmp_path / "plain.bin", "wb") as handle:
            handle.write(b"values")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode)
    assert (tmp_path / "a.bin").read_bytes() == b"values"
