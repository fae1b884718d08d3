"""Moving an embedded deployment (SQLite files in a data folder) into the PostgreSQL of ``TIERONE_DATABASE_URL``.

``move_from_sqlite(source, settings)`` brings both sides to this version's schema, then copies in ONE
PostgreSQL transaction, so a refusal or a failure leaves the target as it was:

- every table of ``tierone.sqlite`` (the desk stores) and ``vault.sqlite`` (values stay encrypted: the
  target must run with the same vault key), row by row with ``ON CONFLICT DO NOTHING`` keyed by each
  table's primary key, identity sequences advanced past the copied ids;
- LangGraph's checkpoints and pending writes of ``conversations.sqlite``, read with ``SqliteSaver`` and
  written with ``PostgresSaver`` (the two savers keep different tables).

A row already in the target with the same key and the same values counts as present, so a second run
copies nothing; the same key with other values is refused, naming the table. The routing index is not
copied: a service rebuilds it from the pack when it starts.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg import Connection, sql

from app.runtime import desk_target, migrate_databases
from core.db import PostgresDatabase, open_database
from core.errors import TieroneError
from core.settings import Settings

# The SQLite files of a data folder whose tables are copied as they are, by file name.
TABLE_FILES = ("tierone.sqlite", "vault.sqlite")
CHECKPOINT_FILE = "conversations.sqlite"
# Tables the copy leaves: SQLite's own, and the migration ledgers (the target keeps its own).
_NOT_DATA = {"schema_migrations", "sqlite_sequence", "sqlite_stat1"}


class MoveRefused(TieroneError):
    """The copy was not made (nothing was written); the text says why and what to do."""


@dataclass(frozen=True)
class Copied:
    """One table's copy: rows written now, and rows the target already held with the same values."""

    source: str
    table: str
    copied: int
    present: int


def move_from_sqlite(source: Path, settings: Settings) -> list[Copied]:
    """Copy the deployment in ``source`` into ``settings.database_url``; return what was copied, per table."""
    if settings.database_url is None:
        raise MoveRefused("TIERONE_DATABASE_URL is not set: set it to the PostgreSQL database to copy into")
    if not (source / "tierone.sqlite").is_file():
        raise MoveRefused(f"{source} holds no tierone.sqlite: give the data folder of the deployment to copy")
    # The SQLite files first reach this version's schema, as `tierone serve` would bring them there.
    migrate_databases(settings.model_copy(update={"data_dir": source, "database_url": None}))
    migrate_databases(settings)
    _check_vault_key(source, settings)
    db = open_database(desk_target(settings))
    report: list[Copied] = []
    try:
        if not isinstance(db, PostgresDatabase):
            raise MoveRefused("TIERONE_DATABASE_URL is not a PostgreSQL URL")
        # No store declares a foreign key, so tables go in any order; one transaction holds them all.
        with db.pool.connection() as conn, conn.transaction():
            for name in TABLE_FILES:
                if (source / name).is_file():
                    with closing(_read_only(source / name)) as lite:
                        report += [_copy_table(lite, conn, name, table) for table in _tables(lite)]
            if (source / CHECKPOINT_FILE).is_file():
                report.append(_copy_checkpoints(source / CHECKPOINT_FILE, conn))
    finally:
        db.close()
    return report


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)


def _tables(lite: sqlite3.Connection) -> list[str]:
    rows = lite.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
    return [name for (name,) in rows if name not in _NOT_DATA and not name.startswith("sqlite_")]


def _pg_columns(conn: Connection[Any], table: str) -> dict[str, bool]:
    """The table's columns in order, each with whether it is an identity column."""
    rows = conn.execute(
        "SELECT column_name, is_identity = 'YES' FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return {row[0]: bool(row[1]) for row in rows}


def _primary_key(conn: Connection[Any], table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def _copy_table(lite: sqlite3.Connection, conn: Connection[Any], source: str, table: str) -> Copied:
    """Stage the SQLite rows in a temporary table, refuse a clash, insert what is missing."""
    theirs = _pg_columns(conn, table)
    if not theirs:
        raise MoveRefused(f"{source}: table {table} has no counterpart in PostgreSQL; nothing was copied")
    ours = [row[1] for row in lite.execute(f'PRAGMA table_info("{table}")')]
    if lost := [c for c in ours if c not in theirs]:
        raise MoveRefused(f"{source}: table {table}: PostgreSQL lacks columns {', '.join(lost)}; nothing was copied")
    key = _primary_key(conn, table)
    if not key:
        raise MoveRefused(f"{source}: table {table} has no primary key in PostgreSQL; nothing was copied")
    # PostgreSQL has no rowid: where a store orders rows by SQLite's rowid, it keeps an identity column
    # instead (incidents.rowid, mail_out.seq), which takes the SQLite rowid, so the order is kept.
    order = [c for c, identity in theirs.items() if identity and c not in ours]
    if len(order) > 1:
        raise MoveRefused(f"{source}: table {table} has several PostgreSQL-only identity columns; nothing was copied")
    reads = [f'"{c}"' for c in ours] + ["rowid" for _ in order]
    ours = ours + order
    name, stage = sql.Identifier(table), sql.Identifier(f"move_{table}")
    columns = sql.SQL(", ").join(map(sql.Identifier, ours))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(stage, columns, name)
    )
    select = f'SELECT {", ".join(reads)} FROM "{table}"' + (" ORDER BY rowid" if order else "")
    with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, columns)) as copy:
        for row in lite.execute(select):
            copy.write_row(row)
    joined = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(c)) for c in key)
    values = [c for c in ours if c not in key and c not in order]  # a row's place in the order is not its data
    differs = sql.SQL(" OR ").join(sql.SQL("t.{0} IS DISTINCT FROM s.{0}").format(sql.Identifier(c)) for c in values)
    if values:
        clash = conn.execute(
            sql.SQL("SELECT {} FROM {} s JOIN {} t ON {} WHERE {} LIMIT 1").format(
                sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in key), stage, name, joined, differs
            )
        ).fetchone()
        if clash is not None:
            where = ", ".join(f"{c}={v!r}" for c, v in zip(key, clash, strict=True))
            raise MoveRefused(
                f"{source}: table {table}: the target already holds different data for {where}; "
                "nothing was copied (copy into an empty database, or into the one an earlier copy filled)"
            )
    inserted = conn.execute(
        sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            name, columns, columns, stage
        )
    ).rowcount
    staged = conn.execute(sql.SQL("SELECT COUNT(*) FROM {}").format(stage)).fetchone()
    conn.execute(sql.SQL("DROP TABLE {}").format(stage))
    _advance_sequences(conn, table, ours)
    total = int(staged[0]) if staged else 0
    return Copied(source, table, inserted, total - inserted)


