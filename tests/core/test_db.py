"""The database layer: numbered migrations per store, upgrades from release 0.1, and what erasure covers."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from app.auth import ApiKeys, CustomerTokens, Principal
from app.erasure import KEPT_TABLES, Eraser
from app.runtime import DESK_STORES, Runtime, migrate_databases, open_runtime
from core.db import Connection, Database, Dialect, Migration, Migrations
from core.errors import MigrationFailed
from core.settings import BUNDLED_RUNBOOKS, Settings
from core.vault import Vault
from server import create_app
from tests.conftest import Clock
from vectorstore.index import RunbookIndex

RELEASE_0_1 = Path(__file__).resolve().parents[1] / "data" / "release-0.1"

WIDGETS = Migrations(
    "widgets",
    Migration(1, "CREATE TABLE widgets (id INTEGER PRIMARY KEY)"),
    Migration(2, "ALTER TABLE widgets ADD COLUMN name TEXT", "CREATE INDEX widgets_name ON widgets (name)"),
)


def recorded(path: Path) -> dict[str, list[int]]:
    """The versions schema_migrations records, by component."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT component, version FROM schema_migrations ORDER BY component, version")
        found: dict[str, list[int]] = {}
        for component, version in rows:
            found.setdefault(component, []).append(version)
    return found


