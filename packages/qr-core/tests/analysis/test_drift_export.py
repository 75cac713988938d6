"""``qr-analyze drift`` (calibrations of one device against each other) and
``qr-analyze export`` (records to Parquet, read back with pyarrow and DuckDB)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
import scipy.stats  # type: ignore[import-untyped]

from qr_core import Calibration
from qr_core._calibration import content_sha256
from qr_core.analysis import AnalysisError, drift_test, simulate_records
from qr_core.analysis.cli import EXIT_INPUT, EXIT_OK, main
from qr_core.records import JsonlFileSink, TokenSamplingRecord, read_records

FIXTURES = Path(__file__).parents[1] / "records" / "fixtures"
BASE = json.loads((FIXTURES / "calibration_format1.json").read_text())


def _calibration(
    mean: float,
    *,
    blocks: int = 2_000,
    started: str = "2026-01-05T10:00:00+00:00",
    **changes: object,
) -> Calibration:
    """A calibration of the fixture's device with another mean (and its own SEs)."""
    std = float(BASE["std"])
    content = {k: v for k, v in BASE.items() if k != "sha256"}
    content.update(
        format_version=2,
        mean=mean,
        blocks=blocks,
        mean_se=std / math.sqrt(blocks),
        std_se=std / math.sqrt(2 * (blocks - 1)),
        mean_std_cov=0.0,
        started_at=started,
        finished_at=started,
        **changes,
    )
    return Calibration.from_dict({**content, "sha256": content_sha256(content)})


# ------------------------------------------------------------------------ drift


def test_two_calibrations_of_a_steady_and_of_a_moved_device() -> None:
    m, std = float(BASE["mean"]), float(BASE["std"])
    before = _calibration(m, blocks=10_000)
    after = _calibration(m + 0.05 * std, blocks=10_000, started="2026-01-05T14:00:00+00:00")
    moved = drift_test([after, before])  # ordered by started_at
    assert moved.order == (1, 0)
    assert moved.differences_z[1] == pytest.approx(0.05, rel=1e-9)
    se = math.sqrt(2 / 10_000)
    assert moved.standard_errors_z[1] == pytest.approx(se, rel=1e-9)
    assert moved.statistic == pytest.approx(0.05 / se, rel=1e-9)
    assert moved.p_value == pytest.approx(2 * scipy.stats.norm.sf(0.05 / se), rel=1e-9)
    assert moved.min_detectable_z == pytest.approx((1.959964 + 0.841621) * se, rel=1e-5)
    assert (moved.ci_low, moved.ci_high) == pytest.approx(
        (0.05 - 1.959964 * se, 0.05 + 1.959964 * se), rel=1e-5
    )
    steady = drift_test(
        [before, _calibration(m, blocks=10_000, started="2026-01-06T00:00:00+00:00")]
    )
    assert steady.p_value == pytest.approx(1.0)


def test_drift_refuses_another_device_naming_both() -> None:
    other = _calibration(float(BASE["mean"]), device_id="qrng-7")
    with pytest.raises(
        AnalysisError, match="device_id 'qrng-7' differs from calibration 1's 'fixture-device'"
    ):
        drift_test([_calibration(float(BASE["mean"])), other])


def test_the_heterogeneity_test_keeps_its_level() -> None:
    # 4,000 sets of 3 calibrations of B = 2,000 from one device (means drawn with their
    # standard errors; seed 15): Q rejects at 0.05 within 0.05 +- 0.0138 (4 s.e.).
    rng = np.random.default_rng(15)
    std = float(BASE["std"])
    base = [_calibration(0.0, started=f"2026-01-0{i + 1}T00:00:00+00:00") for i in range(3)]
    rejected = 0
    for _ in range(4_000):
        draws = rng.normal(0, std / math.sqrt(2_000), 3)
        cals = [dataclasses.replace(c, mean=float(x)) for c, x in zip(base, draws, strict=True)]
        rejected += drift_test(cals).p_value <= 0.05
    assert abs(rejected / 4_000 - 0.05) < 0.0138


