"""Erasure: a customer's conversations, packets, messages and vault entries deleted on request, and audited.

A request names one conversation or a customer's email address. An address is matched through the
vault's keyed hashes (every conversation that gave it) and through the directory (every conversation
whose tools acted on that account). Deleted: the LangGraph checkpoints, every desk-database row of
those conversations (register, message log, packets and their desk and delivery records, tool runs,
pending codes, mail records), the directory's action records made in them, the vault entries, and
the conversations' mail in the file outbox. Kept: the tool audit log (ids, tool names and outcomes;
no personal data), which a bank must keep, and one ``erasures`` record that counts what went.

Each store of the desk database names the tables and columns that tie its rows to a conversation
(``PERSONAL_TABLES``, core/db.py); erasure deletes by those rather than by what the catalogue holds.
On SQLite, deleted rows are overwritten on disk (``secure_delete``), the write-ahead logs truncated
and the checkpoint file rewritten (VACUUM). On PostgreSQL the same rows are deleted in one
transaction, and no query, replica or ``tierone`` command can read them again; but PostgreSQL keeps
a deleted row's bytes as a dead tuple in the table's file until VACUUM (autovacuum, within minutes
on a busy table) reclaims its space, and even then the bytes may stay in free space until it is
reused; the server's write-ahead log holds them until it is recycled, and any base backup, WAL
archive or standby taken meanwhile keeps them for as long as the operator keeps those. Erasure does
not reach those copies: the operator's backup retention bounds how long they live.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from agent.resolver import Resolver
from core.db import (
    Connection,
    DatabaseTarget,
    Dialect,
    Migration,
    Migrations,
    Store,
    Tie,
    open_database,
    sqlite_columns,
)
from core.errors import TieroneError
from core.vault import Vault
from tools.base import Directory
from tools.outbox import FileOutbox

# Kept on purpose: the security record of what tools did (no personal data) and erasures themselves.
KEPT_TABLES = frozenset({"audit", "erasures"})


_ERASURES = """CREATE TABLE IF NOT EXISTS erasures (
    erasure_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    conversations TEXT NOT NULL,
    deleted TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT 'cli'
)"""


def _add_actor(conn: Connection, dialect: Dialect) -> None:
    """Give records of a version from before the actor column one: they were all made from the CLI."""
    if "actor" not in sqlite_columns(conn, "erasures"):
        conn.execute("ALTER TABLE erasures ADD COLUMN actor TEXT NOT NULL DEFAULT 'cli'")


class ErasureRequestError(TieroneError):
    """An erasure request named neither a conversation nor an address, or both."""


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure deleted: counts per store, never the deleted data."""

    erasure_id: str
    at: datetime
    requested_by: Literal["conversation", "email"]
    conversations: list[str]
    deleted: dict[str, int] = field(default_factory=dict)
    kept_audit_records: int = 0
    actor: str = "cli"

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {**asdict(self), "at": self.at.isoformat()}


def _in(values: list[str]) -> str:
    return ",".join("?" * len(values))


@dataclass(frozen=True)
class ErasureScope:
    """What erasure reaches, as the composition root (app/runtime.py) wires it."""

    desk_db: DatabaseTarget  # a SQLite file, or the PostgreSQL database
    stores: Sequence[type[Store]]  # every store of the desk database, each naming what it holds
    vault: Vault
    resolver: Resolver  # the conversation register, the checkpoints and each conversation's lock
    directory: Directory  # the account behind an address
    outbox: FileOutbox
    verification_ttl: timedelta
    clock: Callable[[], datetime]


