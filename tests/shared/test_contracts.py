"""The committed generated code matches protos/, and buf lint passes."""

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_generated_code_matches_the_protos(tmp_path):
    out = tmp_path / "contracts"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), str(out)], check=True,
                   capture_output=True)
    committed = ROOT / "shared" / "contracts"
    names = sorted(p.name for p in out.glob("*_pb2*"))
    assert names == sorted(p.name for p in committed.glob("*_pb2*")), "run `make proto`"
    stale = [n for n in names if not filecmp.cmp(out / n, committed / n, shallow=False)]
    assert stale == [], f"stale generated code {stale}: run `make proto`"


def test_buf_lint_passes_on_the_protos():
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    assert buf, "buf-bin is a dev dependency"
    result = subprocess.run([buf, "lint"], cwd=ROOT / "protos", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
