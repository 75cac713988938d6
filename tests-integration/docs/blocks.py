"""The fenced blocks of the documentation, and the doc-test markers in front of them.

A block is *code* when its info string names a shell (``bash``, ``sh``,
``shell``, ``console``) or Python (``python``, ``py``). A block of any other
kind (``text``, none, ``toml``...) whose lines start with ``$ `` is a
*transcript*: its ``$`` lines are commands. Code and transcripts are run by
``test_docs.py`` unless a marker says otherwise. A block without an info
string whose first line looks like a command is *unlabelled*: the test asks
for a label (``bash`` to run it, ``text`` for a synopsis or output).

A marker is an HTML comment that opens a line right before the block (blank
lines between are allowed; one quoted inside a sentence is no marker),
invisible on GitHub::

    <!-- doctest: skip reason="needs docker" -->
    <!-- doctest: covered-by="tests-integration/vllm/test_demo.py::test_name" -->
    <!-- doctest: sub="OLD => NEW" sub="..." reason="..." -->
    <!-- doctest: equivalent reason="why not the block itself"
    the commands (or Python) that run instead
    -->
    <!-- doctest: prelude reason="what the fragment needs"
    Python run first, in the block's namespace
    -->

``skip`` runs nothing; ``covered-by`` runs nothing here but names the tests
that run the same commands (each must exist); ``sub`` replaces text in the
block before it runs; ``equivalent`` runs its body instead of the block;
``prelude`` runs its body first (Python blocks). Values may use the
placeholders the runner fills in (``{tiny}``, ``{server}``...).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ACTIONS",
    "CODE_LANGUAGES",
    "OPTIONS",
    "Block",
    "Marker",
    "MarkerError",
    "parse_document",
]

SHELL = frozenset({"bash", "sh", "shell", "console"})
PYTHON = frozenset({"python", "py"})
CODE_LANGUAGES = SHELL | PYTHON

ACTIONS = frozenset({"skip", "equivalent", "prelude"})
"""Bare words a marker may hold."""
OPTIONS = frozenset({"reason", "covered-by", "sub"})
"""``key="value"`` pairs a marker may hold (``sub`` repeatable)."""

# First words of a line that runs something: an unlabelled block starting so
# is probably a command that nobody runs.
_COMMAND_WORDS = frozenset(
    {
        "cd", "cp", "curl", "docker", "export", "git", "hatch", "pip", "pip3", "python",
        "python3", "qr-analyze", "qr-entropy", "qr-entropy-server", "sudo", "vllm",
    }
)  # fmt: skip

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER_START = re.compile(r"^\s*<!--\s*doctest:(?P<rest>.*)$")


class MarkerError(ValueError):
    """A doc-test marker that cannot be understood; names the file and line."""


@dataclass(frozen=True)
class Marker:
    """A ``<!-- doctest: ... -->`` comment."""

    line: int
    """Line number (1-based) of the comment's first line."""
    actions: frozenset[str]
    """Bare words: ``skip``, ``equivalent``, ``prelude``."""
    reason: str | None
    """Why the block is not run as written."""
    covered_by: tuple[str, ...]
    """``PATH::TEST`` names of the tests that run the same thing."""
    subs: tuple[tuple[str, str], ...]
    """``(old, new)`` replacements applied to the block before it runs."""
    body: str
    """The lines after the first, up to ``-->``: an equivalent or a prelude."""


