"""Runbooks that branch, played through the graph on the bundled pack: outcomes, the rephrased
question, an outcome that hands off, and a runbook switched mid-conversation."""

from __future__ import annotations

from app.runtime import Runtime


def play(runtime: Runtime, *turns: str) -> tuple[str, list[str]]:
    cid = runtime.resolver.start()
    replies: list[str] = []
    for text in turns:
        replies += runtime.resolver.send(cid, text).replies
    return cid, replies


def test_an_answer_in_words_resolves(runtime: Runtime) -> None:
    cid, replies = play(
        runtime,
        "my laptop won't connect to the office wifi",
        "oh the plane icon was on, I switched it off and the bars are back",
    )
    view = runtime.resolver.view(cid)
    assert view["stage"] == "resolved"
    assert "didn't catch that" not in replies[-1]
    answer = [a for a in view["attempts"] if a["kind"] == "answer"]
    assert [(a["step_id"], a["outcome"]) for a in answer] == [("reconnect", "fixed")]


def test_an_outcome_leads_to_the_step_it_names(runtime: Runtime) -> None:
    cid, replies = play(runtime, "wifi not working", "it says connected but there's no internet", "websites load now")
    # The guest sign-in step came straight after the first, and its answer closed the problem.
    assert "example.com" in replies[1]
    view = runtime.resolver.view(cid)
    assert view["stage"] == "resolved"
    assert [a["outcome"] for a in view["attempts"] if a["kind"] == "answer"] == ["no-internet", "fixed"]


def test_a_plain_no_still_walks_the_steps(runtime: Runtime) -> None:
    cid, _ = play(runtime, "printer shows offline", "no", "no", "no")
    view = runtime.resolver.view(cid)
    assert view["stage"] == "handed_off"
    assert view["handoff"]["reasons"] == ["steps_exhausted"]


def test_an_answer_that_matches_nothing_is_rephrased_once_then_handed_off(runtime: Runtime) -> None:
    cid, replies = play(runtime, "vpn won't connect from home", "purple monkey dishwasher")
    assert "For example, you could tell me:" in replies[-1]
    assert '"the vpn connects now"' in replies[-1]
    runtime.resolver.send(cid, "banana telephone")
    assert runtime.resolver.view(cid)["handoff"]["reasons"] == ["unclear_response"]


def test_an_outcome_that_hands_off_gives_its_reason_to_the_packet(runtime: Runtime) -> None:
    cid, _ = play(runtime, "the printer jammed again", "the paper jam keeps coming back every time")
    packet = runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
    assert packet.reason_codes == ["outcome_handoff", "printer_hardware_fault"]
    assert [(a.kind, a.outcome) for a in packet.attempts if a.kind == "answer"] == [("answer", "hardware-fault")]
    assert packet.runbook_id == packet.started_runbook_id == "printer-problem"


def test_an_answer_about_another_problem_switches_runbook_and_the_packet_names_both(runtime: Runtime) -> None:
    cid, _ = play(runtime, "wifi not working", "I think I clicked a phishing link and now the wifi is acting weird")
    packet = runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
    assert packet.runbook_id == "phishing-report"
    assert packet.started_runbook_id == "wifi-connection"
    assert "runbook_switched" in packet.reason_codes
    # The notes of the runbook that explains the handoff reach the technician.
    assert "phishing-report" in packet.hypothesis


def test_a_switch_to_a_runbook_the_bot_resolves_carries_on_there(runtime: Runtime) -> None:
    cid, _ = play(runtime, "the vpn keeps disconnecting", "now it says my password expired, I need a new password")
    view = runtime.resolver.view(cid)
    assert (view["stage"], view["runbook_id"], view["started_runbook_id"]) == (
        "identity",
        "password-reset",
        "vpn-connection",
    )
