# Two commands set everything up: `make book` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= book
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export LSI_DATA ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),)

.PHONY: install test test-fast book reproduce pdf demo bench clean

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e ".[encoders,curvature,baselines,book,test,cluster]"
	touch $@

install: $(VENV)/.installed

test: install ## the whole suite, notebooks at the ci profile and the built book included (timeouts: pyproject.toml)
	$(PY) -m pytest -q --durations=10

test-fast: install ## the suite without what is marked slow: notebooks, jb build, the browser, the Ray cluster, exact checks over 10 s
	$(PY) -m pytest -q -m "not slow" --durations=10

book: install ## re-execute the chapters whose notebook, parameters, lsi code or data changed, then build _build/html
	$(VENV)/bin/lsi book build --profile $(PROFILE)

reproduce: install ## re-execute every chapter into _build/reproduce/$(PROFILE), then report what moved (exit 1 if anything did)
	$(VENV)/bin/lsi book reproduce --profile $(PROFILE)

pdf: install ## a printable PDF of the whole book (_build/book.pdf) from the executed chapters, offline
	$(VENV)/bin/lsi book pdf --profile $(PROFILE)

demo: install ## LSI on the embedded digits; prints the ten most informative samples
	$(VENV)/bin/lsi compute --dataset digits --out demo/digits_lsi.parquet

bench: install ## every benchmark, side by side ratios printed
	for script in benchmarks/bench_*.py; do $(PY) $$script || exit 1; done

clean:
	rm -rf _build demo .pytest_cache
