"""Every package under ``packages/`` ships a ``py.typed`` marker (PEP 561).

Part of the code-quality gate (``hatch run quality``): without the marker,
mypy in a user's project ignores a package's type hints. Exit status 1, naming
the packages without one.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Check every ``packages/*/src``; print what is missing."""
    sources = sorted((ROOT / "packages").glob("*/src"))
    missing = [str(d.relative_to(ROOT)) for d in sources if not any(d.glob("*/py.typed"))]
    if not sources:
        print("check_py_typed: no packages/*/src found", file=sys.stderr)
        return 1
    if missing:
        print(f"packages without py.typed: {', '.join(missing)}", file=sys.stderr)
        return 1
    print(f"py.typed: all {len(sources)} packages ship it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
