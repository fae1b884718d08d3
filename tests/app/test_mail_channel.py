"""The email channel over the real resolver: threads, de-duplication, chat continued by mail, L2 by mail."""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from agent.resolver import validate_message
from app.mail.channel import EmailChannel
from app.mail.inbound import InboundEmail, parse_inbound
from app.runtime import Runtime, desk_target
from core.db import open_database
from core.errors import ToolError
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)
from tests.conftest import Clock
from tools.outbox import FileOutbox

JANE = "Jane Doe <jane.doe@example.com>"
_ids = itertools.count(1)


def channel_of(runtime: Runtime) -> EmailChannel:
    assert runtime.email is not None
    return runtime.email


class Mailbox:
    """Writes mails as a customer's client would, numbering their Message-IDs."""

    def __init__(self, sender: str = JANE) -> None:
        self.sender = sender

    def mail(self, text: str, *, subject: str = "Help", in_reply_to: str = "", references: str = "") -> InboundEmail:
        fields = {
            "from": self.sender,
            "subject": subject,
            "text": text,
            "message_id": f"<{next(_ids)}@client.example>",
            "in_reply_to": in_reply_to,
            "references": references,
        }
        return parse_inbound(fields, own_address="help@acme.example", validate=lambda t: validate_message(t, 8000))


def replies_to(runtime: Runtime, cid: str) -> list[dict[str, Any]]:
    """Mail the customer got in a conversation, codes excluded."""
    return [m for m in runtime.outbox.messages(cid) if "in_reply_to" in m]


def latest_code(runtime: Runtime, cid: str) -> str:
    """The one-time code last mailed in a conversation (replies are mailed there too)."""
    codes = [m for m in runtime.outbox.messages(cid) if "in_reply_to" not in m]
    match = re.search(r"\b(\d{6})\b", codes[-1]["body"])
    assert match, codes
    return match.group(1)


def lines(runtime: Runtime, cid: str) -> list[tuple[str, str]]:
    return [(line.role, line.channel) for line in runtime.messages.lines(cid)]


def test_a_first_mail_opens_an_email_conversation_and_the_reply_is_threaded(runtime: Runtime) -> None:
    box = Mailbox()
    first = box.mail("I can't remember it and I'm locked out of everything.", subject="Forgot my password")
    got = channel_of(runtime).receive(first)
    assert (got.status, got.matched, got.replies_sent, got.replies_pending) == ("accepted", "new", 1, 0)
    cid = got.conversation_id
    assert cid is not None
    assert runtime.resolver.conversations.get(cid)["channel"] == "email"
    [reply] = replies_to(runtime, cid)
    assert reply["to"] == JANE
    assert reply["subject"] == "Re: Forgot my password"
    assert reply["in_reply_to"] == first.message_id
    assert reply["references"] == [first.message_id]
    assert "email address" in reply["body"] and "\n-- \n" in reply["body"]
    # The subject named the problem: the bot routed on it.
    assert runtime.resolver.view(cid)["runbook_id"] == "password-reset"
    assert lines(runtime, cid) == [("customer", "email"), ("bot", "email")]


def test_password_reset_entirely_by_mail(runtime: Runtime) -> None:
    box = Mailbox()
    email = channel_of(runtime)
    cid = email.receive(box.mail("I forgot my password", subject="password")).conversation_id
    assert cid is not None

    def answer(text: str) -> str:
        parent = replies_to(runtime, cid)[-1]
        got = email.receive(
            box.mail(
                f"{text}\n\nOn Mon, 23 Nov 2026 at 09:00, Acme Support <help@acme.example> wrote:\n> "
                + parent["body"].replace("\n", "\n> "),
                subject="Re: password",
                in_reply_to=parent["id"],
                references=" ".join([*parent["references"], parent["id"]]),
            )
        )
        assert (got.conversation_id, got.matched) == (cid, "thread")
        body: str = replies_to(runtime, cid)[-1]["body"]
        return body

    assert "6-digit code" in answer("jane.doe@example.com")
    assert "reset link" in answer(latest_code(runtime, cid))
    answer("yes, I'm in")
    assert runtime.resolver.view(cid)["resolution"] == "confirmed"
    # Every customer line is the new text alone: no quoted bot text, no signature.
    customer = [line.text for line in runtime.messages.lines(cid) if line.role == "customer"]
    assert len(customer) == 4 and not any(">" in t or "wrote:" in t for t in customer)
    # The thread grows: each reply references every mail before it.
    last = replies_to(runtime, cid)[-1]
    root = email.store.outgoing(cid)[0]["in_reply_to"]  # the customer's first mail
    assert len(last["references"]) == 7 and last["references"][0] == root


