"""The device flags on the command line: documented in --help, wrong combinations exit 2."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_entropy_server._device_flags import parse_escapes
from qr_entropy_server._errors import ServerConfigError

RunCli = Callable[..., subprocess.CompletedProcess[str]]


def test_help_documents_every_device_flag(run_cli: RunCli) -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    for flag in (
        "--device", "--baud", "--dtr", "--rts", "--serial-init", "--skip-after-flush",
        "--drain-limit", "--fill-level", "--fill-unit", "--min-entropy", "--max-buffered-bytes",
    ):  # fmt: skip
        assert flag in done.stdout, flag
    assert "serial | chardev" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backend", "serial"), "--backend serial needs --device PATH"),
        (("--device", "/dev/ttyACM0"), "--device applies to --backend serial or chardev only"),
        (("--backend", "chardev", "--device", "/x", "--baud", "9600"), "--baud applies to"),
        (("--backend", "serial", "--device", "/x", "--drain-limit", "5"), "--drain-limit applies"),
        (("--backend", "serial", "--device", "/x", "--baud", "12345"), "--baud 12345 is not"),
        (("--backend", "serial", "--device", "/x", "--serial-init", "a\\q"), "unknown escape"),
        (("--backend", "chardev", "--device", "/x", "--fill-unit", "0"), "--fill-unit must be"),
        (("--min-entropy", "9"), "--min-entropy must be between 1/64 and 8"),
        (("--max-buffered-bytes", "1000"), "--max-buffered-bytes must be >= --max-bytes"),
    ],
)
def test_wrong_device_flags_exit_2_naming_the_flag(
    run_cli: RunCli, args: tuple[str, ...], message: str
) -> None:
    done = run_cli(*args, "--address", "127.0.0.1:0")
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_a_regular_file_as_the_device_exits_2(run_cli: RunCli, tmp_path: Path) -> None:
    pool = tmp_path / "bytes.bin"
    pool.write_bytes(b"\x00" * 64)
    done = run_cli("--backend", "chardev", "--device", str(pool), "--address", "127.0.0.1:0")
    assert done.returncode == 2
    assert "is not a character device" in done.stderr


def test_serial_init_escapes() -> None:
    assert parse_escapes("cmd0\\ncmdO\\n") == b"cmd0\ncmdO\n"
    assert parse_escapes("\\x00\\xff\\r\\t\\\\") == b"\x00\xff\r\t\\"
    with pytest.raises(ServerConfigError, match="above"):
        parse_escapes("é✓")
