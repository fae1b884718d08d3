"""Incidents: many conversations, one cause. The store the resolver attaches customers to.

An incident opens when one message reports wide impact, when enough conversations route to the
same runbook in a short time (``policy.yaml`` ``incidents``), or by hand from the desk. Later
customers with a problem of the same category join the open one: ``open_or_join`` looks and
writes in one write transaction, so two reports at once never open two incidents for one cause.

An incident row names no customer: its ticket (``ticket_id``, a handoff packet id) carries no
transcript, and erasing a conversation removes its membership, reports and deliveries only.

Every routed problem is written to ``incident_reports`` as it happens, so a spike counts the
conversations before a restart as well as after it. Updates and the resolution reach each
attached conversation through ``incident_deliveries``: one row per (update, conversation), written
with the update and marked sent in the same transaction that writes the message, so a broadcast
killed halfway resumes without a second copy to anyone (app/incidents.py delivers).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from core.db import Connection, DatabaseTarget, Migration, Migrations, PersonalTables, open_database
from core.errors import IncidentConflict, IncidentNotFound

IncidentStatus = Literal["open", "resolved"]
_IDENTITY = "BIGINT GENERATED ALWAYS AS IDENTITY"
UpdateKind = Literal["opened", "update", "resolve"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    title TEXT NOT NULL,
    category TEXT,
    runbook_id TEXT,
    cause TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    claimed_by TEXT,
    resolved_at TEXT,
    ticket_id TEXT
)""",
    """CREATE TABLE IF NOT EXISTS incident_members (
    incident_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    attached_at TEXT NOT NULL,
    episode_id TEXT,
    detached_at TEXT,
    PRIMARY KEY (incident_id, conversation_id)
)""",
    """CREATE TABLE IF NOT EXISTS incident_reports (
    conversation_id TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    runbook_id TEXT NOT NULL,
    category TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (conversation_id, episode_id)
)""",
    """CREATE TABLE IF NOT EXISTS incident_updates (
    update_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT NOT NULL,
    at TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS incident_deliveries (
    update_id TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    sent_at TEXT,
    PRIMARY KEY (update_id, conversation_id)
)""",
    "CREATE INDEX IF NOT EXISTS incident_reports_runbook ON incident_reports (runbook_id, at)",
    "CREATE INDEX IF NOT EXISTS incident_deliveries_pending ON incident_deliveries (sent_at)",
)


class IncidentUpdate(BaseModel):
    """One thing said about an incident: its opening, an update, its resolution."""

    update_id: str
    kind: UpdateKind
    text: str
    author: str
    at: datetime


class Incident(BaseModel):
    """An incident as the desk and the API see it."""

    id: str = Field(description="INC-…")
    status: IncidentStatus
    title: str
    category: str | None
    runbook_id: str | None = None
    cause: str = Field(description="What opened it: wide_impact, spike:<runbook>, status:<component> or desk")
    affected: int = Field(description="Conversations attached now")
    opened_at: datetime
    opened_by: str
    first_report_at: datetime | None = None
    last_report_at: datetime | None = None
    claimed_by: str | None = None
    resolved_at: datetime | None = None
    packet_id: str | None = Field(None, description="The one incident ticket in the handoff queue")
    updates: list[IncidentUpdate] = Field(default_factory=list)


@dataclass(frozen=True)
class Member:
    """One conversation attached to an incident."""

    conversation_id: str
    attached_at: str
    episode_id: str | None


@dataclass(frozen=True)
class Delivery:
    """One update still to reach one conversation."""

    update_id: str
    incident_id: str
    conversation_id: str
    kind: UpdateKind
    text: str
    author: str


@dataclass(frozen=True)
class Joined:
    """What ``open_or_join`` did: the incident, and whether this call opened it."""

    incident: Incident
    opened: bool


_STOP = frozenset(
    "the and for are but not you all any can her was one our out has have had his how its may new now see two who"
    " did get let put say she too use this that with from they will what when your there their been were into"
    " just than then them some also like very here does dont cant wont isnt since about today again still ive"
    " youre thats theres".split()
)


def content_words(text: str) -> str:
    """A message's content words, sorted and space-separated: what clusters of unrouted reports compare."""
    words = {w.replace("'", "") for w in re.findall(r"[a-z][a-z']+", text.lower())}
    return " ".join(sorted(w for w in words if len(w) >= 3 and w not in _STOP))


def incident_id_for(seed: str) -> str:
    """A stable incident id for what opened it (a replayed turn names the same incident)."""
    return "INC-" + hashlib.sha256(seed.encode()).hexdigest()[:8].upper()


