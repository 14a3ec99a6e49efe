"""Published scores, the explorer's data, interactive figures, the generated "Take it away" and the runner's
noise filter and progress (issue 16). The browser side is in tests/book/test_browser.py."""
from __future__ import annotations

import io
import json
import re
import shlex

import nbformat
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from lsi import book
from lsi.book import chapter_data as publish, plots


@pytest.fixture()
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("LSI_BOOK_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _table(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"index": np.arange(n), "id": np.arange(100, 100 + n), "label": np.arange(n) % 3,
                         "lsi": rng.lognormal(0, 1, n)})


def test_publish_scores_writes_the_table_with_provenance_and_thumbnails(data):
    table = _table()
    original = table["label"].to_numpy().copy()
    table.loc[[1, 5], "label"] = 0
    calls = []

    def image(i):
        calls.append(i)
        return Image.new("RGB", (224, 224), (int(i) * 20, 0, 0))

    path = publish.publish_scores(table, chapter="ch", name="flips", dataset="cifar10", classes=list("abc"),
                                  tier="converged", corruption="flip:0.1", original_label=original,
                                  thumbnails=image)
    assert path == data / "ch" / "flips.parquet"
    arrow = pq.read_table(path)
    info = json.loads(arrow.schema.metadata[publish.PUBLISHED_KEY])
    assert info["dataset"] == "cifar10" and info["tier"] == "converged" and info["classes"] == list("abc")
    assert info["rows"] == 12 and info["commit"] and info["versions"]["numpy"]
    frame = arrow.to_pandas()
    assert frame["corrupted"].tolist() == [i in (1, 5) for i in range(12)]
    assert (frame["original_label"] == original).all()
    thumbs = publish.read_thumbnails(data / "ch" / "cifar10.thumbs.parquet")
    assert len(thumbs) == 12 and set(thumbs["kind"]) == {"image"}
    picture = Image.open(io.BytesIO(thumbs["data"].iloc[3]))
    assert picture.size == (publish.THUMB_SIZE, publish.THUMB_SIZE) and abs(picture.getpixel((5, 5))[0] - 60) < 8
    publish.publish_scores(table, chapter="ch", name="again", dataset="cifar10", thumbnails=image)
    assert len(calls) == 12  # known ids are not fetched again
    assert len(publish.read_thumbnails(data / "ch" / "cifar10.thumbs.parquet")) == 12


def test_publish_scores_rejects_bad_input(data):
    with pytest.raises(ValueError, match="lower-case"):
        publish.publish_scores(_table(), chapter="My Chapter", name="s", dataset="x")
    with pytest.raises(ValueError, match="no column"):
        publish.publish_scores(_table().drop(columns="lsi"), chapter="c", name="s", dataset="x")
    with pytest.raises(ValueError, match="not both"):
        publish.publish_scores(_table(), chapter="c", name="s", dataset="x", thumbnails=str, texts=str)


def test_a_small_exact_audit_joins_the_full_table_of_its_group(data):
    full = _table(30)
    original = full["label"].to_numpy().copy()
    full.loc[[2, 7, 11], "label"] = (full.loc[[2, 7, 11], "label"] + 1) % 3
    common = dict(chapter="c", dataset="cifar10", classes=list("abc"), corruption="flip:0.1", original_label=original)
    publish.publish_scores(full.iloc[:5], name="a-audit", tier="converged", **common)  # read first (by name)
    publish.publish_scores(full, name="b-all", tier="newton-step", **common)
    payload = publish.explorer_payload(publish.published_tables(data), "cifar10")
    assert payload["rows"] == 30 and payload["classes"] == list("abc")  # no unknown class for the other 25
    assert sum(payload["columns"]["corr"]) == 3
    assert sum(v is not None for v in payload["scores"]["LSI (converged)"]) == 5
    assert None not in payload["columns"]["rank"]  # ranked by the full table's tier


def test_corrupted_data_is_marked_without_an_original_label(data):
    table = _table(6)
    publish.publish_scores(table, chapter="c", name="lorem", dataset="imdb", corruption="lorem:2",
                           corrupted=table["index"] >= 4)
    payload = publish.explorer_payload(publish.published_tables(data), "imdb")
    assert payload["columns"]["corr"] == [0, 0, 0, 0, 1, 1]
    assert payload["columns"]["orig"] == payload["columns"]["cls"]


