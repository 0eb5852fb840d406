# make run: set up, then the main job.  make test: set up, lint (ruff check, ruff format --check), then the
# test suite (what CI runs).  make lint: the lint alone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FMLAB  := $(VENV)/bin/fmlab
# test files run in TEST_JOBS processes (pytest-xdist; one file per process at a time, so a file's
# module fixtures such as the Ray head start once): the cores, at most 4. TEST_JOBS=0 runs them in this one.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
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

lint: setup
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

test: setup data lint
	@scripts/install-deps.sh --test
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

clean:
	rm -rf $(VENV) runs reports