class IncidentStore:
    """Incidents, their attached conversations, updates and the per-conversation delivery ledger."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "incidents",
        Migration(1, *_SCHEMA),
        # The content words of a report no runbook fit, for clusters of them (``cluster_peers``).
        Migration(2, "ALTER TABLE incident_reports ADD COLUMN words TEXT NOT NULL DEFAULT ''"),
        # Rows of one instant keep the order they were written in: SQLite's rowid, a column of that
        # name on PostgreSQL, which has none.
        Migration(
            3,
            {"sqlite": None, "postgresql": f"ALTER TABLE incidents ADD COLUMN rowid {_IDENTITY}"},
            {"sqlite": None, "postgresql": f"ALTER TABLE incident_updates ADD COLUMN rowid {_IDENTITY}"},
        ),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "incident_members": {"conversation_id": "conversation"},
        "incident_reports": {"conversation_id": "conversation"},
        "incident_deliveries": {"conversation_id": "conversation"},
    }

    def __init__(
        self, path: DatabaseTarget, clock: Callable[[], datetime], *, across_conversations: bool = True
    ) -> None:
        self.target = path
        self._db = open_database(path)
        self._clock = clock
        # False: a conversation meets only incidents it opened itself (eval cases are strangers).
        self.across = across_conversations
        self._db.migrate(self.MIGRATIONS)

    # -- detection --------------------------------------------------------------------------------

    def report(
        self, conversation_id: str, episode_id: str, runbook_id: str, category: str | None, words: str = ""
    ) -> None:
        """Note a new problem: routed to a runbook, or to none ("" and its words); a replayed turn writes nothing."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO incident_reports (conversation_id, episode_id, runbook_id, category, at, words)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (conversation_id, episode_id, runbook_id, category, self._clock().isoformat(), words),
            )

    def cluster_peers(self, words: str, minutes: float, conversation_id: str) -> list[tuple[str, str]]:
        """Other conversations whose unrouted report in the last ``minutes`` is close in words to this one.

        Close: at least half of the two messages' content words shared (Jaccard >= 0.5), and three at least.
        """
        mine = set(words.split())
        if not self.across or len(mine) < 3:
            return []
        since = (self._clock() - timedelta(minutes=minutes)).isoformat()
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT conversation_id, episode_id, words FROM incident_reports"
                " WHERE runbook_id = '' AND words != '' AND at >= ? AND conversation_id != ? ORDER BY at",
                (since, conversation_id),
            ).fetchall()
        close: dict[str, str] = {}
        for row in rows:
            theirs = set(str(row["words"]).split())
            shared = len(mine & theirs)
            if shared >= 3 and shared / len(mine | theirs) >= 0.5:
                close[row["conversation_id"]] = row["episode_id"]
        return list(close.items())

    def incident_of(self, conversation_ids: list[str]) -> str | None:
        """The newest open incident any of these conversations is attached to."""
        if not conversation_ids:
            return None
        with self._db.transaction() as conn:
            return self._incident_of(conn, conversation_ids)

    @staticmethod
    def _incident_of(conn: Connection, conversation_ids: list[str]) -> str | None:
        marks = ", ".join("?" for _ in conversation_ids)
        row = conn.execute(
            "SELECT m.incident_id FROM incident_members m JOIN incidents i ON i.incident_id = m.incident_id"
            f" WHERE i.status = 'open' AND m.detached_at IS NULL AND m.conversation_id IN ({marks})"
            " ORDER BY i.opened_at DESC LIMIT 1",
            conversation_ids,
        ).fetchone()
        return str(row[0]) if row else None

    def peers(self, runbook_id: str, minutes: float, conversation_id: str) -> list[tuple[str, str]]:
        """Other conversations routed to ``runbook_id`` in the last ``minutes``: (conversation, episode)."""
        if not self.across:
            return []
        since = (self._clock() - timedelta(minutes=minutes)).isoformat()
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT conversation_id, MAX(episode_id) AS episode_id FROM incident_reports"
                " WHERE runbook_id = ? AND at >= ? AND conversation_id != ? GROUP BY conversation_id"
                " ORDER BY MIN(at)",
                (runbook_id, since, conversation_id),
            ).fetchall()
        return [(r["conversation_id"], r["episode_id"]) for r in rows]

    def matching(
        self, category: str | None, conversation_id: str, *, wide: bool = False, related: tuple[str, ...] = ()
    ) -> str | None:
        """The open incident a problem of ``category`` belongs to, if any.

        Same category first. A wide-impact report also joins one of a ``related`` category (the
        other runbooks its words came close to: "the internet is down for everyone" reads as Wi-Fi
        or as service status; "*": any) or of unknown category, and one of unknown category joins
        the newest open incident: one outage, one incident.
        """
        with self._db.transaction() as conn:
            return self._matching(conn, category, conversation_id, wide, related)

    def _matching(
        self, conn: Connection, category: str | None, cid: str, wide: bool, related: tuple[str, ...] = ()
    ) -> str | None:
        query = "SELECT incident_id, category FROM incidents WHERE status = 'open'"
        args: list[Any] = []
        if not self.across:
            query += " AND opened_by = ?"
            args.append(cid)
        rows = conn.execute(query + " ORDER BY opened_at DESC, rowid DESC", args).fetchall()
        for row in rows:
            if category is not None and row["category"] == category:
                return str(row["incident_id"])
        if wide:
            for row in rows:
                if category is None or row["category"] is None or row["category"] in related or "*" in related:
                    return str(row["incident_id"])
        return None

    def named_outage(self, text: str) -> str | None:
        """The open incident the status page opened for a service this message names ("is the vpn down?")."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT incident_id, cause FROM incidents WHERE status = 'open' AND cause LIKE 'status:%'"
                " ORDER BY opened_at DESC, rowid DESC"
            ).fetchall()
        lowered = text.lower()
        for row in rows:
            name = str(row["cause"])[len("status:") :].rsplit(" ", 1)[0].lower()
            if name and re.search(rf"\b{re.escape(name)}\b", lowered):
                return str(row["incident_id"])
        return None

    # -- opening and attaching --------------------------------------------------------------------

    def open_or_join(
        self,
        *,
        seed: str,
        title: str,
        category: str | None,
        runbook_id: str | None,
        cause: str,
        opened_by: str,
        members: list[tuple[str, str | None]],
        wide: bool = False,
        related: tuple[str, ...] = (),
        summary: str = "We are looking into it.",
    ) -> Joined:
        """Attach ``members`` (conversation, episode) to the open incident of this cause, opening it if none is.

        One write transaction looks and writes: two reports of one cause at once attach to one incident.
        """
        now = self._clock().isoformat()
        with self._db.transaction() as conn:
            # On PostgreSQL as on SQLite, one opener at a time (replicas reporting one outage at once).
            self._db.hold(conn, "incidents.open")
            # The incident the other members (a spike's conversations) are in already, else one of the cause.
            others = [cid for cid, _ in members if cid != opened_by]
            found = self._incident_of(conn, others) if others else None
            found = found or self._matching(conn, category, opened_by, wide, related)
            opened = found is None
            incident_id = found or incident_id_for(seed)
            if opened:
                conn.execute(
                    "INSERT INTO incidents (incident_id, status, title, category, runbook_id, cause,"
                    " opened_at, opened_by) VALUES (?, 'open', ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (incident_id, title, category, runbook_id, cause, now, opened_by),
                )
                conn.execute(
                    "INSERT INTO incident_updates (update_id, incident_id, kind, text, author, at)"
                    " VALUES (?, ?, 'opened', ?, 'bot', ?) ON CONFLICT DO NOTHING",
                    (f"{incident_id}:u0", incident_id, summary, now),
                )
            for conversation_id, episode_id in members:
                self._attach(conn, incident_id, conversation_id, episode_id, now)
        return Joined(self.get(incident_id), opened)

    def join(self, incident_id: str, members: list[tuple[str, str | None]]) -> Joined | None:
        """Attach ``members`` to this incident while it is open; None when it is not (resolved since)."""
        with self._db.transaction() as conn:
            self._db.hold(conn, f"incident:{incident_id}")
            row = conn.execute("SELECT status FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
            if row is None or row["status"] != "open":
                return None
            for conversation_id, episode_id in members:
                self._attach(conn, incident_id, conversation_id, episode_id, self._clock().isoformat())
        return Joined(self.get(incident_id), False)

    def declare(self, title: str, category: str | None, technician: str, text: str) -> Incident:
        """Open an incident by hand (the desk)."""
        now = self._clock()
        # Nothing replays a declaration: a random id, so two alike in the same instant are two incidents.
        incident_id = "INC-" + secrets.token_hex(4).upper()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO incidents (incident_id, status, title, category, runbook_id, cause, opened_at,"
                " opened_by, claimed_by) VALUES (?, 'open', ?, ?, NULL, 'desk', ?, ?, ?)",
                (incident_id, title, category, now.isoformat(), f"desk:{technician}", technician),
            )
            conn.execute(
                "INSERT INTO incident_updates (update_id, incident_id, kind, text, author, at)"
                " VALUES (?, ?, 'opened', ?, ?, ?)",
                (f"{incident_id}:u0", incident_id, text or "We are looking into it.", technician, now.isoformat()),
            )
        return self.get(incident_id)

    @staticmethod
    def _attach(conn: Connection, incident_id: str, cid: str, episode_id: str | None, now: str) -> None:
        # A conversation detached before and reporting again is attached again.
        conn.execute(
            "INSERT INTO incident_members VALUES (?, ?, ?, ?, NULL) ON CONFLICT (incident_id, conversation_id)"
            " DO UPDATE SET detached_at = NULL,"
            " episode_id = COALESCE(excluded.episode_id, incident_members.episode_id)",
            (incident_id, cid, now, episode_id),
        )

    def set_packet(self, incident_id: str, packet_id: str) -> None:
        """Record the incident's one ticket in the handoff queue."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE incidents SET ticket_id = ? WHERE incident_id = ?", (packet_id, incident_id))

    def claim(self, incident_id: str, technician: str) -> Incident:
        """A technician takes the incident; 409 when it is resolved or someone else holds it."""
        with self._db.transaction() as conn:
            self._db.hold(conn, f"incident:{incident_id}")
            row = self._row(conn, incident_id)
            if row["status"] != "open":
                raise IncidentConflict(f"{incident_id} is already resolved; there is nothing to claim")
            if row["claimed_by"] not in (None, technician):
                raise IncidentConflict(f"{incident_id} is claimed by {row['claimed_by']}")
            conn.execute("UPDATE incidents SET claimed_by = ? WHERE incident_id = ?", (technician, incident_id))
        return self.get(incident_id)

    def detach(self, incident_id: str, conversation_id: str) -> Member:
        """Take a conversation off the incident; 409 when it is not attached."""
        with self._db.transaction() as conn:
            self._db.hold(conn, f"incident:{incident_id}")
            row = self._row(conn, incident_id)
            if row["status"] != "open":
                raise IncidentConflict(f"{incident_id} is already resolved; its conversations stay as they were")
            member = conn.execute(
                "SELECT * FROM incident_members WHERE incident_id = ? AND conversation_id = ? AND detached_at IS NULL",
                (incident_id, conversation_id),
            ).fetchone()
            if member is None:
                raise IncidentConflict(f"conversation {conversation_id!r} is not attached to {incident_id}")
            conn.execute(
                "UPDATE incident_members SET detached_at = ? WHERE incident_id = ? AND conversation_id = ?",
                (self._clock().isoformat(), incident_id, conversation_id),
            )
        return Member(member["conversation_id"], member["attached_at"], member["episode_id"])

    # -- updates and their delivery ---------------------------------------------------------------

    def post(self, incident_id: str, kind: Literal["update", "resolve"], text: str, author: str) -> IncidentUpdate:
        """Record an update (or the resolution) and one delivery per attached conversation, in one transaction."""
        now = self._clock().isoformat()
        with self._db.transaction() as conn:
            # Its updates are numbered in turn, and none is posted after its resolution.
            self._db.hold(conn, f"incident:{incident_id}")
            row = self._row(conn, incident_id)
            if row["status"] != "open":
                raise IncidentConflict(f"{incident_id} is already resolved; nothing was sent")
            number = conn.execute(
                "SELECT COUNT(*) FROM incident_updates WHERE incident_id = ?", (incident_id,)
            ).fetchone()[0]
            update_id = f"{incident_id}:u{number}"
            conn.execute(
                "INSERT INTO incident_updates (update_id, incident_id, kind, text, author, at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (update_id, incident_id, kind, text, author, now),
            )
            conn.execute(
                "INSERT INTO incident_deliveries (update_id, conversation_id) SELECT ?, conversation_id"
                " FROM incident_members WHERE incident_id = ? AND detached_at IS NULL",
                (update_id, incident_id),
            )
            if kind == "resolve":
                conn.execute(
                    "UPDATE incidents SET status = 'resolved', resolved_at = ? WHERE incident_id = ?",
                    (now, incident_id),
                )
        return IncidentUpdate(update_id=update_id, kind=kind, text=text, author=author, at=datetime.fromisoformat(now))

    def pending(self, limit: int = 1000) -> list[Delivery]:
        """Deliveries not yet made, oldest update first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT d.update_id, u.incident_id, d.conversation_id, u.kind, u.text, u.author"
                " FROM incident_deliveries d JOIN incident_updates u ON u.update_id = d.update_id"
                " WHERE d.sent_at IS NULL ORDER BY u.at, d.update_id, d.conversation_id LIMIT ?",
                (limit,),
            ).fetchall()
        return [Delivery(**dict(r)) for r in rows]

    def deliver(self, delivery: Delivery, write: Callable[[Any], None]) -> bool:
        """Run ``write`` and mark the delivery made, in one transaction; False when it was made already.

        ``write`` writes the message on the same connection (transcript line, mail outbox row): the
        message and the mark commit together or not at all, so no copy is lost or sent twice.
        """
        # On PostgreSQL another replica may be delivering the same row: FOR UPDATE makes it wait for
        # that transaction and then read the row as it left it (sent), so the message is written once.
        lock = " FOR UPDATE" if self._db.dialect == "postgresql" else ""
        with self._db.transaction() as conn:
            # Two replicas delivering at once: the second finds it made, and writes nothing.
            self._db.hold(conn, f"incident_delivery:{delivery.update_id}:{delivery.conversation_id}")
            done = conn.execute(
                "SELECT sent_at FROM incident_deliveries WHERE update_id = ? AND conversation_id = ?" + lock,
                (delivery.update_id, delivery.conversation_id),
            ).fetchone()
            if done is None or done["sent_at"] is not None:
                return False
            write(conn)
            conn.execute(
                "UPDATE incident_deliveries SET sent_at = ? WHERE update_id = ? AND conversation_id = ?",
                (self._clock().isoformat(), delivery.update_id, delivery.conversation_id),
            )
        return True

    # -- reading ----------------------------------------------------------------------------------

    @staticmethod
    def _row(conn: Connection, incident_id: str) -> Any:
        row = conn.execute("SELECT * FROM incidents WHERE incident_id = ?", (incident_id,)).fetchone()
        if row is None:
            raise IncidentNotFound(incident_id)
        return row

    def get(self, incident_id: str) -> Incident:
        """One incident, with its affected count and updates; IncidentNotFound when there is none."""
        with self._db.transaction() as conn:
            return self._incident(conn, self._row(conn, incident_id))

    def find(self, status: Literal["open", "resolved", "all"] = "open") -> list[Incident]:
        """Incidents, newest first."""
        query, args = "SELECT * FROM incidents", ()
        if status != "all":
            query, args = query + " WHERE status = ?", (status,)  # type: ignore[assignment]
        with self._db.transaction() as conn:
            rows = conn.execute(query + " ORDER BY opened_at DESC, rowid DESC", args).fetchall()
            return [self._incident(conn, row) for row in rows]

    def members(self, incident_id: str, *, attached_only: bool = True) -> list[Member]:
        """The incident's conversations, first reporter first."""
        query = "SELECT conversation_id, attached_at, episode_id FROM incident_members WHERE incident_id = ?"
        if attached_only:
            query += " AND detached_at IS NULL"
        with self._db.transaction() as conn:
            self._row(conn, incident_id)
            rows = conn.execute(query + " ORDER BY attached_at, conversation_id", (incident_id,)).fetchall()
        return [Member(r["conversation_id"], r["attached_at"], r["episode_id"]) for r in rows]

    def of_conversation(self, conversation_id: str) -> str | None:
        """The open incident a conversation is attached to, if any."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT m.incident_id FROM incident_members m JOIN incidents i ON i.incident_id = m.incident_id"
                " WHERE m.conversation_id = ? AND m.detached_at IS NULL AND i.status = 'open'"
                " ORDER BY m.attached_at DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
        return str(row[0]) if row else None

    @staticmethod
    def _incident(conn: Connection, row: Any) -> Incident:
        incident_id = row["incident_id"]
        counts = conn.execute(
            "SELECT COUNT(*), MIN(attached_at), MAX(attached_at) FROM incident_members"
            " WHERE incident_id = ? AND detached_at IS NULL",
            (incident_id,),
        ).fetchone()
        updates = conn.execute(
            "SELECT update_id, kind, text, author, at FROM incident_updates WHERE incident_id = ? ORDER BY at, rowid",
            (incident_id,),
        ).fetchall()
        return Incident(
            id=incident_id,
            status=row["status"],
            title=row["title"],
            category=row["category"],
            runbook_id=row["runbook_id"],
            cause=row["cause"],
            affected=int(counts[0]),
            opened_at=row["opened_at"],
            opened_by=row["opened_by"],
            first_report_at=counts[1],
            last_report_at=counts[2],
            claimed_by=row["claimed_by"],
            resolved_at=row["resolved_at"],
            packet_id=row["ticket_id"],
            updates=[IncidentUpdate(**dict(u)) for u in updates],
        )
