"""The pre-registration plan file: parsed, checked, hashed as its bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qr_core.records import (
    PLAN_FORMAT,
    PreregistrationError,
    RecordError,
    StoppingRule,
    load_preregistration,
    parse_preregistration,
    preregistration_bytes,
)


def _plan(**changes: object) -> dict[str, object]:
    plan: dict[str, object] = {
        "format": PLAN_FORMAT,
        "hypothesis": "the qrng arm shifts mean z against the control arm",
        "design": "two-arm",
        "group_by": "arm",
        "arms": ["qrng", "control"],
        "tokens_per_arm": 1000,
        "alpha": 0.01,
        "primary_statistic": "z",
        "stopping_rule": {"type": "fixed"},
    }
    plan.update(changes)
    return {k: v for k, v in plan.items() if v is not None}


def _bytes(plan: dict[str, object]) -> bytes:
    return json.dumps(plan, indent=1).encode()


def test_a_valid_plan_reads_with_the_hash_of_its_bytes(tmp_path: Path) -> None:
    data = _bytes(_plan(planning={"effect": 0.02, "power": 0.8}, notes="pilot"))
    path = tmp_path / "plan.json"
    path.write_bytes(data)
    plan = load_preregistration(path)
    assert plan.sha256 == hashlib.sha256(data).hexdigest()  # what sha256sum prints
    assert (plan.design, plan.group_by, plan.arms) == ("two-arm", "arm", ("qrng", "control"))
    assert (plan.tokens_per_arm, plan.alpha, plan.primary_statistic) == (1000, 0.01, "z")
    assert plan.stopping == StoppingRule("fixed")
    assert plan.look_sizes() == (1000,)
    assert plan.planning == {"effect": 0.02, "power": 0.8}


def test_same_content_other_bytes_is_another_plan() -> None:
    a = parse_preregistration(_bytes(_plan()))
    b = parse_preregistration(json.dumps(_plan()).encode())
    assert a.sha256 != b.sha256


def test_group_sequential_looks_are_evenly_spaced() -> None:
    rule = {"type": "group-sequential", "looks": 3, "spending": "obrien-fleming"}
    plan = parse_preregistration(_bytes(_plan(tokens_per_arm=1001, stopping_rule=rule)))
    assert plan.stopping == StoppingRule("group-sequential", 3, "obrien-fleming")
    assert plan.look_sizes() == (334, 668, 1001)  # ceil(k N / K)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour": "blue"}, r"unknown=\['colour'\]"),
        ({"alpha": None}, r"missing=\['alpha'\]"),
        ({"format": "other/1"}, "format must be"),
        ({"hypothesis": "  "}, "hypothesis must be a non-empty string"),
        ({"design": "three-arm"}, r"design must be one of \['one-sample', 'two-arm'\]"),
        ({"group_by": "source"}, r"group_by must be one of \['arm', 'tag'\]"),
        ({"arms": ["qrng"]}, "arms must be a list of 2 distinct"),
        ({"arms": ["a", "a"]}, "arms must be a list of 2 distinct"),
        ({"tokens_per_arm": 1.5}, "tokens_per_arm must be an int >= 2"),
        ({"tokens_per_arm": True}, "tokens_per_arm must be an int >= 2"),
        ({"alpha": 1.0}, r"alpha must be a number in \(0, 1\)"),
        ({"primary_statistic": "ks"}, r"primary_statistic must be one of \['z', 'welch'\]"),
        ({"stopping_rule": {"type": "whenever"}}, "stopping_rule must be"),
        ({"stopping_rule": {"type": "fixed", "looks": 2}}, "has only a type"),
        (
            {"stopping_rule": {"type": "group-sequential", "looks": 1, "spending": "pocock"}},
            r"looks must be an int in \[2, 20\]",
        ),
        (
            {"stopping_rule": {"type": "group-sequential", "looks": 3, "spending": "haybittle"}},
            r"spending must be one of \['obrien-fleming', 'pocock'\]",
        ),
        (
            {
                "primary_statistic": "welch",
                "stopping_rule": {"type": "group-sequential", "looks": 3, "spending": "pocock"},
            },
            r"group-sequential design needs primary_statistic in \['z'\]",
        ),
        ({"planning": {"effect": "big"}}, "planning must be an object of finite numbers"),
    ],
)
def test_invalid_plans_are_refused_naming_the_field(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(PreregistrationError, match=message):
        parse_preregistration(_bytes(_plan(**changes)))


def test_one_sample_allows_the_group_statistics() -> None:
    plan = parse_preregistration(
        _bytes(_plan(design="one-sample", arms=["qrng"], primary_statistic="runs"))
    )
    assert plan.primary_statistic == "runs"


@pytest.mark.parametrize("data", [b"", b"[1]", b'{"alpha": NaN}', b"\xff"])
def test_not_a_plan_at_all(data: bytes) -> None:
    with pytest.raises(PreregistrationError):
        parse_preregistration(data)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PreregistrationError, match=r"cannot read plan file .*nope\.json"):
        load_preregistration(tmp_path / "nope.json")
    assert issubclass(PreregistrationError, RecordError)


def test_written_plan_reads_back() -> None:
    rule = StoppingRule("group-sequential", 4, "pocock")
    data = preregistration_bytes(
        hypothesis="h",
        design="one-sample",
        group_by="tag",
        arms=["experiment"],
        tokens_per_arm=500,
        alpha=0.05,
        primary_statistic="z",
        stopping=rule,
        planning={"effect": 0.1},
    )
    plan = parse_preregistration(data)
    assert (plan.group_by, plan.arms, plan.stopping) == ("tag", ("experiment",), rule)


def test_writing_an_invalid_plan_is_refused() -> None:
    with pytest.raises(PreregistrationError, match="arms must be"):
        preregistration_bytes(
            hypothesis="h",
            design="two-arm",
            group_by="arm",
            arms=["only"],
            tokens_per_arm=10,
            alpha=0.05,
            primary_statistic="z",
            stopping=StoppingRule("fixed"),
        )
