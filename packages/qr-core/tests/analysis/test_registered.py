"""The analysis as pre-registered: planned tokens, beyond the plan, interim looks, a
changed plan; and the audit commands of qr-analyze (verify, manifest, plan --write)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from qr_core.analysis import (
    AnalysisError,
    ConfigHashError,
    analyze_as_registered,
    simulate_records,
)
from qr_core.analysis._groups import group_stats
from qr_core.analysis.cli import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, main
from qr_core.records import (
    JsonlFileSink,
    Preregistration,
    StoppingRule,
    TokenSamplingRecord,
    load_preregistration,
    preregistration_bytes,
    writer_file,
)

T0 = 1_790_000_000_000_000_000
FIXED = StoppingRule("fixed")


def _plan_file(
    path: Path,
    *,
    tokens: int = 300,
    stopping: StoppingRule = FIXED,
    design: str = "two-arm",
    statistic: str = "z",
) -> Preregistration:
    path.write_bytes(
        preregistration_bytes(
            hypothesis="qrng shifts mean z",
            design=design,
            group_by="arm",
            arms=["qrng", "control"] if design == "two-arm" else ["qrng"],
            tokens_per_arm=tokens,
            alpha=0.05,
            primary_statistic=statistic,
            stopping=stopping,
        )
    )
    return load_preregistration(path)


def _arms(
    plan: Preregistration | None, qrng: int, control: int, shift: float = 0.0
) -> list[TokenSamplingRecord]:
    """Two arms interleaved in time; the control arm's records come 500 ns later."""
    sha = None if plan is None else plan.sha256
    a = simulate_records(qrng, seed=1, arm="qrng", z_shift=shift, start_ns=T0)
    b = simulate_records(control, seed=2, arm="control", start_ns=T0 + 500)
    return [dataclasses.replace(r, preregistration_sha256=sha) for r in [*a, *b]]


def _z(records: Sequence[TokenSamplingRecord], arm: str, n: int) -> list[float]:
    mine = sorted((r for r in records if r.arm == arm), key=lambda r: r.logits_ready_ns)
    return [r.z_score for r in mine[:n]]


