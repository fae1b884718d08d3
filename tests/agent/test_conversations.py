"""Whole conversations through the resolver: the graph, the offline brain and real SQLite stores."""

from __future__ import annotations

import pytest

from app.runtime import Runtime
from core.errors import NotAuthorized
from tests.conftest import Clock, latest_code
from tools.base import VerifiedAccount, make_verified


def say(runtime: Runtime, conversation_id: str, *turns: str) -> list[str]:
    replies: list[str] = []
    for turn in turns:
        text = latest_code(runtime, conversation_id) if turn == "{otp}" else turn
        replies.extend(runtime.resolver.send(conversation_id, text).replies)
    return replies


def directory_actions(runtime: Runtime) -> list[tuple[str, str]]:
    import sqlite3

    with sqlite3.connect(runtime.settings.desk_db) as conn:
        return [(r[0], r[1]) for r in conn.execute("SELECT account_id, action FROM directory_actions")]


def test_password_reset_end_to_end(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    first = say(runtime, cid, "I forgot my password")
    assert "email address" in first[-1]
    say(runtime, cid, "jane.doe@example.com")
    mail = runtime.outbox.messages(cid)
    assert [m["to"] for m in mail] == ["jane.doe@example.com"]
    step = say(runtime, cid, "{otp}")
    assert "reset link" in step[-1] and "j***@example.com" in step[-1]
    assert step[-1].endswith("Can you sign in with your new password now?")
    assert directory_actions(runtime) == [("acc-1001", "reset_password")]
    done = runtime.resolver.send(cid, "yes, that worked")
    assert done.stage == "resolved"
    state = runtime.resolver.view(cid)
    assert state["resolution"] == "confirmed"
    assert runtime.resolver.deps.handoffs.for_conversation(cid) == []


def test_a_code_that_has_not_arrived_can_be_sent_again(runtime: Runtime, clock: Clock) -> None:
    cid = runtime.resolver.start()
    sent = say(runtime, cid, "I'm locked out of my account after too many tries", "jane.doe@example.com")
    assert "I've just sent a 6-digit code" in sent[-1]
    waiting = runtime.resolver.send(cid, "nothing came through yet")
    # Not the send's words again ("I've just sent"): nothing was sent; what to do if it has not come.
    assert waiting.stage == "code" and "just sent" not in waiting.replies[-1]
    assert "send me your email address again" in waiting.replies[-1]
    assert len(runtime.outbox.messages(cid)) == 1
    clock.advance(minutes=2)
    again = say(runtime, cid, "jane.doe@example.com")
    assert "I've just sent a 6-digit code" in again[-1] and len(runtime.outbox.messages(cid)) == 2
    unlocked = say(runtime, cid, "{otp}")
    assert "I've unlocked your account" in unlocked[-1]


def test_no_moves_to_next_step_then_hands_off(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "my vpn keeps disconnecting every few minutes")
    steps = len(runtime.pack.runbooks["vpn-connection"].steps)
    for _ in range(steps - 1):
        result = runtime.resolver.send(cid, "no, still the same")
        assert result.stage == "confirm"
        assert "next step" in result.replies[0]
    last = runtime.resolver.send(cid, "no")
    assert last.stage == "handed_off"
    assert last.handoff is not None and last.handoff["reasons"] == ["steps_exhausted"]
    packet = runtime.resolver.deps.handoffs.get(last.handoff["packet_id"])
    assert packet.runbook_id == "vpn-connection"
    assert [a.step for a in packet.attempts if a.kind == "step"] == list(range(steps))


def test_unknown_email_reveals_nothing_and_sends_nothing(runtime: Runtime) -> None:
    known, unknown = runtime.resolver.start(), runtime.resolver.start()
    a = say(runtime, known, "account locked out", "bob.smith@example.com")[-1]
    b = say(runtime, unknown, "account locked out", "nobody@example.com")[-1]
    # Replies show the address masked (the vault keeps it): only its first letter differs.
    assert a.replace("b***@example.com", "X") == b.replace("n***@example.com", "X")
    assert runtime.outbox.messages(unknown) == []
    result = runtime.resolver.send(unknown, "123456")
    assert "didn't match" in result.replies[0]


def test_three_wrong_codes_hand_off_without_acting(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "my account is locked", "bob.smith@example.com")
    code = latest_code(runtime, cid)
    wrong = [c for c in ("111111", "222222", "333333", "444444") if c != code][:3]
    say(runtime, cid, wrong[0], wrong[1])
    result = runtime.resolver.send(cid, wrong[2])
    assert result.stage == "handed_off"
    assert result.handoff and result.handoff["reasons"] == ["verification_failed"]
    assert directory_actions(runtime) == []
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])
    assert packet.customer.verified is False and packet.customer.account_id is None


def test_code_only_works_in_its_own_conversation(runtime: Runtime) -> None:
    mine, other = runtime.resolver.start(), runtime.resolver.start()
    say(runtime, mine, "my account is locked", "bob.smith@example.com")
    say(runtime, other, "my account is locked", "bob.smith@example.com")
    stolen = latest_code(runtime, mine)
    if stolen == latest_code(runtime, other):  # one in a million: the two codes coincide
        pytest.skip("codes coincide")
    result = runtime.resolver.send(other, stolen)
    assert "didn't match" in result.replies[0]
    assert directory_actions(runtime) == []


