"""Generate (or check) the committed Python code for proto/scriptpool/v1/*.proto.

`python proto/generate.py` rewrites the *_pb2.py, *_pb2_grpc.py and *.pyi files beside the .proto
sources; `--check` generates into a temporary directory and exits 1 if anything differs, so a
.proto edit without regenerating fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = PROTO_ROOT / "scriptpool" / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency: only needed here

    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE_DIR.glob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    grpc_plugin = Path(sys.executable).parent / "protoc-gen-mypy_grpc"
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")


def _generated_files(root: Path) -> dict[str, Path]:
    pkg = root / "scriptpool" / "v1"
    return {p.name: p for p in pkg.iterdir() if p.name.endswith(GENERATED_SUFFIXES)} if pkg.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _generate(out)
        fresh = _generated_files(out)
        committed = _generated_files(PROTO_ROOT)
        if opts.check:
            stale = sorted(
                name
                for name in fresh.keys() | committed.keys()
                if name not in fresh or name not in committed or not filecmp.cmp(fresh[name], committed[name], False)
            )
            if stale:
                print("generated protobuf code is out of date: run `make protos`:", *stale, sep="\n  ")
                return 1
            print(f"generated protobuf code is up to date ({len(fresh)} files)")
            return 0
        for name in committed.keys() - fresh.keys():
            committed[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PACKAGE_DIR / name)
        print(f"wrote {len(fresh)} files to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
