"""Every documented command works as written, or a marker says why not and what runs instead.

The documents are README.md, docs/*.md, every package's README.md and docs/,
deployments/**/README.md and the examples' documents; a document linked from
any of them must be one of them. Each fenced shell or Python block and each
``$`` line of a transcript runs (see ``runner.py`` for how: shims on PATH,
``hatch run`` as its underlying command, one engine worker for every engine,
the suite's tiny model), unless a ``<!-- doctest: ... -->`` marker right
before it says otherwise (``blocks.py``): ``skip`` with the reason, or
``covered-by`` naming the suite's tests that run the same commands, or an
``equivalent`` that runs instead (a GPU, docker or the hub are not here).
A new block without a marker runs; if it cannot run here it fails, and the
failure says to mark it. A block without a label that starts like a command
fails too: label it ``bash`` (it then runs) or ``text``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qr_vllm.demo import build_tiny_model

from .blocks import Block, MarkerError, parse_document
from .runner import ROOT, DocRunner, checkout_state

pytestmark = pytest.mark.slow

DURATION: list[float] = []
"""Seconds from the runner's start to its close (conftest.py prints them)."""

DOCUMENT_GLOBS = (
    "README.md",
    "docs/*.md",
    "packages/*/README.md",
    "packages/*/docs/**/*.md",
    "deployments/**/README.md",
    "examples/**/*.md",
)


def _documents() -> list[Path]:
    found = {p.relative_to(ROOT) for pattern in DOCUMENT_GLOBS for p in ROOT.glob(pattern)}
    return sorted(found)


DOCUMENTS = _documents()
_PARSED: dict[Path, list[Block]] = {}
_ERRORS: list[str] = []
for _document in DOCUMENTS:
    try:
        _PARSED[_document] = parse_document(ROOT, _document)
    except MarkerError as _exc:
        _ERRORS.append(str(_exc))
BLOCKS = [block for blocks in _PARSED.values() for block in blocks]
CHECKED = [b for b in BLOCKS if b.kind in ("shell", "python", "transcript", "unlabelled")]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocRunner]:
    """One runner (one engine worker, one entropy server) for every block.

    At the end: the checkout gained no file and changed none that git sees
    (every block runs in a copy; see ``runner.py``).
    """
    before = checkout_state()
    started = time.monotonic()
    doc_runner = DocRunner(tmp_path_factory.mktemp("docs"), build_tiny_model())
    try:
        yield doc_runner
    finally:
        doc_runner.close()
        DURATION.append(time.monotonic() - started)
    after = checkout_state()
    if before is not None and after is not None:
        gained = sorted(after - before)
        assert gained == [], f"the documented commands changed the checkout: {gained}"


def test_the_markers_and_blocks_parse() -> None:
    assert _ERRORS == []


def test_every_linked_document_is_checked() -> None:
    link = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
    missing = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text(encoding="utf-8")
        for target in link.findall(text):
            if "://" in target:
                continue
            path = (ROOT / document).parent / target
            relative = Path(*path.resolve().relative_to(ROOT).parts)
            if relative not in DOCUMENTS:
                missing.append(f"{document} links {target}")
    assert missing == [], "add these to DOCUMENT_GLOBS"


def test_the_documents_hold_command_blocks() -> None:
    # A parser that found nothing would pass every other test.
    assert len([b for b in CHECKED if b.kind == "shell"]) >= 30
    assert len([b for b in CHECKED if b.kind == "python"]) >= 10


def _covered(block: Block) -> None:
    assert block.marker is not None
    for name in block.marker.covered_by:
        path, _, test = name.partition("::")
        source = ROOT / path
        assert source.is_file() or (source.is_dir() and not test), (
            f"{block.id}: covered-by names {path}, which does not exist"
        )
        if test:
            text = source.read_text(encoding="utf-8")
            assert re.search(rf"^\s*def {re.escape(test)}\(", text, re.MULTILINE), (
                f"{block.id}: covered-by names {name}, but {path} has no test {test}"
            )


@pytest.mark.parametrize("block", CHECKED, ids=[b.id for b in CHECKED])
def test_block(block: Block, runner: DocRunner) -> None:
    marker = block.marker
    if marker is not None and "skip" in marker.actions:
        pytest.skip(f"marked: {marker.reason}")
    if marker is not None and marker.covered_by:
        _covered(block)
        return
    if block.kind == "unlabelled":
        pytest.fail(
            f"{block.id}: a block without a label that starts like a command: label it "
            "```bash (then it runs here) or ```text (a synopsis or output)"
        )
    outcome = runner.run(block)
    assert outcome.status == 0, (
        f"{block.id} failed (exit {outcome.status}); if it cannot run on a CPU machine, "
        "mark it (tests-integration/docs/blocks.py)\n--- ran:\n"
        f"{outcome.code}\n--- output (last 4000 characters):\n{outcome.output[-4000:]}"
    )