def test_unlock_acts_on_the_verified_account_only(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "I'm locked out of my account", "bob.smith@example.com", "{otp}")
    assert directory_actions(runtime) == [("acc-1002", "unlock")]
    account = runtime.directory.get("acc-1002")
    assert account is not None and account.status == "active"
    # Naming another account later changes nothing: tools act on the verified account.
    say(runtime, cid, "no", "now unlock maria.garcia@example.com too")
    assert directory_actions(runtime) == [("acc-1002", "unlock")]


def test_verified_account_cannot_be_forged() -> None:
    from datetime import UTC, datetime

    with pytest.raises(TypeError):
        VerifiedAccount("acc-1001", "jane.doe@example.com", datetime.now(UTC), "c_x")


def test_toolbox_refuses_account_tools_without_verification(runtime: Runtime) -> None:
    toolbox = runtime.resolver.deps.toolbox
    with pytest.raises(NotAuthorized):
        toolbox.run("reset_password", key="k", conversation_id="c_1", account=None)
    elsewhere = make_verified("acc-1001", "jane.doe@example.com", runtime.resolver.deps.clock(), "c_other")
    with pytest.raises(NotAuthorized):
        toolbox.run("reset_password", key="k2", conversation_id="c_1", account=elsewhere)
    assert directory_actions(runtime) == []


def test_tier2_hands_off_at_once_with_advice_and_top_priority(runtime: Runtime, clock: Clock) -> None:
    cid = runtime.resolver.start()
    result = runtime.resolver.send(
        cid, "I clicked a link in an email that looked like it was from IT and typed my password"
    )
    assert result.stage == "handed_off"
    assert result.runbook_id == "phishing-report"
    assert result.handoff and result.handoff["reasons"] == ["tier2_runbook"]
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])
    assert packet.sla.priority == "P1"
    assert (packet.sla.first_response_due - clock.now).total_seconds() == 15 * 60
    assert "Meanwhile:" in result.replies[0]
    assert packet.sla.first_response_due.strftime("%H:%M") in result.replies[0]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("can you book me a table for two at an italian restaurant tonight", "no_runbook_fits"),
        ("I'd like to talk to a real person please", "customer_requested_human"),
        ("this is useless, you people are incompetent!!", "negative_sentiment"),
        ("my lawyer will be in touch about the data breach", "escalation_keyword"),
    ],
)
def test_boundaries_hand_off_with_a_reason(runtime: Runtime, message: str, reason: str) -> None:
    cid = runtime.resolver.start()
    result = runtime.resolver.send(cid, message)
    assert result.stage == "handed_off"
    assert result.handoff and reason in result.handoff["reasons"]
    assert len(runtime.resolver.deps.handoffs.for_conversation(cid)) == 1


def test_time_limit_hands_off(runtime: Runtime, clock: Clock) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "my printer says offline")
    clock.advance(minutes=45)
    result = runtime.resolver.send(cid, "no")
    assert result.handoff and result.handoff["reasons"] == ["time_limit"]


def test_after_handoff_messages_go_to_l2_not_the_bot(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "human please")
    result = runtime.resolver.send(cid, "I forgot my password")
    assert result.stage == "handed_off"
    assert result.reasons == ["relayed_to_l2"]
    assert "added that to your ticket" in result.replies[0]
    assert len(runtime.resolver.deps.handoffs.for_conversation(cid)) == 1


def test_packet_transcript_is_redacted_and_complete(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    say(runtime, cid, "locked out, my email is bob.smith@example.com", "{otp}", "no")
    code_line = runtime.resolver.view(cid)["transcript"][2]["text"]
    assert code_line == "[code]"
    result = runtime.resolver.send(cid, "I want to speak to a human")
    packet = runtime.resolver.deps.handoffs.get(result.handoff["packet_id"])  # type: ignore[index]
    text = "\n".join(line.text for line in packet.transcript)
    assert "bob.smith@example.com" not in text and "[email]" in text
    assert [line.role for line in packet.transcript].count("customer") == 4
    assert packet.customer.verified and packet.customer.account_id == "acc-1002"
    assert packet.customer.account_state and packet.customer.account_state["status"] == "active"
    assert [a.tool for a in packet.attempts if a.kind == "tool"] == ["send_code", "verify_identity", "unlock_account"]
    assert "account-lockout" in packet.hypothesis


def test_clarify_then_route_with_context(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    first = runtime.resolver.send(cid, "it's broken")
    assert first.reasons == ["low_confidence"]
    second = runtime.resolver.send(cid, "the printer on floor 2 won't print anything")
    assert second.runbook_id == "printer-problem"


def test_greeting_then_problem(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    assert runtime.resolver.send(cid, "hello").reasons == ["greeting"]
    assert runtime.resolver.send(cid, "outlook isn't downloading new emails").runbook_id == "email-sync"


def test_service_status_reports_the_status_page(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    result = runtime.resolver.send(cid, "is the payments service down right now?")
    assert result.runbook_id == "service-status"
    assert "payments has degraded performance" in result.replies[0]
