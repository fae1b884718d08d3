"""The handoff queue and the conversation register, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from agent.handoff import CustomerState, HandoffPacket, HandoffQueue, Sentiment, Sla
from agent.resolver import Conversations
from core.db import DatabaseTarget, DatabaseUrl
from core.errors import ConversationNotFound, PacketNotFound
from tests.conftest import Clock

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def packet(packet_id: str, conversation_id: str, due_minutes: int, **kw: Any) -> HandoffPacket:
    return HandoffPacket(
        packet_id=packet_id,
        conversation_id=conversation_id,
        channel="chat",
        created_at=T0,
        customer=CustomerState(email="jane@example.com"),
        category="access",
        runbook_id="password-reset",
        runbook_candidates=[],
        sla=Sla(priority="P2", first_response_due=T0 + timedelta(minutes=due_minutes), resolve_due=T0),
        reason_codes=["customer_requested_human"],
        attempts=[],
        hypothesis="locked out",
        summary="Customer cannot log in (50% sure?)",
        transcript=[],
        sentiment=Sentiment(score=0.0, label="neutral"),
        **kw,
    )


def test_packets_are_stored_once_and_read_most_urgent_first(db_target: DatabaseTarget) -> None:
    seen: list[str] = []
    queue = HandoffQueue(db_target, Clock(T0), on_store=lambda conn, p: seen.append(p.packet_id))
    assert queue.put(packet("HO-1", "c1", 30))
    assert not queue.put(packet("HO-1", "c1", 5))  # a replay stores nothing and notifies nobody
    assert queue.put(packet("HO-2", "c2", 10))
    assert seen == ["HO-1", "HO-2"]
    assert [p.packet_id for p in queue.packets()] == ["HO-2", "HO-1"]
    assert queue.get("HO-1").sla.first_response_due == T0 + timedelta(minutes=30)
    assert [p.packet_id for p in queue.for_conversation("c2")] == ["HO-2"]
    queue.set_summary("HO-1", "Now 12 customers affected; it's 100% down?")
    assert queue.get("HO-1").summary == "Now 12 customers affected; it's 100% down?"
    assert queue.get("HO-2").summary == "Customer cannot log in (50% sure?)"
    assert queue.packets(status="claimed") == []
    with pytest.raises(PacketNotFound):
        queue.get("HO-9")
    # Another handle on the same database (a restart, another replica) reads the same packets.
    assert [p.packet_id for p in HandoffQueue(db_target, Clock(T0)).packets(status=None)] == ["HO-2", "HO-1"]


def test_the_conversation_register(db_target: DatabaseTarget) -> None:
    conversations = Conversations(db_target)
    conversations.add("c2", "email", T0 + timedelta(seconds=1))
    conversations.add("c1", "chat", T0)
    assert conversations.get("c2") == {
        "conversation_id": "c2",
        "channel": "email",
        "created_at": (T0 + timedelta(seconds=1)).isoformat(),
    }
    assert conversations.ids() == ["c1", "c2"]
    with pytest.raises(ConversationNotFound):
        conversations.get("c3")


@pytest.mark.postgres
def test_a_turn_holds_its_conversation_against_another_process(pg_url: str) -> None:
    here, there = Conversations(DatabaseUrl(pg_url)), Conversations(DatabaseUrl(pg_url))
    order: list[str] = []

    def other_replica() -> None:
        with there.turn("c1"):
            order.append("there")

    with here.turn("c1"):
        waiting = threading.Thread(target=other_replica)
        waiting.start()
        # The other session waits on the advisory lock (seen in pg_stat_activity, not guessed by time).
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for _ in range(600):
                blocked = conn.execute(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
                ).fetchone()
                if blocked and blocked[0] == 1:
                    break
                threading.Event().wait(0.05)
            else:
                pytest.fail("the other replica's turn did not wait for this one")
        with there.turn("c2"):  # another conversation is not held up
            order.append("c2")
        order.append("here")
    waiting.join()
    assert order == ["c2", "here", "there"]
