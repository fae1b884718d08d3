"""The durable message log of every conversation, and the in-process feed that wakes its readers.

Every line a customer, the bot, a technician or the system writes lands here, PII-redacted, with a
per-conversation sequence number. The log is what `GET /conversations/{id}`, the SSE stream and the
L2 desk show. Customer and bot lines are mirrored from the graph's checkpointed transcript inside
the conversation's lock (so a turn that a crash cut short is mirrored when it is finished);
technician and system lines are written directly. On PostgreSQL each new line is announced
(NOTIFY) when its transaction commits, so every replica's readers wake, whichever wrote it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Literal

from core.db import (
    DatabaseTarget,
    Migration,
    Migrations,
    PersonalTables,
    PostgresDatabase,
    hold,
    notify,
    open_database,
)
from core.redact import redact

Role = Literal["customer", "bot", "technician", "system"]
# On PostgreSQL, where every replica hears of every new line (LISTEN/NOTIFY).
_CHANNEL = "tierone_messages"
ROLES: tuple[Role, ...] = ("customer", "bot", "technician", "system")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    at TEXT NOT NULL,
    channel TEXT NOT NULL,
    author TEXT,
    PRIMARY KEY (conversation_id, seq)
)""",
    # How many lines of the graph's transcript each conversation's log already holds.
    """CREATE TABLE IF NOT EXISTS message_mirror (
    conversation_id TEXT PRIMARY KEY,
    graph_lines INTEGER NOT NULL
)""",
)


