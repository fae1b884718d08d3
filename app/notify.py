"""Handoff delivery to a helpdesk webhook: a durable outbox and a background worker.

Every packet stored while a webhook is configured gets a row in ``handoff_deliveries`` written in
the same SQLite transaction as the packet itself (``HandoffQueue.put`` calls ``Notifier.enqueue``
inside its transaction), so a process that dies between storing and sending loses nothing. A worker
thread posts due rows; the customer's turn never waits for it.

Wire format (what the helpdesk receives)
----------------------------------------

``POST <TIERONE_HANDOFF_WEBHOOK_URL>`` with the packet as JSON (the schema ``GET /handoffs/schema``
and ``tierone handoffs schema`` publish) and these headers:

``Idempotency-Key``, ``X-Tierone-Packet-Id``
    The packet id. Delivery is at least once: the same packet may arrive more than once (a lost
    answer, a restart mid-send), always with the same key, so the receiver keeps the first.
``X-Tierone-Delivery-Attempt``
    1 for the first try, then 2, 3, ...
``X-Tierone-Signature``
    With ``TIERONE_HANDOFF_WEBHOOK_SECRET`` set: the hex HMAC-SHA256 of the raw body under that
    secret (the same scheme as the inbound email webhook).

Any 2xx answer counts as delivered. 408, 425, 429, 5xx, connection errors and timeouts are retried
with exponential backoff and jitter: attempt n waits a random time between half and all of
``min(retry_max_s, retry_base_s * 2 ** (n - 1))``, or the ``Retry-After`` the receiver asked for
(never more than ``retry_max_s``). Retries go on until the helpdesk takes the packet: a handoff must
not be lost because the helpdesk was down for a day. Any other answer (400, 401, 404, 422, ...) will
not change by retrying: the delivery is marked ``rejected`` and stays visible
(``tierone handoffs show``) until ``tierone handoffs redeliver`` queues it again. A packet deleted
before it was sent (a customer's erasure request) is marked ``dropped``.

Rows are leased while being sent: a worker that dies mid-send leaves a row that becomes due again
once its lease ends, so a restarted worker sends it again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from agent.handoff import HandoffPacket, HandoffQueue
from core.db import Database, Migration, Migrations, PersonalTables
from core.errors import PacketNotFound
from core.settings import Settings
from core.signing import sign

log = logging.getLogger("tierone.notify")

DeliveryStatus = Literal["pending", "delivered", "rejected", "dropped"]

# Answers that may change if asked again later; every other non-2xx answer is final.
RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS handoff_deliveries (
        packet_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        due REAL NOT NULL,
        last_attempt_at TEXT,
        last_error TEXT,
        delivered_at TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS handoff_deliveries_due ON handoff_deliveries (status, due)",
    """CREATE TABLE IF NOT EXISTS handoff_delivery_attempts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        packet_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        status_code INTEGER,
        detail TEXT NOT NULL DEFAULT ''
    )""",
]


@dataclass(frozen=True)
class Webhook:
    """Where packets go and how they are signed."""

    url: str
    secret: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Webhook | None:
        """The configured webhook, or None when no URL is set."""
        if not settings.handoff_webhook_url:
            return None
        return cls(
            url=settings.handoff_webhook_url,
            secret=settings.handoff_webhook_secret,
            timeout_s=settings.handoff_webhook_timeout_s,
        )


def backoff_s(attempt: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Pause after failed attempt ``attempt`` (1-based): between half and all of the capped doubling."""
    # The exponent is capped too: retries go on for days, and 2.0 ** 1100 overflows a float.
    ceiling = min(max_s, base_s * 2.0 ** min(max(attempt - 1, 0), 64))
    return ceiling / 2 + rand() * ceiling / 2


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


