"""One qr configuration in every process of an engine, or no start (issue 29).

vLLM builds the logits processor in each worker process, and each reads its
``QR_*`` settings from its own environment. With vLLM's ``mp`` backend every
process inherits the front end's environment; on Ray they need not: the Ray
executors copy only some variables (``VLLM_RAY_EXTRA_ENV_VAR_PREFIXES_TO_COPY``)
and never over a value the node already had. A worker on other settings would
sample otherwise than the front end's request checks assume, and a request
naming an arm the worker lacks would stop the whole engine.

So the front end stamps the :mod:`fingerprint <qr_vllm._fingerprint>` of its
effective configuration into the engine configuration, under
``VllmConfig.additional_config["qr_sampler"]``: :func:`install` wraps
``EngineArgs.create_engine_config``, which every front end calls once before
any engine process starts. vLLM pickles that configuration to every engine-core
process and worker, on every backend, and hands it to the processor's
constructor, which calls :func:`check_fingerprint`. A difference, or a stamp
missing from a real engine, refuses the start (:class:`ConfigurationMismatchError`).
With equality checked at start, whatever the front end's ``validate_params``
accepts, every worker can serve.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._errors import ConfigurationMismatchError
from qr_vllm._fingerprint import Fingerprint, differences, fingerprint, resolve_record_path
from qr_vllm._shutdown import install as install_close

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["STAMP_KEY", "check_fingerprint", "install", "stamp"]

logger = logging.getLogger(__name__)

STAMP_KEY = "qr_sampler"
"""The key of ``VllmConfig.additional_config`` that carries the stamp."""

_WRAPPED = "_qr_vllm_fingerprint"
_MAX_SHOWN = 240  # characters of one value in the mismatch message


def stamp(additional_config: object) -> dict[str, Any]:
    """``additional_config`` with this process's fingerprint added (the front end).

    Raises:
        QRParamsError: A ``QR_*`` setting of the front end is invalid.
        ConfigurationMismatchError: ``additional_config`` is not a dict.
    """
    if additional_config is not None and not isinstance(additional_config, dict):
        raise ConfigurationMismatchError(
            "qr-vllm: additional_config must be a dict (or unset) to carry qr-vllm's "
            f"configuration fingerprint to the engine's processes, got "
            f"{type(additional_config).__name__}"
        )
    cwd = os.getcwd()
    found = fingerprint(AdapterConfig.from_env(), cwd=cwd)
    return {**(additional_config or {}), STAMP_KEY: found.to_stamp()}


def check_fingerprint(vllm_config: VllmConfig, config: AdapterConfig) -> AdapterConfig:
    """Refuse to build a processor on another configuration than the front end's.

    Args:
        vllm_config: The engine configuration, stamped by the front end.
        config: This process's configuration (``AdapterConfig.from_env()``).

    Returns:
        ``config``, its relative ``QR_RECORD_PATH`` resolved against the front
        end's working directory.

    Raises:
        ConfigurationMismatchError: The configurations differ (the message names
            each differing setting, never a secret's value, and the fix), or a
            real engine's configuration carries no stamp.
    """
    extra = getattr(vllm_config, "additional_config", None)
    carried = extra.get(STAMP_KEY) if isinstance(extra, Mapping) else None
    if carried is None:
        if getattr(vllm_config, "model_config", None) is None:
            return config  # built by hand without a model (unit tests): no front end
        raise ConfigurationMismatchError(_UNSTAMPED)
    theirs = Fingerprint.from_stamp(carried)
    config = resolve_record_path(config, theirs.cwd)
    mine = fingerprint(config, cwd=theirs.cwd, salt=theirs.salt)
    differing = differences(theirs, mine)
    if differing:
        raise ConfigurationMismatchError(_mismatch_message(theirs, mine, differing))
    return config


def install() -> None:
    """Stamp every engine configuration this process builds (the general plugin). Idempotent.

    ``EngineArgs.create_engine_config`` is where every front end (``LLM``,
    ``AsyncLLM``, ``vllm serve`` with one or several API servers, a headless
    launcher) builds the configuration it then hands to its engine processes.
    """
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:  # pragma: no cover - only a vLLM other than the pinned one
        logger.warning("qr-vllm: vLLM has no EngineArgs; the configuration check is off")
        return
    original = EngineArgs.create_engine_config
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def create_engine_config(self: EngineArgs, *args: Any, **kwargs: Any) -> VllmConfig:
        self.additional_config = stamp(self.additional_config)
        # This process starts the engine next: close its processors when it stops.
        install_close(import_engine=True)
        return original(self, *args, **kwargs)

    setattr(create_engine_config, _WRAPPED, True)
    EngineArgs.create_engine_config = create_engine_config  # type: ignore[method-assign]


# ---------------------------------------------------------------- messages


def _show(entries: Mapping[str, str], name: str) -> str:
    """A value for the message: whole up to a limit, else its start and its end
    (two record paths may differ only in their last characters)."""
    if name not in entries:
        return "(none)"
    text = repr(json.loads(entries[name]))
    if len(text) <= _MAX_SHOWN:
        return text
    half = (_MAX_SHOWN - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def _mismatch_message(theirs: Fingerprint, mine: Fingerprint, differing: list[str]) -> str:
    parts = []
    for name in differing:
        if name in theirs.secrets or name in mine.secrets:
            parts.append(f"{name} (a secret: values not shown)")
        else:
            parts.append(
                f"{name} (front end {_show(theirs.values, name)}, here {_show(mine.values, name)})"
            )
    fixes = [_SETTINGS_FIX]
    if any("(file content)" in n for n in differing):
        fixes.append(_FILES_FIX)
    if any(n.startswith(("registered ", "qr-")) for n in differing):
        fixes.append(_PACKAGES_FIX)
    return (
        f"qr-vllm: this process (pid {os.getpid()} on {socket.gethostname()}) reads another qr "
        f"configuration than the front end that started the engine, so the engine does not "
        f"start; differing: {'; '.join(parts)}. " + " ".join(fixes)
    )


_SETTINGS_FIX = (
    "Every process of the engine must read the same QR_* settings. On Ray, set "
    "VLLM_RAY_EXTRA_ENV_VAR_PREFIXES_TO_COPY=QR_ where the engine is started (vLLM then copies "
    "every QR_* variable to its Ray actors), or pass the settings in ray_runtime_env's env_vars; "
    "a QR_* variable already set on a node when `ray start` ran wins over the copied one: "
    "unset it there and restart the node."
)
_FILES_FIX = "Give every node the same calibration, QR_SOURCES and plan files."
_PACKAGES_FIX = (
    "Install the same qr-core, qr-entropy and qr-vllm, and the same amplifier and temperature "
    "strategy plugins, in the environment of every node."
)
_UNSTAMPED = (
    "qr-vllm: the engine configuration carries no qr fingerprint "
    f"(additional_config[{STAMP_KEY!r}]): the front end that built it did not run qr-vllm's "
    "vLLM plugin, so it cannot check the qr_* keys of requests the way this process would "
    "serve them. Install qr-vllm in the front end's environment too, and keep `qr_sampler` "
    "in VLLM_PLUGINS if you set that variable."
)
