"""Generated pages: the "Take it away" section of every chapter and one sample explorer per data set."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from lsi.book.profiles import REPO, Chapter
from lsi.book.records import read_runs

DATA_LICENSES = {
    "digits": "scikit-learn's copy of the UCI optical digits (CC BY 4.0; scikit-learn is BSD-3-Clause)",
    "cifar10": "CIFAR-10 (Krizhevsky 2009): free for research; cite the technical report",
    "cifar10n": "CIFAR-10N human labels (Wei et al. 2022): CC BY-NC 4.0",
    "imdb": "IMDb Large Movie Review Dataset v1 (Maas et al. 2011): research use; cite the ACL 2011 paper",
    "sst2": "SST-2 (Socher et al. 2013): research use; cite the EMNLP 2013 paper",
    "chest_xray": "Pediatric chest X-ray pneumonia (Kermany et al. 2018, Mendeley Data): CC BY 4.0",
    "coco_mini": "COCO 2017 (Lin et al. 2014): annotations CC BY 4.0, images under their Flickr licenses",
}
"""The licence of every data mirror a chapter can list under ``data:`` (from the mirrors' README)."""
DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imdb": "IMDb", "sst2": "SST-2",
                  "chest_xray": "chest X-ray", "digits": "digits", "coco": "COCO", "coco_all": "COCO"}



def time_to_learn(notebook: str | Path) -> str:
    """The "Time to learn" a chapter states in its Prerequisites cell, or "not stated"."""
    import nbformat

    for cell in nbformat.read(str(notebook), as_version=4).cells:
        found = re.search(r"\*\*Time to learn\*\*:?\s*([^\n]+?)\.?\s*$", cell.source, re.M)
        if cell.cell_type == "markdown" and found:
            return found.group(1).strip()
    return "not stated"


