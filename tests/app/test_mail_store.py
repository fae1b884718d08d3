"""The mail store's outbox shared by several processes: each reply is taken by one sender at a time."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from app.mail.store import SEND_LEASE, MailStore, Pending
from core.db import DatabaseTarget, DatabaseUrl
from core.vault import Sealer
from tests.conftest import Clock


def reply(n: int, conversation: str = "c1", inbound: str | None = None) -> Pending:
    return Pending(f"<r{n}@us>", conversation, "Jane Doe <jane@example.com>", "Re: VPN", f"body {n}", inbound, ())


def test_two_senders_never_take_the_same_reply_and_a_dead_ones_replies_are_taken_over(
    db_target: DatabaseTarget,
) -> None:
    clock, sealer = Clock(), Sealer.ephemeral()
    first = MailStore(db_target, clock, sealer=sealer)
    second = MailStore(db_target, clock, sealer=sealer)
    assert first.sender_id != second.sender_id
    first.record(reply(1))
    clock.advance(seconds=1)
    first.record(reply(2))

    assert [p.message_id for p in first.claim()] == ["<r1@us>", "<r2@us>"]
    assert second.claim() == []  # both are held by the first sender
    assert [p.message_id for p in second.pending()] == ["<r1@us>", "<r2@us>"]  # still waiting to go

    first.sent("<r1@us>")
    first.failed("<r2@us>", "relay said 451")  # a failure ends the lease: the next flush of anyone retries
    assert [p.body for p in second.claim()] == ["body 2"]
    clock.advance(seconds=1)
    second.record(reply(3))
    assert first.claim() == [reply(3)]  # reply 2 is still the second's
    # Both senders die mid-send; once the leases have run out a new one takes both replies over.
    clock.advance(seconds=SEND_LEASE.total_seconds() + 1)
    third = MailStore(db_target, clock, sealer=sealer)
    assert [p.message_id for p in third.claim()] == ["<r2@us>", "<r3@us>"]
    # A sender that was only slow, not dead, finds before sending that the reply is no longer its own.
    assert not second.hold("<r2@us>") and not first.hold("<r3@us>") and not first.hold("<r1@us>")
    assert third.hold("<r2@us>")
    assert first.claim() == [] and second.claim() == []
    # SQLite empties its write-ahead log of the dropped bodies; PostgreSQL has none to empty, and says so.
    assert first.compact() is isinstance(db_target, Path)
    assert [(r["message_id"], r["status"]) for r in first.outgoing("c1")] == [
        ("<r1@us>", "sent"),
        ("<r2@us>", "pending"),
        ("<r3@us>", "pending"),
    ]


@pytest.mark.postgres
def test_on_postgresql_a_reply_another_sender_is_claiming_is_skipped_not_waited_for(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # Were the claim to wait for the lock, it would fail after this instead of hanging the suite.
        admin.execute(f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} SET lock_timeout = '10s'")
    clock, sealer = Clock(), Sealer.ephemeral()
    first = MailStore(DatabaseUrl(pg_url), clock, sealer=sealer)
    second = MailStore(DatabaseUrl(pg_url), clock, sealer=sealer)
    first.record(reply(1))
    clock.advance(seconds=1)
    first.record(reply(2))
    with psycopg.connect(pg_url) as other:  # another replica, between its SELECT and its UPDATE
        other.execute("SELECT 1 FROM mail_out WHERE message_id = '<r1@us>' FOR UPDATE")
        assert [p.message_id for p in second.claim()] == ["<r2@us>"]
    assert [p.message_id for p in first.claim()] == ["<r1@us>"]
