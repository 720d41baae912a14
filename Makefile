# make demo : set up .venv (reused if present) and run the main job on embedded defaults
# make test : set up .venv and run the docs build (--strict), lint and the full test suite
# make docs : build the documentation site into site/ (mkdocs build --strict; no network needed)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mirrorattn-installed
OUT ?= results/demo
# data root for the real-data parts of the demo: $MIRRORATTN_DATA, else ../shared/data if present
DATA ?= $(or $(MIRRORATTN_DATA),$(wildcard ../shared/data))

.PHONY: demo test docs lint fast-test bench clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,docs,trainers,hf]'
	touch $(STAMP)

demo: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/mirrorattn reproduce --preset quick --out $(OUT) $(if $(DATA),--data-root $(DATA))

lint: $(STAMP)
	$(VENV)/bin/ruff check .

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

test: docs lint
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

fast-test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/optimizer_step.py
	$(PY) benchmarks/svm_scale.py

clean-venv:
	rm -rf $(VENV)