def test_a_retried_webhook_plays_nothing_twice(runtime: Runtime) -> None:
    email = channel_of(runtime)
    mail = Mailbox().mail("my vpn keeps disconnecting")
    first = email.receive(mail)
    again = email.receive(mail)
    assert (again.status, again.conversation_id, again.replies_sent, again.replies_pending) == (
        "duplicate",
        first.conversation_id,
        0,
        0,
    )
    assert first.conversation_id is not None
    assert lines(runtime, first.conversation_id) == [("customer", "email"), ("bot", "email")]
    assert len(replies_to(runtime, first.conversation_id)) == 1


class FlakyMailer:
    """Fails the first ``failures`` sends, then delivers to the outbox."""

    def __init__(self, outbox: FileOutbox, failures: int) -> None:
        self.outbox = outbox
        self.failures = failures

    def deliver(
        self,
        to: str,
        subject: str,
        body: str,
        *,
        conversation_id: str,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
    ) -> str:
        if self.failures:
            self.failures -= 1
            raise ToolError("could not send mail through the SMTP relay 127.0.0.1:2525: connection refused")
        return self.outbox.deliver(
            to,
            subject,
            body,
            conversation_id=conversation_id,
            message_id=message_id,
            in_reply_to=in_reply_to,
            references=references,
        )


def test_a_reply_that_could_not_be_sent_goes_out_on_the_retry(runtime: Runtime) -> None:
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=1)
    mail = Mailbox().mail("the printer on floor 3 shows offline")
    first = email.receive(mail)
    assert (first.replies_sent, first.replies_pending) == (0, 1)
    assert first.error is not None and "connection refused" in first.error
    assert first.conversation_id is not None
    assert replies_to(runtime, first.conversation_id) == []
    [record] = email.store.outgoing(first.conversation_id)
    assert (record["status"], record["attempts"]) == ("pending", 1)

    again = email.receive(mail)
    assert (again.status, again.replies_sent, again.replies_pending) == ("duplicate", 1, 0)
    [reply] = replies_to(runtime, first.conversation_id)
    assert reply["id"] == record["message_id"] and reply["in_reply_to"] == mail.message_id
    # Played once, sent once.
    assert lines(runtime, first.conversation_id) == [("customer", "email"), ("bot", "email")]
    assert email.receive(mail).replies_sent == 0
    assert len(replies_to(runtime, first.conversation_id)) == 1


def verify_in_chat(runtime: Runtime, address: str) -> str:
    cid = runtime.resolver.start("chat")
    runtime.resolver.send(cid, "my account is locked")
    runtime.resolver.send(cid, address)
    result = runtime.resolver.send(cid, latest_code(runtime, cid))
    assert result.stage in ("steps", "confirm"), result
    return cid


def test_a_chat_customer_who_proved_their_address_continues_by_mail(runtime: Runtime) -> None:
    chat = verify_in_chat(runtime, "Jane.Doe@example.com")
    got = channel_of(runtime).receive(Mailbox().mail("still locked out, the unlock did not help", subject="locked"))
    assert (got.conversation_id, got.matched) == (chat, "sender")
    # One transcript, both channels, in order.
    assert lines(runtime, chat)[-2:] == [("customer", "email"), ("bot", "email")]
    assert {channel for _, channel in lines(runtime, chat)} == {"chat", "email"}
    [reply] = replies_to(runtime, chat)
    assert reply["to"] == JANE and reply["subject"] == "Re: locked"
    # Back in the chat, the line is the chat's again.
    runtime.resolver.send(chat, "ok thanks")
    assert lines(runtime, chat)[-2:] == [("customer", "chat"), ("bot", "chat")]


