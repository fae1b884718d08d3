"""The email channel's durable records: threads, addresses, inbound mail played, replies to send."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from app.mail.inbound import InboundEmail, thread_subject, trim_references
from core.db import Database, Migration, Migrations, PersonalTables
from core.redact import mask_email
from core.vault import SEALED_PREFIX, Sealer

log = logging.getLogger(__name__)

# A reply the relay refused this many times is given up (status "failed", with its last error).
MAX_SEND_ATTEMPTS = 10

# -- the store -----------------------------------------------------------------------------------

_SCHEMA = (
    # Every mail taken in, by Message-ID: the de-duplication record and a thread anchor.
    """CREATE TABLE IF NOT EXISTS mail_in (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT,
    matched TEXT,
    played INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL
)""",
    # Every mail sent or to send; the body and the address are kept, sealed, only until it has gone out
    # (or been given up): then the body is dropped and the address masked (j***@example.com).
    """CREATE TABLE IF NOT EXISTS mail_out (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    inbound_id TEXT,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT,
    in_reply_to TEXT,
    refs TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT
)""",
    "CREATE INDEX IF NOT EXISTS mail_out_pending ON mail_out (status, created_at)",
    # Where a conversation's mail goes: the latest sender (sealed), subject and thread.
    """CREATE TABLE IF NOT EXISTS mail_threads (
    conversation_id TEXT PRIMARY KEY,
    reply_to TEXT NOT NULL,
    subject TEXT NOT NULL,
    last_in TEXT NOT NULL,
    refs TEXT NOT NULL,
    updated_at TEXT NOT NULL
)""",
    # Which conversations an address may continue; the address is kept as a hash only.
    """CREATE TABLE IF NOT EXISTS mail_contacts (
    address_hash TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    linked_at TEXT NOT NULL,
    PRIMARY KEY (address_hash, conversation_id)
)""",
    "CREATE INDEX IF NOT EXISTS mail_contacts_conversation ON mail_contacts (conversation_id)",
)


def address_hash(address: str) -> str:
    """An unkeyed stand-in for ``MailStore``'s address key (tests, one-off tools); a dictionary reverses it."""
    return hashlib.sha256(f"tierone-mail-contact:{address.strip().casefold()}".encode()).hexdigest()


def masked_address(to: str) -> str:
    """An outgoing mail's address as kept once it is sent: ``j***@example.com``, without the display name."""
    return mask_email(parseaddr(to)[1] or to)


# How an inbound mail found its conversation: a new one, by the thread's Message-IDs, or by the sender.
Matched = Literal["new", "thread", "sender"]


@dataclass(frozen=True)
class Taken:
    """Where the deliveries of one Message-ID got to."""

    conversation_id: str | None  # tied to a conversation (before it was played)
    matched: Matched | None
    played: bool  # played, and its replies recorded


@dataclass(frozen=True)
class Pending:
    """A reply recorded and not yet sent."""

    message_id: str
    conversation_id: str
    to: str
    subject: str
    body: str
    in_reply_to: str | None
    references: tuple[str, ...]


@dataclass(frozen=True)
class Thread:
    """Where a conversation's next mail goes."""

    reply_to: str
    subject: str
    last_in: str
    references: tuple[str, ...]


