"""The fingerprint of a qr configuration: what every process of an engine must share.

Read generically from :class:`~qr_vllm.AdapterConfig`, so a setting added to any
of its settings classes is covered without a list to keep:

* every field of every settings class it holds (``QR_<FIELD>``), as parsed, so
  a value from ``.env`` or a ``QR_SOURCES`` file counts like one from the
  environment;
* the arms of ``QR_SOURCES``: their names, and each arm's settings that differ
  from the top level (``QR_SOURCES[arm].field``);
* the content hash of each file loaded at start (calibrations, the plan of
  ``QR_PREREGISTRATION_PATH``);
* what per-request keys may name beyond the settings: the registered amplifiers
  and temperature strategies (``qr_signal_amplifier_type``,
  ``qr_temperature_strategy``), and the versions of qr-core, qr-entropy and
  qr-vllm (what a version accepts).

A secret (a ``SecretStr`` field) is never carried, nor its plain hash: only
PBKDF2-HMAC-SHA256 of it, salted with a digest of the other entries. The salt
is not random on purpose: vLLM folds ``additional_config`` into
``VllmConfig.compute_hash()``, the key of its compile cache, so one
configuration must give one stamp. ``QR_RECORD_PATH`` enters as an absolute
path, resolved against the front end's working directory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

import qr_core
import qr_entropy
from qr_core import available_amplifiers, available_temperature_strategies
from qr_entropy.settings import env_var_name, is_secret
from qr_vllm.__about__ import __version__
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._errors import ConfigurationMismatchError

__all__ = ["Fingerprint", "differences", "fingerprint", "resolve_record_path"]

logger = logging.getLogger(__name__)

_FORMAT = 1
_ROUNDS = 100_000  # PBKDF2 rounds of a secret's digest: about 0.1 s, once per process
UNSET = "unset"
"""A secret's digest when it is empty."""
_RECORD_PATH = "record_path"  # the one file the processor writes
# How the entries of AdapterConfig's non-settings fields are named in messages
# (the coverage is generic; only the wording is chosen here).
_LABELS = {
    "sources": "QR_SOURCES",  # an arm's settings: QR_SOURCES[arm].field
    "calibration": "QR_CALIBRATION_PATH (file content)",
    "arm_calibrations": "QR_SOURCES[{key}].calibration_path (file content)",
    "preregistration": "QR_PREREGISTRATION_PATH (file content)",
}


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """The effective qr configuration of one process, as the stamp carries it."""

    values: Mapping[str, str]
    """Canonical JSON of each non-secret entry, by the name messages use."""
    secrets: Mapping[str, str]
    """Salted digest of each secret (``"unset"`` when empty), by name."""
    cwd: str
    """The front end's working directory (relative record paths resolve against it)."""
    salt: str
    """Salt of the secrets' digests (hex)."""

    def to_stamp(self) -> dict[str, Any]:
        """The JSON object stored in ``additional_config``."""
        return {
            "format": _FORMAT,
            "cwd": self.cwd,
            "salt": self.salt,
            "values": dict(self.values),
            "secrets": dict(self.secrets),
        }

    @classmethod
    def from_stamp(cls, stamp: object) -> Fingerprint:
        """Read a stamp written by :meth:`to_stamp`.

        Raises:
            ConfigurationMismatchError: Not a stamp of this format.
        """
        if not isinstance(stamp, Mapping) or stamp.get("format") != _FORMAT:
            found = stamp.get("format") if isinstance(stamp, Mapping) else type(stamp).__name__
            raise ConfigurationMismatchError(
                f"qr-vllm: the engine configuration carries a qr fingerprint of format "
                f"{found!r}, written by another qr-vllm version (this one reads format "
                f"{_FORMAT}); install the same qr-vllm in the front end's and the workers' "
                "environments"
            )
        return cls(
            values={str(k): str(v) for k, v in dict(stamp["values"]).items()},
            secrets={str(k): str(v) for k, v in dict(stamp["secrets"]).items()},
            cwd=str(stamp["cwd"]),
            salt=str(stamp["salt"]),
        )


def fingerprint(config: AdapterConfig, *, cwd: str, salt: str | None = None) -> Fingerprint:
    """The fingerprint of ``config``.

    Args:
        config: The effective configuration.
        cwd: The directory a relative ``QR_RECORD_PATH`` resolves against.
        salt: The salt of the secrets' digests; derived from the other entries
            when ``None`` (the front end), taken from the stamp in a worker.
    """
    values: dict[str, str] = {}
    secrets: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        _add_field(field.name, getattr(config, field.name), config, cwd, values, secrets)
    values["registered amplifiers"] = _canonical(available_amplifiers())
    values["registered temperature strategies"] = _canonical(available_temperature_strategies())
    values["qr-core version"] = _canonical(qr_core.__version__)
    values["qr-entropy version"] = _canonical(qr_entropy.__version__)
    values["qr-vllm version"] = _canonical(__version__)
    if salt is None:
        salt = hashlib.sha256(_canonical(values).encode()).hexdigest()[:32]
    digests = {name: _secret_digest(_secret_text(v), salt) for name, v in secrets.items()}
    return Fingerprint(values=values, secrets=digests, cwd=cwd, salt=salt)


