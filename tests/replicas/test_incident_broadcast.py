"""An incident update delivered by two replicas at once reaches its customer once (PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from agent.incidents import IncidentStore
from core.db import DatabaseUrl
from tests.conftest import Clock
from tests.servers import wait_for

pytestmark = pytest.mark.postgres


def test_two_replicas_delivering_one_update_at_once_write_it_once(pg_url: str, clock: Clock) -> None:
    stores = [IncidentStore(DatabaseUrl(pg_url), clock) for _ in range(2)]  # one per replica
    joined = stores[0].open_or_join(
        seed="s",
        title="VPN down",
        category="network",
        runbook_id="vpn-connection",
        cause="wide_impact",
        opened_by="c1",
        members=[("c1", "c1:e0")],
    )
    stores[0].post(joined.incident.id, "update", "We are on it.", "Rita")
    [delivery] = stores[0].pending()
    written: list[str] = []
    inside, let_go = threading.Event(), threading.Event()
    results: dict[str, bool] = {}

    def first_write(conn: Any) -> None:  # replica A, writing the message, not yet committed
        written.append("a")
        inside.set()
        let_go.wait(timeout=60)

    def run(name: str, store: IncidentStore, write: Any) -> None:
        results[name] = store.deliver(delivery, write)

    a = threading.Thread(target=run, args=("a", stores[0], first_write))
    a.start()
    assert inside.wait(timeout=60)
    b = threading.Thread(target=run, args=("b", stores[1], lambda conn: written.append("b")))
    b.start()

    def b_waits_or_wrote() -> bool:
        if not b.is_alive():
            return True
        with psycopg.connect(pg_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
        return bool(row and row[0])

    # B is blocked on A's row (or, without the row lock, has already written its copy).
    wait_for(b_waits_or_wrote, "replica B to reach the delivery")
    let_go.set()
    a.join(timeout=60)
    b.join(timeout=60)
    assert written == ["a"] and results == {"a": True, "b": False}
    assert stores[1].pending() == []
