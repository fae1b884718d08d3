"""Sent mail keeps no body and no address in clear in the desk database; mail still to send keeps both."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agent.mail import MAX_SEND_ATTEMPTS, masked_address
from agent.service import Runtime
from tests.test_mail_channel import FlakyMailer, channel_of, hand_off_by_mail, replies_to
from tests.test_vault import _files, _rows

ADDRESS = "jane.doe@example.com"
# What an L2 technician might write: redaction turns it into a placeholder in the transcript, but the
# mail itself must carry it, so only the outgoing mail's body holds it in clear.
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
    # The thread's reply address (the next mail goes there) and the directory's accounts keep the address.
    assert ADDRESS not in _rows(runtime.settings.desk_db, skip=("accounts", "mail_threads"))


def test_a_mail_still_to_send_keeps_what_it_needs_until_it_goes(runtime: Runtime) -> None:
    cid, packet_id = hand_off_by_mail(runtime)
    email = channel_of(runtime)
    email.mailer = FlakyMailer(runtime.outbox, failures=1)
    runtime.desk.claim(packet_id, "Alex")
    runtime.desk.reply(packet_id, "Alex", SECRET_LINE)
    waiting = mail_rows(runtime, cid)[-1]
    assert waiting["status"] == "pending" and waiting["to_addr"] == f"Jane Doe <{ADDRESS}>"
    assert waiting["body"].startswith(SECRET_LINE)
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
