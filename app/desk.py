"""The L2 desk: conversation status, and the handoff lifecycle (claim, reply, resolve, return to the bot).

A conversation's status is one of:

    bot ──handoff──▶ queued ──claim──▶ claimed ──resolve──▶ resolved ──customer writes──▶ bot
                        │                 │
                        └─────return──────┴──▶ bot

Every change is recorded in ``handoff_events`` with who made it and when. A claim is one conditional
UPDATE, so two technicians cannot both hold a ticket. While a ticket is claimed the bot stays silent
(agent/nodes.py's relay); returning or resolving moves the checkpointed graph state out of
"handed_off" so the bot reads the customer's next message afresh.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from agent.handoff import HandoffPacket, HandoffQueue
from app.messages import Line, MessageLog
from core.db import Database, Migration, Migrations, PersonalTables
from core.errors import PacketNotFound, TieroneError

Status = Literal["bot", "queued", "claimed", "resolved"]
STATUSES: tuple[Status, ...] = ("bot", "queued", "claimed", "resolved")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS conversation_status (
    conversation_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    packet_id TEXT,
    technician TEXT,
    updated_at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS handoff_desk (
    packet_id TEXT PRIMARY KEY,
    claimed_by TEXT,
    claimed_at TEXT,
    first_response_at TEXT,
    closed_at TEXT
)""",
    """CREATE TABLE IF NOT EXISTS handoff_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    packet_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    note TEXT
)""",
    "CREATE INDEX IF NOT EXISTS handoff_events_packet ON handoff_events (packet_id, id)",
)


class DeskConflict(TieroneError):
    """The ticket is not in a state that allows this (claimed by someone else, already closed)."""


@dataclass(frozen=True)
class ConversationStatus:
    """Who handles a conversation now."""

    status: Status
    packet_id: str | None = None
    technician: str | None = None


@dataclass(frozen=True)
class Ticket:
    """A handoff packet as the desk sees it: the packet plus who holds it and its SLA standing."""

    packet: HandoffPacket
    claimed_by: str | None
    first_response_at: datetime | None
    closed_at: datetime | None
    at_risk: bool
    breached: bool


@dataclass(frozen=True)
class ReplySent:
    """A technician's reply, for whatever delivers it beyond the transcript (email)."""

    packet: HandoffPacket
    line: Line
    text: str  # as the technician wrote it; the line holds the redacted text
    technician: str


