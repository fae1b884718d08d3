"""Incident expectations: a case that must open or join an incident, counted apart from containment."""

from __future__ import annotations

from typing import Any

from eval.cases import Case
from eval.scoring import Outcome, failures, summarize


def case(n: int, **expect: Any) -> Case:
    return Case.model_validate(
        {"id": f"i{n}", "turns": ["all of us are offline"], "expect": {"handoff": False, **expect}}
    )


def outcome(incident_id: str | None, *, handoff: bool = False) -> Outcome:
    return Outcome(
        handoff=handoff, runbook=None, confidence=0.0, reasons=[], calls=[], turns=[], incident_id=incident_id
    )


def test_an_expected_incident_must_be_opened_or_joined() -> None:
    assert failures(case(1, incident=True), outcome("INC-1")) == []
    assert failures(case(1, incident=True), outcome(None)) == ["expected an incident, got none"]
    assert failures(case(1, incident=False), outcome("INC-1")) == ["expected no incident, got INC-1"]
    assert failures(case(1), outcome("INC-1")) == []  # a case that says nothing of incidents is not judged on one


def test_summary_counts_incidents_apart_and_keeps_containment() -> None:
    cases = [case(1, incident=True), case(2, incident=True), case(3), case(4, handoff=True)]
    outcomes = [outcome("INC-1"), outcome(None), outcome("INC-2"), outcome(None, handoff=True)]
    summary = summarize(cases, outcomes)
    assert (summary["incidents"], summary["incident_recall"]) == (2, 0.5)
    # containment_rate keeps DESIGN.md's meaning: the share of all cases not handed off.
    assert summary["containment_rate"] == 0.75
    assert summarize([case(3)], [outcome(None)])["incident_recall"] is None
