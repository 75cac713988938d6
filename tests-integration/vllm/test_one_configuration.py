"""One qr configuration in every process, on vLLM's mp backend (issue 29), without Ray.

The front end stamps its configuration into the engine configuration; an
engine-core process started on another environment refuses to start, naming
what differs, instead of serving requests the front end checked against other
settings. Here the engine core gets another environment than its front end
(config_check_run.py), as a Ray worker can; tests-integration/ray runs the
same on a Ray cluster.

* an arm configured in the front end only (issue 29's case, where the first
  request naming it stopped the engine): refused at start;
* an amplifier a request may name (``qr_signal_amplifier_type``) installed in
  the front end only: refused at start. The front end accepts requests naming
  either, so without the check they would reach an engine that cannot serve
  them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
RESULT_PREFIX = "qr-config-result: "
SCENARIOS = ("arm_only_in_front_end", "amplifier_only_in_front_end")


@pytest.fixture(scope="module")
def results(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    records = tmp_path_factory.mktemp("config") / "records.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    found: dict[str, Any] = {"records": records}
    for scenario in SCENARIOS:  # one front-end process each
        child = subprocess.run(
            [
                sys.executable,
                str(HERE / "config_check_run.py"),
                str(tiny_model),
                str(records),
                scenario,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert child.returncode == 0, child.stderr[-6000:]
        lines = [x for x in child.stdout.splitlines() if x.startswith(RESULT_PREFIX)]
        assert len(lines) == 1, child.stdout[-3000:] + child.stderr[-3000:]
        result = json.loads(lines[0].removeprefix(RESULT_PREFIX))
        result["output"] = child.stdout + child.stderr
        found[scenario] = result
        print(f"{scenario}: {result['wall_s']} s")
    return found


@pytest.mark.slow
def test_an_arm_only_in_the_front_end_refuses_the_start(results: dict[str, Any]) -> None:
    arm = results["arm_only_in_front_end"]
    assert {"qr_entropy_source": "sham"} in arm["accepted"], "the front end accepts it"
    assert arm["start_error"] is not None, "started: a request naming the arm would stop it"
    assert "ConfigurationMismatchError" in arm["output"]
    assert "QR_SOURCES (front end ['sham'], here [])" in arm["output"]
    assert not results["records"].exists(), "no record: nothing was sampled"


@pytest.mark.slow
def test_an_amplifier_only_in_the_front_end_refuses_the_start(results: dict[str, Any]) -> None:
    plugin = results["amplifier_only_in_front_end"]
    assert {"qr_signal_amplifier_type": "front_end_only"} in plugin["accepted"]
    assert plugin["start_error"] is not None
    assert "ConfigurationMismatchError" in plugin["output"]
    assert "registered amplifiers" in plugin["output"]
    assert "Install the same qr-core, qr-entropy and qr-vllm" in plugin["output"]
