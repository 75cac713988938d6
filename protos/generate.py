"""Regenerate the Python stubs for every ``.proto`` under ``protos/``.

This is the one pinned command behind ``hatch run protos:generate``
(grpcio-tools==1.85.1, mypy-protobuf==5.1.0, see ``hatch.toml``). A proto's
path below ``protos/`` equals the import path of its generated modules, and
they are written into the source tree of the distribution that ships them
(``qr_entropy_server`` only), next to nothing else. The generated files are
never edited by hand; a test regenerates them into a temporary directory and
fails when they differ from the committed ones.

Usage::

    python protos/generate.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
# The distribution source root that receives the stubs of each top-level package.
OUTPUT_ROOTS = {"qr_entropy_server": REPO_ROOT / "packages" / "qr-entropy-server" / "src"}


def proto_files() -> list[Path]:
    """Return every ``.proto`` file below ``protos/``, sorted for stable output."""
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_root: Path | None = None) -> list[Path]:
    """Run protoc (from grpcio-tools) with the Python, gRPC and mypy plugins.

    Args:
        out_root: Write every top-level package under this directory instead of
            into the distributions' ``src/`` folders (used by the drift test).

    Returns:
        The generated files.

    Raises:
        RuntimeError: protoc failed, or a proto lies outside a known package.
    """
    from grpc_tools import protoc  # type: ignore[import-untyped]  # pinned, only when generating

    include = Path(protoc.__file__).resolve().parent / "_proto"
    plugins = []
    for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc"):
        # mypy-protobuf installs its plugins next to the interpreter; PATH may not have them.
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.exists() else shutil.which(name)
        if found is None:
            raise RuntimeError(f"{name} not found: install mypy-protobuf==5.1.0")
        plugins.append(f"--plugin={name}={found}")
    written: list[Path] = []
    for proto in proto_files():
        rel = proto.relative_to(PROTO_ROOT)
        top = rel.parts[0]
        if top not in OUTPUT_ROOTS:
            raise RuntimeError(f"{rel}: top-level package {top!r} is not in {sorted(OUTPUT_ROOTS)}")
        dest = out_root if out_root is not None else OUTPUT_ROOTS[top]
        dest.mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--proto_path={include}",
            *plugins,
            f"--python_out={dest}",
            f"--grpc_python_out={dest}",
            f"--mypy_out={dest}",
            f"--mypy_grpc_out={dest}",
            str(rel),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {rel}")
        stem = dest / rel.with_suffix("")
        written += [
            stem.with_name(stem.name + suffix)
            for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
        ]
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the generated paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write here instead of src/")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
