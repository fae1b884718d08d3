"""The tool ledger: idempotency records, the audit log and pending one-time codes, in the desk database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from core.db import DatabaseTarget, Migration, Migrations, PersonalTables, Step, open_database

_AUDIT = """CREATE TABLE IF NOT EXISTS audit (
        seq {seq},
        at TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        account_id TEXT,
        key TEXT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )"""

_SCHEMA: list[Step] = [
    """CREATE TABLE IF NOT EXISTS tool_runs (
        key TEXT PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        tool TEXT NOT NULL,
        account_id TEXT,
        status TEXT NOT NULL,
        result TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT
    )""",
    {
        "sqlite": _AUDIT.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT"),
        "postgresql": _AUDIT.format(seq="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
    },
    """CREATE TABLE IF NOT EXISTS codes (
        conversation_id TEXT PRIMARY KEY,
        account_id TEXT,
        code_hash TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    )""",
]


class Ledger:
    """Records every tool run before and after it acts, so a replay never acts twice."""

    MIGRATIONS: ClassVar[Migrations] = Migrations("ledger", Migration(1, *_SCHEMA))
    # The audit log is kept on erasure: it names tools and outcomes, no personal data (app/erasure.py).
    PERSONAL_TABLES: ClassVar[PersonalTables] = {
        "tool_runs": {"conversation_id": "conversation"},
        "codes": {"conversation_id": "conversation"},
    }

    def __init__(self, path: DatabaseTarget, clock: Callable[[], datetime]) -> None:
        self.target = path
        self._db = open_database(path)
        self._clock = clock
        self._db.migrate(self.MIGRATIONS)

    def finished(self, key: str) -> dict[str, Any] | None:
        """The stored result of a run that finished under this key, or None."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT result FROM tool_runs WHERE key = ? AND status = 'done'", (key,)).fetchone()
        return json.loads(row["result"]) if row else None

    def start(self, key: str, conversation_id: str, tool: str, account_id: str | None) -> None:
        """Record the intent to run before acting (kept if the process dies mid-action)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO tool_runs (key, conversation_id, tool, account_id, status, started_at)"
                " VALUES (?, ?, ?, ?, 'started', ?) ON CONFLICT DO NOTHING",
                (key, conversation_id, tool, account_id, self._clock().isoformat()),
            )

    def finish(
        self,
        key: str,
        conversation_id: str,
        tool: str,
        account_id: str | None,
        result: dict[str, Any],
        *,
        ok: bool,
        detail: str = "",
        consume_code: bool = False,
    ) -> None:
        """Store the run's result and append the audit record, in one transaction.

        With ``consume_code`` the conversation's pending one-time code is dropped in that same
        transaction: a code is used up exactly when its successful check is on record.
        """
        now = self._clock().isoformat()
        with self._db.transaction() as conn:
            if consume_code:
                conn.execute("DELETE FROM codes WHERE conversation_id = ?", (conversation_id,))
            conn.execute(
                "UPDATE tool_runs SET status = ?, result = ?, finished_at = ? WHERE key = ?",
                ("done" if ok else "failed", json.dumps(result), now, key),
            )
            conn.execute(
                "INSERT INTO audit (at, conversation_id, tool, account_id, key, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (now, conversation_id, tool, account_id, key, "ok" if ok else "failed", detail),
            )

    def audit(self, conversation_id: str | None = None) -> list[dict[str, Any]]:
        """Audit records, oldest first, optionally for one conversation."""
        query = "SELECT * FROM audit"
        args: tuple[Any, ...] = ()
        if conversation_id is not None:
            query += " WHERE conversation_id = ?"
            args = (conversation_id,)
        with self._db.transaction() as conn:
            return [dict(r) for r in conn.execute(query + " ORDER BY seq", args).fetchall()]

    def refuse(self, key: str, conversation_id: str, tool: str, account_id: str | None, detail: str) -> None:
        """Audit a call that was refused before it acted (not authorized, over a limit)."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (at, conversation_id, tool, account_id, key, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, 'refused', ?)",
                (self._clock().isoformat(), conversation_id, tool, account_id, key, detail),
            )

    def recent(
        self, account_id: str, tools: tuple[str, ...], since: datetime, conversation_id: str | None = None
    ) -> list[datetime]:
        """When these tools acted on this account (audited ``ok``) since a time, newest first."""
        marks = ",".join("?" * len(tools))
        query = f"SELECT at FROM audit WHERE account_id = ? AND tool IN ({marks}) AND outcome = 'ok' AND at >= ?"
        args: tuple[Any, ...] = (account_id, *tools, since.isoformat())
        if conversation_id is not None:
            query += " AND conversation_id = ?"
            args += (conversation_id,)
        with self._db.transaction() as conn:
            rows = conn.execute(query + " ORDER BY at DESC", args).fetchall()
        return [datetime.fromisoformat(r["at"]) for r in rows]

    def put_code(self, conversation_id: str, account_id: str | None, code_hash: str, expires_at: datetime) -> None:
        """Store the pending code of a conversation, replacing an older one."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO codes (conversation_id, account_id, code_hash, expires_at, attempts)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT (conversation_id) DO UPDATE SET account_id = excluded.account_id,"
                " code_hash = excluded.code_hash, expires_at = excluded.expires_at, attempts = 0",
                (conversation_id, account_id, code_hash, expires_at.isoformat()),
            )

    def take_code_attempt(self, conversation_id: str) -> dict[str, Any] | None:
        """Count one attempt against the pending code and return it, or None if there is none."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE codes SET attempts = attempts + 1 WHERE conversation_id = ?", (conversation_id,))
            row = conn.execute("SELECT * FROM codes WHERE conversation_id = ?", (conversation_id,)).fetchone()
        return dict(row) if row else None

    def drop_code(self, conversation_id: str) -> None:
        """Forget the pending code (used once, or expired)."""
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM codes WHERE conversation_id = ?", (conversation_id,))