@dataclass(frozen=True)
class Line:
    """One line of a conversation's log."""

    seq: int
    role: str
    text: str
    at: str
    channel: str
    author: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The line as the API serves it."""
        return {
            "seq": self.seq,
            "role": self.role,
            "text": self.text,
            "at": self.at,
            "channel": self.channel,
            "author": self.author,
        }


class Feed:
    """Wakes the readers of a conversation (SSE streams, in any number of tabs) when it changes.

    Writers call ``notify`` from any thread; a reader awaits its subscription and then reads the
    log itself, so a wake-up carries no data and none can be lost or doubled.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self._guard = threading.Lock()

    def subscribe(self, conversation_id: str) -> Subscription:
        """Start listening to a conversation; call from the event loop that will wait."""
        sub = Subscription(self, conversation_id, asyncio.get_running_loop())
        with self._guard:
            self._subscribers.setdefault(conversation_id, set()).add(sub)
        return sub

    def _drop(self, sub: Subscription) -> None:
        with self._guard:
            subs = self._subscribers.get(sub.conversation_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subscribers[sub.conversation_id]

    def listeners(self, conversation_id: str) -> int:
        """How many readers listen to a conversation now."""
        with self._guard:
            return len(self._subscribers.get(conversation_id, ()))

    def notify_all(self) -> None:
        """Wake every reader (changes may have been missed: they each read their log again)."""
        with self._guard:
            subs = [sub for group in self._subscribers.values() for sub in group]
        for sub in subs:
            sub.wake()

    def notify(self, conversation_id: str) -> None:
        """Tell every reader of the conversation that something changed."""
        with self._guard:
            subs = list(self._subscribers.get(conversation_id, ()))
        for sub in subs:
            sub.wake()

    def publish(self, conversation_id: str, event: str, data: dict[str, Any]) -> None:
        """Hand a passing event (a reply's streamed delta) to the readers listening now; it is not stored."""
        with self._guard:
            subs = list(self._subscribers.get(conversation_id, ()))
        for sub in subs:
            sub.push(event, data)


class Subscription:
    """One reader's wake-up signal; close it when the reader goes."""

    def __init__(self, feed: Feed, conversation_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.conversation_id = conversation_id
        self._feed = feed
        self._loop = loop
        self._event = asyncio.Event()
        self._passing: list[tuple[str, dict[str, Any]]] = []

    def wake(self) -> None:
        """Set the signal from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the reader's loop has closed: it is gone
            self._feed._drop(self)

    def push(self, event: str, data: dict[str, Any]) -> None:
        """Queue a passing event for this reader and wake it, from any thread."""

        def add() -> None:
            self._passing.append((event, data))
            self._event.set()

        try:
            self._loop.call_soon_threadsafe(add)
        except RuntimeError:
            self._feed._drop(self)

    def passing(self) -> list[tuple[str, dict[str, Any]]]:
        """Take the passing events queued so far, oldest first (call from the reader's loop)."""
        taken, self._passing = self._passing, []
        return taken

    async def wait(self, timeout: float) -> bool:
        """Wait for a change; False when the timeout passed first."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        """Stop listening."""
        self._feed._drop(self)


class MessageLog:
    """Conversation lines in the desk database, numbered per conversation, each written in its own transaction."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("messages", Migration(1, *_SCHEMA))
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "messages": {"conversation_id": "conversation"},
        "message_mirror": {"conversation_id": "conversation"},
    }

    def __init__(self, path: DatabaseTarget, clock: Callable[[], datetime], feed: Feed | None = None) -> None:
        self.target = path
        self._db = open_database(path)
        self._clock = clock
        self.feed = feed or Feed()
        self._db.migrate(self.MIGRATIONS)
        if isinstance(self._db, PostgresDatabase):
            # Lines other replicas write wake this process's readers too (each notice names a conversation).
            listener = self._db.listen(_CHANNEL, self.feed.notify, on_connect=self.feed.notify_all)
            listener.ready.wait(10)

    def close(self) -> None:
        """Stop listening for other processes' lines and close the database."""
        self._db.close()

    @staticmethod
    def _insert(
        conn: Any, conversation_id: str, role: str, text: str, at: str, channel: str, author: str | None
    ) -> Line:
        # Two writers of one conversation (replicas, the desk and a turn) take the next number in turn.
        hold(conn, f"messages:{conversation_id}")
        row = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?", (conversation_id,)
        ).fetchone()
        line = Line(seq=int(row[0]) + 1, role=role, text=text, at=at, channel=channel, author=author)
        conn.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, line.seq, role, text, at, channel, author),
        )
        notify(conn, _CHANNEL, conversation_id)
        return line

    def append(self, conversation_id: str, role: Role, text: str, channel: str, author: str | None = None) -> Line:
        """Write one line (redacted here) and wake the conversation's readers."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        with self._db.transaction() as conn:
            line = self._insert(conn, conversation_id, role, redact(text), self._clock().isoformat(), channel, author)
        self.feed.notify(conversation_id)
        return line

    def append_on(
        self, conn: Any, conversation_id: str, role: Role, text: str, channel: str, author: str | None = None
    ) -> Line:
        """``append`` inside the caller's transaction on the same database; call ``feed.notify`` after it commits."""
        return self._insert(conn, conversation_id, role, redact(text), self._clock().isoformat(), channel, author)

    def mirror(self, conversation_id: str, transcript: list[dict[str, Any]]) -> list[Line]:
        """Copy the graph transcript's lines that the log lacks; safe to call again with the same transcript."""
        added: list[Line] = []
        with self._db.transaction() as conn:
            hold(conn, f"messages:{conversation_id}")
            row = conn.execute(
                "SELECT graph_lines FROM message_mirror WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            done = int(row[0]) if row else 0
            for entry in transcript[done:]:
                # Graph lines were redacted when the graph wrote them.
                added.append(
                    self._insert(
                        conn,
                        conversation_id,
                        str(entry["role"]),
                        str(entry["text"]),
                        str(entry["at"]),
                        str(entry.get("channel", "chat")),
                        None,
                    )
                )
            if len(transcript) > done:
                conn.execute(
                    "INSERT INTO message_mirror VALUES (?, ?) ON CONFLICT (conversation_id)"
                    " DO UPDATE SET graph_lines = excluded.graph_lines",
                    (conversation_id, len(transcript)),
                )
        if added:
            self.feed.notify(conversation_id)
        return added

    def lines(self, conversation_id: str, after: int = 0) -> list[Line]:
        """The conversation's lines with seq greater than ``after``, in order."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT seq, role, text, at, channel, author FROM messages"
                " WHERE conversation_id = ? AND seq > ? ORDER BY seq",
                (conversation_id, after),
            ).fetchall()
        return [Line(**dict(r)) for r in rows]

    def last_channel(self, conversation_id: str) -> str | None:
        """The channel of the customer's latest line, if the customer wrote at all."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT channel FROM messages WHERE conversation_id = ? AND role = 'customer'"
                " ORDER BY seq DESC LIMIT 1",
                (conversation_id,),
            ).fetchone()
        return str(row[0]) if row else None
