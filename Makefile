# Two commands (see README): `make run` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
FMNIST := /usr/share/datasets/fashion-mnist
ARGS   ?=
# pytest-xdist workers: one per core (`auto`: 2 on the CI machine); 0 runs in this process.
TEST_WORKERS ?= auto
PYTEST := $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

# Airflow has pins of its own (deploy/airflow/constraints.txt): its own virtualenv.
AIRFLOW_VENV  ?= .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed-$(shell cat deploy/airflow/constraints.txt | cksum | cut -d' ' -f1)

.PHONY: setup data browser airflow run smoke lint test test-fast test-airflow test-all clean

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $@

# Real Fashion-MNIST (the original IDX files) from Debian, when apt is usable.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	if command -v apt-get >/dev/null && $$SUDO true 2>/dev/null; then \
	  $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
	  echo "warning: could not install dataset-fashion-mnist; data.source=auto will use tensorflow_datasets"; \
	else echo "warning: apt not usable; data.source=auto will use tensorflow_datasets (needs network)"; fi

# Debian's Chromium, for the browser test of the HTML reports (tests/test_report.py), when
# apt is usable; without it that one test is skipped.
browser:
	@if [ -x /usr/bin/chromium ]; then exit 0; fi; \
	SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	if command -v apt-get >/dev/null && $$SUDO true 2>/dev/null; then \
	  APT="$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get"; \
	  $$APT install -y -q chromium >/dev/null 2>&1 || \
	  { $$APT update -q >/dev/null && $$APT install -y -q chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the report's browser test will be skipped"; \
	else echo "warning: apt not usable; the report's browser test will be skipped (no /usr/bin/chromium)"; fi

# Apache Airflow in its own virtualenv, for deploy/airflow/ and its test (tests/test_airflow.py).
airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): deploy/airflow/constraints.txt
	test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c deploy/airflow/constraints.txt apache-airflow
	rm -f $(AIRFLOW_VENV)/.installed-*; touch $@

# The main job: the default config (conv_pool on real Fashion-MNIST), offline.
run: setup
	$(PY) run_pipeline.py run $(ARGS)

# Every stage in about a minute (500 images per split, one epoch).
smoke: setup
	$(PY) run_pipeline.py run --config smoke $(ARGS)

# pytest's exit code is make's: 5 (no test collected) fails too.
# Lint, format and types (pyproject.toml chooses the rules); `make test` runs it first.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup browser airflow lint
	$(PYTEST) $(ARGS)

test-fast: setup browser
	$(PYTEST) -m "not slow and not heavy" $(ARGS)

# Also the heavy cases (vae_bn end to end), beyond the 10-minute budget of `make test`.
# The DAG in real Airflow alone: `airflow dags test` end to end, a killed task retried.
test-airflow: setup airflow
	$(PYTEST) tests/test_airflow.py $(ARGS)

test-all: setup browser airflow
	$(PYTEST) -m "" $(ARGS)

clean:
	rm -rf output .pytest_cache
