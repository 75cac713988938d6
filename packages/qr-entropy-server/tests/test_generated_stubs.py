"""The committed stubs are exactly what the pinned generator makes from protos/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
GENERATE = REPO / "protos" / "generate.py"
COMMITTED = REPO / "packages" / "qr-entropy-server" / "src"


def _load_generator() -> object:
    spec = importlib.util.spec_from_file_location("qr_protos_generate", GENERATE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not GENERATE.exists(), reason="runs from a repository checkout only")
def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    pytest.importorskip("mypy_protobuf")
    generator = _load_generator()
    fresh = generator.generate(tmp_path)  # type: ignore[attr-defined]
    assert len(fresh) == 4
    for path in fresh:
        rel = path.relative_to(tmp_path)
        committed = COMMITTED / rel
        assert committed.exists(), f"{rel} is not committed; run `hatch run protos:generate`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{rel} differs from the proto; run `hatch run protos:generate`"
        )


def test_the_wire_names_are_the_spec_names() -> None:
    from qr_entropy_server.proto import entropy_service_pb2 as pb2

    service = pb2.DESCRIPTOR.services_by_name["EntropyService"]
    assert service.full_name == "qr_entropy.EntropyService"
    assert [m.name for m in service.methods] == ["GetEntropy", "StreamEntropy"]
    request = {f.name: (f.number, f.type) for f in pb2.EntropyRequest.DESCRIPTOR.fields}
    response = {f.name: (f.number, f.type) for f in pb2.EntropyResponse.DESCRIPTOR.fields}
    assert request == {"bytes_needed": (1, 5), "sequence_id": (2, 3)}  # int32, int64
    assert response == {
        "data": (1, 12),  # bytes
        "sequence_id": (2, 3),  # int64
        "generation_timestamp_ns": (3, 3),
        "device_id": (4, 9),  # string
        "read_started_ns": (5, 3),  # added after 1-4: a new number, old peers skip it
        "device_bytes_per_second": (6, 3),  # the entropy budget, likewise
    }


def test_the_package_needs_only_its_three_dependencies() -> None:
    """Installable alone: every import is stdlib, grpc, protobuf or grpc_health (or the extra)."""
    import ast
    import tomllib

    root = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    names = sorted(d.split(">")[0].split("=")[0].split("<")[0] for d in meta["dependencies"])
    assert names == ["grpcio", "grpcio-health-checking", "protobuf"]
    allowed = set(sys.stdlib_module_names) | {"grpc", "google", "grpc_health", "qr_entropy_server"}
    # The extras, imported only with --reflection and --metrics-port.
    optional = {"grpc_reflection", "prometheus_client"}
    seen: set[str] = set()
    for path in (root / "src" / "qr_entropy_server").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                seen |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                seen.add(node.module.split(".")[0])
    assert seen - allowed - optional == set()
    assert optional <= seen
    extras = {
        name: sorted(d.split(">")[0] for d in wanted)
        for name, wanted in meta["optional-dependencies"].items()
    }
    assert extras == {"reflection": ["grpcio-reflection"], "metrics": ["prometheus-client"]}
