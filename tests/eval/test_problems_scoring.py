"""Per-problem expectations: each problem of a conversation scored on its own."""

from __future__ import annotations

from typing import Any

import pytest

from eval.cases import Case
from eval.scoring import Outcome, failures, problem_scores, summarize


def case(problems: list[dict[str, Any]], **expect: Any) -> Case:
    return Case.model_validate(
        {"id": "m", "turns": ["a and also b"], "expect": {"handoff": False, "problems": problems, **expect}}
    )


def outcome(*problems: tuple[str | None, str]) -> Outcome:
    return Outcome(
        handoff=False,
        runbook=problems[-1][0] if problems else None,
        confidence=0.8,
        reasons=[],
        calls=[],
        turns=[],
        problems=[{"runbook": r, "handoff": o == "handed_off", "outcome": o} for r, o in problems],
    )


PRINTER = {"runbook": "printer-problem", "handoff": False}
TEAMS = {"runbook": "meeting-audio-video", "handoff": False}


def test_both_problems_right() -> None:
    got = outcome(("printer-problem", "confirmed"), ("meeting-audio-video", "confirmed"))
    assert failures(case([PRINTER, TEAMS]), got) == []
    assert [s["passed"] for s in problem_scores(case([PRINTER, TEAMS]), got)] == [True, True]


@pytest.mark.parametrize(
    ("episodes", "message"),
    [
        ([("printer-problem", "confirmed")], "problem 2: never taken up (expected runbook 'meeting-audio-video')"),
        (
            [("printer-problem", "confirmed"), ("vpn-connection", "confirmed")],
            "problem 2: expected runbook 'meeting-audio-video', got 'vpn-connection'",
        ),
        (
            [("printer-problem", "confirmed"), ("meeting-audio-video", "handed_off")],
            "problem 2: expected no handoff, got 'handed_off'",
        ),
    ],
)
def test_each_problem_fails_on_its_own(episodes: list[tuple[str, str]], message: str) -> None:
    c = case([PRINTER, TEAMS])
    got = outcome(*episodes)
    assert failures(c, got) == [message]
    assert [s["passed"] for s in problem_scores(c, got)] == [True, False]


def test_summary_counts_problems_and_keeps_its_keys() -> None:
    cases = [case([PRINTER, TEAMS]), Case.model_validate({"id": "s", "turns": ["x"], "expect": {"handoff": False}})]
    outcomes = [outcome(("printer-problem", "confirmed")), outcome()]
    summary = summarize(cases, outcomes)
    assert (summary["problems"], summary["problem_accuracy"]) == (2, 0.5)
    assert summary["cases"] == 2 and "routing_accuracy" in summary and "wrong_resolution_rate" in summary
    assert summarize(cases[1:], outcomes[1:])["problem_accuracy"] is None


def test_a_problem_needs_runbook_and_handoff() -> None:
    with pytest.raises(ValueError, match="handoff"):
        case([{"runbook": "printer-problem"}])
