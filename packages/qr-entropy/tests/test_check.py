"""``qr-entropy check``: statistical validation of the sources and the command's behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qr_entropy import EntropyConfig, settings_table
from qr_entropy._check import run_check
from qr_entropy.cli import EXIT_ERROR, EXIT_OK, EXIT_TEST_FAILED, main

ALPHA = 0.001
BYTES = 2048
FETCHES = 200


@pytest.mark.slow
@pytest.mark.parametrize("source", ["system", "timing_noise", "sham"])
def test_sources_pass_the_check_at_alpha_0_001(source: str) -> None:
    # n = 200 fetches x 2048 bytes = 409,600 bytes (3,276,800 bits, 200 amplified u) per
    # sample. These sources cannot be seeded: one sample's three tests falsely fail with
    # probability <= 0.003. A failed sample is replicated once with fresh bytes and the
    # test fails only if the replicate fails too: spurious failure <= 0.003^2 = 9e-6 per
    # source, while a real defect (bias, stuck bytes) fails both samples.
    config = EntropyConfig(sham_latency_ms=0.2)
    reports = []
    for _ in range(2):
        report = run_check(
            config, source_name=source, bytes_per_fetch=BYTES, fetches=FETCHES, alpha=ALPHA
        )
        assert report.source == source
        assert report.total_bytes == 409_600
        names = [t.name for t in report.tests]
        assert names == ["byte_chi_square", "bit_bias_z", "ks_amplified_u"]
        assert [t.n for t in report.tests] == [409_600, 3_276_800, 200]
        reports.append(report)
        if report.passed:
            break
    assert reports[-1].passed, [[(t.name, t.p_value) for t in r.tests] for r in reports]


def test_seeded_unbiased_mock_passes_and_biased_mock_fails() -> None:
    # Deterministic: seed 12345, n = 200 fetches x 2048 bytes, alpha 0.001.
    fair = run_check(
        EntropyConfig(mock_uniform_seed=12345),
        source_name="mock_uniform",
        bytes_per_fetch=BYTES,
        fetches=FETCHES,
        alpha=ALPHA,
    )
    assert fair.passed
    # Bias +2.0 per byte: mean z shift per fetch 2.0 * sqrt(2048) / 73.9 = 1.22.
    biased = run_check(
        EntropyConfig(mock_uniform_seed=12345, mock_uniform_bias=2.0),
        source_name="mock_uniform",
        bytes_per_fetch=BYTES,
        fetches=FETCHES,
        alpha=ALPHA,
    )
    verdicts = {t.name: t.passed(ALPHA) for t in biased.tests}
    assert verdicts == {"byte_chi_square": False, "bit_bias_z": False, "ks_amplified_u": False}
    assert not biased.passed


def test_report_figures_are_consistent() -> None:
    report = run_check(EntropyConfig(), bytes_per_fetch=512, fetches=20, alpha=0.01)
    lat = report.latency_ms
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert report.seconds > 0
    assert report.throughput_bytes_per_s == pytest.approx(512 * 20 / report.seconds)
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["source"] == "system"
    assert data["device_id"] == "os.urandom"


def test_cli_json_uses_configured_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "12345")
    argv = ["check", "--bytes", "1024", "--samples", "50", "--alpha", "0.001", "--json"]
    assert main(argv) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["source"] == "mock_uniform"
    assert data["fetches"] == 50
    assert data["bytes_per_fetch"] == 1024
    assert data["passed"] is True
    assert data["alpha"] == 0.001
    assert {t["name"] for t in data["tests"]} == {"byte_chi_square", "bit_bias_z", "ks_amplified_u"}


def test_cli_exit_status_1_when_a_test_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "1")
    monkeypatch.setenv("QR_MOCK_UNIFORM_BIAS", "5")
    argv = ["check", "--source", "mock_uniform", "--bytes", "1024", "--samples", "50"]
    assert main(argv) == EXIT_TEST_FAILED
    out = capsys.readouterr().out
    assert "FAIL  byte_chi_square" in out
    assert out.rstrip().endswith("result         FAIL")


def test_cli_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--source", "system", "--bytes", "256", "--samples", "10"]) in (
        EXIT_OK,
        EXIT_TEST_FAILED,
    )
    out = capsys.readouterr().out
    for label in ("source         system", "throughput", "p50", "p90", "p99", "ks_amplified_u"):
        assert label in out


def test_the_drift_tests_table_keeps_its_columns(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The drift tests' names (byte_histogram_drift) are longer than the ideal-null ones.
    for name in ("QR_SAMPLE_COUNT", "QR_SIGNAL_AMPLIFIER_TYPE", "QR_CALIBRATION_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
    calibration = tmp_path / "cal.json"
    argv = ["calibrate", "--blocks", "100", "--sample-count", "256", "--output", str(calibration)]
    assert main(argv) == EXIT_OK
    monkeypatch.setenv("QR_CALIBRATION_PATH", str(calibration))
    capsys.readouterr()
    main(["check", "--samples", "20"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line[2:6] in ("PASS", "FAIL")]
    assert {row.split()[1] for row in rows} >= {"byte_histogram_drift", "statistic_drift_z"}
    assert len({row.index(" stat ") for row in rows}) == 1, rows
    assert len({row.index("  p ") for row in rows}) == 1, rows


def test_cli_exit_status_2_for_an_unknown_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--source", "lava_lamp", "--samples", "2"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "UnknownSourceError" in err
    assert "known: mock_uniform, quantum_grpc, sham, system, timing_noise" in err


def test_cli_exit_status_2_when_the_source_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    # Real failure: a gRPC source with no server. The check never falls back.
    monkeypatch.setenv("QR_GRPC_SERVER_ADDRESS", f"127.0.0.1:{unused_tcp_port}")
    monkeypatch.setenv("QR_GRPC_TIMEOUT_MS", "200")
    monkeypatch.setenv("QR_GRPC_RETRY_COUNT", "0")
    assert main(["check", "--source", "quantum_grpc", "--samples", "2"]) == EXIT_ERROR
    assert "qr-entropy check: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--bytes", "0"],
        ["check", "--samples", "1"],
        ["check", "--alpha", "0"],
        ["check", "--alpha", "1.5"],
        [],
    ],
)
def test_cli_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == EXIT_ERROR


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["check", "--bytes", "99999999999"], "--bytes: must be <= 1073741824"),
        (["check", "--bytes", "x"], "--bytes"),
        (["check", "--source", "", "--samples", "2"], "--source is empty; give one of: "),
        (["check", "--source", "lava_lamp", "--samples", "2"], "unknown entropy source"),
    ],
)
def test_check_argument_errors_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12: no traceback, no usage text, never the "test failed" status 1."""
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert status == EXIT_ERROR
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err


