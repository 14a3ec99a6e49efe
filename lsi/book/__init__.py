"""The reproducibility book (the ``book`` extra): parameterized chapters run by papermill, built by Jupyter Book.

A *chapter* is a notebook in ``notebooks/`` with exactly one cell tagged
``parameters``; sources are stored without outputs. ``book/profiles.yaml``
lists every chapter, the data mirrors it needs and its parameters under each
named *profile*:

- ``ci``: small subsets, a few minutes per chapter on 2 CPU cores (the tests);
- ``book``: what the published book shows (``book/chapters/``);
- ``paper``: the paper's full scale, meant for a GPU.

The paper's hyperparameters come from :data:`lsi.defaults.PAPER` for every
chapter that declares them, unless its ``defaults`` set other values.
A run resolves ``defaults`` <- ``profiles[profile]`` <- command-line overrides,
checks every name against the notebook's ``parameters`` cell (an unknown name
is an error), executes the notebook with papermill and writes it atomically.
A chapter whose data cannot be reached is *skipped and reported*, and its
previously published output is kept. The site is then built from a staging
copy of ``_config.yml``, ``_toc.yml``, ``book/`` and the executed chapters
with ``jb build`` (execution off, warnings are errors).

Chapters publish their scores with :func:`publish_scores` (see
:mod:`lsi.book.chapter_data`) into the data folder beside the executed chapters
(``book/data`` for ``book/chapters``). The build adds a generated "Take it
away" section to every chapter (downloads, rerun commands, measured wall
times, cite/reuse and data licences) and one sample explorer page per data set
with published scores (``book/explore/<dataset>``).

Modules, by job:

- :mod:`lsi.book.profiles`: chapters, their profiles and resolved parameters;
- :mod:`lsi.book.run`: papermill execution, skipping, run records (atomic), re-executing what changed;
- :mod:`lsi.book.fingerprint`: the hashed inputs of a chapter, whether its output is up to date, adoption;
- :mod:`lsi.book.reproduction`: re-executing the whole book elsewhere and comparing its claims (``make reproduce``);
- :mod:`lsi.book.status`: the execution status page;
- :mod:`lsi.book.site`: the Jupyter Book build and the teaching substitutions;
- :mod:`lsi.book.pages`: generated pages (the "Take it away" section, the sample explorers);
- :mod:`lsi.book.chapter_data`: the score tables and thumbnails a chapter publishes for readers;
- :mod:`lsi.book.plots` and :mod:`lsi.book.pdf`: figures and the printable book.
"""
from lsi.book.chapter_data import publish_scores
from lsi.book.fingerprint import Freshness, adopt, freshness
from lsi.book.pages import add_take_it_away, time_to_learn, write_explorer_page
from lsi.book.profiles import (PROFILES, PROFILES_FILE, PUBLISHED, REPO, RESERVED, Chapter, data_dir,
                               load_chapters, missing_data, notebook_parameters, parse_overrides)
from lsi.book.reproduction import reproduce
from lsi.book.records import read_runs, record_run
from lsi.book.run import (DirtyTreeError, RunReport, check_clean_tree, error_cells, run_book, run_chapter, run_stale,
                          strip_noise)
from lsi.book.site import build_site, jb_build, teaching_substitutions

__all__ = ["Chapter", "DirtyTreeError", "Freshness", "adopt", "freshness", "reproduce", "run_stale", "PROFILES", "PROFILES_FILE", "PUBLISHED", "REPO", "RESERVED", "RunReport", "add_take_it_away", "build_site", "check_clean_tree", "data_dir", "error_cells", "jb_build", "load_chapters", "missing_data", "notebook_parameters", "parse_overrides", "publish_scores", "read_runs", "record_run", "run_book", "run_chapter", "strip_noise", "teaching_substitutions", "time_to_learn", "write_explorer_page"]