def test_final_analysis_uses_the_planned_tokens_and_reports_the_rest(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    records = _arms(plan, 340, 310)
    result = analyze_as_registered(records, plan)
    assert (result.stage, result.interim) == ("final", False)
    assert [(a.arm, a.available, a.analysed, a.beyond_plan) for a in result.arms] == [
        ("qrng", 340, 300, 40),
        ("control", 310, 300, 10),
    ]
    assert result.beyond_plan == 50
    (look,) = result.looks
    za, zb = _z(records, "qrng", 300), _z(records, "control", 300)
    expected = (sum(za) / 300 - sum(zb) / 300) / math.sqrt(2 / 300)
    assert look.statistic == pytest.approx(expected, rel=1e-12)
    assert look.p_value == pytest.approx(math.erfc(abs(expected) / math.sqrt(2)))
    assert result.decision == ("reject" if look.p_value < 0.05 else "not rejected")


def test_an_early_fixed_n_analysis_is_an_interim_look_without_a_test(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    result = analyze_as_registered(_arms(plan, 320, 120), plan)
    assert (result.stage, result.decision, result.interim) == ("interim", "no test", True)
    assert result.looks == ()
    assert result.next_look_tokens == 300
    assert [a.not_yet_due for a in result.arms] == [320, 120]
    assert result.beyond_plan == 0


def test_group_sequential_interim_look_uses_the_corrected_boundary(tmp_path: Path) -> None:
    rule = StoppingRule("group-sequential", 3, "obrien-fleming")
    plan = _plan_file(tmp_path / "plan.json", tokens=300, stopping=rule)
    result = analyze_as_registered(_arms(plan, 230, 250), plan)  # looks at 100, 200, 300
    assert (result.stage, result.decision) == ("interim", "continue")
    assert [look.tokens_per_arm for look in result.looks] == [100, 200]
    assert result.design is not None
    assert [look.critical for look in result.looks] == list(result.design.critical[:2])
    assert result.looks[0].critical == pytest.approx(3.7103, abs=1e-3)  # far above 1.96
    assert result.looks[1].threshold < 0.05  # the corrected nominal level
    assert result.next_look_tokens == 300
    assert [a.not_yet_due for a in result.arms] == [30, 50]


def test_group_sequential_stops_at_the_first_crossing(tmp_path: Path) -> None:
    rule = StoppingRule("group-sequential", 4, "pocock")
    plan = _plan_file(tmp_path / "plan.json", tokens=400, stopping=rule)
    result = analyze_as_registered(_arms(plan, 500, 500, shift=0.8), plan)
    assert (result.stage, result.decision) == ("stopped", "reject")
    assert len(result.looks) == 1
    assert result.looks[0].crossed
    assert [a.beyond_plan for a in result.arms] == [400, 400]  # the design stopped at 100


def test_before_the_first_look_there_is_no_test(tmp_path: Path) -> None:
    rule = StoppingRule("group-sequential", 4, "pocock")
    plan = _plan_file(tmp_path / "plan.json", tokens=400, stopping=rule)
    result = analyze_as_registered(_arms(plan, 99, 500), plan)
    assert (result.stage, result.decision, result.next_look_tokens) == (
        "before-first-look",
        "no test",
        100,
    )


def test_one_sample_statistic_is_the_declared_one(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=200, design="one-sample", statistic="runs")
    records = _arms(plan, 260, 0)
    result = analyze_as_registered(records, plan)
    mine = [r for r in records if r.arm == "qrng"][:200]
    assert result.looks[0].p_value == group_stats("qrng", mine).runs.p_value
    assert result.arms[0].beyond_plan == 60


def test_a_changed_plan_is_refused(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path / "plan.json")
    records = _arms(plan, 300, 300)
    changed = _plan_file(tmp_path / "changed.json", tokens=250)
    with pytest.raises(ConfigHashError, match="not made under this plan file"):
        analyze_as_registered(records, changed)
    with pytest.raises(ConfigHashError, match="none"):
        analyze_as_registered(_arms(None, 300, 300), plan)


def test_calibrated_records_refuse_the_known_variance_test(tmp_path: Path) -> None:
    plan = _plan_file(tmp_path / "plan.json")
    records = [dataclasses.replace(r, calibration_sha256="c" * 64) for r in _arms(plan, 300, 300)]
    with pytest.raises(AnalysisError, match="calibration"):
        analyze_as_registered(records, plan)


# ------------------------------------------------------------------- the command


def _write_set(base: Path, records: Sequence[TokenSamplingRecord]) -> None:
    for writer, arm in (("w-qrng", "qrng"), ("w-control", "control")):
        with JsonlFileSink(base, writer_id=writer, max_bytes=60_000) as sink:
            sink.write([r for r in records if r.arm == arm])


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_registered_analysis_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    base = tmp_path / "r.jsonl"
    _write_set(base, _arms(plan, 340, 310))
    code, out, _ = _run(
        [str(base), "--by", "arm", "--preregistration", str(tmp_path / "plan.json")], capsys
    )
    assert code == EXIT_OK
    assert f"registered plan {plan.sha256}" in out
    assert "qrng: 340 tokens, first 300 analysed; 40 BEYOND THE PLAN, not analysed" in out
    assert "stage           final analysis" in out
    code, out, _ = _run(
        [str(base), "--preregistration", str(tmp_path / "plan.json"), "--json"], capsys
    )
    registered = json.loads(out)["registered"]
    assert (registered["stage"], registered["beyond_plan"]) == ("final", 50)


def test_interim_look_is_flagged_by_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    base = tmp_path / "r.jsonl"
    _write_set(base, _arms(plan, 150, 150))
    code, out, _ = _run([str(base), "--preregistration", str(tmp_path / "plan.json")], capsys)
    assert code == EXIT_OK
    assert "INTERIM LOOK" in out
    assert "no test before the planned tokens are in (300 per arm)" in out


def test_pre_registered_records_need_their_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    base = tmp_path / "r.jsonl"
    _write_set(base, _arms(plan, 300, 300))
    code, _, err = _run([str(base)], capsys)
    assert code == EXIT_CONFIG
    assert plan.sha256 in err
    assert "--preregistration" in err
    code, _, err = _run([str(base), "--exploratory"], capsys)
    assert code == EXIT_OK
    assert "exploratory analysis of pre-registered records" in err
    changed = tmp_path / "plan.json"
    changed.write_bytes(changed.read_bytes().replace(b'"alpha": 0.05', b'"alpha": 0.1'))
    code, _, err = _run([str(base), "--preregistration", str(changed)], capsys)
    assert code == EXIT_CONFIG
    assert "not made under this plan file" in err


def test_verify_exit_status_and_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan_file(tmp_path / "plan.json", tokens=300)
    base = tmp_path / "r.jsonl"
    _write_set(base, _arms(plan, 300, 300))
    code, out, _ = _run(["verify", str(base)], capsys)
    assert code == 0
    assert "result     intact and sealed" in out
    code, out, _ = _run(["verify", "--manifest", str(base)], capsys)
    header, *rows = out.splitlines()
    assert header.startswith("# qr-sampler record manifest 1")
    assert len(rows) == 2
    for row in rows:
        final, count, prereg, series, writer, status = row.split()
        assert (count, prereg, status) == ("300", plan.sha256, "sealed")
        assert len(final) == 64
        assert len(series) == 16
        assert writer.startswith("w-")

    live = writer_file(base, "w-qrng")
    lines = live.read_bytes().splitlines(True)
    live.write_bytes(b"".join(lines[:-1]))  # no seal
    code, out, _ = _run(["verify", str(base)], capsys)
    assert code == 6
    assert "intact, but 1 series unsealed" in out
    code, _, err = _run([str(base), "--exploratory"], capsys)
    assert code == EXIT_OK
    assert "unsealed" in err

    live.write_bytes(b"".join([*lines[:3], *lines[4:]]))  # a record deleted
    code, out, _ = _run(["verify", str(base)], capsys)
    assert code == 5
    assert f"FOUND      {live}:4: deleted:" in out
    assert "TAMPERED: deleted (1)" in out
    code, _, err = _run([str(base), "--exploratory"], capsys)
    assert code == EXIT_INPUT
    assert "hash chain" in err
    assert "--skip-invalid" in err
    code, _, err = _run([str(base), "--exploratory", "--skip-invalid"], capsys)
    assert code == EXIT_OK


def test_plan_write_produces_the_plan_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "plan.json"
    argv = ["plan", "--effect", "0.2", "--write", str(target), "--hypothesis", "h"]
    code, out, _ = _run(argv, capsys)
    assert code == EXIT_OK
    plan = load_preregistration(target)
    assert f"sha256 {hashlib.sha256(target.read_bytes()).hexdigest()}" in out
    assert (plan.tokens_per_arm, plan.arms, plan.primary_statistic) == (
        393,
        ("qrng", "control"),
        "z",
    )
    assert _run(argv, capsys)[0] == 2  # never overwritten
    sequential = tmp_path / "seq.json"
    code, out, _ = _run(
        [
            "plan",
            "--effect",
            "0.2",
            "--write",
            str(sequential),
            "--hypothesis",
            "h",
            "--stopping",
            "obrien-fleming",
            "--looks",
            "3",
        ],
        capsys,
    )
    assert code == EXIT_OK
    plan = load_preregistration(sequential)
    assert plan.stopping == StoppingRule("group-sequential", 3, "obrien-fleming")
    assert 393 < plan.tokens_per_arm < 410
