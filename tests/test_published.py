"""Published values: round trip with provenance, a clear error on any changed row, names(), the CLI."""
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lsi
from core_data import blobs
from lsi import published
from lsi.cli import main
from lsi.book.chapter_data import publish_scores


@pytest.fixture
def result(tmp_path):
    """An ``lsi compute`` output: a real run's table and metadata."""
    X, y = blobs(30, 3, 3)
    features, out = tmp_path / "F.npz", tmp_path / "R.parquet"
    np.savez(features, features=X, labels=y)
    assert main(["compute", "--features", str(features), "--solver", "newton-step", "--quiet", "--out", str(out)]) == 0
    return out


def test_round_trip_keeps_every_row_bit_for_bit_and_the_provenance(result, tmp_path):
    folder = tmp_path / "published"
    path = published.add(result, name="blobs-30-newton-step", setting="blobs, 30 samples, newton-step", folder=folder)
    table = published.load("blobs-30-newton-step", folder)
    original = lsi.load_table(result)
    pd.testing.assert_frame_equal(table, original, check_exact=True)
    record = table.attrs["published"]
    run = original.attrs["lsi"]
    assert path == folder / "blobs-30-newton-step.parquet"
    assert (record["commit"], record["device"], record["wall_time_s"], record["n_samples"], record["tier"]) == \
        (run["commit"], run["device"], run["wall_time_s"], 30, "newton-step")
    assert record["parameters"]["run.solver"] == "newton-step"
    assert record["rows_sha256"] == published.content_hash(original)
    assert published.cite(table) == {"blobs-30-newton-step": f"blobs, 30 samples, newton-step (commit "
                                                             f"{run['commit']}, sha256 {record['sha256'][:12]})"}


def _rewrite(path, change):
    """Change the rows of a published file but keep its metadata (a damaged or edited file)."""
    arrow = pq.read_table(path)
    frame = arrow.to_pandas()
    change(frame)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(arrow.schema.metadata),
                   path)


def _one_ulp(frame):
    frame.loc[3, "lsi"] = np.nextafter(frame.loc[3, "lsi"], np.inf)


def _labels_reversed(frame):
    frame["label"] = frame["label"].to_numpy()[::-1]


def _id_renamed(frame):
    frame.loc[frame.index[-1], "id"] += 1000


@pytest.mark.parametrize("change", [_one_ulp, _labels_reversed, _id_renamed])
def test_a_changed_file_is_a_clear_error(result, tmp_path, change):
    folder = tmp_path / "published"
    path = published.add(result, name="blobs", folder=folder)
    _rewrite(path, change)
    with pytest.raises(ValueError, match="does not match its provenance"):
        published.load("blobs", folder)


def test_names_lists_the_published_files_and_unknown_names_are_errors(result, tmp_path):
    folder = tmp_path / "published"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        published.names(folder)
    folder.mkdir()
    assert published.names(folder) == []
    published.add(result, name="b", folder=folder)
    published.add(result, folder=folder)
    (folder / "notes.txt").write_text("not a table")
    assert published.names(folder) == ["b", "features-30-newton-step"]
    with pytest.raises(FileNotFoundError, match="known: b, features-30-newton-step"):
        published.load("c", folder)


def test_a_chapter_table_is_published_with_its_setting_and_linked_back(tmp_path, monkeypatch):
    X, y = blobs(20, 3, 2)
    table = lsi.compute_lsi(X, y, solver="newton-step", progress=False)
    monkeypatch.setenv("LSI_BOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LSI_BOOK_PROFILE", "ci")
    monkeypatch.setenv("LSI_BOOK_PARAMETERS", json.dumps({"extractor": "pixels", "feature_dim": 3}))
    publish_scores(table, chapter="demo", name="scores", dataset="digits", corruption="flip:0.1",
                       original_label=y)
    folder = tmp_path / "published"
    paths = published.from_chapter("demo", data=tmp_path / "data", folder=folder)
    assert [p.stem for p in paths] == ["digits-flip-0.1-20-newton-step"]
    record = published.provenance("digits-flip-0.1-20-newton-step", folder)
    assert record["setting"] == ("digits, 20 samples scored of 20, pixels features (3-d), newton-step tier, "
                                 "diag Hessian, corruption flip:0.1, from the demo chapter (ci profile)")
    chapter_table = pq.read_table(tmp_path / "data" / "demo" / "scores.parquet").to_pandas()
    assert published.matching(chapter_table, folder) == "digits-flip-0.1-20-newton-step"
    assert published.matching(chapter_table.iloc[1:], folder) is None