class MailStore:
    """The email channel's records in SQLite: mail taken in, mail sent, threads, address links."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("mail", Migration(1, *_SCHEMA))
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "mail_in": {"conversation_id": "conversation"},
        "mail_out": {"conversation_id": "conversation"},
        "mail_threads": {"conversation_id": "conversation"},
        "mail_contacts": {"conversation_id": "conversation"},
    }

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime],
        *,
        hash_address: Callable[[str], str] = address_hash,
        sealer: Sealer | None = None,
    ) -> None:
        # A dropped body or address is overwritten on disk, not left behind in a free page.
        self._db = Database(path, secure_delete=True)
        self._clock = clock
        # The service passes the vault's keyed hash (Vault.subject): without the key, no dictionary reverses it.
        self._hash = hash_address
        # And the vault's sealer: the addresses and bodies kept for later are encrypted under its keys.
        self._sealer = sealer or Sealer.ephemeral()
        self._db.migrate(self.MIGRATIONS)
        # Not a migration: a version that wrote in clear may still run beside this one (a rolling
        # upgrade) and leave rows in clear after any migration ran, and sealing needs the vault key.
        with self._db.transaction() as conn:
            self._seal_clear_rows(conn)

    def _seal_clear_rows(self, conn: sqlite3.Connection) -> None:
        """Seal what a version that kept it in clear left behind."""
        clear = f"{SEALED_PREFIX}%"
        seal = self._sealer.seal
        for row in conn.execute(
            "SELECT conversation_id, reply_to FROM mail_threads WHERE reply_to NOT LIKE ?", (clear,)
        ).fetchall():
            conn.execute(
                "UPDATE mail_threads SET reply_to = ? WHERE conversation_id = ?",
                (seal(row["reply_to"]), row["conversation_id"]),
            )
        for row in conn.execute(
            "SELECT message_id, to_addr, body FROM mail_out WHERE status = 'pending' AND to_addr NOT LIKE ?", (clear,)
        ).fetchall():
            conn.execute(
                "UPDATE mail_out SET to_addr = ?, body = ? WHERE message_id = ?",
                (seal(row["to_addr"]), seal(row["body"] or ""), row["message_id"]),
            )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db.transaction() as conn:
            yield conn

    def take(self, message_id: str) -> Taken:
        """Record a Message-ID as taken in (once), and say where an earlier delivery of it got to."""
        with self._tx() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO mail_in (message_id, received_at) VALUES (?, ?)",
                (message_id, self._clock().isoformat()),
            )
            row = conn.execute(
                "SELECT conversation_id, matched, played FROM mail_in WHERE message_id = ?", (message_id,)
            ).fetchone()
        return Taken(row["conversation_id"], cast("Matched | None", row["matched"]), bool(row["played"]))

    def assign(self, message_id: str, conversation_id: str, matched: Matched) -> None:
        """Tie a mail to its conversation before it is played."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_in SET conversation_id = ?, matched = ? WHERE message_id = ?",
                (conversation_id, matched, message_id),
            )

    def conversation_of_mail(self, message_ids: Sequence[str]) -> str | None:
        """The conversation of the first of these Message-IDs that we sent or took in."""
        with self._tx() as conn:
            for mid in message_ids:
                row = conn.execute(
                    "SELECT conversation_id FROM mail_out WHERE message_id = ? UNION ALL"
                    " SELECT conversation_id FROM mail_in WHERE message_id = ? AND conversation_id IS NOT NULL",
                    (mid, mid),
                ).fetchone()
                if row is not None:
                    return str(row[0])
        return None

    def link(self, address: str, conversation_id: str) -> None:
        """Let mail from this address continue this conversation (refreshes the link's time)."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO mail_contacts VALUES (?, ?, ?) ON CONFLICT (address_hash, conversation_id)"
                " DO UPDATE SET linked_at = excluded.linked_at",
                (self._hash(address.strip().casefold()), conversation_id, self._clock().isoformat()),
            )

    def touch(self, conversation_id: str) -> bool:
        """Refresh the time of a conversation's links; False when it has none."""
        with self._tx() as conn:
            changed = conn.execute(
                "UPDATE mail_contacts SET linked_at = ? WHERE conversation_id = ?",
                (self._clock().isoformat(), conversation_id),
            ).rowcount
        return bool(changed)

    def linked(self, address: str, since: datetime) -> list[str]:
        """Conversations this address may continue, linked since then, the latest first."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT conversation_id FROM mail_contacts WHERE address_hash = ? AND linked_at >= ?"
                " ORDER BY linked_at DESC",
                (self._hash(address.strip().casefold()), since.isoformat()),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def thread(self, conversation_id: str) -> Thread | None:
        """Where the conversation's mail goes, if the customer ever wrote by mail."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM mail_threads WHERE conversation_id = ?", (conversation_id,)).fetchone()
        if row is None:
            return None
        reply_to = self._sealer.unseal(row["reply_to"])
        if reply_to is None:
            log.warning("the reply address of a mail conversation was sealed under a key no longer configured")
            return None
        return Thread(reply_to, row["subject"], row["last_in"], tuple(row["refs"].split()))

    def played(self, mail: InboundEmail, conversation_id: str, replies: Sequence[Pending]) -> bool:
        """Record, in one transaction, that a mail was played and what to send back.

        False (and nothing recorded) when another delivery of the same mail recorded it first.
        """
        now = self._clock().isoformat()
        with self._tx() as conn:
            first = conn.execute(
                "UPDATE mail_in SET played = 1 WHERE message_id = ? AND played = 0", (mail.message_id,)
            ).rowcount
            if not first:
                return False
            old = conn.execute(
                "SELECT subject, refs FROM mail_threads WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
            # The customer's latest subject names the thread; a mail without one keeps the old.
            subject = thread_subject(mail.subject) or (old["subject"] if old else "")
            # Every Message-ID of the thread so far (ours included), for the next reply's References.
            references = trim_references(
                dict.fromkeys(
                    [
                        *(old["refs"].split() if old else []),
                        *mail.references,
                        mail.message_id,
                        *(r.message_id for r in replies),
                    ]
                )
            )
            conn.execute(
                "INSERT INTO mail_threads VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (conversation_id) DO UPDATE SET"
                " reply_to = excluded.reply_to, subject = excluded.subject, last_in = excluded.last_in,"
                " refs = excluded.refs, updated_at = excluded.updated_at",
                (
                    conversation_id,
                    self._sealer.seal(mail.reply_to),
                    subject,
                    mail.message_id,
                    " ".join(references),
                    now,
                ),
            )
            for reply in replies:
                self._record(conn, reply, mail.message_id, now)
        return True

    def record(self, reply: Pending) -> None:
        """Record a reply to send (not in answer to a particular mail: an L2 reply) and add it to the thread."""
        with self._tx() as conn:
            self.record_on(conn, reply)

    def record_on(self, conn: sqlite3.Connection, reply: Pending) -> None:
        """``record`` inside the caller's transaction on the same database (an incident's delivery ledger)."""
        self._record(conn, reply, None, self._clock().isoformat())
        old = conn.execute(
            "SELECT refs FROM mail_threads WHERE conversation_id = ?", (reply.conversation_id,)
        ).fetchone()
        if old is not None:
            refs = trim_references(dict.fromkeys([*old["refs"].split(), reply.message_id]))
            conn.execute(
                "UPDATE mail_threads SET refs = ? WHERE conversation_id = ?",
                (" ".join(refs), reply.conversation_id),
            )

    def _record(self, conn: sqlite3.Connection, reply: Pending, inbound_id: str | None, now: str) -> None:
        conn.execute(
            "INSERT INTO mail_out (message_id, conversation_id, inbound_id, to_addr, subject, body, in_reply_to,"
            " refs, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
            (
                reply.message_id,
                reply.conversation_id,
                inbound_id,
                self._sealer.seal(reply.to),
                reply.subject,
                self._sealer.seal(reply.body),
                reply.in_reply_to,
                " ".join(reply.references),
                now,
            ),
        )

    def pending(self, inbound_id: str | None = None) -> list[Pending]:
        """Replies not yet sent (those answering one mail, or all), oldest first."""
        query = "SELECT * FROM mail_out WHERE status = 'pending'"
        args: tuple[Any, ...] = ()
        if inbound_id is not None:
            query += " AND inbound_id = ?"
            args = (inbound_id,)
        out = []
        with self._tx() as conn:
            for r in conn.execute(query + " ORDER BY created_at, rowid", args).fetchall():
                to, body = self._sealer.unseal(r["to_addr"]), self._sealer.unseal(r["body"] or "")
                if to is None or body is None:
                    conn.execute(
                        "UPDATE mail_out SET status = 'failed', error = ? WHERE message_id = ?",
                        ("sealed under a key no longer configured", r["message_id"]),
                    )
                    self._settle(conn, r["message_id"])
                    continue
                out.append(
                    Pending(
                        r["message_id"],
                        r["conversation_id"],
                        to,
                        r["subject"],
                        body,
                        r["in_reply_to"],
                        tuple(r["refs"].split()),
                    )
                )
        return out

    def _settle(self, conn: sqlite3.Connection, message_id: str) -> None:
        # A mail that will not be sent again keeps neither its body (the message log has the redacted
        # text) nor its address, but masked.
        row = conn.execute("SELECT to_addr FROM mail_out WHERE message_id = ?", (message_id,)).fetchone()
        if row is not None:
            to = self._sealer.unseal(row["to_addr"])
            conn.execute(
                "UPDATE mail_out SET body = NULL, to_addr = ? WHERE message_id = ?",
                (masked_address(to) if to is not None else "[email]", message_id),
            )

    def sent(self, message_id: str) -> None:
        """Mark a reply sent, drop its body and mask its address."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_out SET status = 'sent', error = NULL, attempts = attempts + 1,"
                " sent_at = ? WHERE message_id = ?",
                (self._clock().isoformat(), message_id),
            )
            self._settle(conn, message_id)

    def failed(self, message_id: str, error: str) -> None:
        """Count a failed attempt; the reply stays pending until MAX_SEND_ATTEMPTS, then it is given up."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE mail_out SET attempts = attempts + 1, error = ?,"
                " status = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE status END WHERE message_id = ?",
                (error, MAX_SEND_ATTEMPTS, message_id),
            )
            row = conn.execute("SELECT status FROM mail_out WHERE message_id = ?", (message_id,)).fetchone()
            if row is not None and row["status"] == "failed":
                self._settle(conn, message_id)

    def compact(self) -> bool:
        """Copy the write-ahead log into the file and empty it, so dropped bodies leave no old copy there.

        Waits at most a moment for other readers; False when one held on (the old frames are then
        overwritten as the log is reused, not at once).
        """
        conn = sqlite3.connect(self._db.path, timeout=0.2)
        try:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
        return not busy

    def outgoing(self, conversation_id: str) -> list[dict[str, Any]]:
        """A conversation's replies by mail, oldest first (status, attempts, error; no bodies)."""
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT message_id, inbound_id, subject, in_reply_to, status, attempts, error, created_at, sent_at"
                " FROM mail_out WHERE conversation_id = ? ORDER BY created_at, rowid",
                (conversation_id,),
            ).fetchall()
        return [dict(r) for r in rows]