def catalogue(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted (schema_migrations and SQLite's own tables aside)."""
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in tables
            if t != "schema_migrations" and not t.startswith("sqlite_")
        }


def latest(*schemas: Migrations) -> dict[str, list[int]]:
    return {s.component: list(range(1, s.latest + 1)) for s in schemas}


# -- the runner -----------------------------------------------------------------------------------


def test_migrations_run_once_each_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    db = Database(path)
    assert db.migrate(WIDGETS) == [1, 2]
    assert recorded(path) == {"widgets": [1, 2]}
    with db.transaction() as conn:
        conn.execute("INSERT INTO widgets (name) VALUES ('kept')")
        applied_at = conn.execute("SELECT applied_at FROM schema_migrations").fetchall()
    before = catalogue(path)
    # Again, and from a second handle on the same file (another process): nothing to do.
    assert db.migrate(WIDGETS) == []
    assert Database(path).migrate(WIDGETS) == []
    assert catalogue(path) == before
    with db.transaction() as conn:
        assert conn.execute("SELECT applied_at FROM schema_migrations").fetchall() == applied_at
        assert [r[0] for r in conn.execute("SELECT name FROM widgets")] == ["kept"]


def test_a_failing_migration_rolls_back_and_stays_unrecorded(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    db = Database(path)
    broken = Migrations(
        "widgets",
        WIDGETS.migrations[0],
        Migration(2, "CREATE TABLE half_done (a TEXT)", "INSERT INTO no_such_table VALUES (1)"),
    )
    with pytest.raises(MigrationFailed, match=r"migration 2 of the 'widgets' schema failed: no such table") as info:
        db.migrate(broken)
    assert (info.value.component, info.value.version) == ("widgets", 2)
    assert recorded(path) == {"widgets": [1]}
    assert "half_done" not in [name for name, _ in catalogue(path)]
    # Once the cause is fixed, the next start applies it.
    assert db.migrate(WIDGETS) == [2]
    assert recorded(path) == {"widgets": [1, 2]}


def test_a_step_runs_in_the_databases_dialect(tmp_path: Path) -> None:
    seen: list[str] = []

    def look(conn: Connection, dialect: Dialect) -> None:
        seen.append(dialect)
        conn.execute("INSERT INTO gadgets VALUES ('by a function')")

    gadgets = Migrations(
        "gadgets",
        Migration(
            1,
            {
                "sqlite": "CREATE TABLE gadgets (name TEXT)",
                "postgresql": "CREATE TABLE gadgets (name TEXT, id BIGSERIAL)",
            },
            {"sqlite": None, "postgresql": "CREATE INDEX gadgets_name ON gadgets (name)"},
            look,
        ),
    )
    db = Database(tmp_path / "d.sqlite")
    assert db.migrate(gadgets) == [1]
    assert seen == ["sqlite"]
    with db.transaction() as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM gadgets")] == ["by a function"]
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'gadgets_name'").fetchone()[0] == 0
    postgres_only = Migrations("gizmos", Migration(1, {"postgresql": "CREATE TABLE gizmos (id BIGSERIAL)"}))
    with pytest.raises(MigrationFailed, match="migration 1 of the 'gizmos' schema failed: .* no SQL for sqlite"):
        db.migrate(postgres_only)
    assert "gizmos" not in recorded(tmp_path / "d.sqlite")


def test_migrations_must_be_numbered_from_one_without_gaps() -> None:
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        Migrations("widgets", Migration(1, "SELECT 1"), Migration(3, "SELECT 1"))
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        Migrations("widgets", Migration(2, "SELECT 1"))


# -- the stores -----------------------------------------------------------------------------------


def test_every_store_of_an_empty_database_is_at_its_latest_version(runtime: Runtime) -> None:
    desk = runtime.settings.desk_db
    ApiKeys(desk)
    CustomerTokens(desk)  # the server opens these two
    assert recorded(desk) == latest(*(s.MIGRATIONS for s in DESK_STORES))
    Eraser(runtime.erasure)
    assert recorded(desk) == latest(*(s.MIGRATIONS for s in DESK_STORES), Eraser.MIGRATIONS)
    assert recorded(runtime.settings.vault_db) == latest(Vault.MIGRATIONS)


def release_0_1(data: Path) -> dict[str, str]:
    """A data folder holding the desk and vault databases as release 0.1 left them; its facts."""
    data.mkdir(parents=True)
    for name in ("tierone", "vault"):
        with sqlite3.connect(data / f"{name}.sqlite") as conn:
            conn.executescript((RELEASE_0_1 / f"{name}.sql").read_text(encoding="utf-8"))
    facts: dict[str, str] = json.loads((RELEASE_0_1 / "facts.json").read_text(encoding="utf-8"))
    return facts


def test_a_release_0_1_database_upgrades_without_loss(
    tmp_path: Path, clock: Clock, bundled_index: RunbookIndex
) -> None:
    data = tmp_path / "data"
    facts = release_0_1(data)
    desk, vault = data / "tierone.sqlite", data / "vault.sqlite"
    assert "schema_migrations" not in [name for name, _ in catalogue(desk)]
    rows = {desk: contents(desk), vault: contents(vault)}
    assert len(rows[desk]) == 23 and rows[desk]["handoffs"] and rows[desk]["erasures"]  # the fixture is whole

    def start() -> Runtime:
        settings = Settings(data_dir=data, runbooks=BUNDLED_RUNBOOKS, vault_key=facts["vault_key"])  # type: ignore[arg-type]
        runtime = open_runtime(settings, clock=clock, index=bundled_index)
        ApiKeys(desk)
        CustomerTokens(desk)
        Eraser(runtime.erasure)
        return runtime

    runtime = start()
    assert recorded(desk) == latest(*(s.MIGRATIONS for s in DESK_STORES), Eraser.MIGRATIONS)
    assert recorded(vault) == latest(Vault.MIGRATIONS)
    # Every row survives; a store added since release 0.1 (episodes, suggestions, gap vectors, incidents) starts empty.
    added = {"episodes": [], "suggestions": [], "gap_vectors": []}
    added |= {"incidents": [], "incident_members": [], "incident_reports": []}
    added |= {"incident_updates": [], "incident_deliveries": []}
    # Columns added since: the leases of webhook deliveries and mail to send (claimed_by, lease_until), unheld.
    added |= {
        t: sorted([(*r, None, None) for r in rows[desk][t]], key=repr) for t in ("handoff_deliveries", "mail_out")
    }
    assert {desk: contents(desk), vault: contents(vault)} == {desk: rows[desk] | added, vault: rows[vault]}
    # What the release stored still reads back through the stores.
    assert ApiKeys(desk).verify(facts["api_key"]) == Principal("Alex", "l2")
    assert CustomerTokens(desk).verify(facts["chat"], facts["token"])
    ticket = runtime.desk.ticket(facts["packet"])
    assert (ticket.packet.conversation_id, ticket.claimed_by) == (facts["chat"], "Alex")
    assert runtime.erasure.vault.conversations_of("jane.doe@example.com") == [facts["chat"]]
    assert runtime.email is not None
    assert runtime.email.store.thread(facts["by_mail"]).reply_to == "Pat Lee <pat.lee@example.org>"  # type: ignore[union-attr]
    [erasure] = Eraser(runtime.erasure).history()
    assert (erasure["conversations"], erasure["actor"]) == ([facts["erased"]], "cli")
    assert [line.role for line in runtime.messages.lines(facts["chat"])][-1] == "technician"
    # A second start finds nothing to do.
    before = {desk: (catalogue(desk), recorded(desk)), vault: (catalogue(vault), recorded(vault))}
    with sqlite3.connect(desk) as conn:
        applied_at = conn.execute("SELECT * FROM schema_migrations ORDER BY component, version").fetchall()
    start()
    assert {desk: (catalogue(desk), recorded(desk)), vault: (catalogue(vault), recorded(vault))} == before
    with sqlite3.connect(desk) as conn:
        assert conn.execute("SELECT * FROM schema_migrations ORDER BY component, version").fetchall() == applied_at


def test_erasures_from_before_the_actor_column_read_as_made_from_the_cli(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "tierone.sqlite") as conn:
        conn.execute(
            "CREATE TABLE erasures (erasure_id TEXT PRIMARY KEY, at TEXT NOT NULL, requested_by TEXT NOT NULL,"
            " conversations TEXT NOT NULL, deleted TEXT NOT NULL)"
        )
        conn.execute("INSERT INTO erasures VALUES ('ER-1', '2026-11-01T00:00:00+00:00', 'email', '[\"c_1\"]', '{}')")
    eraser = Eraser(make_runtime(data).erasure)
    assert [(h["erasure_id"], h["actor"]) for h in eraser.history()] == [("ER-1", "cli")]
    assert recorded(data / "tierone.sqlite")["erasure"] == [1, 2]


# -- what erasure covers --------------------------------------------------------------------------


def test_every_table_that_names_a_conversation_is_erased_or_kept_on_purpose(runtime: Runtime) -> None:
    with TestClient(create_app(runtime.settings, runtime=runtime)):
        pass  # the server opens its stores as well
    eraser = Eraser(runtime.erasure)
    with sqlite3.connect(runtime.settings.desk_db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {t: {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}
    naming = {t for t, cols in columns.items() if cols & {"conversation_id", "packet_id"}}
    assert naming - KEPT_TABLES - set(eraser.tables) == set(), "tables naming conversations, neither erased nor kept"
    assert not KEPT_TABLES & set(eraser.tables)
    for table, ties in eraser.tables.items():
        assert set(ties) <= columns[table], f"{table} lacks a column its store names"
    # The vault forgets its own tables (Vault.forget), in a file of their own.
    with sqlite3.connect(runtime.settings.vault_db) as conn:
        vault_tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        naming_in_vault = {
            t for t in vault_tables if "conversation_id" in {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')}
        }
    assert naming_in_vault == {"entries", "subjects"}


@pytest.mark.postgres
def test_on_postgresql_every_table_that_names_a_conversation_is_erased_or_kept_on_purpose(
    pg_url: str, tmp_path: Path, bundled_index: RunbookIndex, clock: Clock
) -> None:
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, database_url=pg_url)  # type: ignore[arg-type]
    migrate_databases(settings)
    eraser = Eraser(open_runtime(settings, clock=clock, index=bundled_index).erasure)
    columns: dict[str, set[str]] = {}
    with psycopg.connect(pg_url) as conn:
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        ):
            columns.setdefault(table, set()).add(column)
    naming = {t for t, cols in columns.items() if cols & {"conversation_id", "packet_id"}}
    # One database holds the vault's tables too; Vault.forget erases those.
    assert naming - KEPT_TABLES - set(eraser.tables) == {"entries", "subjects"}
    assert not KEPT_TABLES & set(eraser.tables)
    for table, ties in eraser.tables.items():
        assert set(ties) <= columns[table], f"{table} lacks a column its store names"
