"""A tiny book for the browser and build tests: one fast chapter, published scores for three data sets.

The chapter (named ``cifar10`` so that the real table of contents keeps it) scores 200 digits, draws a
strip plot with hover thumbnails and a histogram that links to the explorer, prints a tqdm bar (which
the runner must keep off the page) and publishes its scores. Beside it, synthetic tables stand in for
a 50,000-row CIFAR-10 run, an IMDb run (texts) and a chest X-ray run (the pneumonia chapter's shape).
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd

from lsi import book

CELLS = [
    ("profile = \"ci\"\nn_train = 200", ["parameters"]),
    ("import os\nimport numpy as np\nfrom tqdm.auto import tqdm\nimport lsi\nfrom lsi import book\nfrom lsi.book import plots\n"
     "from lsi.data import load_dataset", []),
    ("ds = load_dataset(\"digits\", \"train\", limit=n_train, seed=0)\n"
     "X = ds.features.reshape(len(ds), -1) / 16.0 if hasattr(ds, 'features') else "
     "np.stack([np.asarray(ds.image(i), float).ravel() / 255 for i in range(len(ds))])\n"
     "scores = lsi.compute_lsi(X, ds.labels, ids=ds.ids, progress=False)\n"
     "for _ in tqdm(range(3)):\n    pass", []),
    ("plots.strip(scores.assign(digit=[ds.classes[c] for c in scores['label']]), 'lsi', 'digit', "
     "tooltip=['id'], thumbnails=ds.image, dataset='cifar10', title='LSI per digit')", []),
    ("plots.histogram(scores, 'lsi', explore='cifar10', title='LSI of the digits')", []),
    ("path = book.publish_scores(scores, chapter='cifar10', name='scores', dataset='cifar10',\n"
     "                           classes=ds.classes, tier='converged', thumbnails=ds.image)\n"
     "print(os.environ['TQDM_DISABLE'], path.name)", []),
]


def write_notebook(path: Path, heading: str, cells: list[tuple[str, list[str]]]) -> Path:
    """A notebook of one markdown ``heading`` and the code ``cells`` (source, tags), written to ``path``."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell(heading))
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def fixture_chapter(folder: Path) -> book.Chapter:
    path = write_notebook(folder / "fixture_chapter.ipynb", "# Fixture chapter\n\nA tiny chapter for the tests.", CELLS)
    return book.Chapter("cifar10", "Fixture", path, (), {"n_train": 200}, {},
                        paper_estimate="about 1 minute on one GPU (fixture)")


def publish_synthetic(data: Path, rows: int = 50_000, seed: int = 0) -> None:
    """Synthetic published tables: CIFAR-10 (``rows`` samples, flips), IMDb (texts), chest X-ray."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    before = os.environ.get("LSI_BOOK_DATA")
    os.environ["LSI_BOOK_DATA"] = str(data)
    try:
        labels = rng.integers(0, 10, rows)
        big = pd.DataFrame({"index": np.arange(rows), "id": np.arange(100_000, 100_000 + rows),
                            "label": labels, "lsi": rng.lognormal(-6, 1.5, rows)})
        original = labels.copy()
        flip = rng.random(rows) < 0.1
        big.loc[flip, "label"] = (labels[flip] + 1 + rng.integers(0, 9, flip.sum())) % 10
        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        book.publish_scores(big, chapter="synthetic", name="cifar10-flips", dataset="cifar10",
                            classes=classes, tier="newton-step", corruption="flip:0.1", original_label=original)
        texts = pd.DataFrame({"index": np.arange(300), "id": np.arange(300), "label": np.arange(300) % 2,
                              "lsi": rng.lognormal(-5, 1, 300)})
        book.publish_scores(texts, chapter="synthetic", name="imdb", dataset="imdb",
                            classes=["neg", "pos"], tier="converged",
                            texts=lambda i: f"review {i}: " + "a rather long text about a film " * 5)
        xray = pd.DataFrame({"index": np.arange(120), "id": [f"train/PNEUMONIA/person{i}.jpeg" for i in range(120)],
                             "label": np.arange(120) % 3, "lsi": rng.lognormal(-5, 1, 120)})
        book.publish_scores(xray, chapter="synthetic", name="chest_xray", dataset="chest_xray",
                            classes=["normal", "bacterial", "viral"], tier="converged",
                            thumbnails=lambda i: Image.new("L", (224, 224), int(i) * 2))
    finally:
        if before is None:
            os.environ.pop("LSI_BOOK_DATA", None)
        else:
            os.environ["LSI_BOOK_DATA"] = before


def build_fixture_site(root: Path, rows: int = 50_000) -> Path:
    """Run the fixture chapter, publish the synthetic tables, build the site; return ``html``."""
    root.mkdir(parents=True, exist_ok=True)
    chapter = fixture_chapter(root)
    report = book.run_chapter(chapter, "ci", out=root / "chapters")
    assert report.status == "executed", report
    publish_synthetic(book.data_dir(root / "chapters"), rows)
    return book.build_site(root / "chapters", root / "site", chapters={"cifar10": chapter})
