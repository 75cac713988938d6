"""The analysis report behind ``qr-analyze``: every group's statistics, a comparison of
two groups, and the pre-registration check of configuration hashes."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from qr_core._calibration import Calibration
from qr_core.analysis._binding import resolve_calibrations
from qr_core.analysis._calibrated import CalibrationUncertainty
from qr_core.analysis._errors import AnalysisError, ConfigHashError
from qr_core.analysis._groups import (
    DEFAULT_PRIOR_SD,
    GroupKey,
    GroupStats,
    group_label,
    group_records,
    group_stats,
    token_calibrations,
)
from qr_core.analysis._ks import DEFAULT_KS_REPLICATES
from qr_core.analysis._stats import BayesFactorResult, WelchResult, bayes_factor_normal, welch
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import (
    IncompleteRequest,
    InvalidRecordsError,
    Validation,
    validate,
)

__all__ = [
    "AnalysisReport",
    "GroupComparison",
    "analyze",
    "analyze_validated",
    "check_config_hashes",
    "compare",
]


@dataclass(frozen=True, slots=True)
class GroupComparison:
    """Group A against group B (for example experiment arm against control arm)."""

    label_a: str
    """Label of group A."""
    label_b: str
    """Label of group B."""
    tokens_a: int
    """Tokens in group A."""
    tokens_b: int
    """Tokens in group B."""
    test: WelchResult
    """Welch's test of mean z (A - B) with the 95% interval of the difference and the
    calibrations' terms."""
    bayes: BayesFactorResult
    """Bayes factor for a difference of mean z (model standard error
    ``sqrt(1/n_a + 1/n_b + offset variance)``)."""


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """Everything ``qr-analyze`` prints."""

    tokens: int
    """Number of tokens (valid, not discarded)."""
    requests: int
    """Number of distinct request ids."""
    sources: Mapping[str, int]
    """Tokens per entropy source name (the source that delivered the bytes)."""
    fallback_tokens: int
    """Tokens whose entropy came from the fallback source."""
    config_hashes: Mapping[str, int]
    """Tokens per configuration hash."""
    overall: GroupStats
    """All tokens."""
    group_by: GroupKey
    """The field ``groups`` are made by."""
    groups: tuple[GroupStats, ...]
    """One entry per value of ``group_by`` (unlabelled last), sorted by label."""
    comparison: GroupComparison | None
    """Two-group comparison, when asked for."""
    discarded: int
    """Records with ``discarded=true``: entropy drawn, no output token; not analysed."""
    skipped: int
    """Invalid records left out (impossible values or duplicates)."""
    incomplete: tuple[IncompleteRequest, ...]
    """Requests whose token indexes have gaps."""
    prior_mean: float
    """Mean of the Bayes-factor prior on the shift of mean z."""
    prior_sd: float
    """Standard deviation of that prior."""
    calibrations: Mapping[str, CalibrationUncertainty | None] = dataclasses.field(
        default_factory=dict
    )
    """Each calibration the tokens name (sha256) with its error; ``None`` for one taken
    as exact (``assume_exact_calibration``)."""
    ks_replicates: int = DEFAULT_KS_REPLICATES
    """R of the calibrated groups' Monte Carlo KS tests."""

    @property
    def fallback_share(self) -> float:
        """Share of tokens from the fallback source."""
        return self.fallback_tokens / self.tokens if self.tokens else math.nan

    def to_json_dict(self) -> dict[str, object]:
        """Return the report as JSON-ready data (NaN and infinities become ``None``)."""
        data = asdict(self)
        data["fallback_share"] = self.fallback_share
        data["calibrations"] = {
            sha: None if c is None else c.json() for sha, c in self.calibrations.items()
        }
        return {k: _json_safe(v) for k, v in data.items()}


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def compare(
    label_a: str,
    records_a: Sequence[TokenSamplingRecord],
    label_b: str,
    records_b: Sequence[TokenSamplingRecord],
    *,
    prior_mean: float = 0.0,
    prior_sd: float = DEFAULT_PRIOR_SD,
    calibrations: Mapping[str, CalibrationUncertainty | None] | None = None,
) -> GroupComparison:
    """Compare mean z of two groups: Welch's test and a Bayes factor, each with the
    calibrations' terms (``calibrations`` as for :func:`group_stats`).

    Raises:
        AnalysisError: A group has fewer than 2 tokens (the message names it).
    """
    for label, group in ((label_a, records_a), (label_b, records_b)):
        if len(group) < 2:
            raise AnalysisError(f"group {label!r} has {len(group)} tokens; comparison needs >= 2")
    test = welch(
        [r.z_score for r in records_a],
        [r.z_score for r in records_b],
        token_calibrations(records_a, calibrations),
        token_calibrations(records_b, calibrations),
    )
    bayes = bayes_factor_normal(
        test.difference, test.model_standard_error, prior_mean=prior_mean, prior_sd=prior_sd
    )
    return GroupComparison(label_a, label_b, len(records_a), len(records_b), test, bayes)