def test_an_address_only_typed_in_a_chat_does_not_link_it(runtime: Runtime) -> None:
    chat = runtime.resolver.start("chat")
    runtime.resolver.send(chat, "my account is locked")
    runtime.resolver.send(chat, "jane.doe@example.com")  # typed, never proved
    got = channel_of(runtime).receive(Mailbox().mail("my account is locked"))
    assert got.matched == "new" and got.conversation_id != chat
    assert all(channel == "chat" for _, channel in lines(runtime, chat))


def test_a_later_mail_without_thread_headers_continues_the_open_conversation(runtime: Runtime) -> None:
    box, email = Mailbox(), channel_of(runtime)
    first = email.receive(box.mail("outlook stopped syncing on my phone"))
    second = email.receive(box.mail("also, it asks for my password all the time"))
    assert (second.conversation_id, second.matched) == (first.conversation_id, "sender")
    # Someone else's mail opens its own conversation.
    other = email.receive(Mailbox("bob.smith@example.com").mail("outlook stopped syncing"))
    assert other.matched == "new" and other.conversation_id != first.conversation_id


def test_a_resolved_or_stale_conversation_is_not_continued_by_sender(runtime: Runtime, clock: Clock) -> None:
    box, email = Mailbox(), channel_of(runtime)
    cid = verify_in_chat(runtime, "jane.doe@example.com")
    runtime.resolver.send(cid, "yes, that worked")
    assert runtime.resolver.view(cid)["stage"] == "resolved"
    fresh = email.receive(box.mail("new problem: teams crashes when I share my screen"))
    assert fresh.matched == "new" and fresh.conversation_id != cid
    clock.advance(days=8)
    later = email.receive(box.mail("and now the vpn drops"))
    assert later.matched == "new" and later.conversation_id not in (cid, fresh.conversation_id)
    # A reply in a thread continues it whatever its age.
    reply = replies_to(runtime, later.conversation_id or "")[-1]
    clock.advance(days=30)
    threaded = email.receive(box.mail("still dropping", in_reply_to=reply["id"]))
    assert (threaded.conversation_id, threaded.matched) == (later.conversation_id, "thread")


def hand_off_by_mail(runtime: Runtime) -> tuple[str, str]:
    got = channel_of(runtime).receive(Mailbox().mail("I clicked a link in a phishing email and typed my password"))
    assert got.conversation_id is not None
    state = runtime.resolver.view(got.conversation_id)
    assert state["stage"] == "handed_off"
    return got.conversation_id, state["handoff"]["packet_id"]


def test_an_l2_reply_goes_out_by_mail_in_the_thread(runtime: Runtime) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    handoff_mail = replies_to(runtime, cid)[-1]
    assert packet_id in handoff_mail["body"]
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", "Please change your password now; I have reset your sessions.")
    reply = replies_to(runtime, cid)[-1]
    assert reply["to"] == JANE
    assert reply["body"].startswith("Please change your password now; I have reset your sessions.")
    assert "Alex, Tierone Support" in reply["body"]
    assert reply["in_reply_to"] == channel_of(runtime).store.thread(cid).last_in  # type: ignore[union-attr]
    assert re.fullmatch(r"Re: .+", reply["subject"])
    # The customer's answer by mail reaches the technician; the bot stays silent.
    answer = channel_of(runtime).receive(Mailbox().mail("done, thank you", in_reply_to=reply["id"]))
    assert (answer.conversation_id, answer.replies_sent) == (cid, 0)
    assert lines(runtime, cid)[-1] == ("customer", "email")


def test_an_l2_reply_to_a_chat_customer_is_not_mailed(runtime: Runtime) -> None:
    cid = runtime.resolver.start("chat")
    result = runtime.resolver.send(cid, "I clicked a link in a phishing email and typed my password")
    assert result.handoff is not None
    packet_id = result.handoff["packet_id"]
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", "Hello, I'm on it.")
    assert replies_to(runtime, cid) == []


@pytest.mark.parametrize("failures", [1])
def test_an_l2_reply_that_could_not_be_sent_is_retried_later(runtime: Runtime, failures: int) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=failures)
    runtime.desk.claim(packet_id, "Alex")
    line = runtime.desk.reply(packet_id, "Alex", "Hello from L2")
    assert line.channel == "email"
    assert [r["status"] for r in email.store.outgoing(cid)] == ["sent", "pending"]
    assert email.flush() == (1, 0, None)
    assert replies_to(runtime, cid)[-1]["body"].startswith("Hello from L2")
    sent = email.store.outgoing(cid)
    assert [(r["status"], r["attempts"]) for r in sent] == [("sent", 1), ("sent", 2)]