class Notifier:
    """Delivers stored handoff packets to the helpdesk webhook, at least once, from a worker thread."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("notify", Migration(1, *_SCHEMA))
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "handoff_deliveries": {"packet_id": "packet"},
        "handoff_delivery_attempts": {"packet_id": "packet"},
    }

    def __init__(
        self,
        path: Path,
        webhook: Webhook | None,
        clock: Callable[[], datetime],
        *,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
        poll_s: float = 5.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.path = path
        self.webhook = webhook
        self._clock = clock
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        # Rows written by another process (the CLI chat) are found by polling at most this far apart.
        self.poll_s = poll_s
        self._rand = rand
        # A row being sent is leased for longer than one request can take.
        self.lease_s = (webhook.timeout_s if webhook else 10.0) + 5.0
        self._db = Database(path)
        self._db.migrate(self.MIGRATIONS)
        self._packets = HandoffQueue(path, clock)
        self._client: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], datetime]) -> Notifier:
        """A notifier on the desk database, delivering to the configured webhook (if any)."""
        return cls(
            settings.desk_db,
            Webhook.from_settings(settings),
            clock,
            retry_base_s=settings.handoff_retry_base_s,
            retry_max_s=settings.handoff_retry_max_s,
        )

    @property
    def enabled(self) -> bool:
        """Whether a webhook is configured."""
        return self.webhook is not None

    def enqueue(self, conn: sqlite3.Connection, packet: HandoffPacket) -> None:
        """Queue a packet for delivery inside the caller's transaction (the one storing the packet)."""
        if self.webhook is None:
            return
        now = self._clock()
        conn.execute(
            "INSERT OR IGNORE INTO handoff_deliveries (packet_id, status, attempts, created_at, due)"
            " VALUES (?, 'pending', 0, ?, ?)",
            (packet.packet_id, now.isoformat(), now.timestamp()),
        )
        self._wake.set()

    def delivery(self, packet_id: str) -> dict[str, Any] | None:
        """A packet's delivery record with its attempts, oldest first; None if it was never queued."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT * FROM handoff_deliveries WHERE packet_id = ?", (packet_id,)).fetchone()
            if row is None:
                return None
            attempts = conn.execute(
                "SELECT attempt, at, outcome, status_code, detail FROM handoff_delivery_attempts"
                " WHERE packet_id = ? ORDER BY seq",
                (packet_id,),
            ).fetchall()
        record = dict(row)
        record["attempt_log"] = [dict(a) for a in attempts]
        return record

    def counts(self) -> dict[str, int]:
        """How many deliveries are in each state."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT status, COUNT(*) FROM handoff_deliveries GROUP BY status").fetchall()
        return {r[0]: r[1] for r in rows}

    def redeliver(self, packet_id: str) -> None:
        """Queue a packet again (after a rejection, or to resend a delivered one); PacketNotFound if unknown."""
        packet = self._packets.get(packet_id)
        now = self._clock()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO handoff_deliveries (packet_id, status, attempts, created_at, due)"
                " VALUES (?, 'pending', 0, ?, ?)"
                " ON CONFLICT (packet_id) DO UPDATE SET status = 'pending', due = excluded.due",
                (packet.packet_id, now.isoformat(), now.timestamp()),
            )
        self._wake.set()

    def _take_due(self, limit: int) -> list[tuple[str, int]]:
        now = self._clock().timestamp()
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT packet_id, attempts FROM handoff_deliveries WHERE status = 'pending' AND due <= ?"
                " ORDER BY due LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE handoff_deliveries SET due = ? WHERE packet_id = ?",
                [(now + self.lease_s, r["packet_id"]) for r in rows],
            )
        return [(r["packet_id"], r["attempts"]) for r in rows]

    def deliver_due(self, limit: int = 20) -> int:
        """Send every delivery that is due now (at most ``limit``); return how many were tried."""
        if self.webhook is None:
            return 0
        taken = self._take_due(limit)
        for packet_id, attempts in taken:
            self._deliver(packet_id, attempts + 1)
        return len(taken)

    def _http(self) -> httpx.Client:
        if self._client is None:
            assert self.webhook is not None
            self._client = httpx.Client(timeout=self.webhook.timeout_s, follow_redirects=False)
        return self._client

    def _deliver(self, packet_id: str, attempt: int) -> None:
        assert self.webhook is not None
        try:
            packet = self._packets.get(packet_id)
        except PacketNotFound:
            self._record(packet_id, attempt, "dropped", None, "the packet was deleted before it was sent")
            return
        body = packet.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": packet_id,
            "X-Tierone-Packet-Id": packet_id,
            "X-Tierone-Delivery-Attempt": str(attempt),
            "User-Agent": "tierone-handoff-notifier",
        }
        if self.webhook.secret:
            headers["X-Tierone-Signature"] = sign(self.webhook.secret, body)
        try:
            response = self._http().post(self.webhook.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            self._record(packet_id, attempt, "retry", None, f"timed out ({type(exc).__name__})")
            return
        except httpx.TransportError as exc:
            self._record(packet_id, attempt, "retry", None, f"{type(exc).__name__}: {exc}"[:300])
            return
        code = response.status_code
        if 200 <= code < 300:
            self._record(packet_id, attempt, "delivered", code, "")
        elif code in RETRYABLE_STATUS:
            wait = retry_after_s(response.headers.get("retry-after"), self._clock())
            self._record(packet_id, attempt, "retry", code, _brief(response), at_least_s=wait)
        else:
            self._record(packet_id, attempt, "rejected", code, _brief(response))

    def _record(
        self,
        packet_id: str,
        attempt: int,
        outcome: Literal["delivered", "retry", "rejected", "dropped"],
        status_code: int | None,
        detail: str,
        *,
        at_least_s: float | None = None,
    ) -> None:
        now = self._clock()
        status: DeliveryStatus = "pending" if outcome == "retry" else outcome
        due = now.timestamp()
        if outcome == "retry":
            pause = backoff_s(attempt, self.retry_base_s, self.retry_max_s, self._rand)
            if at_least_s is not None:
                pause = max(pause, min(at_least_s, self.retry_max_s))
            due += pause
        error = "" if outcome == "delivered" else (f"HTTP {status_code} " if status_code else "") + detail
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE handoff_deliveries SET status = ?, attempts = ?, due = ?, last_attempt_at = ?,"
                " last_error = ?, delivered_at = ? WHERE packet_id = ?",
                (
                    status,
                    attempt,
                    due,
                    now.isoformat(),
                    error.strip() or None,
                    now.isoformat() if outcome == "delivered" else None,
                    packet_id,
                ),
            )
            conn.execute(
                "INSERT INTO handoff_delivery_attempts (packet_id, attempt, at, outcome, status_code, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (packet_id, attempt, now.isoformat(), outcome, status_code, detail),
            )
        if outcome == "delivered":
            log.info("handoff %s delivered on attempt %d", packet_id, attempt)
        else:
            log.warning("handoff %s delivery attempt %d: %s %s", packet_id, attempt, outcome, error.strip())

    def _pause(self) -> float:
        """Seconds until the next pending delivery is due, bounded by the poll interval."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT MIN(due) FROM handoff_deliveries WHERE status = 'pending'").fetchone()
        if row[0] is None:
            return self.poll_s
        return min(max(float(row[0]) - self._clock().timestamp(), 0.01), self.poll_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Cleared before the pass: a packet queued during it wakes the next one at once.
            self._wake.clear()
            try:
                self.deliver_due()
                pause = self._pause()
            except Exception:
                # A locked or broken database must not end deliveries for the life of the process.
                log.exception("handoff delivery pass failed; trying again in %.0f s", self.poll_s)
                pause = self.poll_s
            self._wake.wait(pause)

    def start(self) -> None:
        """Start the worker thread (a no-op without a webhook, or when it already runs)."""
        if self.webhook is None or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tierone-handoff-notifier", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker after the request in flight (bounded by the webhook timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease_s)
            self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None


def _brief(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200]


def describe(record: dict[str, Any] | None, enabled: bool) -> str:
    """One line on a packet's delivery, for ``tierone handoffs show``."""
    if record is None:
        why = "not queued (stored before the webhook was set)" if enabled else "no webhook set"
        return f"helpdesk delivery: {why}"
    attempts = record["attempts"]
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    status = record["status"]
    if status == "delivered":
        return f"helpdesk delivery: delivered at {record['delivered_at']} after {tries}"
    if status == "pending":
        due = datetime.fromtimestamp(record["due"], UTC).isoformat(timespec="seconds")
        extra = f"; last error: {record['last_error']}" if record["last_error"] else ""
        return f"helpdesk delivery: pending after {tries}, next try at {due}{extra}"
    return f"helpdesk delivery: {status} after {tries}: {record['last_error']}"