def analyze(
    records: Sequence[TokenSamplingRecord],
    *,
    by: GroupKey = "tag",
    a: str | None = None,
    b: str | None = None,
    prior_mean: float = 0.0,
    prior_sd: float = DEFAULT_PRIOR_SD,
    calibration_files: Sequence[Calibration] = (),
    assume_exact_calibration: bool = False,
    ks_replicates: int = DEFAULT_KS_REPLICATES,
) -> AnalysisReport:
    """Validate and analyse token records.

    Args:
        records: The records, in any order; discarded ones are counted, not analysed.
        by: Group tokens by request tag or by experiment arm.
        a: With ``b``: compare the ``by`` group named ``a`` (group A) against ``b``.
        b: See ``a``.
        prior_mean: Mean of the normal prior on the shift of mean z (Bayes factor).
        prior_sd: Its standard deviation.
        calibration_files: Calibration files for records that name a calibration but
            do not carry its figures (schema 1 and 2); each must be one the records name.
        assume_exact_calibration: Take such records as exact instead of refusing them.
        ks_replicates: R of the calibrated groups' Monte Carlo KS tests.

    Returns:
        The report.

    Raises:
        InvalidRecordsError: A record has impossible values or duplicates another.
        CalibrationError: Records and calibrations do not belong together (see
            :func:`resolve_calibrations`).
        AnalysisError: No tokens, only one of ``a`` and ``b``, a compared group with
            fewer than 2 tokens, or a bad ``by`` or prior.
    """
    checked = validate(records)
    if checked.problems:
        raise InvalidRecordsError(checked.problems)
    return analyze_validated(
        checked,
        by=by,
        a=a,
        b=b,
        prior_mean=prior_mean,
        prior_sd=prior_sd,
        calibration_files=calibration_files,
        assume_exact_calibration=assume_exact_calibration,
        ks_replicates=ks_replicates,
    )


def analyze_validated(
    checked: Validation,
    *,
    by: GroupKey = "tag",
    a: str | None = None,
    b: str | None = None,
    prior_mean: float = 0.0,
    prior_sd: float = DEFAULT_PRIOR_SD,
    calibration_files: Sequence[Calibration] = (),
    assume_exact_calibration: bool = False,
    ks_replicates: int = DEFAULT_KS_REPLICATES,
) -> AnalysisReport:
    """Analyse the tokens of a :func:`validate` outcome; its problems count as skipped.

    Arguments and errors as for :func:`analyze` (without the validation).
    """
    tokens = checked.tokens
    if not tokens:
        raise AnalysisError("no records to analyse")
    if (a is None) != (b is None):
        raise AnalysisError("a and b (the compared groups) must be given together")
    if not (math.isfinite(prior_mean) and math.isfinite(prior_sd) and prior_sd > 0):
        raise AnalysisError(
            f"prior must have a finite mean and a positive finite sd, got "
            f"prior_mean={prior_mean!r}, prior_sd={prior_sd!r}"
        )
    calibrations = resolve_calibrations(
        tokens, calibration_files, assume_exact=assume_exact_calibration
    )
    prior = {"prior_mean": prior_mean, "prior_sd": prior_sd}
    groups = group_records(tokens, by)
    comparison = None
    if a is not None and b is not None:
        comparison = compare(
            group_label(by, a),
            groups.get(a, []),
            group_label(by, b),
            groups.get(b, []),
            calibrations=calibrations,
            **prior,
        )

    def stats(label: str, records: Sequence[TokenSamplingRecord]) -> GroupStats:
        return group_stats(
            label, records, calibrations=calibrations, ks_replicates=ks_replicates, **prior
        )

    overall = stats("all", tokens)
    return AnalysisReport(
        tokens=overall.tokens,
        requests=overall.requests,
        sources=dict(collections.Counter(r.entropy_source for r in tokens).most_common()),
        fallback_tokens=overall.fallback_tokens,
        config_hashes=dict(collections.Counter(r.config_hash for r in tokens).most_common()),
        overall=overall,
        group_by=by,
        groups=tuple(stats(group_label(by, k), v) for k, v in groups.items()),
        comparison=comparison,
        discarded=checked.discarded,
        skipped=len(checked.problems),
        incomplete=checked.incomplete,
        prior_mean=prior_mean,
        prior_sd=prior_sd,
        calibrations=calibrations,
        ks_replicates=ks_replicates,
    )


def check_config_hashes(
    records: Sequence[TokenSamplingRecord],
    *,
    expected: str | None = None,
    allow_mixed: bool = False,
    by: GroupKey | None = None,
) -> dict[str, int]:
    """Check records against a pre-registered configuration hash.

    Args:
        records: The tokens.
        expected: Every record must carry this ``config_hash``.
        allow_mixed: Accept records made under different configurations.
        by: ``"arm"``: arms have different configurations by design (a calibration,
            a source), so one configuration per arm is expected and accepted; a mix
            inside one arm is still refused.

    Returns:
        Tokens per configuration hash.

    Raises:
        ConfigHashError: A record's hash differs from ``expected``, or several hashes
            occur (inside one arm, with ``by="arm"``) and ``allow_mixed`` is false. The
            message lists the hashes found.
    """
    counts = dict(collections.Counter(r.config_hash for r in records).most_common())
    found = ", ".join(f"{h} ({n} tokens)" for h, n in counts.items())
    if expected is not None and set(counts) != {expected}:
        raise ConfigHashError(f"expected config hash {expected} on every record; found {found}")
    if len(counts) > 1 and not allow_mixed:
        if by == "arm":
            for arm, group in group_records(records, "arm").items():
                inside = collections.Counter(r.config_hash for r in group).most_common()
                if len(inside) > 1:
                    listed = ", ".join(f"{h} ({n} tokens)" for h, n in inside)
                    raise ConfigHashError(
                        f"{group_label('arm', arm)} has records from {len(inside)} "
                        f"configurations: {listed}; pass allow_mixed "
                        "(--allow-mixed-configs) to analyse them together"
                    )
            return counts
        raise ConfigHashError(
            f"records come from {len(counts)} configurations: {found}; "
            "pass allow_mixed (--allow-mixed-configs) to analyse them together"
        )
    return counts
