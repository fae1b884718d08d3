"""core/db.py's contract, on SQLite and on a real PostgreSQL: the same statements, rows and migrations."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from core.db import (
    AnyDatabase,
    Database,
    DatabaseTarget,
    DatabaseUrl,
    Migration,
    Migrations,
    PostgresDatabase,
    database_target,
    open_database,
    pg_sql,
    schema_versions,
    use_wal,
)
from core.errors import DatabaseUnavailable, MigrationFailed
from tests.pg import PgServer, bin_dir

ROOT = Path(__file__).resolve().parents[2]

NOTES = Migrations(
    "notes",
    Migration(
        1,
        {
            "sqlite": "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL, flag INTEGER)",
            "postgresql": "CREATE TABLE notes (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " body TEXT NOT NULL, flag INTEGER)",
        },
    ),
    Migration(2, "CREATE UNIQUE INDEX notes_body ON notes (body)"),
)


@pytest.fixture
def db(db_target: DatabaseTarget) -> AnyDatabase:
    database = open_database(db_target)
    database.migrate(NOTES)
    yield database
    database.close()


def test_the_target_decides_the_backend(db: AnyDatabase, db_backend: str) -> None:
    assert db.dialect == db_backend
    assert isinstance(db, Database if db_backend == "sqlite" else PostgresDatabase)


def test_placeholders_become_psycopgs_and_quoted_text_is_kept() -> None:
    assert pg_sql("SELECT a FROM t WHERE b = ? AND c = ?") == "SELECT a FROM t WHERE b = %s AND c = %s"
    assert pg_sql("SELECT 'what?' || ?, 'it''s 100% ?' WHERE x LIKE 'a%'") == (
        "SELECT 'what?' || %s, 'it''s 100%% ?' WHERE x LIKE 'a%%'"
    )
    assert pg_sql('SELECT "odd?col" FROM t -- really?\nWHERE v % 2 = ?') == (
        'SELECT "odd?col" FROM t -- really?\nWHERE v %% 2 = %s'
    )


def test_statements_with_literals_and_placeholders_run_alike(db: AnyDatabase) -> None:
    with db.transaction() as conn:
        conn.execute("INSERT INTO notes (body, flag) VALUES (?, ?)", ("50% off?", True))
        conn.execute("INSERT INTO notes (body, flag) VALUES ('why? 10%', ?)", (False,))
        found = conn.execute(
            "SELECT body, flag FROM notes WHERE body LIKE '%?%' AND flag = ? ORDER BY body", (1,)
        ).fetchall()
        assert [tuple(r) for r in found] == [("50% off?", 1)]
        assert conn.execute("SELECT COUNT(*) FROM notes WHERE body LIKE '%10%%'").fetchone()[0] == 1


def test_rows_read_by_name_and_by_index(db: AnyDatabase) -> None:
    with db.transaction() as conn:
        new_id = conn.execute("INSERT INTO notes (body) VALUES (?) RETURNING id", ("a",)).fetchone()[0]
        conn.execute("INSERT INTO notes (body) VALUES (?)", ("b",))
        row = conn.execute("SELECT id, body, flag FROM notes WHERE id = ?", (new_id,)).fetchone()
        assert (row["id"], row["body"], row["flag"]) == (new_id, "a", None)
        assert (row[0], row[1], row[2]) == (new_id, "a", None)
        assert list(row.keys()) == ["id", "body", "flag"]
        assert dict(row) == {"id": new_id, "body": "a", "flag": None}
        assert [r["body"] for r in conn.execute("SELECT body FROM notes ORDER BY body")] == ["a", "b"]
        assert conn.execute("SELECT body FROM notes WHERE body = ?", ("none",)).fetchone() is None
        assert conn.execute("UPDATE notes SET flag = ? WHERE body IN (?, ?)", (3, "a", "b")).rowcount == 2
        assert conn.execute("DELETE FROM notes WHERE body = ?", ("zzz",)).rowcount == 0


def test_an_error_rolls_the_whole_transaction_back(db: AnyDatabase) -> None:
    with pytest.raises(Exception, match="(?i)unique"), db.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES (?)", ("kept?",))
        conn.execute("INSERT INTO notes (body) VALUES (?)", ("kept?",))
    with pytest.raises(RuntimeError, match="stop"), db.transaction() as conn:
        conn.execute("INSERT INTO notes (body) VALUES (?)", ("gone",))
        raise RuntimeError("stop")
    with db.transaction() as conn:
        assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
        conn.execute("INSERT INTO notes (body) VALUES (?)", ("after",))
    with db.transaction() as conn:
        assert [r[0] for r in conn.execute("SELECT body FROM notes")] == ["after"]


def test_conflicts_are_ignored_with_one_text_for_both(db: AnyDatabase) -> None:
    with db.transaction() as conn:
        for _ in range(2):
            conn.execute("INSERT INTO notes (body) VALUES (?) ON CONFLICT (body) DO NOTHING", ("once",))
        assert conn.execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 1


def test_migrations_run_once_and_are_recorded(db_target: DatabaseTarget) -> None:
    first = open_database(db_target)
    second = open_database(db_target)
    try:
        assert first.migrate(NOTES) == [1, 2]
        assert second.migrate(NOTES) == []
        assert schema_versions(second) == {"notes": 2}
        with first.transaction() as conn:
            rows = conn.execute("SELECT component, version FROM schema_migrations ORDER BY version").fetchall()
        assert [tuple(r) for r in rows] == [("notes", 1), ("notes", 2)]
        broken = Migrations("notes", *NOTES.migrations, Migration(3, "CREATE TABLE half (a TEXT)", "SELECT nope()"))
        with pytest.raises(MigrationFailed, match="migration 3 of the 'notes' schema failed"):
            first.migrate(broken)
        assert schema_versions(first) == {"notes": 2}
        with first.transaction() as conn:
            conn.execute("CREATE TABLE half (b TEXT)")  # the failed step's table was rolled back
    finally:
        first.close()
        second.close()


def test_an_empty_database_has_no_versions(db_target: DatabaseTarget) -> None:
    database = open_database(db_target)
    try:
        assert schema_versions(database) == {}
    finally:
        database.close()


_MIGRATE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from core.db import DatabaseUrl, Migration, Migrations, open_database

    target = DatabaseUrl(sys.argv[1]) if sys.argv[1].startswith("postgresql") else Path(sys.argv[1])
    steps = [Migration(1, "CREATE TABLE runs (n INTEGER)")]
    steps += [Migration(v, "INSERT INTO runs VALUES (%d)" % v) for v in range(2, 201)]
    db = open_database(target)
    print("ready", flush=True)
    sys.stdin.readline()  # both processes are ready: go
    print(db.migrate(Migrations("race", *steps)))
    db.close()
    """
)