def test_cli_adds_lists_and_checks(result, tmp_path, capsys):
    folder = str(tmp_path / "published")
    assert main(["published", "add", str(result), "--name", "x", "--folder", folder]) == 0
    assert main(["published", "check", "--folder", folder]) == 0
    assert "x: features, 30 samples scored of 30, newton-step tier, diag Hessian" in capsys.readouterr().out
    _rewrite(tmp_path / "published" / "x.parquet", lambda f: f.__setitem__("lsi", 2 * f["lsi"]))
    assert main(["published", "check", "--folder", folder]) == 2
    assert "does not match its provenance" in capsys.readouterr().err
    assert main(["published", "add", "--folder", folder]) == 2


def test_the_setting_names_the_principal_components_of_a_cli_run(tmp_path):
    X, y = blobs(30, 3, 3)
    features, out = tmp_path / "F.npz", tmp_path / "R.parquet"
    np.savez(features, features=X, labels=y)
    argv = ["compute", "--features", str(features), "--components", "2", "--solver", "newton-step", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    record = published.provenance("p", published.add(out, name="p", folder=tmp_path / "published").parent)
    assert record["setting"].startswith("features, 30 samples scored of 30, features (2-d), newton-step tier")


def test_take_it_away_names_the_published_value_of_a_chapter_table(tmp_path, monkeypatch):
    import nbformat

    from lsi import book
    from lsi.book.chapter_data import published_tables

    X, y = blobs(20, 3, 2)
    monkeypatch.setenv("LSI_BOOK_DATA", str(tmp_path / "data"))
    for name, labels in (("scores", y), ("other", 1 - y)):
        publish_scores(lsi.compute_lsi(X, labels, solver="newton-step", progress=False), chapter="demo",
                       name=name, dataset="digits")
    monkeypatch.setattr(published, "FOLDER", tmp_path / "published")
    published.add(tmp_path / "data" / "demo" / "scores.parquet", name="digits-demo")
    path = tmp_path / "demo.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(path))
    book.add_take_it_away(path, None, published_tables(tmp_path / "data"), tmp_path / "data")
    lines = nbformat.read(str(path), as_version=4).cells[-1].source.splitlines()
    assert [line.endswith('published value `lsi.published.load("digits-demo")`') for line in lines
            if line.startswith("- {download}")] == [False, True]  # other.parquet, then scores.parquet


def test_the_repositorys_published_values_load_and_match_their_hashes():
    found = published.names()
    assert {"cifar10-5000-newton-step", "imdb-3000-converged", "chest_xray-4592-converged"} <= set(found)
    for name in found:
        record = published.load(name).attrs["published"]
        assert record["name"] == name and record["setting"] and record["commit"] and record["n_scored"] > 0


def test_the_published_values_ship_in_the_package_and_lsi_published_names_another_folder(tmp_path, result):
    import subprocess
    import sys
    from pathlib import Path

    assert published.FOLDER == Path(lsi.__file__).parent / "published_values" or "LSI_PUBLISHED" in os.environ
    folder = tmp_path / "mine"
    published.add(result, name="elsewhere", folder=folder)
    code = "import lsi.published as p; print(p.FOLDER, p.names())"
    env = {**os.environ, "LSI_PUBLISHED": str(folder)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == str(folder) and "['elsewhere']" in out