def test_drift_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m, std = float(BASE["mean"]), float(BASE["std"])
    paths = []
    for i, shift in enumerate((0.0, 0.2)):
        path = tmp_path / f"cal{i}.json"
        _calibration(m + shift * std, started=f"2026-01-0{i + 1}T00:00:00+00:00").save(path)
        paths.append(str(path))
    assert main(["drift", *paths]) == EXIT_OK
    out = capsys.readouterr().out
    assert "calibrations  2 (device fixture-device, zscore_bits, sample_count 1024)" in out
    assert "detectable    0.0886 in z (80% power, alpha 0.05)" in out
    assert main(["drift", *paths, "--fail-on-drift"]) == EXIT_INPUT
    capsys.readouterr()
    assert main(["drift", *paths, "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["differences_z"][1] == pytest.approx(0.2)
    edited = json.loads(Path(paths[1]).read_text())
    edited["mean"] += 1
    Path(paths[1]).write_text(json.dumps(edited))
    assert main(["drift", *paths]) == EXIT_INPUT
    assert "does not match the content" in capsys.readouterr().err


# ----------------------------------------------------------------------- export


def _records() -> list[TokenSamplingRecord]:
    exact = simulate_records(300, seed=16, arm="control", start_ns=0)
    calibrated = simulate_records(200, seed=17, arm="qrng", start_ns=7, calibration_blocks=5_000)
    last = dataclasses.replace(exact[-1], discarded=True, raw_bytes_hex="00ff")
    return [*exact[:-1], last, *calibrated]


def test_export_reads_back_with_pyarrow_and_duckdb(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = _records()
    source = tmp_path / "records.jsonl"
    with JsonlFileSink(source) as sink:
        sink.write(records)
    v1 = str(FIXTURES / "records_v1.jsonl")
    out = tmp_path / "records.parquet"
    argv = ["export", "--format", "parquet", "--output", str(out), str(source), v1]
    assert main(argv) == EXIT_OK
    assert f"540 records -> {out} (parquet)" in capsys.readouterr().out
    expected = [*read_records(source).records, *read_records(v1).records]
    z_sum = math.fsum(r.z_score for r in expected)
    hashes = sorted(r.raw_sha256 + r.request_id + str(r.token_index) for r in expected)

    table = pq.read_table(out)
    assert table.num_rows == len(expected)
    assert table.column_names == list(expected[0].to_json_dict())
    assert str(table.schema.field("calibration_blocks").type) == "int64"
    assert table.schema.field("calibration_blocks").nullable
    assert not table.schema.field("z_score").nullable
    assert math.fsum(table.column("z_score").to_pylist()) == pytest.approx(z_sum, rel=1e-12)
    assert table.to_pylist()[0] == expected[0].to_json_dict()

    con = duckdb.connect()
    n, total, discarded, calibrated, versions = con.execute(
        "select count(*), sum(z_score), count(*) filter (where discarded), "
        "count(*) filter (where calibration_blocks = 5000), "
        "list(distinct schema_version order by schema_version) from read_parquet(?)",
        [str(out)],
    ).fetchone()
    assert (n, discarded, calibrated, versions) == (540, 1, 200, [1, 3])
    assert total == pytest.approx(z_sum, rel=1e-12)
    rows = con.execute(
        "select raw_sha256 || request_id || token_index::varchar from read_parquet(?) order by 1",
        [str(out)],
    ).fetchall()
    assert [r[0] for r in rows] == hashes
    digest = hashlib.sha256("".join(hashes).encode()).hexdigest()
    assert digest == hashlib.sha256("".join(r[0] for r in rows).encode()).hexdigest()


def test_export_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.parquet"
    assert main(["export", "--output", str(out), str(tmp_path / "missing.jsonl")]) == EXIT_INPUT
    assert "qr-analyze export: error:" in capsys.readouterr().err
    assert not out.exists()