class Desk:
    """Conversation status and the handoff lifecycle, over the handoff queue and the message log."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("desk", Migration(1, *_SCHEMA))
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "conversation_status": {"conversation_id": "conversation", "packet_id": "packet"},
        "handoff_desk": {"packet_id": "packet"},
        "handoff_events": {"conversation_id": "conversation", "packet_id": "packet"},
    }

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime],
        queue: HandoffQueue,
        log: MessageLog,
        *,
        reopen: Callable[[str, Literal["triage", "resolved"]], None],
        at_risk_minutes: float = 15.0,
    ) -> None:
        self._db = Database(path)
        self._clock = clock
        self.queue = queue
        self.log = log
        # Moves the checkpointed graph state out of "handed_off" (Resolver.reopen).
        self._reopen = reopen
        self.at_risk_minutes = at_risk_minutes
        self.on_reply: list[Callable[[ReplySent], None]] = []
        self.on_status: list[Callable[[str, ConversationStatus, ConversationStatus], None]] = []
        self._db.migrate(self.MIGRATIONS)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db.transaction() as conn:
            yield conn

    # -- conversation status -------------------------------------------------------------------

    def status(self, conversation_id: str) -> ConversationStatus:
        """Who handles the conversation now."""
        with self._tx() as conn:
            return self._status(conn, conversation_id)

    @staticmethod
    def _status(conn: sqlite3.Connection, conversation_id: str) -> ConversationStatus:
        row = conn.execute(
            "SELECT status, packet_id, technician FROM conversation_status WHERE conversation_id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            return ConversationStatus("bot")
        return ConversationStatus(row["status"], row["packet_id"], row["technician"])

    def _set_status(
        self, conn: sqlite3.Connection, conversation_id: str, new: ConversationStatus
    ) -> tuple[ConversationStatus, ConversationStatus] | None:
        old = self._status(conn, conversation_id)
        if old == new:
            return None
        conn.execute(
            "INSERT INTO conversation_status VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
            " status = excluded.status, packet_id = excluded.packet_id, technician = excluded.technician,"
            " updated_at = excluded.updated_at",
            (conversation_id, new.status, new.packet_id, new.technician, self._clock().isoformat()),
        )
        return old, new

    def _changed(self, conversation_id: str, change: tuple[ConversationStatus, ConversationStatus] | None) -> None:
        if change is None:
            return
        self.log.feed.notify(conversation_id)
        for hook in self.on_status:
            hook(conversation_id, *change)

    def _event(
        self, conn: sqlite3.Connection, packet_id: str, conversation_id: str, actor: str, action: str, note: str | None
    ) -> None:
        conn.execute(
            "INSERT INTO handoff_events (packet_id, conversation_id, at, actor, action, note)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (packet_id, conversation_id, self._clock().isoformat(), actor, action, note),
        )

    def after_turn(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Mirror a finished turn into the log and move the status (called inside the conversation's lock)."""
        self._take(conversation_id, values, fresh=True)

    def catch_up(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Mirror what a stopped process left unmirrored and queue an unqueued handoff; safe to repeat."""
        self._take(conversation_id, values, fresh=False)

    def _take(self, conversation_id: str, values: dict[str, Any], *, fresh: bool) -> None:
        self.log.mirror(conversation_id, list(values.get("transcript", [])))
        handoff = values.get("handoff") or {}
        with self._tx() as conn:
            current = self._status(conn, conversation_id)
            change = None
            if values.get("stage") == "handed_off" and handoff.get("packet_id"):
                packet_id = str(handoff["packet_id"])
                if current.packet_id != packet_id or current.status == "bot":
                    change = self._set_status(conn, conversation_id, ConversationStatus("queued", packet_id))
                    if change is not None:
                        reasons = ", ".join(handoff.get("reasons") or [])
                        self._event(conn, packet_id, conversation_id, "bot", "queued", reasons or None)
            elif fresh and current.status != "bot":
                # The bot answered (after a resolution): the conversation is the bot's again.
                change = self._set_status(conn, conversation_id, ConversationStatus("bot"))
        self._changed(conversation_id, change)

    # -- tickets ---------------------------------------------------------------------------------

    def _desk_row(self, conn: sqlite3.Connection, packet_id: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM handoff_desk WHERE packet_id = ?", (packet_id,)).fetchone()
        return dict(row) if row else {}

    def _packet_status(self, conn: sqlite3.Connection, packet_id: str) -> str:
        row = conn.execute("SELECT status FROM handoffs WHERE packet_id = ?", (packet_id,)).fetchone()
        if row is None:
            raise PacketNotFound(packet_id)
        return str(row[0])

    def _ticket(self, packet: HandoffPacket, desk: dict[str, Any], now: datetime) -> Ticket:
        first = datetime.fromisoformat(desk["first_response_at"]) if desk.get("first_response_at") else None
        closed = datetime.fromisoformat(desk["closed_at"]) if desk.get("closed_at") else None
        open_ = packet.status in ("queued", "claimed")
        due = packet.sla.first_response_due
        at_risk = open_ and first is None and now <= due <= now + timedelta(minutes=self.at_risk_minutes)
        # An open ticket is late once its due time passes; a closed one if it closed after it unanswered.
        first_late = (first or (now if open_ else closed) or due) > due
        resolve_late = (closed or now) > packet.sla.resolve_due
        return Ticket(
            packet=packet,
            claimed_by=desk.get("claimed_by"),
            first_response_at=first,
            closed_at=closed,
            at_risk=at_risk,
            breached=first_late or resolve_late,
        )

    def ticket(self, packet_id: str) -> Ticket:
        """One ticket; PacketNotFound when there is none."""
        packet = self.queue.get(packet_id)
        with self._tx() as conn:
            desk = self._desk_row(conn, packet_id)
        return self._ticket(packet, desk, self._clock())

    def tickets(self, status: str = "open", priority: str | None = None, category: str | None = None) -> list[Ticket]:
        """Tickets by status ("open" is queued and claimed; "all"), the most urgent first response first."""
        wanted = {"open": {"queued", "claimed"}, "all": None}.get(status, {status})
        with self._tx() as conn:
            desks = {r["packet_id"]: dict(r) for r in conn.execute("SELECT * FROM handoff_desk")}
        now = self._clock()
        return [
            self._ticket(p, desks.get(p.packet_id, {}), now)
            for p in self.queue.packets(status=None)
            if (wanted is None or p.status in wanted)
            and (priority is None or p.sla.priority == priority)
            and (category is None or p.category == category)
        ]

    def events(self, packet_id: str) -> list[dict[str, Any]]:
        """Every recorded change of a ticket, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT at, actor, action, note FROM handoff_events WHERE packet_id = ? ORDER BY id", (packet_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def claim(self, packet_id: str, technician: str) -> Ticket:
        """Take a queued ticket; claiming one you hold already is fine; DeskConflict if another holds it."""
        packet = self.queue.get(packet_id)
        cid = packet.conversation_id
        with self._tx() as conn:
            # The condition makes the claim atomic: of two technicians, one UPDATE changes the row.
            won = conn.execute(
                "UPDATE handoffs SET status = 'claimed' WHERE packet_id = ? AND status = 'queued'", (packet_id,)
            ).rowcount
            desk = self._desk_row(conn, packet_id)
            change = None
            if won:
                conn.execute(
                    "INSERT INTO handoff_desk (packet_id, claimed_by, claimed_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (packet_id) DO UPDATE SET claimed_by = excluded.claimed_by,"
                    " claimed_at = excluded.claimed_at",
                    (packet_id, technician, self._clock().isoformat()),
                )
                self._event(conn, packet_id, cid, technician, "claimed", None)
                change = self._set_status(conn, cid, ConversationStatus("claimed", packet_id, technician))
            else:
                status = self._packet_status(conn, packet_id)
                if status != "claimed" or desk.get("claimed_by") != technician:
                    holder = f" by {desk['claimed_by']}" if status == "claimed" and desk.get("claimed_by") else ""
                    raise DeskConflict(f"{packet_id} is {status}{holder}; it cannot be claimed")
        self._changed(cid, change)
        if won:
            self.log.append(
                cid,
                "system",
                f"{technician} from the support team has joined the conversation.",
                self._channel(packet),
                author=technician,
            )
        return self.ticket(packet_id)

    def _channel(self, packet: HandoffPacket) -> str:
        return self.log.last_channel(packet.conversation_id) or packet.channel

    def _hold(self, conn: sqlite3.Connection, packet_id: str, technician: str, admin: bool, verb: str) -> str:
        """Check the technician may act on the ticket; return its status."""
        status = self._packet_status(conn, packet_id)
        holder = self._desk_row(conn, packet_id).get("claimed_by")
        if status == "claimed" and (holder == technician or admin):
            return status
        if status == "queued" and admin and verb != "reply":
            return status
        if status == "claimed":
            raise DeskConflict(f"{packet_id} is claimed by {holder}; only they can {verb} it")
        if status == "queued":
            raise DeskConflict(f"{packet_id} is not claimed; claim it before you {verb} it")
        raise DeskConflict(f"{packet_id} is already {status}; there is nothing to {verb}")

    def reply(self, packet_id: str, technician: str, text: str, *, admin: bool = False) -> Line:
        """Send the customer a message from the technician who holds the ticket."""
        packet = self.queue.get(packet_id)
        with self._tx() as conn:
            self._hold(conn, packet_id, technician, admin, "reply to")
        line = self.log.append(packet.conversation_id, "technician", text, self._channel(packet), author=technician)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO handoff_desk (packet_id, first_response_at) VALUES (?, ?) ON CONFLICT (packet_id)"
                " DO UPDATE SET first_response_at = COALESCE(first_response_at, excluded.first_response_at)",
                (packet_id, line.at),
            )
            self._event(conn, packet_id, packet.conversation_id, technician, "replied", None)
        sent = ReplySent(packet=packet, line=line, text=text, technician=technician)
        for hook in self.on_reply:
            hook(sent)
        return line

    def _close(
        self,
        packet_id: str,
        technician: str,
        note: str,
        admin: bool,
        action: Literal["resolved", "returned"],
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Ticket:
        packet = self.queue.get(packet_id)
        cid = packet.conversation_id
        verb = "resolve" if action == "resolved" else "return"
        with self._tx() as conn:
            status = self._hold(conn, packet_id, technician, admin, verb)
            conn.execute(
                "UPDATE handoffs SET status = ? WHERE packet_id = ? AND status = ?", (action, packet_id, status)
            )
            conn.execute(
                "INSERT INTO handoff_desk (packet_id, closed_at) VALUES (?, ?) ON CONFLICT (packet_id)"
                " DO UPDATE SET closed_at = excluded.closed_at",
                (packet_id, self._clock().isoformat()),
            )
            self._event(conn, packet_id, cid, technician, action, note.strip() or None)
            if also is not None:
                also(conn)  # in this transaction: what goes with the closing (a teaching suggestion)
            current = self._status(conn, cid)
            change = None
            if current.packet_id == packet_id:
                new = (
                    ConversationStatus("resolved", packet_id, technician)
                    if action == "resolved"
                    else (ConversationStatus("bot"))
                )
                change = self._set_status(conn, cid, new)
        # The bot reads the next message afresh: as a new problem after a resolution, or from triage.
        self._reopen(cid, "resolved" if action == "resolved" else "triage")
        self._changed(cid, change)
        text = (
            f"{technician} marked this conversation as resolved. Write again here if you need anything else."
            if action == "resolved"
            else "You're back with the virtual assistant. Tell it what you need."
        )
        self.log.append(cid, "system", text, self._channel(packet), author=technician)
        return self.ticket(packet_id)

    def resolve(
        self,
        packet_id: str,
        technician: str,
        note: str = "",
        *,
        admin: bool = False,
        also: Callable[[sqlite3.Connection], None] | None = None,
    ) -> Ticket:
        """Close the ticket as resolved, with the technician's note; ``also`` writes in the same transaction."""
        return self._close(packet_id, technician, note, admin, "resolved", also)

    def return_to_bot(self, packet_id: str, technician: str, note: str = "", *, admin: bool = False) -> Ticket:
        """Hand the conversation back to the bot."""
        return self._close(packet_id, technician, note, admin, "returned")

    def conversation_counts(self) -> tuple[int, int]:
        """Conversations in which the customer wrote, and how many of those were ever handed off."""
        with self._tx() as conn:
            customers = conn.execute(
                "SELECT COUNT(DISTINCT conversation_id) FROM messages WHERE role = 'customer'"
            ).fetchone()[0]
            handed_off = conn.execute(
                "SELECT COUNT(DISTINCT h.conversation_id) FROM handoffs h"
                " WHERE EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = h.conversation_id)"
            ).fetchone()[0]
        return int(customers), int(handed_off)

    def handoff_info(self, packet_id: str | None) -> dict[str, Any] | None:
        """The handoff summary the customer's status events carry."""
        if not packet_id:
            return None
        try:
            packet = self.queue.get(packet_id)
        except PacketNotFound:
            return None
        return {
            "packet_id": packet.packet_id,
            "priority": packet.sla.priority,
            "first_response_due": packet.sla.first_response_due.isoformat(),
            "resolve_due": packet.sla.resolve_due.isoformat(),
        }
