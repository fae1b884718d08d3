"""Erasure: a customer's conversations, packets, messages and vault entries deleted on request, and audited.

A request names one conversation or a customer's email address. An address is matched through the
vault's keyed hashes (every conversation that gave it) and through the directory (every conversation
whose tools acted on that account). Deleted: the LangGraph checkpoints, every desk-database row of
those conversations (register, message log, packets and their desk and delivery records, tool runs,
pending codes, mail records), the directory's action records made in them, the vault entries, and
the conversations' mail in the file outbox. Kept: the tool audit log (ids, tool names and outcomes;
no personal data), which a bank must keep, and one ``erasures`` record that counts what went.

Deleted rows are overwritten on disk (``secure_delete``) and the write-ahead logs truncated.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from core.errors import TieroneError

if TYPE_CHECKING:
    from app.runtime import Runtime

# Kept on purpose: the security record of what tools did (no personal data) and erasures themselves.
KEPT_TABLES = frozenset({"audit", "erasures"})

_SCHEMA = """CREATE TABLE IF NOT EXISTS erasures (
    erasure_id TEXT PRIMARY KEY,
    at TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    conversations TEXT NOT NULL,
    deleted TEXT NOT NULL,
    actor TEXT NOT NULL DEFAULT 'cli'
)"""

# Who asked: "cli", "customer" (a conversation's token), or "admin:<key name>". Older records read as "cli".
_ACTOR_COLUMN = "ALTER TABLE erasures ADD COLUMN actor TEXT NOT NULL DEFAULT 'cli'"


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


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA secure_delete=ON")
    return conn


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _in(values: list[str]) -> str:
    return ",".join("?" * len(values))


class Eraser:
    """Finds and deletes one customer's data across the stores of a runtime."""

    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] | None = None) -> None:
        self.runtime = runtime
        self.resolver = runtime.resolver
        self.desk_db = runtime.settings.desk_db
        vault = runtime.resolver.deps.toolbox.vault
        assert vault is not None
        self.vault = vault
        self.clock = clock or runtime.resolver.deps.clock
        with _connect(self.desk_db) as conn:
            conn.execute(_SCHEMA)
            if "actor" not in _columns(conn, "erasures"):
                conn.execute(_ACTOR_COLUMN)

    def conversations_of(self, email: str) -> list[str]:
        """Every conversation that gave this address or whose tools acted on its account."""
        found = set(self.vault.conversations_of(email))
        account = self.resolver.deps.toolbox.directory.find_by_email(email)
        if account is not None:
            with _connect(self.desk_db) as conn:
                for table in ("tool_runs", "audit"):
                    rows = conn.execute(
                        f"SELECT DISTINCT conversation_id FROM {table} WHERE account_id = ?", (account.account_id,)
                    )
                    found.update(r[0] for r in rows)
        known = set(self.resolver.conversations.ids())
        return sorted(c for c in found if c in known or self._has_checkpoint(c))

    def _saver(self) -> BaseCheckpointSaver[Any]:
        saver = self.resolver.graph.checkpointer
        assert isinstance(saver, BaseCheckpointSaver)
        return saver

    def _has_checkpoint(self, conversation_id: str) -> bool:
        config: RunnableConfig = {"configurable": {"thread_id": conversation_id}}
        return next(iter(self._saver().list(config, limit=1)), None) is not None

    def verified_email(self, conversation_id: str) -> str | None:
        """The address this conversation proved with a code, while that proof has not expired; else None."""
        customer = self.resolver.view(conversation_id).get("customer") or {}
        verified_at, account_id = customer.get("verified_at"), customer.get("account_id")
        if not (verified_at and account_id):
            return None
        ttl = timedelta(minutes=self.runtime.settings.verification_ttl_minutes)
        if self.clock() - datetime.fromisoformat(verified_at) > ttl:
            return None
        account = self.resolver.deps.toolbox.directory.get(str(account_id))
        return account.email if account is not None else None

    def forget_customer(self, conversation_id: str, actor: str = "customer") -> ErasureReport:
        """Delete a conversation at its customer's request, with every other conversation of the address it verified.

        Only a verification that has not expired widens the erasure: holding the conversation's token
        alone proves nothing about the address, a fresh matching code does.
        """
        self.resolver.conversations.get(conversation_id)  # ConversationNotFound names a wrong id
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
            self.resolver.conversations.get(conversation_id)  # ConversationNotFound names a wrong id
            return self._erase([conversation_id], "conversation", actor)
        assert email is not None
        if "@" not in email:
            raise ErasureRequestError(f"{email!r} is not an email address")
        return self._erase(self.conversations_of(email), "email", actor)

    def _erase(self, targets: list[str], requested_by: Literal["conversation", "email"], actor: str) -> ErasureReport:
        deleted: dict[str, int] = {}
        for cid in targets:
            # No turn of this conversation runs while it is being deleted.
            with self.resolver._lock(cid):
                for store, count in self._forget_one(cid).items():
                    deleted[store] = deleted.get(store, 0) + count
        kept = 0
        with _connect(self.desk_db) as conn:
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
        with _connect(self.desk_db) as conn:
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
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        vault_db = self.runtime.settings.vault_db
        if targets and vault_db.exists():
            # The vault's write-ahead log still holds the pages as they were before the delete.
            with _connect(vault_db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return report

    def _forget_one(self, cid: str) -> dict[str, int]:
        deleted: dict[str, int] = {}
        saver = self._saver()
        config: RunnableConfig = {"configurable": {"thread_id": cid}}
        deleted["checkpoints"] = len(list(saver.list(config)))
        conn_of_saver = getattr(saver, "conn", None)
        if isinstance(conn_of_saver, sqlite3.Connection):
            conn_of_saver.execute("PRAGMA secure_delete=ON")
        saver.delete_thread(cid)
        if isinstance(conn_of_saver, sqlite3.Connection):
            conn_of_saver.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        with _connect(self.desk_db) as conn:
            conn.execute("BEGIN IMMEDIATE")
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            packets: list[str] = []
            if "handoffs" in tables:
                packets = [
                    r[0] for r in conn.execute("SELECT packet_id FROM handoffs WHERE conversation_id = ?", (cid,))
                ]
            for table in tables:
                if table in KEPT_TABLES or table.startswith("sqlite_"):
                    continue
                columns = _columns(conn, table)
                count = 0
                if "conversation_id" in columns:
                    count += conn.execute(f'DELETE FROM "{table}" WHERE conversation_id = ?', (cid,)).rowcount
                if "packet_id" in columns and packets:
                    count += conn.execute(
                        f'DELETE FROM "{table}" WHERE packet_id IN ({_in(packets)})', packets
                    ).rowcount
                if table == "directory_actions":
                    # The embedded directory's record of actions taken in this conversation (keys start with its id).
                    count += conn.execute(
                        "DELETE FROM directory_actions WHERE substr(key, 1, ?) = ?", (len(cid) + 1, cid + ":")
                    ).rowcount
                if count:
                    deleted[table] = count
            conn.execute("COMMIT")
        deleted["vault"] = self.vault.forget(cid)
        deleted["outbox_mail"] = self._forget_mail(cid)
        return deleted

    def _forget_mail(self, cid: str) -> int:
        path = getattr(self.runtime.outbox, "path", None)
        if not isinstance(path, Path) or not path.exists():
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
        with _connect(self.desk_db) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM erasures ORDER BY at").fetchall()
        return [
            {**dict(r), "conversations": json.loads(r["conversations"]), "deleted": json.loads(r["deleted"])}
            for r in rows
        ]