def differences(theirs: Fingerprint, mine: Fingerprint) -> list[str]:
    """The names of the entries that differ (present in one only, or unequal), sorted."""
    names = sorted(set(theirs.values) | set(mine.values))
    found = [n for n in names if theirs.values.get(n) != mine.values.get(n)]
    secrets = sorted(set(theirs.secrets) | set(mine.secrets))
    found += [n for n in secrets if theirs.secrets.get(n, UNSET) != mine.secrets.get(n, UNSET)]
    return found


# ---------------------------------------------------------------- entries


def _add_field(
    name: str,
    value: object,
    config: AdapterConfig,
    cwd: str,
    values: dict[str, str],
    secrets: dict[str, Any],
) -> None:
    """The entries of one field of :class:`AdapterConfig`, by what its value is."""
    if isinstance(value, BaseModel):
        for key, field in type(value).model_fields.items():
            item = getattr(value, key)
            label = env_var_name(key)
            if is_secret(field):
                secrets[label] = item
            else:
                values[label] = _canonical(_resolved(key, item, cwd))
        return
    if isinstance(value, Mapping):
        label = _LABELS.get(name, f"{name}[{{key}}]")
        keys = label if "{key}" not in label else label.format(key="*")
        values[keys] = _canonical(sorted(str(k) for k in value))  # which keys are set
        for key, item in value.items():
            if isinstance(item, BaseModel):
                _add_arm(keys, str(key), item, config, values, secrets)
            else:
                values[label.format(key=key)] = _canonical(_content(item))
        return
    values[_LABELS.get(name, name)] = _canonical(_content(value))


def _add_arm(
    label: str,
    arm: str,
    settings: BaseModel,
    config: AdapterConfig,
    values: dict[str, str],
    secrets: dict[str, Any],
) -> None:
    """An arm's settings that differ from the top-level settings of its class."""
    base = next(
        (
            getattr(config, f.name)
            for f in dataclasses.fields(config)
            if type(getattr(config, f.name)) is type(settings)
        ),
        None,
    )
    for key, field in type(settings).model_fields.items():
        item = getattr(settings, key)
        if base is not None and getattr(base, key) == item:
            continue
        name = f"{label}[{arm}].{key}"
        if is_secret(field):
            secrets[name] = item
        else:
            values[name] = _canonical(item)


def _content(value: object) -> object:
    """What identifies a loaded file: its content hash (``None`` when not loaded)."""
    if value is None:
        return None
    digest = getattr(value, "sha256", None)
    if isinstance(digest, str):
        return digest
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"no fingerprint for {type(value).__qualname__}")  # a new kind of field


def _resolved(key: str, value: object, cwd: str) -> object:
    if key == _RECORD_PATH and isinstance(value, str) and value:
        return os.path.normpath(os.path.join(cwd, os.path.expanduser(value)))
    return value


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _secret_text(value: object) -> str:
    if isinstance(value, SecretStr | SecretBytes):
        raw = value.get_secret_value()
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return "" if value is None else str(value)


@functools.lru_cache(maxsize=32)
def _secret_digest(secret: str, salt: str) -> str:
    if not secret:
        return UNSET
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt), _ROUNDS).hex()[:32]


def resolve_record_path(config: AdapterConfig, cwd: str) -> AdapterConfig:
    """``config`` with a relative ``QR_RECORD_PATH`` made absolute against ``cwd``
    (the front end's working directory), with a warning when that changes where it points."""
    path = config.records.record_path
    if not path or os.path.isabs(os.path.expanduser(path)):
        return config
    resolved = str(_resolved(_RECORD_PATH, path, cwd))
    if resolved == os.path.abspath(path):
        return config  # same working directory as the front end (the mp backend)
    logger.warning(
        "qr-vllm: QR_RECORD_PATH=%r is relative and this process runs in %s, not in the front "
        "end's working directory: records go to %s (give an absolute path to choose yourself)",
        path,
        os.getcwd(),
        resolved,
    )
    records = config.records.model_copy(update={_RECORD_PATH: resolved})
    return dataclasses.replace(config, records=records)
