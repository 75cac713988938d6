"""Analysis of token records: the report behind ``qr-analyze``."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from qr_core.records._errors import ConfigHashError, RecordError
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._stats import (
    KSResult,
    StoufferResult,
    WelchResult,
    ks_uniform,
    stouffer,
    welch,
)

__all__ = [
    "AnalysisReport",
    "GroupComparison",
    "GroupStats",
    "analyze",
    "check_config_hashes",
    "compare",
    "time_ordered",
]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Statistics of one group of tokens (all tokens, one request tag, one file)."""

    label: str
    """``"all"``, ``"tag=<tag>"``, ``"untagged"`` or a file name."""
    tokens: int
    """Number of tokens."""
    requests: int
    """Number of distinct request ids."""
    fallback_tokens: int
    """Tokens whose entropy came from the fallback source."""
    z: StoufferResult
    """Mean z and Stouffer's Z."""
    ks: KSResult
    """KS test of u against U(0, 1)."""


@dataclass(frozen=True, slots=True)
class GroupComparison:
    """Group A against group B (for example experiment against control)."""

    label_a: str
    """Label of group A."""
    label_b: str
    """Label of group B."""
    tokens_a: int
    """Tokens in group A."""
    tokens_b: int
    """Tokens in group B."""
    test: WelchResult
    """Welch's test of mean z (A - B)."""


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """Everything ``qr-analyze`` prints."""

    tokens: int
    """Number of tokens."""
    requests: int
    """Number of distinct request ids."""
    sources: Mapping[str, int]
    """Tokens per entropy source name."""
    fallback_tokens: int
    """Tokens whose entropy came from the fallback source."""
    config_hashes: Mapping[str, int]
    """Tokens per configuration hash."""
    overall: GroupStats
    """All tokens."""
    by_tag: tuple[GroupStats, ...]
    """One entry per request tag (``untagged`` for records without one), sorted by label."""
    comparison: GroupComparison | None
    """Two-group comparison, when asked for."""

    @property
    def fallback_share(self) -> float:
        """Share of tokens from the fallback source."""
        return self.fallback_tokens / self.tokens if self.tokens else math.nan

    def to_json_dict(self) -> dict[str, object]:
        """Return the report as JSON-ready data (NaN becomes ``None``)."""
        data = asdict(self)
        data["fallback_share"] = self.fallback_share
        return {k: _json_safe(v) for k, v in data.items()}


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def time_ordered(records: Sequence[TokenSamplingRecord]) -> list[TokenSamplingRecord]:
    """Return ``records`` sorted by ``logits_ready_ns`` (stable: ties keep file order)."""
    return sorted(records, key=lambda r: r.logits_ready_ns)


def group_stats(label: str, records: Sequence[TokenSamplingRecord]) -> GroupStats:
    """Compute :class:`GroupStats` for ``records``."""
    z = np.fromiter((r.z_score for r in records), dtype=np.float64, count=len(records))
    u = np.fromiter((r.u for r in records), dtype=np.float64, count=len(records))
    return GroupStats(
        label=label,
        tokens=len(records),
        requests=len({r.request_id for r in records}),
        fallback_tokens=sum(1 for r in records if r.fallback),
        z=stouffer(z),
        ks=ks_uniform(u),
    )


def compare(
    label_a: str,
    records_a: Sequence[TokenSamplingRecord],
    label_b: str,
    records_b: Sequence[TokenSamplingRecord],
) -> GroupComparison:
    """Compare mean z of two groups with Welch's test.

    Raises:
        RecordError: A group has fewer than 2 tokens (the message names it).
    """
    for label, group in ((label_a, records_a), (label_b, records_b)):
        if len(group) < 2:
            raise RecordError(f"group {label!r} has {len(group)} tokens; comparison needs >= 2")
    test = welch([r.z_score for r in records_a], [r.z_score for r in records_b])
    return GroupComparison(label_a, label_b, len(records_a), len(records_b), test)


def _tag_label(tag: str | None) -> str:
    return "untagged" if tag is None else f"tag={tag}"


def analyze(
    records: Sequence[TokenSamplingRecord],
    *,
    tag_a: str | None = None,
    tag_b: str | None = None,
) -> AnalysisReport:
    """Analyse token records.

    Args:
        records: The tokens, in any order.
        tag_a: With ``tag_b``: compare tokens of requests tagged ``tag_a`` (group A)
            against ``tag_b`` (group B).
        tag_b: See ``tag_a``.

    Returns:
        The report.

    Raises:
        RecordError: ``records`` is empty, only one of the tags is given, or a
            compared tag has fewer than 2 tokens.
    """
    if not records:
        raise RecordError("no records to analyse")
    if (tag_a is None) != (tag_b is None):
        raise RecordError("tag_a and tag_b must be given together")
    by_tag: dict[str | None, list[TokenSamplingRecord]] = collections.defaultdict(list)
    for r in records:
        by_tag[r.request_tag].append(r)
    comparison = None
    if tag_a is not None and tag_b is not None:
        comparison = compare(
            _tag_label(tag_a), by_tag.get(tag_a, []), _tag_label(tag_b), by_tag.get(tag_b, [])
        )
    tags = sorted(by_tag, key=lambda t: (t is None, t or ""))
    overall = group_stats("all", records)
    return AnalysisReport(
        tokens=overall.tokens,
        requests=overall.requests,
        sources=dict(collections.Counter(r.entropy_source for r in records).most_common()),
        fallback_tokens=overall.fallback_tokens,
        config_hashes=dict(collections.Counter(r.config_hash for r in records).most_common()),
        overall=overall,
        by_tag=tuple(group_stats(_tag_label(t), by_tag[t]) for t in tags),
        comparison=comparison,
    )


def check_config_hashes(
    records: Sequence[TokenSamplingRecord],
    *,
    expected: str | None = None,
    allow_mixed: bool = False,
) -> dict[str, int]:
    """Check records against a pre-registered configuration hash.

    Args:
        records: The tokens.
        expected: Every record must carry this ``config_hash``.
        allow_mixed: Accept records made under different configurations.

    Returns:
        Tokens per configuration hash.

    Raises:
        ConfigHashError: A record's hash differs from ``expected``, or several hashes
            occur and ``allow_mixed`` is false. The message lists the hashes found.
    """
    counts = dict(collections.Counter(r.config_hash for r in records).most_common())
    found = ", ".join(f"{h} ({n} tokens)" for h, n in counts.items())
    if expected is not None and set(counts) != {expected}:
        raise ConfigHashError(f"expected config hash {expected} on every record; found {found}")
    if len(counts) > 1 and not allow_mixed:
        raise ConfigHashError(
            f"records come from {len(counts)} configurations: {found}; "
            "pass allow_mixed (--allow-mixed-configs) to analyse them together"
        )
    return counts
