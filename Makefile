# NeoPulse — every entry point a developer or CI needs. `make run` and `make test` work on a fresh machine.
#   make install | run | sim | psql | test | bench | backtest | proto | lint
#   make clean         the venv and the tools' caches (`make install` makes them again); never the trading data
#   make clean-data    the trading data in DATA_DIR (.neopulse): refused while a NeoPulse process or its database uses it
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
# The data dir `make clean-data` removes: data_dir's default, where a run with no DATABASE_URL keeps its embedded
# PostgreSQL (the order ledger, risk_state with the kill switch and the day's loss state, strategy_state, the ticks).
# Another one only when named on the command line (make clean-data DATA_DIR=...): never from the environment (`:=`,
# not `?=`: a DATA_DIR of some other program's), nor from NEOPULSE_DATA_DIR or a config's data_dir.
DATA_DIR := .neopulse

.PHONY: install venv run test bench backtest proto lint clean clean-data sim psql

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

# What `make install` and the tools make again. Not DATA_DIR: a venv rebuilt must not cost the ledger (clean-data).
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# DATA_DIR removed, unless something uses it: a NeoPulse process holding postgres.lock (the one that started the
# embedded server) or postgres.users (one sharing it), or a server running on its pgdata (postmaster.pid of a live
# process: one whose owner was killed outright). The locks are held while it removes, so nothing starts meanwhile.
# System python3 only (no venv needed). Asks nothing: the target's name is the confirmation; it says what it removed.
clean-data: export CLEAN_DATA_PY = $(CLEAN_DATA)
clean-data:
	@$(PYTHON) -c "$$CLEAN_DATA_PY" $(DATA_DIR)

define CLEAN_DATA
import fcntl, os, shutil, sys
data = sys.argv[1]
if not os.path.isdir(data):
    print(f"make clean-data: {data} does not exist; nothing removed")
    sys.exit(0)
held, pid, there = [], 0, sorted(os.listdir(data))
for name in ("postgres.lock", "postgres.users"):
    fh = open(os.path.join(data, name), "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(f"make clean-data: refused: a NeoPulse process uses {data} ({name} is held); stop it first")
    held.append(fh)
try:
    with open(os.path.join(data, "pgdata", "postmaster.pid")) as fh:
        pid = int(fh.readline())
    if pid > 0:
        os.kill(pid, 0)
except PermissionError:  # a server of another user's: running
    pass
except (OSError, ValueError):  # no pid file, half a one, or no such process: no server
    pid = 0
if pid > 0:
    sys.exit(f"make clean-data: refused: PostgreSQL (pid {pid}) runs on {data}/pgdata; stop it first (kill -INT "
             f"{pid}, its fast shutdown), or remove {data}/pgdata/postmaster.pid if that process is no postgres")
try:
    shutil.rmtree(data)
except OSError as exc:
    sys.exit(f"make clean-data: {exc}")
print(f"make clean-data: removed {data} ({', '.join(there) or 'empty'})")
endef