def write_explorer_page(path: Path, dataset: str, tables: list) -> None:
    """The Markdown page of one data set's sample explorer (its data is written after the build)."""
    title = DATASET_TITLES.get(dataset, dataset)
    sources = sorted({(info["chapter"], info["name"], info.get("corruption", "none"), info.get("tier", ""),
                       info.get("rows", 0)) for info, _, _ in tables if info.get("dataset") == dataset})
    listing = "\n".join(
        f"- chapter `{chapter}`, `{name}.parquet`: {rows:,} samples, corruption `{corruption}`"
        + (f", tier `{tier}`" if tier else "") for chapter, name, corruption, tier, rows in sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""# Explore the {title} samples

Every {title} sample that a chapter of this book scored, with its label, its corruption (if any), its LSI
under each tier the chapter computed, and its rank within its class (1 = most informative). Type in the
search box to find an id{' or a word of the text' if dataset in ('imdb', 'sst2') else ''}; filter by class,
by chapter and corruption, by corrupted or clean labels and by an LSI range; click a column header to sort.
Rows with a corrupted label are shaded, their original class beside the given one.

```{{raw}} html
<div class="lsi-explorer" data-dataset="{dataset}"></div>
<script src="../../explore-data/{dataset}.js"></script>
```

The values come from these published files (download them from their chapter's "Take it away" section):

{listing}
""", encoding="utf-8")


def add_take_it_away(notebook: Path, chapter: Chapter | None, tables: list, data: Path) -> None:
    """Append the generated "Take it away" section to an executed chapter notebook."""
    import nbformat

    from lsi.published import matching

    nb = nbformat.read(str(notebook), as_version=4)
    name = notebook.stem
    meta = nb.metadata.get("papermill", {})
    parameters = {k: v for k, v in (meta.get("parameters") or {}).items()}
    profile = parameters.pop("profile", "book")
    lines = ["## Take it away", ""]
    mine = [(info, path) for info, _, path in tables if info["chapter"] == name]
    released = {path: matching(frame) for info, frame, path in tables if info["chapter"] == name}
    if mine:
        lines += ["**The scores.** Each file holds one row per scored sample and, in its Parquet metadata "
                  "(key `lsi.published`), where it comes from: chapter, profile, parameters, tier, commit, "
                  "date and package versions.", ""]
        for info, path in mine:
            title = DATASET_TITLES.get(info["dataset"], info["dataset"])
            lines.append(f"- {{download}}`{path.name} <../data/{name}/{path.name}>`: {info.get('rows', 0):,} "
                         f"{title} samples, score `{info.get('score', 'lsi')}`"
                         + (f" ({info['tier']} tier)" if info.get("tier") else "")
                         + (f", corruption `{info['corruption']}`" if info.get("corruption", "none") != "none"
                            else "")
                         + (f"; also the published value `lsi.published.load(\"{released[path]}\")`"
                            if released[path] else ""))
        for dataset in sorted({info["dataset"] for info, _ in mine}):
            lines.append(f"- browse every sample in the [{DATASET_TITLES.get(dataset, dataset)} explorer]"
                         f"(../explore/{dataset}.md)")
        lines += ["", "```python", "import pyarrow.parquet as pq, json",
                  f"table = pq.read_table(\"{mine[0][1].name}\")",
                  "provenance = json.loads(table.schema.metadata[b\"lsi.published\"])",
                  "scores = table.to_pandas()", "```", ""]
    else:
        lines += ["**The scores.** This chapter publishes no score table.", ""]
    lines += ["**Rerun it.** From the repository, with the data mirrors under `$LSI_DATA`; every parameter "
              f"at the values of this page (profile `{profile}`); change any of them:", "", "```bash"]
    lsi_cmd = [f"lsi book run {name} --profile {profile}"] + [
        f"-p {shlex.quote(f'{k}={_yaml_value(v)}')}" for k, v in parameters.items()]
    lines.append(" \\\n    ".join(lsi_cmd))
    lines += ["```", "", "which runs papermill underneath (the runner also sets `LSI_BOOK_DATA` so that the "
              "scores land beside the notebook):", "", "```bash"]
    source = Path("notebooks") / f"{name}.ipynb"
    if chapter and chapter.notebook.is_relative_to(REPO):
        source = chapter.notebook.relative_to(REPO)
    elif chapter:
        source = chapter.notebook
    pm_cmd = [f"papermill {source} book/chapters/{name}.ipynb --cwd . -p profile {profile}"] + [
        (f"-y {shlex.quote(f'{k}: {_yaml_value(v)}')}" if isinstance(v, (list, dict))
         else f"-p {k} {shlex.quote(_yaml_value(v))}") for k, v in parameters.items()]
    lines.append(" \\\n    ".join(pm_cmd))
    lines += ["```", "", "**Wall time on this machine** (2 CPU cores, no GPU), as measured by the runs:", "",
              "| profile | wall time | measured |", "|---|---|---|"]
    runs = read_runs(data)
    if meta.get("duration") is not None:
        runs[profile] = {"seconds": float(meta["duration"]), "date": str(meta.get("end_time", ""))[:19],
                         "source": "this page's papermill metadata"}
    for which in ("ci", "book"):
        run = runs.get(which)
        lines.append(f"| `{which}` | {duration_words(run['seconds'])} | {run.get('date', '')[:10]}"
                     f"{', commit ' + run['commit'] if run.get('commit') else ''} |" if run
                     else f"| `{which}` | not recorded | run `lsi book run {name} --profile {which}"
                          f"{' --record-time' if which == 'ci' else ''}` |")
    estimate = chapter.paper_estimate if chapter else ""
    lines.append(f"| `paper` | {estimate or 'no estimate stated'} | estimate for one GPU |")
    licences = [DATA_LICENSES.get(m, f"`{m}`: see its source") for m in (chapter.data if chapter else ())]
    lines += ["", "**Cite / reuse.** The numbers on this page were computed by this book's code "
              "(the `lsi` package) at the commit and with the parameters in the provenance block above; "
              "when you reuse them, cite the LSI paper (Kaiser et al., *Data Informativeness Through a "
              "Bayesian Lens*) and the data set"
              + (": " + "; ".join(licences) + "." if licences else
                 ": scikit-learn's embedded digits (BSD-3-Clause; UCI optical digits, CC BY 4.0).")]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines))
    cell.metadata["tags"] = ["take-it-away"]
    nb.cells.append(cell)
    nbformat.write(nb, str(notebook))


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def duration_words(seconds: float) -> str:
    """"42 s" below two minutes, else "3.5 min"."""
    seconds = float(seconds)
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


