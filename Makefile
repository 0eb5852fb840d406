# make run: set up, then the main job.  make test: set up, then the test suite (what CI runs).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FMLAB  := $(VENV)/bin/fmlab
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup data run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,ray,tensorboard]'
	rm -f $(VENV)/.installed-*; touch $@

data:
	@scripts/install-deps.sh

run: setup data
	$(FMLAB) data check
	$(FMLAB) sweep studies/seed.toml --budget quick
	$(FMLAB) report seed --budget quick

test: setup data
	@scripts/install-deps.sh --test
	$(VENV)/bin/ruff check src tests
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs reports