def _advance_sequences(conn: Connection[Any], table: str, columns: list[str]) -> None:
    """Move each identity (or serial) column's sequence past the largest id now in the table."""
    for column in columns:
        found = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)).fetchone()
        if not found or found[0] is None:
            continue
        conn.execute(
            sql.SQL(
                "SELECT setval({seq}, m) FROM (SELECT MAX({col}) AS m FROM {table}) AS top"
                " WHERE m IS NOT NULL AND m > (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END"
                " FROM {seq_rel})"
            ).format(
                seq=sql.Literal(found[0]),
                col=sql.Identifier(column),
                table=sql.Identifier(table),
                seq_rel=sql.SQL(found[0]),
            )
        )


def _copy_checkpoints(path: Path, conn: Connection[Any]) -> Copied:
    """Every checkpoint and pending write of every thread, through the two savers' own APIs."""
    with closing(_read_only(path)) as lite:
        tables = {name for (name,) in lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "checkpoints" not in tables:
            return Copied(CHECKPOINT_FILE, "checkpoints", 0, 0)
        reader = SqliteSaver(lite)
        # The target saver works inside the move's transaction, on its connection.
        writer = PostgresSaver(cast(Any, conn))
        copied = present = 0
        # What the target holds already, read once: (thread, namespace, id) -> (time, parent).
        held_all = {
            (row[0], row[1], row[2]): (row[3], row[4])
            for row in conn.execute(
                "SELECT thread_id, checkpoint_ns, checkpoint_id, checkpoint->>'ts', parent_checkpoint_id"
                " FROM checkpoints"
            )
        }
        for item in reader.list(None):
            conf = item.config["configurable"]
            thread, ns, checkpoint_id = conf["thread_id"], conf.get("checkpoint_ns", ""), item.checkpoint["id"]
            held = held_all.get((thread, ns, checkpoint_id))
            parent = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
            if held is not None:
                if held != (item.checkpoint["ts"], parent):
                    raise MoveRefused(
                        f"{CHECKPOINT_FILE}: table checkpoints: the target already holds a different checkpoint"
                        f" {checkpoint_id!r} of thread {thread!r}; nothing was copied"
                    )
                present += 1
                continue
            at: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": parent}}
            saved = writer.put(at, item.checkpoint, item.metadata, item.checkpoint["channel_versions"])
            by_task: dict[str, list[tuple[str, Any]]] = {}
            for task_id, channel, value in item.pending_writes or ():
                by_task.setdefault(task_id, []).append((channel, value))
            for task_id, writes in by_task.items():
                writer.put_writes(saved, writes, task_id)
            copied += 1
    return Copied(CHECKPOINT_FILE, "checkpoints", copied, present)


def _check_vault_key(source: Path, settings: Settings) -> None:
    """Vault values stay encrypted as they are: the target must read them with the deployment's key.

    With no key set and none in the target's data folder, the source's development key is copied there.
    """
    source_key = source / "vault.key"
    configured = settings.vault_key.get_secret_value() if settings.vault_key else None
    target_file = settings.data_dir / "vault.key"
    if not configured and not target_file.exists() and source_key.is_file():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(target_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, source_key.open("rb") as src:
            shutil.copyfileobj(src, out)
    key = configured or (target_file.read_text(encoding="utf-8").strip() if target_file.exists() else None)
    sample = _a_vault_value(source / "vault.sqlite")
    if sample is None:
        return
    try:
        if key is None:
            raise InvalidToken
        MultiFernet([Fernet(part.strip().encode()) for part in key.split(",") if part.strip()]).decrypt(sample)
    except (InvalidToken, ValueError):
        raise MoveRefused(
            "the vault's values were encrypted with another key than the target's: set TIERONE_VAULT_KEY to the"
            f" key of the deployment in {source} (its TIERONE_VAULT_KEY, or {source_key}); nothing was copied"
        ) from None


def _a_vault_value(path: Path) -> bytes | None:
    if not path.is_file():
        return None
    with closing(_read_only(path)) as lite:
        row = lite.execute("SELECT secret FROM entries LIMIT 1").fetchone()
    return bytes(row[0]) if row else None