def test_texts_are_cut_at_a_word(data):
    publish.publish_scores(_table(3), chapter="c", name="s", dataset="imdb", texts=lambda i: "word<br />" * 200)
    thumbs = publish.read_thumbnails(data / "c" / "imdb.thumbs.parquet")
    text = thumbs["data"].iloc[0].decode()
    assert text.endswith(" …") and len(text) <= publish.TEXT_CHARS + 2 and "<br" not in text


def test_explorer_payload_joins_tiers_and_ranks_within_class(data):
    exact, fast = _table(30, 0), _table(30, 1)
    publish.publish_scores(exact, chapter="c", name="exact", dataset="cifar10", classes=list("abc"), tier="converged")
    publish.publish_scores(fast.iloc[::-1], chapter="c", name="fast", dataset="cifar10", classes=list("abc"),
                           tier="newton-step")
    publish.publish_scores(_table(5), chapter="c", name="other", dataset="imdb")
    tables = publish.published_tables(data)
    payload = publish.explorer_payload(tables, "cifar10")
    assert payload["rows"] == 30 and payload["classes"] == list("abc")
    assert payload["tiers"] == ["LSI (converged)", "LSI (newton-step)"]  # same counts: by name
    by_id = dict(zip(payload["columns"]["id"], range(30)))
    for sample, score in zip(fast["id"], fast["lsi"]):  # joined on the id, not on the position
        assert payload["scores"]["LSI (newton-step)"][by_id[str(sample)]] == pytest.approx(score, rel=1e-3)
    # rank within class of the first table's score, by brute force
    for sample, label, score in zip(exact["id"], exact["label"], exact["lsi"]):
        same = exact[exact["label"] == label]
        assert payload["columns"]["rank"][by_id[str(sample)]] == int((same["lsi"] > score).sum()) + 1
    json.dumps(payload, allow_nan=False)  # the page parses it as strict JSON


def test_figure_html_holds_the_static_svg_and_a_safe_spec():
    frame = pd.DataFrame({"lsi": np.geomspace(1e-3, 1, 40), "group": ["</script>", "b"] * 20})
    figure = plots.histogram(frame, group="group", explore="cifar10")
    bundle = figure._repr_mimebundle_()
    html = bundle["text/html"]
    assert bundle["image/svg+xml"] in html and html.count("</script>") == 1
    spec = json.loads(html.split('class="lsi-chart-spec">', 1)[1].rsplit("</script>", 1)[0])
    rows = next(iter(spec["datasets"].values()))
    assert all(r["href"].startswith("book/explore/cifar10.html#lo=") for r in rows)
    assert sum(r["count"] for r in rows) == 40 and spec["encoding"]["tooltip"]
    # only XML namespaces and the spec's $schema id (never fetched) name a web address
    assert {u for u in re.findall(r"https?://[^\"'\s<>]*", html)
            if not u.startswith(("http://www.w3.org/", "https://vega.github.io/schema/"))} == set()


def test_strip_and_scatter_show_the_sample_on_hover(data, monkeypatch):
    monkeypatch.setenv("LSI_BOOK_CHAPTER", "ch")
    frame = _table(20)
    figure = plots.strip(frame, "lsi", "label", tooltip=["id"], dataset="cifar10",
                         thumbnails=lambda i: Image.new("RGB", (32, 32)))
    spec = figure.chart.to_dict()
    rows = next(iter(spec["datasets"].values()))
    assert rows[0]["image"] == publish.thumb_path("cifar10", 100)
    for row, label, score in zip(rows, frame["label"], frame["lsi"]):
        same = frame[frame["label"] == label]
        assert row["rank"] == int((same["lsi"] > score).sum()) + 1
    assert len(publish.read_thumbnails(data / "ch" / "cifar10.thumbs.parquet")) == 20
    texts = plots.scatter(frame.assign(b=frame["lsi"] * 2), "lsi", "b", dataset="imdb", texts=lambda i: f"text {i}")
    assert next(iter(texts.chart.to_dict()["datasets"].values()))[3]["text"] == "text 3"
    with pytest.raises(ValueError, match="dataset="):
        plots.scatter(frame.assign(b=1.0), "lsi", "b", thumbnails=lambda i: None)


