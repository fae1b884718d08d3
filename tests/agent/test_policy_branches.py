"""The boundary on runbooks that branch, table-driven: outcomes, conditions, slots and switching runbook."""

from __future__ import annotations

from typing import Any

import pytest

from agent.policy import Facts, RunbookFacts, StepFacts, decide
from agent.state import Decision, Scored, Understanding
from core.pack import Condition, Policy

POLICY = Policy.model_validate(
    {"routing": {"min_score": 0.55, "min_margin": 0.02, "clarify_floor": 0.45}, "escalation_keywords": ["lawyer"]}
)
SIGNAL_STEPS = (
    StepFacts(
        "airplane",
        {
            "fixed": ("resolved", None),
            "abroad": ("roaming", None),
            "sim-locked": ("handoff", "sim_locked"),
            "no-change": ("next", None),
        },
    ),
    StepFacts("restart", {}),
    StepFacts(
        "roaming", {"fixed": ("resolved", None), "no-change": ("next", None)}, Condition(slot="abroad", equals=True)
    ),
    StepFacts("top-up", {}, needs=("gigabytes",)),
)
RUNBOOKS = {
    "no-signal": RunbookFacts("no-signal", 1, False, (None, None, None, None), steps=SIGNAL_STEPS),
    "sim-locked": RunbookFacts("sim-locked", 2, False, (None,)),
    "vpn-connection": RunbookFacts("vpn-connection", 1, False, (None, None)),
}


def u(text: str = "msg", *cands: tuple[str, float], **kw: Any) -> Understanding:
    return Understanding(text=text, candidates=[Scored(runbook_id=r, score=s) for r, s in cands], **kw)


def at(step: int, stage: str, understanding: Understanding, **kw: Any) -> Facts:
    return Facts(stage=stage, understanding=understanding, runbooks=RUNBOOKS, runbook_id="no-signal", step=step, **kw)  # type: ignore[arg-type]


ROWS: list[tuple[str, Facts, str, list[str], dict[str, Any]]] = [
    (
        "an outcome that resolves",
        at(0, "confirm", u("the bars are back", outcome="fixed")),
        "close_resolved",
        ["outcome_matched", "customer_confirmed"],
        {"outcome": "fixed"},
    ),
    (
        "an outcome that names a step",
        at(0, "confirm", u("I'm in Spain", outcome="abroad")),
        "goto_step",
        ["outcome_matched"],
        {"to_step": 2, "outcome": "abroad"},
    ),
    (
        "an outcome that hands off carries its own reason",
        at(0, "confirm", u("it wants a PUK", outcome="sim-locked")),
        "handoff",
        ["outcome_handoff"],
        {"note": "sim_locked", "outcome": "sim-locked"},
    ),
    (
        "an outcome that goes on",
        at(0, "confirm", u("still nothing", outcome="no-change")),
        "advance_step",
        ["outcome_matched", "step_did_not_work"],
        {},
    ),
    (
        "an answer that matches nothing is asked once more",
        at(0, "confirm", u("hmm what")),
        "reask_confirmation",
        ["unclear_answer"],
        {},
    ),
    (
        "and then a person takes over",
        at(0, "confirm", u("hmm what"), counters={"unclear": 1}),
        "handoff",
        ["unclear_response"],
        {},
    ),
    (
        "a step whose condition does not hold is skipped",
        at(2, "steps", u("x")),
        "skip_step",
        ["step_skipped"],
        {},
    ),
    (
        "a step whose condition holds is said",
        at(2, "steps", u("x"), slots={"abroad": "yes"}),
        "present_step",
        ["step_presented"],
        {},
    ),
    ("a missing slot is asked for", at(3, "steps", u("x")), "ask_slot", ["slot_required"], {"slot": "gigabytes"}),
    ("a filled slot lets the step run", at(3, "steps", u("x"), slots={"gigabytes": 2}), "present_step", [], {}),
    (
        "a valid answer fills the slot",
        at(3, "slot", u("2", slot_value=2), pending_slot="gigabytes"),
        "fill_slot",
        ["slot_filled"],
        {"slot": "gigabytes"},
    ),
    (
        "an invalid answer is asked again",
        at(3, "slot", u("lots", slot_problem="a number"), pending_slot="gigabytes"),
        "ask_slot",
        ["slot_invalid_answer"],
        {"slot": "gigabytes"},
    ),
    (
        "invalid answers past the limit hand off",
        at(3, "slot", u("lots", slot_problem="a number"), pending_slot="gigabytes", counters={"slot_invalid": 2}),
        "handoff",
        ["slot_invalid"],
        {},
    ),
    (
        "an answer that clearly fits another runbook switches to it",
        at(0, "confirm", u("now my vpn drops", ("vpn-connection", 0.9))),
        "present_step",
        ["topic_changed", "step_presented"],
        {"runbook_id": "vpn-connection"},
    ),
    (
        "a switch to a runbook that hands off says so",
        at(0, "confirm", u("now it wants a PUK code", ("sim-locked", 0.9))),
        "handoff",
        ["tier2_runbook", "runbook_switched"],
        {"runbook_id": "sim-locked"},
    ),
    (
        "a boundary crossed by a message about another runbook hands off that runbook",
        at(0, "confirm", u("my lawyer says the vpn is broken", ("vpn-connection", 0.9))),
        "handoff",
        ["escalation_keyword", "runbook_switched"],
        {"runbook_id": "vpn-connection"},
    ),
    (
        "a matched outcome is not taken for another runbook",
        at(0, "confirm", u("I'm abroad", ("vpn-connection", 0.9), outcome="abroad")),
        "goto_step",
        ["outcome_matched"],
        {"runbook_id": "no-signal"},
    ),
    (
        "the last step's next hands off",
        Facts(
            stage="confirm",
            understanding=u("no", outcome="no-change"),
            runbooks={
                "r": RunbookFacts("r", 1, False, (None,), steps=(StepFacts("a", {"no-change": ("next", None)}),))
            },
            runbook_id="r",
        ),
        "handoff",
        ["steps_exhausted"],
        {},
    ),
]


@pytest.mark.parametrize(("name", "situation", "action", "reasons", "fields"), ROWS, ids=[r[0] for r in ROWS])
def test_branch_decision(name: str, situation: Facts, action: str, reasons: list[str], fields: dict[str, Any]) -> None:
    decision: Decision = decide(situation, POLICY)
    assert decision.action == action
    if reasons:
        assert decision.reasons == reasons
    for key, value in fields.items():
        assert getattr(decision, key) == value


def test_the_condition_reads_a_tool_result() -> None:
    steps = (StepFacts("a", {}, Condition(result="roaming", equals=False)), StepFacts("b", {}))
    runbooks = {"r": RunbookFacts("r", 1, False, (None, None), steps=steps)}
    base = Facts(stage="steps", understanding=u("x"), runbooks=runbooks, runbook_id="r")
    assert decide(base, POLICY).action == "skip_step"
    assert decide(Facts(**{**base.__dict__, "last_result": {"roaming": False}}), POLICY).action == "present_step"