class Eraser:
    """Finds and deletes one customer's data across the stores of the desk database, the vault and the checkpoints."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "erasure",
        Migration(1, _ERASURES),
        # Who asked: "cli", "customer" (a conversation's token), or "admin:<key name>". No PostgreSQL
        # database predates the column.
        Migration(2, {"sqlite": _add_actor, "postgresql": None}),
    )

    def __init__(self, scope: ErasureScope, clock: Callable[[], datetime] | None = None) -> None:
        self.scope = scope
        self.clock = clock or self.scope.clock
        self._db = open_database(self.scope.desk_db, secure_delete=True)
        self._db.migrate(self.MIGRATIONS)
        # So that every table named below exists, of a store this process never opened too.
        for store in self.scope.stores:
            self._db.migrate(store.MIGRATIONS)
        self.tables: dict[str, dict[str, Tie]] = {}
        for store in self.scope.stores:
            for table, columns in store.PERSONAL_TABLES.items():
                self.tables[table] = dict(columns)

    def conversations_of(self, email: str) -> list[str]:
        """Every conversation that gave this address or whose tools acted on its account."""
        found = set(self.scope.vault.conversations_of(email))
        account = self.scope.directory.find_by_email(email)
        if account is not None:
            with self._db.transaction() as conn:
                for table in ("tool_runs", "audit"):
                    rows = conn.execute(
                        f"SELECT DISTINCT conversation_id FROM {table} WHERE account_id = ?", (account.account_id,)
                    )
                    found.update(r[0] for r in rows)
        known = set(self.scope.resolver.conversations.ids())
        return sorted(c for c in found if c in known or self._has_checkpoint(c))

    def _saver(self) -> BaseCheckpointSaver[Any]:
        saver = self.scope.resolver.graph.checkpointer
        assert isinstance(saver, BaseCheckpointSaver)
        return saver

    def _has_checkpoint(self, conversation_id: str) -> bool:
        config: RunnableConfig = {"configurable": {"thread_id": conversation_id}}
        return next(iter(self._saver().list(config, limit=1)), None) is not None

    def verified_email(self, conversation_id: str) -> str | None:
        """The address this conversation proved with a code, while that proof has not expired; else None."""
        customer = self.scope.resolver.view(conversation_id).get("customer") or {}
        verified_at, account_id = customer.get("verified_at"), customer.get("account_id")
        if not (verified_at and account_id):
            return None
        if self.clock() - datetime.fromisoformat(verified_at) > self.scope.verification_ttl:
            return None
        account = self.scope.directory.get(str(account_id))
        return account.email if account is not None else None

    def forget_customer(self, conversation_id: str, actor: str = "customer") -> ErasureReport:
        """Delete a conversation at its customer's request, with every other conversation of the address it verified.

        Only a verification that has not expired widens the erasure: holding the conversation's token
        alone proves nothing about the address, a fresh matching code does.
        """
        self.scope.resolver.conversations.get(conversation_id)  # ConversationNotFound names a wrong id
        email = self.verified_email(conversation_id)
        targets = sorted({conversation_id, *(self.conversations_of(email) if email else [])})
        return self._erase(targets, "conversation", actor)

    def forget(
        self, *, conversation_id: str | None = None, email: str | None = None, actor: str = "cli"
    ) -> ErasureReport:
        """Delete one conversation, or every conversation of an address; return what went."""
        if (conversation_id is None) == (email is None):
            raise ErasureRequestError("name either a conversation id or an email address to forget, not both")
        if conversation_id is not None:
            self.scope.resolver.conversations.get(conversation_id)  # ConversationNotFound names a wrong id
            return self._erase([conversation_id], "conversation", actor)
        assert email is not None
        if "@" not in email:
            raise ErasureRequestError(f"{email!r} is not an email address")
        return self._erase(self.conversations_of(email), "email", actor)

    def _erase(self, targets: list[str], requested_by: Literal["conversation", "email"], actor: str) -> ErasureReport:
        deleted: dict[str, int] = {}
        for cid in targets:
            # No turn of this conversation runs while it is being deleted.
            with self.scope.resolver.lock(cid):
                for store, count in self._forget_one(cid).items():
                    deleted[store] = deleted.get(store, 0) + count
        kept = 0
        with self._db.transaction() as conn:
            if targets:
                kept = conn.execute(
                    f"SELECT COUNT(*) FROM audit WHERE conversation_id IN ({_in(targets)})", targets
                ).fetchone()[0]
        report = ErasureReport(
            erasure_id="ER-" + secrets.token_hex(5).upper(),
            at=self.clock(),
            requested_by=requested_by,
            conversations=targets,
            deleted={k: v for k, v in sorted(deleted.items()) if v},
            kept_audit_records=kept,
            actor=actor,
        )
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO erasures (erasure_id, at, requested_by, conversations, deleted, actor)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    report.erasure_id,
                    report.at.isoformat(),
                    report.requested_by,
                    json.dumps(report.conversations),
                    json.dumps(report.deleted),
                    report.actor,
                ),
            )
        self._db.checkpoint()
        if targets:
            self.scope.vault.compact()
            self._compact_checkpoints()
        return report

    def _compact_checkpoints(self) -> None:
        """Rewrite the checkpoint file so no copy of an erased row survives in a page's free space."""
        # secure_delete zeroes the deleted rows, but a b-tree page split can leave copies of cells in
        # the free space of another page: tests/api/test_erasure_http.py found an erased conversation's
        # id there in about a third of its runs. VACUUM rewrites every page; it holds the saver's lock,
        # so turns wait meanwhile (erasures are rare; the cost grows with the file).
        saver = self._saver()
        conn = getattr(saver, "conn", None)
        if not isinstance(conn, sqlite3.Connection):
            return
        with getattr(saver, "lock", nullcontext()):
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _forget_one(self, cid: str) -> dict[str, int]:
        deleted = {"checkpoints": self._forget_checkpoints(cid)}
        with self._db.transaction() as conn:
            packets = [r[0] for r in conn.execute("SELECT packet_id FROM handoffs WHERE conversation_id = ?", (cid,))]
            for table, columns in self.tables.items():
                count = sum(_delete(conn, table, column, tie, cid, packets) for column, tie in columns.items())
                if count:
                    deleted[table] = count
        deleted["vault"] = self.scope.vault.forget(cid)
        deleted["outbox_mail"] = self._forget_mail(cid)
        return deleted

    def _forget_checkpoints(self, cid: str) -> int:
        saver = self._saver()
        config: RunnableConfig = {"configurable": {"thread_id": cid}}
        count = len(list(saver.list(config)))
        conn_of_saver = getattr(saver, "conn", None)
        if isinstance(conn_of_saver, sqlite3.Connection):
            conn_of_saver.execute("PRAGMA secure_delete=ON")
        saver.delete_thread(cid)
        if isinstance(conn_of_saver, sqlite3.Connection):
            conn_of_saver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count

    def _forget_mail(self, cid: str) -> int:
        path = self.scope.outbox.path
        if not path.exists():
            return 0
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("conversation_id") != cid]
        if len(kept) == len(lines):
            return 0
        tmp = path.with_suffix(".erasing")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(path)
        return len(lines) - len(kept)

    def history(self) -> list[dict[str, Any]]:
        """Every erasure so far, oldest first (ids, counts; no personal data)."""
        with self._db.transaction() as conn:
            rows = conn.execute("SELECT * FROM erasures ORDER BY at").fetchall()
        return [
            {**dict(r), "conversations": json.loads(r["conversations"]), "deleted": json.loads(r["deleted"])}
            for r in rows
        ]


def _delete(conn: Connection, table: str, column: str, tie: Tie, cid: str, packets: list[str]) -> int:
    """Delete the rows of a table that this column ties to the conversation; return how many."""
    if tie == "conversation":
        return int(conn.execute(f'DELETE FROM "{table}" WHERE "{column}" = ?', (cid,)).rowcount)
    if tie == "packet":
        if not packets:
            return 0
        return int(conn.execute(f'DELETE FROM "{table}" WHERE "{column}" IN ({_in(packets)})', packets).rowcount)
    # An idempotency key starts with the conversation it was made in.
    return int(
        conn.execute(f'DELETE FROM "{table}" WHERE substr("{column}", 1, ?) = ?', (len(cid) + 1, cid + ":")).rowcount
    )