def test_a_scatter_of_many_points_draws_a_seeded_sample_and_says_so():
    frame = _table(20).assign(b=lambda t: t["lsi"] * 2)

    def drawn(**options):
        spec = plots.scatter(frame, "lsi", "b", title="LSI", **options).chart.to_dict()
        return [row["lsi"] for row in next(iter(spec["datasets"].values()))], spec["title"]

    values, title = drawn(max_points=7)
    assert len(values) == 7 and set(values) <= set(frame["lsi"]) and title == "LSI (7 of 20 points drawn at random)"
    assert drawn(max_points=7) == (values, title) and drawn(max_points=7, seed=1)[0] != values
    assert drawn(max_points=20) == (list(frame["lsi"]), "LSI") == drawn()


def test_strip_noise_drops_progress_bars_and_keeps_real_messages(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr",
                               text="Loading weights: 100%|##########| 199/199 [00:00<00:00]\n"),
        nbformat.v4.new_output("stream", name="stderr",
                               text="\r  0%|          | 0/3 [00:00<?, ?it/s]\r100%|##| 3/3 [00:00<00:00, 9.1it/s]\n"
                                    "UserWarning: the probe did not converge\n"),
        nbformat.v4.new_output("stream", name="stdout", text="50%| kept: stdout is the chapter's own\n")]
    nb.cells.append(cell)
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, str(path))
    assert book.strip_noise(path) >= 3
    outputs = nbformat.read(str(path), as_version=4).cells[0].outputs
    assert [o["name"] for o in outputs] == ["stderr", "stdout"]
    assert outputs[0]["text"] == "UserWarning: the probe did not converge\n"


def test_take_it_away_commands_reproduce_the_parameters(tmp_path):
    chapter = book.load_chapters()["sui"]
    parameters = chapter.parameters("ci")
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": parameters, "duration": 150.0, "end_time": "2026-11-29T20:00:00"}
    path = tmp_path / "sui.ipynb"
    nbformat.write(nb, str(path))
    (tmp_path / "data").mkdir()
    book.record_run(tmp_path / "data", {"book": {"seconds": 900, "commit": "abc", "date": "2026-11-28T00:00:00Z"}})
    book.add_take_it_away(path, chapter, [], tmp_path / "data")
    text = nbformat.read(str(path), as_version=4).cells[-1].source
    commands = [block.split("```", 1)[0].strip() for block in text.split("```bash\n")[1:]]
    lsi_words = shlex.split(commands[0].replace("\\\n", " "))
    assert lsi_words[:6] == ["lsi", "book", "run", "sui", "--profile", "ci"]
    pairs = [lsi_words[i + 1] for i, w in enumerate(lsi_words) if w == "-p"]
    assert chapter.parameters("ci", book.parse_overrides(pairs)) == parameters
    pm = shlex.split(commands[1].replace("\\\n", " "))
    parsed = {pm[i + 1]: yaml.safe_load(pm[i + 2]) for i, w in enumerate(pm) if w == "-p"}
    parsed.update({k: v for i, w in enumerate(pm) if w == "-y" for k, v in yaml.safe_load(pm[i + 1]).items()})
    assert parsed == parameters
    assert "| `ci` | 2.5 min |" in text and "| `book` | 15.0 min |" in text  # measured, not typed
    assert "CIFAR-10 (Krizhevsky 2009)" in text and "no estimate stated" in text


@pytest.mark.slow  # papermill
@pytest.mark.timeout(900)
def test_runner_shows_progress_publishes_and_keeps_noise_off_the_page(tmp_path, capsys):
    import book_fixture

    chapter = book_fixture.fixture_chapter(tmp_path)
    [report] = book.run_book("ci", out=tmp_path / "chapters", chapters={"cifar10": chapter}, progress=True)
    assert report.status == "executed"
    shown = capsys.readouterr()
    assert "[1/1] cifar10 at ci" in shown.out and "after it: nothing" in shown.out
    done = [int(n) for n in re.findall(r"(\d+)/\1 \[", shown.err)]  # the bar reached cells done == total
    assert done and done[-1] >= len(nbformat.read(str(chapter.notebook), as_version=4).cells)  # (+ injected parameters)
    assert "cell/s" in shown.err or "s/cell" in shown.err
    nb = nbformat.read(str(report.output), as_version=4)
    streams = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "stream"]
    assert [o["name"] for o in streams] == ["stdout"] and streams[0]["text"].startswith("1 scores.parquet")
    folder = tmp_path / "data" / "cifar10"
    assert sorted(p.name for p in folder.iterdir()) == ["cifar10.thumbs.parquet", "runs.json", "scores.parquet"]
    assert book.read_runs(folder)["ci"]["seconds"] > 0
    assert not list((tmp_path / "data").glob(".staging-*"))
