"""A mail thread is one conversation: coming back in it about the same runbook is a repeat contact."""

from __future__ import annotations

from app.runtime import Runtime
from tests.app.test_mail_channel import Mailbox, channel_of, replies_to


def test_back_in_the_same_mail_thread_about_the_same_runbook_hands_off(runtime: Runtime) -> None:
    box, email = Mailbox(), channel_of(runtime)
    first = email.receive(box.mail("my vpn keeps dropping every few minutes", subject="VPN"))
    cid = first.conversation_id
    assert cid is not None
    reply = replies_to(runtime, cid)[-1]
    solved = email.receive(box.mail("yes that worked, thanks", in_reply_to=reply["id"]))
    assert solved.conversation_id == cid and runtime.resolver.view(cid)["stage"] == "resolved"
    reply = replies_to(runtime, cid)[-1]
    back = email.receive(box.mail("my vpn keeps dropping every few minutes", in_reply_to=reply["id"]))
    assert (back.conversation_id, back.matched) == (cid, "thread")
    state = runtime.resolver.view(cid)
    assert state["stage"] == "handed_off"
    packet = runtime.resolver.deps.handoffs.get(state["handoff"]["packet_id"])
    assert "repeat_contact" in packet.reason_codes
    assert [(e.runbook_id, e.outcome) for e in packet.earlier_episodes] == [("vpn-connection", "reopened")]