class CrashAfterTurn:
    """The resolver, but the delivery dies right after the turn was played (before its reply is recorded)."""

    def __init__(self, runtime: Runtime) -> None:
        self.real = runtime.resolver
        self.conversations = self.real.conversations

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def send(self, *args: Any, **kwargs: Any) -> Any:
        self.real.send(*args, **kwargs)
        raise RuntimeError("the process died here")


def test_a_delivery_cut_short_after_its_turn_is_finished_by_the_retry(runtime: Runtime) -> None:
    email = channel_of(runtime)
    mail = Mailbox().mail("my vpn keeps disconnecting")
    real = email.resolver
    email.resolver = CrashAfterTurn(runtime)  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        email.receive(mail)
    email.resolver = real
    again = email.receive(mail)
    assert (again.status, again.matched, again.replies_sent) == ("accepted", "new", 1)
    assert again.conversation_id is not None
    # Played once: the retry got the first turn's answer from the resolver's record.
    assert lines(runtime, again.conversation_id) == [("customer", "email"), ("bot", "email")]
    assert len(replies_to(runtime, again.conversation_id)) == 1
    assert len(runtime.resolver.conversations.ids()) == 1


def test_two_deliveries_of_one_mail_at_once_play_it_once(runtime: Runtime) -> None:
    email = channel_of(runtime)
    mail = Mailbox().mail("outlook stopped syncing on my phone")
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def deliver() -> None:
        barrier.wait()
        results.append(email.receive(mail))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status for r in results) == ["accepted", "duplicate"]
    assert len({r.conversation_id for r in results}) == 1
    cid = results[0].conversation_id
    assert runtime.resolver.conversations.ids() == [cid]
    assert lines(runtime, cid) == [("customer", "email"), ("bot", "email")]
    assert len(replies_to(runtime, cid)) == 1


def test_mail_addresses_are_stored_as_keyed_hashes_and_erasure_finds_mail_conversations(runtime: Runtime) -> None:
    from app.erasure import Eraser
    from app.mail.store import address_hash

    got = channel_of(runtime).receive(Mailbox("Pat Lee <pat.lee@example.org>").mail("the vpn drops every hour"))
    cid = got.conversation_id
    assert cid is not None
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        [(stored,)] = [tuple(r) for r in conn.execute("SELECT address_hash FROM mail_contacts")]
    # Keyed by the vault's key: the plain SHA-256 a dictionary would try is not what is stored.
    assert stored != address_hash("pat.lee@example.org") and "pat.lee" not in stored
    # An address that never wrote in a chat is still found by `tierone forget --email`.
    report = Eraser(runtime.erasure).forget(email="Pat.Lee@example.org")
    assert report.conversations == [cid]
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        for table in ("mail_in", "mail_out", "mail_threads", "mail_contacts"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table


def test_a_failed_l2_reply_goes_out_with_the_next_mail_and_a_hopeless_one_is_given_up(runtime: Runtime) -> None:
    from app.mail.store import MAX_SEND_ATTEMPTS

    cid, packet_id = hand_off_by_mail(runtime)
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=1)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", "Hello from L2")
    assert email.store.outgoing(cid)[-1]["status"] == "pending"
    # Someone else's mail arrives: after its own reply, the waiting L2 reply goes too.
    other = email.receive(Mailbox("bob.smith@example.com").mail("is email down?"))
    assert other.replies_sent == 1
    assert [r["status"] for r in email.store.outgoing(cid)] == ["sent", "sent"]

    email.mailer = FlakyMailer(runtime.outbox, failures=MAX_SEND_ATTEMPTS + 5)
    runtime.desk.reply(packet_id, "Alex", "A reply the relay will never take")
    for _ in range(MAX_SEND_ATTEMPTS + 2):
        email.flush()
    last = email.store.outgoing(cid)[-1]
    assert (last["status"], last["attempts"]) == ("failed", MAX_SEND_ATTEMPTS)
    assert "connection refused" in last["error"]
    assert email.store.pending() == []
