"""The desk database keeps no mail address or body in clear: sealed while needed, then masked or dropped."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.mail.inbound import InboundEmail
from app.mail.store import MAX_SEND_ATTEMPTS, MailStore, Pending, masked_address
from app.runtime import Runtime
from core.db import DatabaseTarget, open_database
from core.vault import Sealer
from tests.app.test_mail_channel import FlakyMailer, channel_of, hand_off_by_mail, replies_to
from tests.core.test_vault import _files, _rows

ADDRESS = "jane.doe@example.com"
# What an L2 technician might write: redaction turns it into a placeholder in the transcript, but the
# mail itself must carry it, so only the outgoing mail's body holds it, sealed.
SECRET_LINE = "Your temporary code is 834201, use it within the hour."


def mail_rows(runtime: Runtime, cid: str) -> list[dict[str, Any]]:
    with sqlite3.connect(runtime.settings.desk_db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM mail_out WHERE conversation_id = ? ORDER BY rowid", (cid,)).fetchall()
    return [dict(r) for r in rows]


def desk_bytes(runtime: Runtime) -> bytes:
    return _files(Path(runtime.settings.desk_db).parent, Path(runtime.settings.desk_db).name)


def test_the_address_is_masked_without_its_display_name() -> None:
    assert masked_address("Jane Doe <jane.doe@example.com>") == "j***@example.com"
    assert masked_address("bob@corp.example") == "b***@corp.example"
    assert masked_address(masked_address("bob@corp.example")) == "b***@corp.example"  # idempotent
    assert masked_address("not an address") == "[email]"


def test_a_sent_mail_keeps_a_masked_address_and_no_body(runtime: Runtime) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", SECRET_LINE)
    assert replies_to(runtime, cid)[-1]["body"].startswith(SECRET_LINE)  # the customer got it whole
    rows = mail_rows(runtime, cid)
    assert len(rows) == 2 and all(r["status"] == "sent" for r in rows)
    assert all((r["to_addr"], r["body"]) == ("j***@example.com", None) for r in rows)
    # Nothing of the sent mail is left in the file: the code and the address only where needed.
    raw = desk_bytes(runtime)
    assert b"834201" not in raw
    # Only the embedded directory's accounts keep the address in clear; the thread keeps it sealed.
    assert ADDRESS not in _rows(runtime.settings.desk_db, skip=("accounts",))
    assert channel_of(runtime).store.thread(cid).reply_to == f"Jane Doe <{ADDRESS}>"  # type: ignore[union-attr]


def test_a_mail_still_to_send_keeps_what_it_needs_until_it_goes(runtime: Runtime) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=1)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", SECRET_LINE)
    waiting = mail_rows(runtime, cid)[-1]
    assert waiting["status"] == "pending"
    assert waiting["to_addr"].startswith("sealed:") and waiting["body"].startswith("sealed:")
    assert ADDRESS not in _rows(runtime.settings.desk_db, skip=("accounts",))
    assert b"834201" not in desk_bytes(runtime)
    assert [p.body for p in email.store.pending()] == [waiting_body(runtime, cid)]
    assert email.flush() == (1, 0, None)
    assert replies_to(runtime, cid)[-1]["to"] == f"Jane Doe <{ADDRESS}>"  # the retry used the address in full
    gone = mail_rows(runtime, cid)[-1]
    assert (gone["status"], gone["to_addr"], gone["body"]) == ("sent", "j***@example.com", None)
    assert b"834201" not in desk_bytes(runtime)


def test_a_mail_given_up_keeps_no_body_or_address_either(runtime: Runtime) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=MAX_SEND_ATTEMPTS + 5)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", SECRET_LINE)
    for _ in range(MAX_SEND_ATTEMPTS):
        email.flush()
    given_up = mail_rows(runtime, cid)[-1]
    assert (given_up["status"], given_up["to_addr"], given_up["body"]) == ("failed", "j***@example.com", None)
    assert "connection refused" in given_up["error"]
    assert b"834201" not in desk_bytes(runtime)
    # A mail given up is not tried again.
    assert email.store.pending() == []


def waiting_body(runtime: Runtime, cid: str) -> str:
    """The body of the last mail to the conversation, as the store unseals it."""
    (pending,) = [p for p in channel_of(runtime).store.pending() if p.conversation_id == cid]
    assert pending.body.startswith(SECRET_LINE)
    return pending.body


def _clock() -> datetime:
    return datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _inbound(message_id: str) -> InboundEmail:
    return InboundEmail(
        sender=ADDRESS, sender_name="Jane Doe", subject="VPN", text="still dropping", message_id=message_id
    )


def test_clear_rows_an_older_version_wrote_are_sealed_on_open(tmp_path: Path) -> None:
    db = tmp_path / "desk.sqlite"
    MailStore(db, _clock)  # the schema
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO mail_threads VALUES ('c1', ?, 'VPN', '<1@client>', '<1@client>', '2026-11-23T09:00:00+00:00')",
            (f"Jane Doe <{ADDRESS}>",),
        )
        conn.execute(
            "INSERT INTO mail_out (message_id, conversation_id, to_addr, subject, body, status, created_at)"
            " VALUES ('<r1@us>', 'c1', ?, 'Re: VPN', ?, 'pending', '2026-11-23T09:00:00+00:00')",
            (f"Jane Doe <{ADDRESS}>", SECRET_LINE),
        )
    sealer = Sealer.ephemeral()
    store = MailStore(db, _clock, sealer=sealer)
    assert ADDRESS not in _rows(db) and "834201" not in _rows(db)
    assert store.thread("c1").reply_to == f"Jane Doe <{ADDRESS}>"  # type: ignore[union-attr]
    (pending,) = store.pending()
    assert (pending.to, pending.body) == (f"Jane Doe <{ADDRESS}>", SECRET_LINE)


def test_a_mail_sealed_under_a_retired_key_is_given_up_not_sent_garbled(db_target: DatabaseTarget) -> None:
    db = db_target
    old = MailStore(db, _clock, sealer=Sealer.ephemeral())
    reply = Pending("<r1@us>", "c1", f"Jane Doe <{ADDRESS}>", "Re: VPN", SECRET_LINE, "<1@client>", ())
    old.take("<1@client>")
    assert old.played(_inbound("<1@client>"), "c1", [reply])
    assert old.thread("c1") is not None and [p.body for p in old.pending()] == [SECRET_LINE]
    new = MailStore(db, _clock, sealer=Sealer.ephemeral())  # the old key is no longer configured
    assert new.pending() == []
    assert new.thread("c1") is None
    (row,) = new.outgoing("c1")
    assert (row["status"], row["error"]) == ("failed", "sealed under a key no longer configured")
    with open_database(db).transaction() as conn:
        assert tuple(conn.execute("SELECT to_addr, body FROM mail_out").fetchone()) == ("[email]", None)
