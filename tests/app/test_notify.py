"""Handoff delivery to the helpdesk webhook: durable outbox, retries, at-least-once, never blocking a turn."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import respx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from agent.handoff import HandoffQueue
from app.notify import Notifier, Webhook, backoff_s, describe, retry_after_s
from app.runtime import Runtime, desk_target, migrate_databases, open_runtime
from cli import app as cli_app
from core.db import DatabaseTarget, DatabaseUrl, open_database
from core.settings import BUNDLED_RUNBOOKS, Settings
from server import create_app
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)
from tests.app.test_teaching import packet as packet_for_gaps
from tests.conftest import Clock
from vectorstore.index import RunbookIndex

URL = "https://helpdesk.example.test/hooks/tierone"
SECRET = "webhook-shared-secret"


def settings_for(data_dir: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir,
        runbooks=BUNDLED_RUNBOOKS,
        handoff_webhook_url=URL,
        handoff_webhook_secret=SECRET,
        **extra,
    )


@pytest.fixture
def open_rt(
    db_backend: str, request: pytest.FixtureRequest, tmp_path: Path, bundled_index: RunbookIndex, clock: Clock
) -> Callable[..., Runtime]:
    """Runtimes with the webhook set, on this test's backend (PostgreSQL: migrated as `tierone migrate` does)."""
    database = {"database_url": request.getfixturevalue("pg_url")} if db_backend == "postgresql" else {}

    def make(**extra: Any) -> Runtime:
        settings = settings_for(tmp_path / "data", **database, **extra)
        if database:
            migrate_databases(settings)
        return open_runtime(settings, clock=clock, index=bundled_index)

    return make


@pytest.fixture
def helpdesk() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


