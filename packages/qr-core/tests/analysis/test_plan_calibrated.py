"""``qr-analyze plan`` with calibrated arms: the exact power they leave and the blocks to
ask for (the figures of docs/records.md, "Planning with calibrated arms")."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped]

from qr_core.analysis import (
    AnalysisError,
    blocks_for_power_loss,
    calibration_plan,
    plan_tokens,
    power,
)
from qr_core.analysis.cli import EXIT_OK, EXIT_USAGE, main

T = 58_395  # the docs' plan: effect 0.02, alpha 0.01, power 0.8, two arms
T1 = 29_198  # the same plan for one sample


@pytest.mark.parametrize(
    ("blocks", "one_arm", "two_arms", "one_sample"),
    [
        (2_000, 0.0439, 0.0260, 0.0439),
        (1, 0.5849, 0.4367, 0.4367),  # blocks as a multiple of the tokens below
        (2, 0.6847, 0.5849, 0.5849),
        (5, 0.7526, 0.7067, 0.7067),
        (10, 0.7762, 0.7526, 0.7526),
        (20, 0.7881, 0.7762, 0.7762),
        (100, 0.7976, 0.7952, 0.7952),
    ],
)
def test_the_power_calibrated_arms_leave(
    blocks: int, one_arm: float, two_arms: float, one_sample: float
) -> None:
    b2, b1 = (blocks, blocks) if blocks > 100 else (blocks * T, blocks * T1)
    assert power(T, 0.02, 0.01, calibrated_arms=1, calibration_blocks=b2) == pytest.approx(
        one_arm, abs=5e-5
    )
    assert power(T, 0.02, 0.01, calibrated_arms=2, calibration_blocks=b2) == pytest.approx(
        two_arms, abs=5e-5
    )
    p1 = power(T1, 0.02, 0.01, "one-sample", calibrated_arms=1, calibration_blocks=b1)
    assert p1 == pytest.approx(one_sample, abs=5e-5)


@pytest.mark.parametrize(
    ("loss", "relative", "one_arm", "two_arms"),
    [
        (0.01, False, 23.90, 47.79),
        (0.02, False, 11.93, 23.86),
        (0.05, False, 4.74, 9.48),
        (0.05, True, 5.94, 11.88),
        (0.10, True, 2.93, 5.86),
    ],
)
def test_blocks_for_a_power_loss(
    loss: float, relative: bool, one_arm: float, two_arms: float
) -> None:
    for arms, ratio in ((1, one_arm), (2, two_arms)):
        b = blocks_for_power_loss(
            T, 0.01, 0.8, loss, calibrated_arms=arms, effect=0.02, relative=relative
        )
        assert b / T == pytest.approx(ratio, abs=0.006)
        # Without an effect, T is taken as planned for 80% at 0.01: the same ratio.
        assert blocks_for_power_loss(
            T, 0.01, 0.8, loss, calibrated_arms=arms, relative=relative
        ) / T == pytest.approx(ratio, abs=0.006)
        kept = power(T, 0.02, 0.01, calibrated_arms=arms, calibration_blocks=b)
        exact = power(T, 0.02, 0.01)
        assert exact - kept == pytest.approx(exact * loss if relative else loss, abs=1e-9)
    assert blocks_for_power_loss(T, calibrated_arms=0) == 0.0
    with pytest.raises(AnalysisError, match="calibrated_arms must be one of \\[0, 1\\]"):
        blocks_for_power_loss(T, calibrated_arms=2, design="one-sample")


def test_the_calibration_plan_of_the_docs_example() -> None:
    plan = plan_tokens(0.02, alpha=0.01, target_power=0.8)
    c = calibration_plan(plan, 1, 200_000)
    assert c.power_left == pytest.approx(0.7312, abs=5e-5)
    assert math.ceil(c.tokens_to_restore) == 68_378
    assert c.recommended_blocks == math.ceil(blocks_for_power_loss(T, effect=0.02))
    assert c.floor_blocks == pytest.approx(29_197, abs=1)
    assert calibration_plan(plan, 2, 58_395).tokens_to_restore == math.inf
    assert calibration_plan(plan, 1, 583_950).tokens_to_restore == pytest.approx(61_468, abs=1)


def test_a_plan_with_ten_t_blocks_detects_as_promised() -> None:
    # 20,000 simulated experiments of the plan with B = 10 T (one calibrated arm, seed
    # 14): the test with the calibration term detects 0.02 in 0.776 of them, +-0.012
    # (4 s.e.). Summary level: each arm's mean z, the calibration's offset N(0, 1/B).
    rng = np.random.default_rng(14)
    runs, b = 20_000, 10 * T
    mean_a = rng.normal(0.02, math.sqrt(1 / T), runs) + rng.normal(0, math.sqrt(1 / b), runs)
    mean_b = rng.normal(0.0, math.sqrt(1 / T), runs)
    z = (mean_a - mean_b) / math.sqrt(2 / T + 1 / b)
    detected = float((np.abs(z) > scipy.stats.norm.isf(0.005)).mean())
    assert detected == pytest.approx(
        power(T, 0.02, 0.01, calibrated_arms=1, calibration_blocks=b), abs=0.012
    )


def test_plan_cli_prints_the_calibration_lines(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--effect", "0.02", "--alpha", "0.01", "--calibration-blocks", "200000"]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "tokens per arm  58395" in out
    assert "blocks          200,000 per calibrated arm (B/T = 3.42)" in out
    assert "power left      0.7312 (-6.9 points)" in out
    assert "tokens to restore 68,378 per arm with 200,000 blocks" in out
    assert "floor           B > 29,197" in out
    assert main([*argv, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["calibration"]["calibrated_arms"] == 1
    assert data["calibration"]["recommended_blocks"] == math.ceil(
        blocks_for_power_loss(T, effect=0.02)
    )
    assert main(["plan", "--effect", "0.02", "--calibrated-arms", "3"]) == EXIT_USAGE
    assert "calibrated_arms must be one of [0, 1, 2]" in capsys.readouterr().err
