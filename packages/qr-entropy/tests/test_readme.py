"""The package README documents every setting and source exactly as the code declares them."""

from __future__ import annotations

from pathlib import Path

from qr_entropy import EntropyConfig, available_sources, settings_table

README = Path(__file__).parents[1] / "README.md"
START = "<!-- settings-table:start -->\n"
END = "<!-- settings-table:end -->"


def test_settings_table_matches_entropy_config() -> None:
    text = README.read_text(encoding="utf-8")
    documented = text[text.index(START) + len(START) : text.index(END)]
    assert documented == settings_table(EntropyConfig), (
        "README settings table is stale: paste the output of `qr-entropy settings`"
    )


def test_every_field_has_a_row_with_its_env_var() -> None:
    rows = settings_table(EntropyConfig).splitlines()[2:]
    assert len(rows) == len(EntropyConfig.model_fields)
    for row, name in zip(rows, EntropyConfig.model_fields, strict=True):
        assert row.startswith(f"| `QR_{name.upper()}` |")


def test_every_builtin_source_is_in_the_sources_table() -> None:
    text = README.read_text(encoding="utf-8")
    for name in available_sources():
        assert f"| `{name}` |" in text


def test_links_grpc_docs() -> None:
    assert "](docs/grpc.md)" in README.read_text(encoding="utf-8")
    assert (README.parent / "docs" / "grpc.md").is_file()
