"""Groups of tokens and their statistics: the table of statistics ``qr-analyze`` reports.

:class:`GroupStats` is that table: each field after ``label`` is declared once with
:func:`~qr_core.analysis._declare.statistic` (its function, JSON field and text
columns), and :func:`group_stats`, the JSON report and the text tables follow it.
"""

# statistic() is a field specifier: it returns dataclasses.field(metadata=...), no default.
# ruff: noqa: RUF009

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

from qr_core.analysis._calibrated import (
    CalibrationInput,
    CalibrationUncertainty,
    combined,
    parts_of,
)
from qr_core.analysis._declare import Column, Sample, declared, format_p, statistic
from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._ks import DEFAULT_KS_REPLICATES, KSResult, derived_seed, ks_uniform
from qr_core.analysis._netvar import NetworkVarianceResult, network_variance
from qr_core.analysis._serial import (
    AutocorrelationResult,
    RunsResult,
    lag1_autocorrelation,
    runs_test,
)
from qr_core.analysis._stats import (
    BayesFactorResult,
    EffectSizeResult,
    StoufferResult,
    bayes_factor_normal,
    effect_size,
    stouffer,
)
from qr_core.analysis._walk import WalkResult, walk_excursion
from qr_core.records._schema import TokenSamplingRecord

__all__ = [
    "DEFAULT_PRIOR_SD",
    "GROUP_KEYS",
    "CalibrationSummary",
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
    if not s.z.size:
        return None
    z = stouffer(s.z, s.calibration)
    return bayes_factor_normal(
        z.mean_z, z.standard_error, prior_mean=s.prior_mean, prior_sd=s.prior_sd
    )


@dataclass(frozen=True, slots=True)
class CalibrationSummary:
    """Which calibrations a group's tokens were standardised against, and their error."""

    calibrated_tokens: int
    """Tokens standardised against a calibration (the others are exact)."""
    sha256: tuple[str, ...]
    """The calibrations' hashes, in order of first appearance."""
    blocks: int | None
    """B of the group's one calibration, or of the one calibration equivalent to its
    mix (``1 / sum(f_c^2 / B_c)``); ``None`` when every token is exact."""
    mean_se_z: float
    """Standard error of the group's calibration offset in z (0 when exact)."""
    std_se_z: float
    """Relative standard error of its scale (0 when exact)."""
    calibration_share: float
    """Share of the variance of mean z that is the calibrations' (0 when exact)."""


def _calibration(s: Sample) -> CalibrationSummary:
    n = s.z.size
    parts = parts_of(s.calibration, n)
    hashes = tuple(p.calibration.sha256 or "" for p in parts if p.calibration is not None)
    calibrated = sum(p.index.size for p in parts if p.calibration is not None)
    cal = combined(parts, n)
    if cal is None:
        return CalibrationSummary(calibrated, hashes, None, 0.0, 0.0, 0.0)
    share = cal.mean_se_z**2 / (1.0 / n + cal.mean_se_z**2)
    return CalibrationSummary(calibrated, hashes, cal.blocks, cal.mean_se_z, cal.std_se_z, share)


def _ks(s: Sample) -> KSResult:
    seed = derived_seed("ks", s.label, str(s.z.size), *_calibration(s).sha256)
    return ks_uniform(s.u, s.calibration, replicates=s.ks_replicates, seed=seed)


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
        lambda s: stouffer(s.z, s.calibration),
        Column("mean z", 10, lambda r: f"{r.mean_z:+.4f}"),
        Column("sd z", 8, lambda r: f"{r.std_z:.3f}"),
        Column("Stouffer Z", 12, lambda r: f"{r.stouffer_z:+.3f}"),
        Column("p", 10, lambda r: format_p(r.p_value)),
    )
    """Mean z and Stouffer's Z."""
    ks: KSResult = statistic(
        _ks,
        Column("KS D", 9, lambda r: f"{r.statistic:.4f}"),
        Column("KS p", 10, lambda r: format_p(r.p_value)),
    )
    """KS test of u against U(0, 1) (a Monte Carlo test for calibrated tokens)."""
    calibration: CalibrationSummary = statistic(
        _calibration,
        Column("cal B", 9, lambda r: "-" if r.blocks is None else f"{r.blocks}"),
    )
    """The group's calibrations and the share of mean z's variance that is theirs."""
    effect: EffectSizeResult = statistic(
        lambda s: effect_size(s.z, calibration=s.calibration),
        Column("mean z 95% CI", 22, lambda r: f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"),
        table=2,
    )
    """Mean z per token with its 95% confidence interval."""
    network_variance: NetworkVarianceResult = statistic(
        lambda s: network_variance(s.z, s.calibration),
        Column("netvar p", 10, lambda r: format_p(r.p_value)),
        table=2,
    )
    """``sum(z^2)`` against its null law: chi-square with n df, or the calibrated law."""
    autocorrelation: AutocorrelationResult = statistic(
        lambda s: lag1_autocorrelation(s.z),
        Column("lag-1 r", 9, lambda r: f"{r.r1:+.4f}"),
        Column("p", 10, lambda r: format_p(r.p_value)),
        table=2,
    )
    """Lag-1 autocorrelation of z in time order."""
    runs: RunsResult = statistic(
        lambda s: runs_test(s.z), Column("runs p", 10, lambda r: format_p(r.p_value)), table=2
    )
    """Runs of the sign of z in time order (exact)."""
    walk: WalkResult = statistic(
        lambda s: walk_excursion(s.z, s.calibration),
        Column("walk p", 10, lambda r: format_p(r.p_value)),
        table=2,
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
    calibrations: Mapping[str, CalibrationUncertainty | None] | None = None,
    ks_replicates: int = DEFAULT_KS_REPLICATES,
) -> GroupStats:
    """Compute every declared statistic of :class:`GroupStats` for ``records``
    (serial tests in time order).

    ``calibrations`` maps each ``calibration_sha256`` to its error (``None``: take
    those tokens as exact); by default each record's own figures
    (:func:`~qr_core.analysis.resolve_calibrations` checks and completes them).
    """
    ordered = time_ordered(records)
    n = len(ordered)
    sample = Sample(
        records=ordered,
        z=np.fromiter((r.z_score for r in ordered), dtype=np.float64, count=n),
        u=np.fromiter((r.u for r in ordered), dtype=np.float64, count=n),
        prior_mean=prior_mean,
        prior_sd=prior_sd,
        label=label,
        calibration=token_calibrations(ordered, calibrations),
        ks_replicates=ks_replicates,
    )
    values = {name: d.compute(sample) for name, d in declared(GroupStats)}
    return GroupStats(label, **values)  # type: ignore[arg-type]


def token_calibrations(
    records: Sequence[TokenSamplingRecord],
    calibrations: Mapping[str, CalibrationUncertainty | None] | None = None,
) -> CalibrationInput:
    """The tokens' calibration errors: ``None`` when all are exact, the one calibration
    when all share it, else one entry per token (``None`` for an exact token)."""
    known: dict[str, CalibrationUncertainty | None] = dict(calibrations or {})
    out: list[CalibrationUncertainty | None] = []
    for r in records:
        sha = r.calibration_sha256
        if sha is None:
            out.append(None)
            continue
        if sha not in known:
            known[sha] = CalibrationUncertainty.from_record(r)
        out.append(known[sha])
    distinct = {id(c) for c in out}
    if len(distinct) > 1:
        return tuple(out)
    return out[0] if out else None


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
