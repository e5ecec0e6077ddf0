"""`make run` / `make test` on a fresh machine: a venv a failed first attempt left behind (Debian/Ubuntu without
python3.11-venv leaves one without pip; an older python3 one of the wrong version) is made again, not reused by
every later run with "No module named pip" and nothing saying `make clean`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.grpc.procs import ROOT

pytestmark = pytest.mark.slow


def venv_python(home: Path) -> str:
    """The venv's interpreter as `make` would find it (.venv/bin/python)."""
    return str(home / ".venv" / "bin" / "python")


def test_a_venv_left_without_pip_is_made_again(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)

    done = subprocess.run(["make", "venv", f"PYTHON={sys.executable}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)

    assert done.returncode == 0, done.stderr
    assert subprocess.run([venv_python(tmp_path), "-c", "import pip"], capture_output=True).returncode == 0


def test_a_python_too_old_for_neopulse_is_said_with_what_to_install(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    old = tmp_path / "python-too-old"
    old.write_text("#!/bin/sh\nexit 1\n")  # an interpreter that makes no venv a 3.11 check passes
    old.chmod(0o755)

    done = subprocess.run(["make", "venv", f"PYTHON={old}"], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert done.returncode != 0 and "needs Python >= 3.11 with venv and pip" in done.stderr
    assert "apt install python3.11-venv" in done.stderr


def test_make_psql_opens_the_database_make_run_uses_not_always_dot_neopulse():
    """`make psql` named --data-dir .neopulse: with NEOPULSE_DATA_DIR (or a config's data_dir) set, it started an empty
    database there, and the trader saw no orders or fills. `neopulse db psql` finds the database as `run` does."""
    done = subprocess.run(["make", "-n", "psql"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    (command,) = [line for line in done.stdout.splitlines() if "db psql" in line]
    assert "--data-dir" not in command.split("#")[0]