def test_two_processes_migrating_at_once_apply_each_version_once(db_target: DatabaseTarget) -> None:
    where = db_target.url if isinstance(db_target, DatabaseUrl) else str(db_target)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MIGRATE, where],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline() != "ready\n":
                _, err = proc.communicate(timeout=120)
                raise AssertionError(f"a process failed to open the database (exit {proc.returncode}): {err}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in results]
    applied = [json.loads(out) for out, _ in results]
    assert sorted(applied[0] + applied[1]) == list(range(1, 201))
    database = open_database(db_target)
    try:
        with database.transaction() as conn:
            assert sorted(r[0] for r in conn.execute("SELECT n FROM runs")) == list(range(2, 201))
            assert conn.execute("SELECT COUNT(*) FROM schema_migrations WHERE component = 'race'").fetchone()[0] == 200
    finally:
        database.close()


_OPEN_AT_ONCE = textwrap.dedent(
    """
    import multiprocessing, sys
    from pathlib import Path
    from core.db import open_database

    def opener(folder, rounds, barrier, failures):
        for n in range(rounds):
            barrier.wait()  # every process opens the same new file at the same moment
            try:
                open_database(Path(folder) / f"new-{n}.sqlite").close()
            except Exception as exc:
                failures.put(repr(exc))

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("fork")
        barrier, failures = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=opener, args=(sys.argv[1], 25, barrier, failures)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        seen = []
        while not failures.empty():
            seen.append(failures.get())
        print(seen)
    """
)


def test_processes_opening_one_new_sqlite_file_at_once_all_open_it(tmp_path: Path) -> None:
    # Two replicas starting, or `tierone index` beside `serve`: before use_wal waited, about one
    # open in sixteen failed here with "database is locked" (the switch to WAL skips the busy timeout).
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_AT_ONCE, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert {p.name for p in tmp_path.glob("*.sqlite")} == {f"new-{n}.sqlite" for n in range(25)}


class _LockedAtFirst(sqlite3.Connection):
    """A real connection whose first switches to WAL fail as a racing process makes them fail."""

    failures: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempts = 0
        self.failures = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "PRAGMA journal_mode=WAL":
            self.attempts += 1
            if self.failures:
                raise sqlite3.OperationalError(self.failures.pop(0))
        return super().execute(sql, *args)


def test_wal_is_retried_while_the_file_is_locked_and_then_set(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.sqlite", factory=_LockedAtFirst)
    assert isinstance(conn, _LockedAtFirst)
    conn.failures = ["database is locked", "database is locked"]
    use_wal(conn)
    assert conn.attempts == 3
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_other_errors_and_a_lock_past_the_timeout_are_raised(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.sqlite", factory=_LockedAtFirst)
    assert isinstance(conn, _LockedAtFirst)
    conn.failures = ["disk I/O error"]
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        use_wal(conn)
    assert conn.attempts == 1
    conn.failures = ["database is locked"] * 3
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(conn, timeout_s=0)  # no time left to wait: the lock is reported, not hidden
    assert conn.attempts == 2
    conn.close()


@pytest.mark.postgres
def test_stores_of_one_url_share_one_pool_until_the_last_closes(pg_url: str) -> None:
    first = open_database(Path("unused.sqlite"), settings_url=pg_url)
    second = open_database(DatabaseUrl(pg_url))
    assert isinstance(first, PostgresDatabase) and isinstance(second, PostgresDatabase)
    assert first.pool is second.pool
    first.close()
    first.close()  # twice is once
    with second.transaction() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    second.close()
    assert second.pool.closed
    third = open_database(DatabaseUrl(pg_url))
    assert isinstance(third, PostgresDatabase) and third.pool is not second.pool
    third.close()


@pytest.mark.postgres
def test_a_wrong_url_fails_at_open_naming_the_setting_and_host_not_the_password(postgres_server: str) -> None:
    port = postgres_server.rsplit(":", 1)[1]
    with pytest.raises(DatabaseUnavailable) as info:
        open_database(DatabaseUrl(f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/no_such_db"))
    text = str(info.value)
    assert "TIERONE_DATABASE_URL" in text and "127.0.0.1" in text and "no_such_db" in text
    assert "s3cret-pw" not in text and "s3cret-pw" not in repr(info.value.__cause__)


def test_an_unreachable_or_malformed_url_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"TIERONE_DATABASE_URL \(127\.0\.0\.1:1/db\)") as info:
        open_database(tmp_path / "x.sqlite", settings_url="postgresql://me:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)
    with pytest.raises(DatabaseUnavailable, match="not a PostgreSQL URL") as info:
        open_database(DatabaseUrl("postgresql://me:hunter2@[bad"))
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(DatabaseUrl("postgresql://me:hunter2@h:5/db"))


def test_no_url_keeps_the_sqlite_file(tmp_path: Path) -> None:
    assert database_target(tmp_path / "a.sqlite", None) == tmp_path / "a.sqlite"
    assert database_target(tmp_path / "a.sqlite", "") == tmp_path / "a.sqlite"
    assert database_target(tmp_path / "a.sqlite", "postgresql://h/db") == DatabaseUrl("postgresql://h/db")
    database = open_database(tmp_path / "a.sqlite", settings_url=None)
    assert isinstance(database, Database) and database.path == tmp_path / "a.sqlite"
    database.close()


def test_missing_postgresql_binaries_fail_and_say_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="run `make postgres`"):
        bin_dir(str(tmp_path / "nowhere" / "*" / "bin"))
    assert (bin_dir() / "pg_ctl").exists()


@pytest.mark.postgres
def test_a_database_that_goes_away_fails_clearly_and_is_used_again_once_back() -> None:
    server = PgServer()  # its own server: this test stops it
    try:
        database = open_database(DatabaseUrl(f"{server.url}/postgres"))
        database.migrate(NOTES)
        with database.transaction() as conn:
            conn.execute("INSERT INTO notes (body) VALUES (?)", ("before",))
        server.stop()
        with pytest.raises(DatabaseUnavailable, match=r"TIERONE_DATABASE_URL \(127\.0\.0\.1:\d+/postgres\)"):
            with database.transaction() as conn:
                conn.execute("SELECT body FROM notes")
        server.start()
        # The pool reconnects by itself; a request or two may still find it reconnecting.
        for _ in range(10):
            try:
                with database.transaction() as conn:
                    conn.execute("INSERT INTO notes (body) VALUES (?)", ("after",))
                    bodies = sorted(r[0] for r in conn.execute("SELECT body FROM notes"))
                break
            except DatabaseUnavailable:
                continue
        else:
            pytest.fail("the database was not used again after it came back")
        assert bodies == ["after", "before"]
        database.close()
    finally:
        server.remove()
