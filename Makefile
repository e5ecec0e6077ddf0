# NeoPulse — every entry point a developer or CI needs. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# make run: seconds to run (empty = until Ctrl-C) and the simulated clock's speed (60 = a minute a second).
DURATION ?=
SPEED    ?= 60
RUN_ARGS ?=
# make test: pytest workers (pytest-xdist). Each test file runs whole on one worker (its module fixtures, e.g. a split
# cluster, start once); 0 runs the suite in this process. The slowest tests mostly wait on processes and servers.
TEST_WORKERS ?= 2

.PHONY: install venv run test bench backtest proto lint clean sim psql

install: $(STAMP)

# The venv, made again when the one there is not Python >= 3.11 with pip: a first attempt that failed (Debian/Ubuntu
# without python3.11-venv leaves one without pip) or an older python3 must not stay in the way of every later run.
VENV_OK = $(PY) -c 'import sys, pip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
venv:
	@$(VENV_OK) || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV) && $(VENV_OK); } || { echo "make: $(VENV) needs \
	Python >= 3.11 with venv and pip (Debian/Ubuntu: apt install python3.11-venv; another interpreter: make ... \
	PYTHON=python3.11)" >&2; exit 1; }

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory venv PYTHON=$(PYTHON) VENV=$(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	NEO_LOG_FILE_ENABLED=false $(PY) -m services.app.cli run --speed $(SPEED) $(if $(DURATION),--duration $(DURATION)) $(RUN_ARGS)

sim: install
	NEO_LOG_FILE_ENABLED=false $(PY) -m services.app.cli sim

psql: install
	$(VENV)/bin/neopulse db psql  # the database `make run` uses: NEOPULSE_DATA_DIR / DATABASE_URL / the config, else .neopulse

test: install
	NEO_LOG_FILE_ENABLED=false $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 $(TEST_ARGS)

bench: install
	NEO_LOG_FILE_ENABLED=false $(PY) -m bench.run $(BENCH_ARGS)

# make backtest BACKTEST_ARGS="--from 2026-11-02 --to 2026-11-27": the strategies over the stored days.
backtest: install
	NEO_LOG_FILE_ENABLED=false $(PY) -m services.app.cli backtest $(BACKTEST_ARGS)

proto: install
	$(PY) tools/gen_protos.py
	cd protos && ../$(VENV)/bin/buf lint

lint: install
	$(VENV)/bin/ruff check shared services tests bench tools
	$(VENV)/bin/mypy shared services

clean:
	rm -rf $(VENV) .neopulse .pytest_cache .mypy_cache .ruff_cache