def test_cli_sources_and_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources"]) == EXIT_OK
    assert capsys.readouterr().out.split() == [
        "mock_uniform",
        "quantum_grpc",
        "sham",
        "system",
        "timing_noise",
    ]
    assert main(["settings"]) == EXIT_OK
    assert capsys.readouterr().out == settings_table(EntropyConfig)


def test_console_script_module_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qr_entropy.cli", "sources"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0
    assert "timing_noise" in done.stdout.split()


def test_check_without_scipy_fails_instead_of_switching_methods() -> None:
    # SciPy made unimportable in a fresh interpreter: the check must not fall back to
    # other p-value code (results would depend on the installation); it stops, naming SciPy.
    code = (
        "import sys; sys.modules['scipy'] = None\n"
        "from qr_entropy.cli import main\n"
        "sys.exit(main(['check', '--source', 'mock_uniform', '--bytes', '1024',"
        " '--samples', '60', '--alpha', '0.001', '--json']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    env["QR_MOCK_UNIFORM_SEED"] = "99"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == EXIT_ERROR, done.stderr
    assert done.stdout == ""
    assert "MissingExtraError: statistics need scipy" in done.stderr


def test_a_source_without_a_device_rate_says_so_and_gives_the_drawn_token_rate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QR_SAMPLE_COUNT", "1024")
    argv = ["check", "--source", "system", "--bytes", "256", "--samples", "4", "--json"]
    assert main(argv) in (EXIT_OK, EXIT_TEST_FAILED)
    report = json.loads(capsys.readouterr().out)
    assert report["device_bytes_per_second"] is None
    assert report["device_tokens_per_second"] is None
    assert report["sample_count"] == 1024
    assert main(argv[:-1]) in (EXIT_OK, EXIT_TEST_FAILED)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("device rate"))
    assert "not reported by the source" in line
    assert line.endswith("tokens/s at QR_SAMPLE_COUNT=1024")