@dataclass(frozen=True)
class Block:
    """One fenced block."""

    path: Path
    """The document, relative to the repository root."""
    line: int
    """Line number (1-based) of the opening fence."""
    info: str
    """The info string's first word, lower-case (``""`` when there is none)."""
    text: str
    """The block's content, its indentation removed."""
    marker: Marker | None = None
    kind: str = field(init=False)
    """``shell``, ``python``, ``transcript``, ``unlabelled`` or ``other``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", self._kind())

    def _kind(self) -> str:
        if self.info in SHELL:
            return "shell"
        if self.info in PYTHON:
            return "python"
        lines = [line for line in self.text.splitlines() if line.strip()]
        if any(line.startswith("$ ") for line in lines):
            return "transcript"
        if not self.info and lines:
            first = lines[0].split()
            if first and first[0] in _COMMAND_WORDS:
                return "unlabelled"
        return "other"

    @property
    def id(self) -> str:
        """``path:line``, the test id."""
        return f"{self.path}:{self.line}"

    def transcript_commands(self) -> list[str]:
        """The ``$`` lines of a transcript, with ``\\``-continued lines joined."""
        commands: list[str] = []
        lines = iter(self.text.splitlines())
        for line in lines:
            if not line.startswith("$ "):
                continue
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + next(lines, "").strip()
            commands.append(command)
        return commands


def _parse_marker(lines: list[str], start: int, path: Path) -> tuple[Marker, int]:
    """Parse the marker whose comment opens on ``lines[start]``; return it and its last line."""
    head = _MARKER_START.search(lines[start])
    assert head is not None
    rest = head["rest"]
    body: list[str] = []
    end = start
    if "-->" in rest:
        rest = rest[: rest.index("-->")]
    else:
        end += 1
        while end < len(lines) and "-->" not in lines[end]:
            body.append(lines[end])
            end += 1
        if end == len(lines):
            raise MarkerError(f"{path}:{start + 1}: doctest marker without its closing -->")
        if lines[end].strip() != "-->":
            raise MarkerError(f"{path}:{end + 1}: put a marker's closing --> on its own line")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise MarkerError(f"{path}:{start + 1}: doctest marker: {exc}") from None
    actions: set[str] = set()
    reason: str | None = None
    covered: list[str] = []
    subs: list[tuple[str, str]] = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            if key not in ACTIONS:
                raise MarkerError(
                    f"{path}:{start + 1}: unknown doctest action {key!r}; "
                    f'allowed: {sorted(ACTIONS)} and {sorted(OPTIONS)} as key="value"'
                )
            actions.add(key)
        elif key == "reason":
            reason = value
        elif key == "covered-by":
            covered += [name.strip() for name in value.split(",") if name.strip()]
        elif key == "sub":
            old, arrow, new = value.partition(" => ")
            if not arrow or not old:
                raise MarkerError(f'{path}:{start + 1}: sub="OLD => NEW" expected, got {value!r}')
            subs.append((old, new))
        else:
            raise MarkerError(
                f"{path}:{start + 1}: unknown doctest option {key!r}; allowed: {sorted(OPTIONS)}"
            )
    text = "\n".join(body)
    marker = Marker(start + 1, frozenset(actions), reason, tuple(covered), tuple(subs), text)
    _check_marker(marker, path)
    return marker, end


def _check_marker(marker: Marker, path: Path) -> None:
    where = f"{path}:{marker.line}"
    if marker.body and not marker.actions & {"equivalent", "prelude"}:
        raise MarkerError(f"{where}: a marker body needs `equivalent` or `prelude`")
    if marker.actions & {"equivalent", "prelude"} and not marker.body.strip():
        raise MarkerError(f"{where}: `equivalent` and `prelude` need a body")
    if len(marker.actions & {"skip", "equivalent"}) + bool(marker.covered_by) > 1:
        raise MarkerError(f"{where}: choose one of skip, equivalent, covered-by")
    if ("skip" in marker.actions or "equivalent" in marker.actions) and not marker.reason:
        raise MarkerError(f'{where}: say why: reason="..."')


def parse_document(root: Path, relative: Path) -> list[Block]:
    """Every fenced block of ``root / relative``, each with its marker.

    Raises:
        MarkerError: A marker that cannot be read, or one with no block after it.
    """
    lines = (root / relative).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: Marker | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if _MARKER_START.search(line):
            if pending is not None:
                raise MarkerError(f"{relative}:{pending.line}: doctest marker with no block")
            pending, i = _parse_marker(lines, i, relative)
            i += 1
            continue
        opened = _FENCE.match(line)
        if opened is None:
            if pending is not None and line.strip():
                raise MarkerError(
                    f"{relative}:{pending.line}: a doctest marker must come right before "
                    f"its block (line {i + 1} is in between)"
                )
            i += 1
            continue
        opening = i + 1
        indent, fence = opened["indent"], opened["fence"]
        info = opened["info"].strip().split(" ")[0].lower() if opened["info"].strip() else ""
        body: list[str] = []
        i += 1
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        while i < len(lines) and not closing.match(lines[i]):
            text = lines[i]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            i += 1
        if i == len(lines):
            raise MarkerError(f"{relative}:{opening}: the block is never closed")
        blocks.append(Block(relative, opening, info, "\n".join(body), pending))
        pending = None
        i += 1
    if pending is not None:
        raise MarkerError(f"{relative}:{pending.line}: doctest marker with no block")
    return blocks
