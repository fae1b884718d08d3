"""The message log, on SQLite and on PostgreSQL alike: numbering, mirroring, and writers at once."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.messages import MessageLog
from core.db import DatabaseTarget, DatabaseUrl, open_database
from tests.conftest import Clock


def test_lines_are_numbered_per_conversation_and_redacted(db_target: DatabaseTarget, clock: Clock) -> None:
    log = MessageLog(db_target, clock)
    assert log.append("c1", "customer", "I am jane@example.com, 100% locked out?", "email").seq == 1
    assert log.append("c2", "customer", "hello", "chat").seq == 1
    assert log.append("c1", "technician", "On it", "chat", author="Sam").seq == 2
    lines = log.lines("c1")
    assert [(line.seq, line.role, line.author) for line in lines] == [(1, "customer", None), (2, "technician", "Sam")]
    assert "jane@example.com" not in lines[0].text and "100% locked out?" in lines[0].text
    assert [line.seq for line in log.lines("c1", after=1)] == [2]
    assert log.last_channel("c1") == "email" and log.last_channel("c3") is None


def test_mirroring_the_transcript_twice_writes_each_line_once(db_target: DatabaseTarget, clock: Clock) -> None:
    log = MessageLog(db_target, clock)
    transcript = [
        {"role": "customer", "text": "vpn down", "at": clock().isoformat()},
        {"role": "bot", "text": "Try this", "at": clock().isoformat(), "channel": "email"},
    ]
    assert [line.seq for line in log.mirror("c1", transcript[:1])] == [1]
    log.append("c1", "system", "A technician joined", "chat")
    assert [line.seq for line in log.mirror("c1", transcript)] == [3]
    assert log.mirror("c1", transcript) == []
    assert [(line.role, line.channel) for line in log.lines("c1")] == [
        ("customer", "chat"),
        ("system", "chat"),
        ("bot", "email"),
    ]


def test_a_line_written_inside_another_stores_transaction(db_target: DatabaseTarget, clock: Clock) -> None:
    log = MessageLog(db_target, clock)
    log.append("c1", "customer", "hi", "chat")
    other = open_database(db_target)
    try:
        with other.transaction() as conn:
            assert log.append_on(conn, "c1", "technician", "update", "chat").seq == 2
    finally:
        other.close()
    assert [line.text for line in log.lines("c1")] == ["hi", "update"]


def test_writers_at_once_get_one_number_each(db_target: DatabaseTarget, clock: Clock) -> None:
    logs = [MessageLog(db_target, clock) for _ in range(4)]  # four handles, as four workers or replicas hold
    with ThreadPoolExecutor(max_workers=8) as pool:
        seqs = list(pool.map(lambda i: logs[i % 4].append("c1", "customer", f"m{i}", "chat").seq, range(40)))
    assert sorted(seqs) == list(range(1, 41))
    assert sorted(line.text for line in logs[0].lines("c1")) == sorted(f"m{i}" for i in range(40))


@pytest.mark.postgres
@pytest.mark.asyncio
async def test_a_reader_on_one_replica_wakes_for_a_line_written_on_another(pg_url: str, clock: Clock) -> None:
    replica_a, replica_b = MessageLog(DatabaseUrl(pg_url), clock), MessageLog(DatabaseUrl(pg_url), clock)
    assert replica_a.feed is not replica_b.feed
    try:
        reader = replica_a.feed.subscribe("c1")
        elsewhere = replica_a.feed.subscribe("c2")
        await asyncio.to_thread(replica_b.append, "c1", "technician", "On it", "chat", "Sam")
        assert await reader.wait(timeout=30)
        assert [line.text for line in replica_a.lines("c1")] == ["On it"]
        assert not elsewhere._event.is_set()  # only that conversation's readers woke
        reader.close()
        elsewhere.close()
    finally:
        replica_a.close()
        replica_b.close()


def test_on_sqlite_a_log_starts_no_listener(tmp_path: Path, clock: Clock) -> None:
    before = {t.name for t in threading.enumerate()}
    log = MessageLog(tmp_path / "desk.sqlite", clock)
    assert {t.name for t in threading.enumerate()} - before == set()
    log.close()
