"""Fixtures of the Ray tests: one Ray cluster, in a loopback-only namespace.

The Ray tests live in one module, and the cluster is module-scoped: shared by
all of them, and stopped as soon as they are done rather than idling through
the rest of the session (pytest's "package" scope means the session here).

The tiny model and the ``vllm serve`` command are the engine tests' fixtures
(tests-integration/vllm/conftest.py), imported here, not copied.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# The engine tests' fixtures, shared: pytest offers no absolute name for a sibling folder.
from ..vllm.conftest import serve_command, tiny_model  # noqa: F401, TID252
from .cluster import RayCluster, start_cluster
from .namespace import LoopbackNamespace, NamespaceUnavailableError


@pytest.fixture(scope="module")
def loopback_namespace() -> Iterator[LoopbackNamespace]:
    """PID and network namespaces with ``lo`` only (see namespace.py)."""
    try:
        namespace = LoopbackNamespace()
    except NamespaceUnavailableError as exc:
        pytest.skip(
            "the Ray tests run Ray only where it cannot listen beyond 127.0.0.0/8, "
            f"in a network namespace of its own, and this machine cannot create one: {exc}"
        )
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture(scope="module")
def ray_cluster(loopback_namespace: LoopbackNamespace) -> Iterator[RayCluster]:
    """One Ray head node (2 vLLM ranks) shared by every Ray test."""
    cluster = start_cluster(loopback_namespace)
    try:
        yield cluster
    finally:
        left = cluster.stop()
    assert not left, f"processes of the Ray namespace still alive: {left}"
