"""Two problems in one message and repeat contacts, as whole conversations through the resolver."""

from __future__ import annotations

import dataclasses

from agent.episodes import EpisodeStore
from app.runtime import Runtime
from tests.conftest import Clock, latest_code


def episodes(runtime: Runtime, cid: str) -> list[tuple[str | None, str, list[int]]]:
    store = runtime.resolver.deps.episodes
    assert isinstance(store, EpisodeStore)
    return [(e.runbook_id, e.outcome, e.steps_tried) for e in store.for_conversation(cid)]


def continue_policy(runtime: Runtime) -> None:
    deps = runtime.resolver.deps
    recontact = deps.pack.policy.recontact.model_copy(update={"action": "continue"})
    deps.pack = dataclasses.replace(deps.pack, policy=deps.pack.policy.model_copy(update={"recontact": recontact}))


def test_second_problem_waits_and_begins_when_the_first_is_solved(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    first = resolver.send(cid, "my printer won't print and also teams crashes when I share my screen")
    assert len(first.replies) == 1
    assert "two problems" in first.replies[0]
    assert '"my printer won\'t print"' in first.replies[0]
    assert '"teams crashes when I share my screen"' in first.replies[0]
    assert resolver.view(cid)["runbook_id"] == "printer-problem"
    solved = resolver.send(cid, "yes that worked")
    assert len(solved.replies) == 2
    assert "marked this as solved" in solved.replies[0]
    assert solved.replies[1].startswith('Now the other problem you mentioned: "teams crashes when I share my screen"')
    state = resolver.view(cid)
    assert (state["stage"], state["runbook_id"], state["queued_problems"]) == ("confirm", "meeting-audio-video", [])
    assert episodes(runtime, cid) == [
        ("printer-problem", "confirmed", [0]),
        ("meeting-audio-video", "in_progress", [0]),
    ]
    last = resolver.send(cid, "yes that worked")
    assert last.replies == [last.replies[0]] and "marked this as solved" in last.replies[0]
    assert episodes(runtime, cid)[1][1] == "confirmed"


def test_a_handoff_of_the_first_problem_names_both(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    result = resolver.send(cid, "my laptop screen is cracked, plus outlook isn't syncing my email")
    assert result.stage == "handed_off"
    assert "other problem you mentioned" in result.replies[0]
    packet = runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
    assert packet.runbook_id == "hardware-damage"
    assert [(q.runbook_id, q.summary) for q in packet.queued_problems] == [
        ("email-sync", "outlook isn't syncing my email")
    ]
    assert episodes(runtime, cid) == [("hardware-damage", "handed_off", []), ("email-sync", "handed_off", [])]


def test_one_problem_with_a_joining_word_is_one_problem(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    result = resolver.send(cid, "my printer won't print and also it makes a grinding noise")
    assert "two problems" not in result.replies[0]
    assert resolver.view(cid).get("queued_problems") is None


def test_saying_it_is_a_repeat_hands_off(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    result = resolver.send(cid, "this is the third time I'm writing about my vpn, it keeps dropping")
    assert result.stage == "handed_off"
    packet = runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
    assert (packet.runbook_id, packet.reason_codes) == ("vpn-connection", ["runbook_matched", "repeat_contact"])
    assert "come back about this" in result.replies[0]


def test_back_about_the_same_runbook_in_the_conversation_hands_off_with_the_earlier_episode(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    resolver.send(cid, "my vpn keeps dropping")
    resolver.send(cid, "yes that worked")
    result = resolver.send(cid, "my vpn keeps dropping")
    assert result.stage == "handed_off"
    packet = runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
    assert "repeat_contact" in packet.reason_codes
    assert [(e.runbook_id, e.outcome, e.steps_tried) for e in packet.earlier_episodes] == [
        ("vpn-connection", "reopened", [0])
    ]
    assert episodes(runtime, cid) == [("vpn-connection", "reopened", [0]), ("vpn-connection", "handed_off", [])]


def test_another_runbook_after_a_resolved_one_is_no_repeat(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    resolver.send(cid, "my vpn keeps dropping")
    resolver.send(cid, "yes that worked")
    result = resolver.send(cid, "my laptop is very slow")
    assert result.stage == "confirm"
    assert resolver.view(cid)["runbook_id"] == "slow-laptop"


def test_continue_picks_up_at_the_first_step_not_tried(runtime: Runtime) -> None:
    continue_policy(runtime)
    resolver = runtime.resolver
    steps = runtime.pack.runbooks["vpn-connection"].steps
    cid = resolver.start("chat")
    resolver.send(cid, "my vpn keeps dropping")
    resolver.send(cid, "no")
    resolver.send(cid, "yes that worked")
    result = resolver.send(cid, "my vpn keeps dropping")
    assert result.stage == "confirm"
    assert "pick up at step 3" in result.replies[0]
    assert steps[2].text in result.replies[0]
    assert resolver.view(cid)["step"] == 2
    assert episodes(runtime, cid)[-1] == ("vpn-connection", "in_progress", [2])


def _reset_password(runtime: Runtime, email: str) -> str:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    resolver.send(cid, "I forgot my password")
    resolver.send(cid, email)
    return cid


def test_the_same_verified_customer_in_a_new_conversation_is_a_repeat(runtime: Runtime, clock: Clock) -> None:
    resolver = runtime.resolver
    first = _reset_password(runtime, "li.wei@example.com")
    resolver.send(first, latest_code(runtime, first))
    resolver.send(first, "yes")
    clock.advance(hours=2)
    second = _reset_password(runtime, "Li.Wei@example.com")
    result = resolver.send(second, latest_code(runtime, second))
    assert result.stage == "handed_off"
    packet = runtime.resolver.deps.handoffs.for_conversation(second)[-1]
    assert packet.reason_codes == ["repeat_contact"]
    assert packet.customer.verified
    assert [(e.conversation_id, e.outcome) for e in packet.earlier_episodes] == [(first, "reopened")]


def test_two_customers_whose_masked_addresses_match_are_not_linked(runtime: Runtime, clock: Clock) -> None:
    # jane.doe@ and jim.doe@ both show as j***@example.com; only the real address may link conversations.
    jane = runtime.directory.find_by_email("jane.doe@example.com")
    assert jane is not None
    jim = jane.model_copy(update={"account_id": "acc-9001", "email": "jim.doe@example.com", "name": "Jim"})
    runtime.directory.add(jim)
    resolver = runtime.resolver
    first = _reset_password(runtime, "jane.doe@example.com")
    resolver.send(first, latest_code(runtime, first))
    resolver.send(first, "yes")
    clock.advance(hours=2)
    second = _reset_password(runtime, "jim.doe@example.com")
    result = resolver.send(second, latest_code(runtime, second))
    assert result.stage == "confirm"
    assert runtime.resolver.deps.handoffs.for_conversation(second) == []


def test_past_the_window_a_verified_customer_starts_afresh(runtime: Runtime, clock: Clock) -> None:
    resolver = runtime.resolver
    first = _reset_password(runtime, "li.wei@example.com")
    resolver.send(first, latest_code(runtime, first))
    resolver.send(first, "yes")
    clock.advance(hours=73)
    second = _reset_password(runtime, "li.wei@example.com")
    result = resolver.send(second, latest_code(runtime, second))
    assert result.stage == "confirm"
    assert episodes(runtime, first) == [("password-reset", "confirmed", [0])]


def test_a_queued_problem_whose_step_runs_a_tool_first_is_still_introduced(runtime: Runtime) -> None:
    resolver = runtime.resolver
    cid = resolver.start("chat")
    first = resolver.send(cid, "is the email service down right now? plus my printer won't print")
    assert first.replies[0].startswith('You mentioned two problems: "is the email service down right now?"')
    assert resolver.view(cid)["runbook_id"] == "service-status"
    resolver.send(cid, "yes")
    cid = resolver.start("chat")
    resolver.send(cid, "my printer won't print and also is the email service down right now?")
    solved = resolver.send(cid, "yes")
    assert solved.replies[1].startswith('Now the other problem you mentioned: "is the email service down right now?"')
    assert [c["tool"] for c in (resolver.view(cid).get("attempts") or []) if c["kind"] == "tool"] == [
        "check_service_status"
    ]
