"""Generate the Python contracts (messages, .pyi stubs, gRPC stubs) from protos/.

Writes into shared/contracts/ (or the directory given), rewriting protoc's
`neopulse.v1` imports to the `shared.contracts` package they are installed as.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
IMPORT_RE = re.compile(r"\bfrom neopulse\.v1 import\b")
DOTTED_RE = re.compile(r"\bneopulse\.v1\.(\w+_pb2)\b")


def generate(out_dir: Path) -> list[Path]:
    protos = sorted(PROTO_ROOT.glob("neopulse/v1/*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        include = str(Path(protoc.__file__).parent / "_proto")
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*_pb2*.py*"):
            old.unlink()
        written = []
        for src in sorted(Path(tmp, "neopulse", "v1").iterdir()):
            text = IMPORT_RE.sub("from shared.contracts import", src.read_text())
            text = DOTTED_RE.sub(r"shared.contracts.\1", text)
            dest = out_dir / src.name
            dest.write_text(text)
            written.append(dest)
        init = out_dir / "__init__.py"
        if not init.exists():
            shutil.copyfile(ROOT / "shared" / "contracts" / "__init__.py", init)
        return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "shared" / "contracts"
    for path in generate(target):
        print(path.relative_to(target.parent.parent) if target.is_relative_to(ROOT) else path)
