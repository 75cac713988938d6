"""Groups of tokens and their statistics: the table of statistics ``qr-analyze`` reports.

:class:`GroupStats` is that table: each field after ``label`` is declared once with
:func:`~qr_core.analysis._declare.statistic` (its function, JSON field and text
columns), and :func:`group_stats`, the JSON report and the text tables follow it.
"""

# statistic() is a field specifier: it returns dataclasses.field(metadata=...), no default.
# ruff: noqa: RUF009

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from qr_core.analysis._declare import Column, Sample, declared, format_p, statistic
from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._serial import (
    AutocorrelationResult,
    RunsResult,
    WalkResult,
    lag1_autocorrelation,
    runs_test,
    walk_excursion,
)
from qr_core.analysis._stats import (
    BayesFactorResult,
    ChiSquareResult,
    EffectSizeResult,
    KSResult,
    StoufferResult,
    bayes_factor_normal,
    effect_size,
    ks_uniform,
    network_variance,
    stouffer,
)
from qr_core.records._schema import TokenSamplingRecord

__all__ = [
    "DEFAULT_PRIOR_SD",
    "GROUP_KEYS",
    "GroupKey",
    "GroupStats",
    "group_label",
    "group_records",
    "group_stats",
    "time_ordered",
]

GroupKey = Literal["tag", "arm"]

GROUP_KEYS: Final[tuple[GroupKey, ...]] = ("tag", "arm")
"""Record fields tokens can be grouped by: ``request_tag`` or ``arm``."""

DEFAULT_PRIOR_SD: Final = 0.02
"""Default standard deviation of the normal prior on the shift of mean z (H1) in the
Bayes factor: shifts of the size experiments are planned for."""

_KEY_FIELD: Final[Mapping[GroupKey, Callable[[TokenSamplingRecord], str | None]]] = {
    "tag": lambda r: r.request_tag,
    "arm": lambda r: r.arm,
}
_UNLABELLED: Final[Mapping[GroupKey, str]] = {"tag": "untagged", "arm": "no arm"}


def _bayes(s: Sample) -> BayesFactorResult | None:
    n = s.z.size
    if not n:
        return None
    mean_z = stouffer(s.z).mean_z
    return bayes_factor_normal(
        mean_z, 1.0 / math.sqrt(n), prior_mean=s.prior_mean, prior_sd=s.prior_sd
    )


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Statistics of one group of tokens (all tokens, one tag or arm, one file).

    Every field after ``label`` is declared once, with its function and its columns
    in ``qr-analyze``'s text tables; its name is its key in the JSON report.
    """

    label: str
    """``"all"``, ``"tag=<tag>"``, ``"untagged"``, ``"arm=<arm>"``, ``"no arm"`` or a file."""
    tokens: int = statistic(lambda s: s.z.size, Column("tokens", 9, lambda n: f"{n}"))
    """Number of tokens."""
    requests: int = statistic(
        lambda s: len({r.request_id for r in s.records}), Column("requests", 9, lambda n: f"{n}")
    )
    """Number of distinct request ids."""
    fallback_tokens: int = statistic(lambda s: sum(1 for r in s.records if r.fallback))
    """Tokens whose entropy came from the fallback source."""
    z: StoufferResult = statistic(
        lambda s: stouffer(s.z),
        Column("mean z", 10, lambda r: f"{r.mean_z:+.4f}"),
        Column("sd z", 8, lambda r: f"{r.std_z:.3f}"),
        Column("Stouffer Z", 12, lambda r: f"{r.stouffer_z:+.3f}"),
        Column("p", 10, lambda r: format_p(r.p_value)),
    )
    """Mean z and Stouffer's Z."""
    ks: KSResult = statistic(
        lambda s: ks_uniform(s.u),
        Column("KS D", 9, lambda r: f"{r.statistic:.4f}"),
        Column("KS p", 10, lambda r: format_p(r.p_value)),
    )
    """KS test of u against U(0, 1)."""
    effect: EffectSizeResult = statistic(
        lambda s: effect_size(s.z),
        Column("mean z 95% CI", 22, lambda r: f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"),
        table=2,
    )
    """Mean z per token with its 95% confidence interval."""
    network_variance: ChiSquareResult = statistic(
        lambda s: network_variance(s.z),
        Column("netvar p", 10, lambda r: format_p(r.p_value)),
        table=2,
    )
    """``sum(z^2)`` against chi-square with n df (two-sided)."""
    autocorrelation: AutocorrelationResult = statistic(
        lambda s: lag1_autocorrelation(s.z),
        Column("lag-1 r", 9, lambda r: f"{r.r1:+.4f}"),
        Column("p", 8, lambda r: format_p(r.p_value)),
        table=2,
    )
    """Lag-1 autocorrelation of z in time order."""
    runs: RunsResult = statistic(
        lambda s: runs_test(s.z), Column("runs p", 8, lambda r: format_p(r.p_value)), table=2
    )
    """Runs of the sign of z in time order (exact)."""
    walk: WalkResult = statistic(
        lambda s: walk_excursion(s.z), Column("walk p", 8, lambda r: format_p(r.p_value)), table=2
    )
    """Largest excursion of the cumulative deviation (whole-walk test)."""
    bayes: BayesFactorResult | None = statistic(
        _bayes, Column("BF10", 10, lambda r: "n/a" if r is None else f"{r.bf10:.3g}"), table=2
    )
    """Bayes factor for a shift of mean z (``None`` for an empty group)."""


def time_ordered(records: Sequence[TokenSamplingRecord]) -> list[TokenSamplingRecord]:
    """Return ``records`` sorted by ``logits_ready_ns`` (stable: ties keep file order)."""
    return sorted(records, key=lambda r: r.logits_ready_ns)


def group_stats(
    label: str,
    records: Sequence[TokenSamplingRecord],
    *,
    prior_mean: float = 0.0,
    prior_sd: float = DEFAULT_PRIOR_SD,
) -> GroupStats:
    """Compute every declared statistic of :class:`GroupStats` for ``records``
    (serial tests in time order)."""
    ordered = time_ordered(records)
    n = len(ordered)
    sample = Sample(
        records=ordered,
        z=np.fromiter((r.z_score for r in ordered), dtype=np.float64, count=n),
        u=np.fromiter((r.u for r in ordered), dtype=np.float64, count=n),
        prior_mean=prior_mean,
        prior_sd=prior_sd,
    )
    values = {name: d.compute(sample) for name, d in declared(GroupStats)}
    return GroupStats(label, **values)  # type: ignore[arg-type]


def group_label(by: GroupKey, value: str | None) -> str:
    """``"tag=x"`` / ``"arm=x"``, or ``"untagged"`` / ``"no arm"`` for ``None``."""
    return _UNLABELLED[by] if value is None else f"{by}={value}"


def group_records(
    records: Sequence[TokenSamplingRecord], by: GroupKey
) -> dict[str | None, list[TokenSamplingRecord]]:
    """Tokens per value of the ``by`` field, ``None`` (unlabelled) last, else sorted."""
    if by not in _KEY_FIELD:
        raise AnalysisError(f"group_by must be one of {list(GROUP_KEYS)}, got {by!r}")
    key = _KEY_FIELD[by]
    groups: dict[str | None, list[TokenSamplingRecord]] = collections.defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return {k: groups[k] for k in sorted(groups, key=lambda v: (v is None, v or ""))}
