"""The public names: each listed in ``__all__`` exists, and the settings keep their old home too."""

from __future__ import annotations

from types import ModuleType

import pytest

import qr_entropy
import qr_entropy.grpc
import qr_entropy.grpc.testing
import qr_entropy.settings

PUBLIC_MODULES = [qr_entropy, qr_entropy.settings, qr_entropy.grpc, qr_entropy.grpc.testing]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_is_there_and_public(module: ModuleType) -> None:
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.{name}"
        assert not name.startswith("_") or name == "__version__"


@pytest.mark.parametrize(
    "name",
    ["QR_SETTINGS_CONFIG", "QRSettings", "SettingsError", "apply_overrides", "settings_table"],
)
def test_the_settings_are_the_same_objects_at_the_top_level(name: str) -> None:
    assert getattr(qr_entropy, name) is getattr(qr_entropy.settings, name)