class Receiver:
    """A helpdesk that keeps the first packet per Idempotency-Key, as the wire contract asks."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.tickets: dict[str, dict[str, Any]] = {}

    def take(self, request: httpx.Request) -> None:
        self.requests.append(request)
        self.tickets.setdefault(request.headers["idempotency-key"], json.loads(request.content))

    def ok(self, request: httpx.Request) -> httpx.Response:
        self.take(request)
        return httpx.Response(201, json={"ticket": "ZD-1"})

    def lost_answer(self, request: httpx.Request) -> httpx.Response:
        # The helpdesk stored the ticket, but its answer never came back.
        self.take(request)
        raise httpx.ReadTimeout("no answer", request=request)


def hand_off(runtime: Runtime, text: str = "I'd like to talk to a human please") -> str:
    cid = runtime.resolver.start()
    result = runtime.resolver.send(cid, text)
    assert result.handoff is not None
    return str(result.handoff["packet_id"])


def notifier(runtime: Runtime) -> Notifier:
    assert runtime.notifier is not None
    return runtime.notifier


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    # Waits for an outcome of the worker thread; the limit only stops a broken test from hanging.
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_packet_and_outbox_row_are_written_in_one_transaction(open_rt: Callable[..., Runtime]) -> None:
    runtime = open_rt()
    packet_id = hand_off(runtime)
    record = notifier(runtime).delivery(packet_id)
    assert record is not None and record["status"] == "pending" and record["attempts"] == 0

    # If queueing the delivery fails, the packet is not stored either: there is never one without the other.
    def broken(conn: Any, packet: Any) -> None:
        raise RuntimeError("disk full")

    queue = HandoffQueue(desk_target(runtime.settings), runtime.resolver.deps.clock, on_store=broken)
    packet = runtime.resolver.deps.handoffs.get(packet_id).model_copy(update={"packet_id": "HO-OTHER"})
    with pytest.raises(RuntimeError, match="disk full"):
        queue.put(packet)
    assert [p.packet_id for p in queue.packets(None)] == [packet_id]


def test_without_a_webhook_nothing_is_queued(runtime: Runtime) -> None:
    packet_id = hand_off(runtime)
    assert runtime.notifier is not None and not runtime.notifier.enabled
    assert runtime.notifier.delivery(packet_id) is None
    assert runtime.notifier.deliver_due() == 0


def test_delivery_carries_packet_key_attempt_and_signature(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    runtime = open_rt()
    packet_id = hand_off(runtime)
    assert notifier(runtime).deliver_due() == 1

    [request] = receiver.requests
    assert request.headers["idempotency-key"] == packet_id
    assert request.headers["x-tierone-packet-id"] == packet_id
    assert request.headers["x-tierone-delivery-attempt"] == "1"
    assert request.headers["content-type"] == "application/json"
    expected = hmac.new(SECRET.encode(), request.content, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-tierone-signature"], expected)
    body = json.loads(request.content)
    assert body["packet_id"] == packet_id and body["reason_codes"] == ["customer_requested_human"]
    assert body == json.loads(runtime.resolver.deps.handoffs.get(packet_id).model_dump_json())
    record = notifier(runtime).delivery(packet_id)
    assert record is not None and record["status"] == "delivered" and record["attempts"] == 1
    # Delivered means done: later passes send nothing.
    assert notifier(runtime).deliver_due() == 0
    assert len(receiver.requests) == 1


def server_error(request: httpx.Request) -> httpx.Response:
    return httpx.Response(500, text="helpdesk is down")


def unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": "120"}, text="maintenance")


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def hangs(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (server_error, "HTTP 500 helpdesk is down"),
        (unavailable, "HTTP 503 maintenance"),
        (refused, "ConnectError: connection refused"),
        (hangs, "timed out (ReadTimeout)"),
    ],
)
def test_webhook_down_is_retried_later_then_delivered_once(
    open_rt: Callable[..., Runtime],
    helpdesk: respx.MockRouter,
    clock: Clock,
    failure: Callable[[httpx.Request], httpx.Response],
    error: str,
) -> None:
    receiver = Receiver()
    route = helpdesk.post(URL)
    route.side_effect = failure
    runtime = open_rt(handoff_retry_base_s=10, handoff_retry_max_s=600)
    packet_id = hand_off(runtime)
    worker = notifier(runtime)

    assert worker.deliver_due() == 1
    record = worker.delivery(packet_id)
    assert record is not None
    assert record["status"] == "pending" and record["attempts"] == 1 and record["last_error"] == error
    # Not again at once: the next try waits for the backoff (5-10 s here), or the Retry-After (120 s).
    assert worker.deliver_due() == 0
    wait = record["due"] - clock().timestamp()
    assert (120 <= wait <= 600) if failure is unavailable else (5 <= wait <= 10)

    # The customer carries on meanwhile; their conversation does not wait for the helpdesk.
    cid = runtime.resolver.start()
    assert runtime.resolver.send(cid, "my account is locked").replies

    clock.advance(seconds=wait + 1)
    route.side_effect = receiver.ok
    assert worker.deliver_due() == 1
    record = worker.delivery(packet_id)
    assert record is not None and record["status"] == "delivered" and record["attempts"] == 2
    assert [a["outcome"] for a in record["attempt_log"]] == ["retry", "delivered"]
    assert receiver.requests[-1].headers["x-tierone-delivery-attempt"] == "2"
    assert list(receiver.tickets) == [packet_id]


def test_a_lost_answer_means_a_second_delivery_that_the_key_deduplicates(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter, clock: Clock
) -> None:
    receiver = Receiver()
    route = helpdesk.post(URL)
    route.side_effect = receiver.lost_answer
    runtime = open_rt()
    packet_id = hand_off(runtime)
    worker = notifier(runtime)
    worker.deliver_due()
    clock.advance(minutes=5)
    route.side_effect = receiver.ok
    worker.deliver_due()

    assert len(receiver.requests) == 2
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {packet_id}
    assert list(receiver.tickets) == [packet_id]  # one ticket, logically delivered once
    record = worker.delivery(packet_id)
    assert record is not None and record["status"] == "delivered"


def test_backoff_doubles_with_jitter_and_is_bounded() -> None:
    assert backoff_s(1, 2, 300, rand=lambda: 0.0) == 1.0
    assert backoff_s(1, 2, 300, rand=lambda: 1.0) == 2.0
    assert backoff_s(4, 2, 300, rand=lambda: 1.0) == 16.0
    assert backoff_s(30, 2, 300, rand=lambda: 0.0) == 150.0
    assert backoff_s(30, 2, 300, rand=lambda: 1.0) == 300.0
    assert backoff_s(5000, 2, 300, rand=lambda: 0.5) == 225.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert retry_after_s("30", now) == 30.0
    assert retry_after_s("Mon, 23 Nov 2026 09:02:00 GMT", now) == 120.0
    assert retry_after_s("Mon, 23 Nov 2026 08:00:00 GMT", now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


def test_a_final_refusal_is_kept_visible_and_can_be_redelivered(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter, clock: Clock
) -> None:
    receiver = Receiver()
    route = helpdesk.post(URL)
    route.side_effect = lambda request: httpx.Response(401, json={"error": "bad signature"})
    runtime = open_rt()
    packet_id = hand_off(runtime)
    worker = notifier(runtime)
    worker.deliver_due()
    clock.advance(days=1)
    assert worker.deliver_due() == 0  # retrying would not help: not tried again on its own
    record = worker.delivery(packet_id)
    assert record is not None and record["status"] == "rejected"
    assert describe(record, True) == 'helpdesk delivery: rejected after 1 attempt: HTTP 401 {"error":"bad signature"}'

    route.side_effect = receiver.ok
    worker.redeliver(packet_id)
    assert worker.deliver_due() == 1
    record = worker.delivery(packet_id)
    assert record is not None and record["status"] == "delivered" and record["attempts"] == 2


def test_a_packet_erased_before_it_was_sent_is_dropped_not_retried(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter
) -> None:
    route = helpdesk.post(URL).mock(return_value=httpx.Response(200))
    runtime = open_rt()
    packet_id = hand_off(runtime)
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        conn.execute("DELETE FROM handoffs WHERE packet_id = ?", (packet_id,))
    worker = notifier(runtime)
    assert worker.deliver_due() == 1
    assert not route.called
    record = worker.delivery(packet_id)
    assert record is not None and record["status"] == "dropped"
    assert worker.deliver_due() == 0


def test_a_new_process_sends_what_the_old_one_stored_but_never_sent(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter, tmp_path: Path, clock: Clock
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    first = open_rt()
    settings = first.settings
    stored_only = hand_off(first)  # the process dies right after storing: never sent
    leased = hand_off(first, "can I speak to a person")
    # ... or dies mid-send, holding both rows' leases:
    assert len(notifier(first)._take_due(10)) == 2
    del first

    second = Notifier.from_settings(settings, clock)
    assert second.deliver_due() == 0  # the dead worker's leases have not run out yet
    clock.advance(seconds=second.lease_s + 1)
    assert second.deliver_due() == 2
    assert sorted(receiver.tickets) == sorted([stored_only, leased])
    assert second.counts() == {"delivered": 2}


def test_the_worker_never_blocks_a_customer_turn(open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter) -> None:
    receiver = Receiver()
    in_flight = threading.Event()
    release = threading.Event()

    def stuck_helpdesk(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        release.wait(30)
        return receiver.ok(request)

    helpdesk.post(URL).mock(side_effect=stuck_helpdesk)
    runtime = open_rt()
    worker = notifier(runtime)
    worker.start()
    try:
        packet_id = hand_off(runtime)
        wait_for(in_flight.is_set, "the worker to call the helpdesk")
        # The helpdesk holds the worker's request; customers are still answered.
        cid = runtime.resolver.start()
        assert "code" in " ".join(
            runtime.resolver.send(cid, "I forgot my password").replies
            + runtime.resolver.send(cid, "jane.doe@example.com").replies
        )
        second = hand_off(runtime, "get me a real person")
        assert not release.is_set()
        release.set()
        wait_for(lambda: worker.counts() == {"delivered": 2}, "both packets to be delivered")
    finally:
        release.set()
        worker.stop()
    assert sorted(receiver.tickets) == sorted([packet_id, second])


def test_the_server_runs_the_worker_for_its_lifetime(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    runtime = open_rt()
    app = create_app(runtime.settings, runtime)
    with TestClient(app) as client:
        packet_id = hand_off(runtime)
        wait_for(lambda: packet_id in receiver.tickets, "the server's worker to deliver the packet")
        assert client.get("/healthz").status_code == 200
    worker = notifier(runtime)
    assert worker._thread is None  # stopped with the server


def test_cli_show_says_how_delivery_went(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpdesk.post(URL).mock(side_effect=server_error)
    runtime = open_rt()
    packet_id = hand_off(runtime)
    notifier(runtime).deliver_due()
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_HANDOFF_WEBHOOK_URL", URL)
    if runtime.settings.database_url is not None:
        monkeypatch.setenv("TIERONE_DATABASE_URL", runtime.settings.database_url.get_secret_value())
    shown = CliRunner().invoke(cli_app, ["handoffs", "show", packet_id], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["packet_id"] == packet_id
    assert "helpdesk delivery: pending after 1 attempt, next try at" in shown.stderr
    assert "last error: HTTP 500 helpdesk is down" in shown.stderr

    redo = CliRunner().invoke(cli_app, ["handoffs", "redeliver", "HO-NOPE"])
    assert redo.exit_code == 2 and "no handoff packet has the id 'HO-NOPE'" in redo.output


def test_webhook_settings_are_optional() -> None:
    assert Webhook.from_settings(Settings(handoff_webhook_url=None)) is None
    hook = Webhook.from_settings(Settings(handoff_webhook_url=URL, handoff_webhook_timeout_s=3))
    assert hook == Webhook(url=URL, secret=None, timeout_s=3)


def test_two_workers_on_one_database_each_take_a_row_once_and_a_dead_ones_lease_runs_out(
    open_rt: Callable[..., Runtime], helpdesk: respx.MockRouter, tmp_path: Path, clock: Clock
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    runtime = open_rt()
    first, second = notifier(runtime), Notifier.from_settings(runtime.settings, clock)
    assert first.worker_id != second.worker_id
    one, two = hand_off(runtime), hand_off(runtime, "can I speak to a person")
    assert [pid for pid, _ in first._take_due(1)] == [one]
    assert [pid for pid, _ in second._take_due(10)] == [two]  # the row the first holds is not offered
    assert first._take_due(10) == [] and second._take_due(10) == []

    # The first worker dies holding its lease; once it runs out the second sends both rows.
    clock.advance(seconds=first.lease_s + 1)
    assert second.deliver_due() == 2
    assert sorted(receiver.tickets) == sorted([one, two]) and len(receiver.requests) == 2
    # A worker that comes back after its lease ran out cannot undo what the other recorded.
    first._record(one, 1, "retry", 503, "late answer")
    record = second.delivery(one)
    assert record is not None and record["status"] == "delivered" and record["claimed_by"] is None
    assert [a["outcome"] for a in record["attempt_log"]] == ["delivered", "retry"]


def stored_packets(target: DatabaseTarget, clock: Clock, worker: Notifier, count: int) -> list[str]:
    """Packets stored as the resolver stores them, each queued for delivery in the same transaction."""
    queue = HandoffQueue(target, clock, on_store=worker.enqueue)
    ids = []
    for n in range(count):
        packet = packet_for_gaps("my monitor flickers", packet_id=f"HO-{n}")
        queue.put(packet.model_copy(update={"created_at": clock()}))
        ids.append(packet.packet_id)
        clock.advance(seconds=1)
    return ids


def test_replicas_on_one_database_share_the_deliveries_once_each(
    db_target: DatabaseTarget, helpdesk: respx.MockRouter, clock: Clock
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    first, second = (Notifier(db_target, Webhook(URL, SECRET), clock) for _ in range(2))
    one, two, three = stored_packets(db_target, clock, first, 3)
    assert [pid for pid, _ in first._take_due(2)] == [one, two]
    assert second.deliver_due() == 1 and sorted(receiver.tickets) == [three]
    assert first.deliver_due() == 0 and second.deliver_due() == 0  # the first still holds its two
    # The first replica stalls mid-send: once its lease has run out the second takes its rows over,
    # and the first, waking, finds before sending that they are no longer its own.
    clock.advance(seconds=first.lease_s + 1)
    assert sorted(pid for pid, _ in second._take_due(10)) == sorted([one, two])
    assert not first._hold(one) and not first._hold(two) and second._hold(one)
    clock.advance(seconds=second.lease_s + 1)  # the second stalled too; a pass of its own sends them
    assert second.deliver_due() == 2
    assert sorted(receiver.tickets) == sorted([one, two, three]) and len(receiver.requests) == 3
    assert second.counts() == {"delivered": 3}


@pytest.mark.postgres
def test_on_postgresql_a_delivery_another_replica_is_claiming_is_skipped_not_waited_for(
    pg_url: str, clock: Clock
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # Were the claim to wait for the lock, it would fail after this instead of hanging the suite.
        admin.execute(f"ALTER DATABASE {pg_url.rsplit('/', 1)[1]} SET lock_timeout = '10s'")
    target = DatabaseUrl(pg_url)
    first, second = (Notifier(target, Webhook(URL), clock) for _ in range(2))
    one, two = stored_packets(target, clock, first, 2)
    with psycopg.connect(pg_url) as other:  # another replica, between its SELECT and its UPDATE
        other.execute("SELECT 1 FROM handoff_deliveries WHERE packet_id = %s FOR UPDATE", (one,))
        assert [pid for pid, _ in second._take_due(10)] == [two]
    assert [pid for pid, _ in first._take_due(10)] == [one]


def test_two_running_workers_on_one_database_deliver_each_packet_exactly_once(
    db_target: DatabaseTarget, helpdesk: respx.MockRouter, clock: Clock
) -> None:
    receiver = Receiver()
    helpdesk.post(URL).mock(side_effect=receiver.ok)
    workers = [Notifier(db_target, Webhook(URL), clock, poll_s=0.02) for _ in range(2)]
    ids = stored_packets(db_target, clock, workers[0], 30)
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: workers[1].counts() == {"delivered": 30}, "both workers to deliver every packet")
    finally:
        for worker in workers:
            worker.stop()
    sent = [r.headers["idempotency-key"] for r in receiver.requests]
    assert sorted(sent) == sorted(ids)  # each packet once: no delivery was taken by both workers
    attempts = {workers[0].delivery(pid)["attempt_log"][0]["attempt"] for pid in ids}  # type: ignore[index]
    assert attempts == {1}
