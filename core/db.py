"""Databases opened the same way everywhere, and the numbered migrations that build each store's schema.

A store declares its schema in one place, as the numbered migrations of its component
(``Migrations("desk", Migration(1, "CREATE TABLE ..."), Migration(2, ...))``), and applies them when it opens
(``Database.migrate``). Each migration runs in its own transaction and is recorded in
``schema_migrations`` (component, version, applied_at), so it runs once per database.

A step of a migration is SQL that every dialect runs, SQL per dialect (``{"sqlite": ...,
"postgresql": ...}``, ``None`` where a dialect has nothing to do), or a function of the connection and
the dialect, for an upgrade that first looks whether it is needed. SQLite is the one dialect built.

A store that holds customers' conversations also declares ``PERSONAL_TABLES``: which columns tie a
row to a conversation, so that erasure (app/erasure.py) finds every row without reading the catalogue.

The runner is written here rather than taken from alembic: the stores speak plain SQL without
SQLAlchemy, and what they need (ordered versions per component, a transaction each, a record) fits
on this page, where alembic would bring SQLAlchemy and a second description of every table.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from core.clock import utc_now
from core.errors import MigrationFailed

Dialect = Literal["sqlite", "postgresql"]


class Connection(Protocol):
    """What a migration step may use of a connection (sqlite3's, and psycopg's once PostgreSQL comes)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any:
        """Run one statement."""


Action = str | Callable[[Connection, Dialect], None]
Step = Action | Mapping[Dialect, Action | None]

# How a column ties a row to a conversation: it holds the conversation's id, the id of one of its
# handoff packets, or an idempotency key that starts with "<conversation id>:".
Tie = Literal["conversation", "packet", "key"]
PersonalTables = Mapping[str, Mapping[str, Tie]]  # table -> {column: tie}


class Store(Protocol):
    """A store of the desk database: its schema, and the rows it holds of customers' conversations."""

    MIGRATIONS: ClassVar[Migrations]
    PERSONAL_TABLES: ClassVar[PersonalTables]


class Migration:
    """One numbered change to a component's schema: its steps run in one transaction."""

    def __init__(self, version: int, *steps: Step) -> None:
        self.version = version
        self.steps = steps

    def apply(self, conn: Connection, dialect: Dialect, component: str) -> None:
        """Run the steps on a connection inside the caller's transaction."""
        for step in self.steps:
            if isinstance(step, Mapping):
                if dialect not in step:
                    raise MigrationFailed(component, self.version, f"one of its steps has no SQL for {dialect}")
                action = step[dialect]
            else:
                action = step
            if isinstance(action, str):
                conn.execute(action)
            elif action is not None:
                action(conn, dialect)


class Migrations:
    """A component's schema: its migrations, numbered 1, 2, 3... in the order they run."""

    def __init__(self, component: str, *migrations: Migration) -> None:
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(f"the migrations of {component!r} must be numbered 1, 2, 3...; got {versions}")
        self.component = component
        self.migrations = migrations

    @property
    def latest(self) -> int:
        """The version a database has once every migration ran."""
        return len(self.migrations)


_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version INTEGER NOT NULL,
    applied_at TEXT NOT NULL,
    PRIMARY KEY (component, version)
)"""


def sqlite_columns(conn: Connection, table: str) -> set[str]:
    """The column names of a SQLite table (none when it does not exist)."""
    return {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}


class Database:
    """One connection to a SQLite file, shared by a store's threads one transaction at a time."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, secure_delete: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Several processes may write (server, CLI): wait rather than fail with "database is locked".
        self._conn = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a killed process; only an OS crash can lose the last commits.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        if secure_delete:
            # Deleted values are overwritten on disk, not left behind in free pages.
            self._conn.execute("PRAGMA secure_delete=ON")
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run statements in one write transaction: commit on success, roll back on error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def migrate(self, schema: Migrations) -> list[int]:
        """Apply the component's migrations this database lacks, each in its own transaction; return their versions."""
        with self.transaction() as conn:
            conn.execute(_LEDGER)
            done = _versions(conn, schema.component)
        applied = []
        for migration in schema.migrations:
            if migration.version in done:
                continue
            try:
                with self.transaction() as conn:
                    # Another process may have applied it since we looked.
                    if migration.version in _versions(conn, schema.component):
                        continue
                    migration.apply(conn, self.dialect, schema.component)
                    conn.execute(
                        "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?, ?, ?)",
                        (schema.component, migration.version, utc_now().isoformat()),
                    )
            except MigrationFailed:
                raise
            except Exception as exc:
                raise MigrationFailed(schema.component, migration.version, str(exc)) from exc
            applied.append(migration.version)
        return applied

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the file and empty it, so no old copy of a deleted row stays there."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def _versions(conn: sqlite3.Connection, component: str) -> set[int]:
    rows = conn.execute("SELECT version FROM schema_migrations WHERE component = ?", (component,))
    return {int(r[0]) for r in rows}
