"""The boundary for two problems in one message and for repeat contacts, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from agent.policy import EarlierEpisode, Facts, RunbookFacts, decide
from agent.state import Clause, Scored, Understanding
from core.pack import Policy

POLICY = Policy.model_validate({"routing": {"min_score": 0.55, "min_margin": 0.02, "clarify_floor": 0.45}})
CONTINUE = Policy.model_validate(
    {
        "routing": {"min_score": 0.55, "min_margin": 0.02, "clarify_floor": 0.45},
        "recontact": {"window_hours": 72, "action": "continue"},
    }
)
RUNBOOKS = {
    "printer-problem": RunbookFacts("printer-problem", 1, False, (None, None, None)),
    "meeting-audio-video": RunbookFacts("meeting-audio-video", 1, False, (None, None)),
    "vpn-connection": RunbookFacts("vpn-connection", 1, False, (None, None, None)),
    "password-reset": RunbookFacts("password-reset", 1, True, ("reset_password", None)),
    "hardware-damage": RunbookFacts("hardware-damage", 2, False, (None,)),
}


def clause(text: str, *cands: tuple[str, float]) -> Clause:
    return Clause(text=text, candidates=[Scored(runbook_id=r, score=s) for r, s in cands])


def u(text: str = "msg", *cands: tuple[str, float], **kw: Any) -> Understanding:
    return Understanding(text=text, candidates=[Scored(runbook_id=r, score=s) for r, s in cands], **kw)


def facts(understanding: Understanding, **kw: Any) -> Facts:
    return Facts(understanding=understanding, runbooks=RUNBOOKS, **{"stage": "triage", **kw})


PRINTER = ("printer-problem", 0.8)
TEAMS = ("meeting-audio-video", 0.75)
VPN = ("vpn-connection", 0.8)
BOTH = [clause("my printer won't print", PRINTER), clause("teams crashes when I share", TEAMS)]


def vpn_before(outcome: str = "confirmed", steps: tuple[int, ...] = (0,), hours: float = 2.0) -> EarlierEpisode:
    return EarlierEpisode(runbook_id="vpn-connection", outcome=outcome, steps_tried=steps, age_hours=hours)


TWO_PROBLEMS: list[tuple[str, Facts, str, list[str], list[str]]] = [
    (
        "two strong parts, two runbooks",
        facts(u("m", PRINTER, clauses=BOTH)),
        "present_step",
        ["runbook_matched", "step_presented", "two_problems"],
        ["meeting-audio-video"],
    ),
    (
        "two strong parts, the whole message fitting neither well",
        facts(u("m", ("printer-problem", 0.38), ("meeting-audio-video", 0.3), clauses=BOTH)),
        "present_step",
        ["runbook_matched", "step_presented", "two_problems"],
        ["meeting-audio-video"],
    ),
    (
        "second part weak: one problem",
        facts(u("m", PRINTER, clauses=[BOTH[0], clause("x", ("vpn-connection", 0.5))])),
        "present_step",
        ["runbook_matched", "step_presented"],
        [],
    ),
    (
        "first part weak: one problem",
        facts(u("m", TEAMS, clauses=[clause("x", ("vpn-connection", 0.5)), BOTH[1]])),
        "present_step",
        ["runbook_matched", "step_presented"],
        [],
    ),
    (
        "both parts the same runbook",
        facts(u("m", PRINTER, clauses=[BOTH[0], clause("it jams", PRINTER)])),
        "present_step",
        ["runbook_matched", "step_presented"],
        [],
    ),
    ("no clauses", facts(u("m", PRINTER)), "present_step", ["runbook_matched", "step_presented"], []),
    (
        "first part is tier 2: handed off, the second named",
        facts(u("m", TEAMS, clauses=[clause("screen cracked", ("hardware-damage", 0.8)), BOTH[1]])),
        "handoff",
        ["tier2_runbook", "two_problems"],
        ["meeting-audio-video"],
    ),
    (
        "after a resolved problem too",
        facts(u("m", PRINTER, clauses=BOTH), stage="resolved", runbook_id="vpn-connection"),
        "present_step",
        ["runbook_matched", "step_presented", "two_problems"],
        ["meeting-audio-video"],
    ),
    (
        "the queued problem begins after the first was solved",
        facts(u("teams crashes", TEAMS), stage="resolved", runbook_id="printer-problem", resumed=True),
        "present_step",
        ["next_problem", "step_presented"],
        [],
    ),
    (
        "mid-runbook a joining word is an answer, not a new problem",
        facts(u("m", PRINTER, clauses=BOTH, deny=True), stage="confirm", runbook_id="vpn-connection"),
        "advance_step",
        ["step_did_not_work"],
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "situation", "action", "reasons", "queued"), TWO_PROBLEMS, ids=[r[0] for r in TWO_PROBLEMS]
)
def test_two_problems(name: str, situation: Facts, action: str, reasons: list[str], queued: list[str]) -> None:
    decision = decide(situation, POLICY)
    assert decision.action == action
    assert decision.reasons == reasons
    assert decision.queued == queued


RECONTACT: list[tuple[str, Facts, Policy, str, list[str], int | None]] = [
    (
        "says so: handoff",
        facts(u("third time", VPN, says_repeat=True)),
        POLICY,
        "handoff",
        ["runbook_matched", "repeat_contact"],
        None,
    ),
    (
        "same runbook earlier: handoff",
        facts(u("vpn", VPN), earlier=(vpn_before(),)),
        POLICY,
        "handoff",
        ["runbook_matched", "repeat_contact"],
        None,
    ),
    (
        "earlier episode outside the window",
        facts(u("vpn", VPN), earlier=(vpn_before(hours=73),)),
        POLICY,
        "present_step",
        ["runbook_matched", "step_presented"],
        None,
    ),
    (
        "earlier episode of another runbook",
        facts(u("printer", PRINTER), earlier=(vpn_before(),)),
        POLICY,
        "present_step",
        ["runbook_matched", "step_presented"],
        None,
    ),
    (
        "continue: first untried step",
        facts(u("vpn", VPN), earlier=(vpn_before(steps=(0,)),)),
        CONTINUE,
        "present_step",
        ["runbook_matched", "repeat_contact", "step_presented"],
        1,
    ),
    (
        "continue: untried across episodes",
        facts(u("vpn", VPN), earlier=(vpn_before(steps=(0,)), vpn_before("handed_off", (1,)))),
        CONTINUE,
        "present_step",
        ["runbook_matched", "repeat_contact", "step_presented"],
        2,
    ),
    (
        "continue: every step tried",
        facts(u("vpn", VPN), earlier=(vpn_before(steps=(0, 1, 2)),)),
        CONTINUE,
        "handoff",
        ["runbook_matched", "repeat_contact"],
        None,
    ),
    (
        "continue: said so, nothing known",
        facts(u("third time", VPN, says_repeat=True)),
        CONTINUE,
        "handoff",
        ["runbook_matched", "repeat_contact"],
        None,
    ),
    (
        "judged once an episode: the step after a continue",
        facts(
            u("no", VPN),
            stage="steps",
            runbook_id="vpn-connection",
            step=1,
            counters={"recontact": 1},
            earlier=(vpn_before(),),
        ),
        CONTINUE,
        "present_step",
        ["step_presented"],
        None,
    ),
    (
        "verification first, then the repeat is judged",
        facts(u("forgot pw", ("password-reset", 0.8), says_repeat=True)),
        POLICY,
        "ask_identity",
        ["runbook_matched", "identity_required"],
        None,
    ),
    (
        "verified: the repeat said at the start hands off",
        facts(u("123456"), stage="steps", runbook_id="password-reset", verified=True, consumed=True, repeat_said=True),
        POLICY,
        "handoff",
        ["repeat_contact"],
        None,
    ),
    (
        "verified customer's earlier episode found after verification",
        facts(
            u("123456"),
            stage="steps",
            runbook_id="password-reset",
            verified=True,
            consumed=True,
            earlier=(EarlierEpisode("password-reset", "confirmed", (0,), 5.0),),
        ),
        POLICY,
        "handoff",
        ["repeat_contact"],
        None,
    ),
    (
        "no repeat: the steps go on",
        facts(u("123456"), stage="steps", runbook_id="password-reset", verified=True, consumed=True),
        POLICY,
        "run_tool",
        ["step_tool"],
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "situation", "policy", "action", "reasons", "from_step"), RECONTACT, ids=[r[0] for r in RECONTACT]
)
def test_recontact(
    name: str, situation: Facts, policy: Policy, action: str, reasons: list[str], from_step: int | None
) -> None:
    decision = decide(situation, policy)
    assert decision.action == action
    assert decision.reasons == reasons
    assert decision.from_step == from_step
    if action == "handoff":
        assert decision.runbook_id == (situation.runbook_id or situation.understanding.candidates[0].runbook_id)


def test_recontact_policy_is_validated() -> None:
    assert Policy().recontact.window_hours == 72
    assert Policy().recontact.action == "handoff"
    with pytest.raises(ValueError, match="action"):
        Policy.model_validate({"recontact": {"action": "restart"}})
    with pytest.raises(ValueError, match="window_hours"):
        Policy.model_validate({"recontact": {"window_hours": 0}})
