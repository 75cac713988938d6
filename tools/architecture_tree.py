"""Print, or check, the module tree of docs/architecture.md.

Each package's tree is drawn from the code: one line per module, with the
first line of the module's docstring as its purpose. The document holds the
trees between ``<!-- tree:begin -->`` and ``<!-- tree:end -->``;
``--check`` fails when they no longer match the code, so the notes cannot
fall behind a move or a new module::

    python tools/architecture_tree.py                 # print the trees
    python tools/architecture_tree.py --write docs/architecture.md
    python tools/architecture_tree.py --check docs/architecture.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    ("qr-core", "qr_core"),
    ("qr-entropy", "qr_entropy"),
    ("qr-vllm", "qr_vllm"),
    ("qr-entropy-server", "qr_entropy_server"),
)
BEGIN = "<!-- tree:begin -->"
END = "<!-- tree:end -->"
WIDTH = 34


def _purpose(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    if not doc:
        return "(no docstring)"
    # The first sentence of the first paragraph, which may wrap over lines.
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


def _lines(folder: Path, depth: int) -> list[str]:
    out: list[str] = []
    indent = "  " * depth
    modules = sorted(p for p in folder.glob("*.py"))
    # __init__ first: it is the package's public face.
    modules.sort(key=lambda p: p.name != "__init__.py")
    for module in modules:
        out.append(f"{indent}{module.name:<{WIDTH - len(indent)}} {_purpose(module)}")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        out.append(f"{indent}{sub.name}/")
        out.extend(_lines(sub, depth + 1))
    return out


def trees() -> str:
    """Return the trees of all four packages as one Markdown fragment."""
    parts: list[str] = []
    for dist, name in PACKAGES:
        folder = ROOT / "packages" / dist / "src" / name
        parts.append(f"### `{dist}`\n\n```\n{name}/\n" + "\n".join(_lines(folder, 1)) + "\n```")
    return "\n\n".join(parts)


def _replace(text: str, fragment: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    return text[:start] + "\n" + fragment + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", type=Path, metavar="DOC", help="fail if DOC's trees are stale")
    mode.add_argument("--write", type=Path, metavar="DOC", help="rewrite DOC's trees")
    args = parser.parse_args(argv)
    fragment = trees()
    if args.check is None and args.write is None:
        print(fragment)
        return 0
    doc = args.check or args.write
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{doc}: no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    new = _replace(text, fragment)
    if args.write is not None:
        doc.write_text(new, encoding="utf-8")
        return 0
    if new != text:
        print(
            f"{doc}: the module trees no longer match the code; run "
            f"`python tools/architecture_tree.py --write {doc}`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
