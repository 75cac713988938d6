"""The text form of ``qr-entropy check``'s report."""

from __future__ import annotations

from qr_entropy._check import CheckReport

__all__ = ["render_check"]


def render_check(report: CheckReport) -> str:
    """``qr-entropy check``'s text report."""
    lat = report.latency_ms
    lines = [
        f"source         {report.source} (device {report.device_id or '-'})",
        f"drawn          {report.fetches} fetches x {report.bytes_per_fetch} bytes "
        f"= {report.total_bytes} bytes in {report.seconds:.3f} s",
        f"throughput     {report.throughput_bytes_per_s / 1e6:.3f} MB/s",
        f"latency/fetch  p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
        f"p99 {lat['p99']:.3f} ms  max {lat['max']:.3f} ms",
        _used(report),
        _device_rate(report),
        f"tests          alpha {report.alpha} each, p-values by scipy",
    ]
    # One width for the names: the drift tests' are longer than the ideal-null ones'.
    width = max([16, *(len(test.name) for test in report.tests)])
    for test in report.tests:
        verdict = "PASS" if test.passed(report.alpha) else "FAIL"
        lines.append(
            f"  {verdict}  {test.name:<{width}} stat {test.statistic:>12.4f}  "
            f"p {test.p_value:.4f}  n {test.n}  ({test.detail})"
        )
    lines.append(f"result         {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


def _used(report: CheckReport) -> str:
    """The amplifier and sample_count the tests used, and where they came from."""
    used = f"amplifier      {report.amplifier}, sample_count {report.bytes_per_fetch}"
    if report.calibration_sha256 is None:
        return used + " (tests against the ideal null)"
    return used + f" (from the calibration {report.calibration_sha256[:12]}: drift tests)"


def _device_rate(report: CheckReport) -> str:
    """The entropy budget: the server's device rate and the tokens per second it supports."""
    at = f"at QR_SAMPLE_COUNT={report.sample_count}"
    tokens = report.device_tokens_per_second
    if report.device_bytes_per_second is None or tokens is None:
        drawn = report.throughput_bytes_per_s / report.sample_count
        return (
            f"device rate    not reported by the source; the throughput above supports "
            f"{drawn:,.1f} tokens/s {at}"
        )
    return (
        f"device rate    {report.device_bytes_per_second / 1e6:.3f} MB/s (measured by the "
        f"server) supports {tokens:,.1f} tokens/s {at}"
    )
