"""Databases opened the same way everywhere, and the numbered migrations that build each store's schema.

A store declares its schema in one place, as the numbered migrations of its component
(``Migrations("desk", Migration(1, "CREATE TABLE ..."), Migration(2, ...))``), and applies them when it opens
(``migrate``). Each migration runs in its own transaction and is recorded in ``schema_migrations``
(component, version, applied_at), so it runs once per database.

A step of a migration is SQL that every dialect runs, SQL per dialect (``{"sqlite": ...,
"postgresql": ...}``, ``None`` where a dialect has nothing to do), or a function of the connection and
the dialect, for an upgrade that first looks whether it is needed.

A store that holds customers' conversations also declares ``PERSONAL_TABLES``: which columns tie a
row to a conversation, so that erasure (app/erasure.py) finds every row without reading the catalogue.

The runner is written here rather than taken from alembic: the stores speak plain SQL without
SQLAlchemy, and what they need (ordered versions per component, a transaction each, a record) fits
on this page, where alembic would bring SQLAlchemy and a second description of every table.

Two backends, one contract
--------------------------
``TIERONE_DATABASE_URL`` (``Settings.database_url``) unset: every store is a SQLite file, as before.
Set to ``postgresql://...``: every store lives in that one PostgreSQL database.

How a store is told where its data lives (the pattern every store follows):

- A store's constructor takes a ``DatabaseTarget``: a ``Path`` (a SQLite file) or a ``DatabaseUrl``
  (PostgreSQL). Tests and old callers keep passing a ``Path``; nothing else changes for them. A store
  that exposed its path keeps the target as ``self.target`` (open another handle with
  ``open_database(store.target)``).
- The store opens it with ``self._db = open_database(target)`` (``secure_delete=True`` where it did)
  and keeps using ``self._db.transaction()``, ``migrate``, ``checkpoint`` and ``close``.
- The wiring (app/runtime.py, cli.py) turns a settings path into a target with
  ``database_target(settings.desk_db, settings.database_url)``: the path when no URL is set, else the URL.
  ``Settings.desk_db``, ``conversations_db`` and ``vault_db`` stay Paths.

``open_database(target, *, settings_url=None, secure_delete=False)`` returns ``Database`` (SQLite) for a
Path and no URL, else a ``PostgresDatabase``. Every ``PostgresDatabase`` of one URL shares ONE
``psycopg_pool.ConnectionPool`` (counted; the last ``close()`` closes it). Both classes offer:

- ``dialect``: ``"sqlite"`` or ``"postgresql"``.
- ``transaction()``: a context manager yielding a connection for one transaction (commit on success,
  roll back on error). ``conn.execute(sql, params)`` takes the stores' SQLite ``?`` placeholders on
  both backends (on PostgreSQL they become ``%s``, once per statement text; ``%`` and ``?`` inside
  string literals are left as written). It returns a cursor: ``fetchone()``, ``fetchall()``,
  iteration, ``rowcount``; rows read by name and by index (``Row``). There is no ``lastrowid``:
  use ``RETURNING``.
- ``hold(conn, key)``: inside a transaction, wait for and hold a lock named ``key`` until it ends
  (``pg_advisory_xact_lock``; a no-op on SQLite, whose write transactions already run one at a time).
  Use it where a transaction reads, then writes what it read (a next sequence number). The module
  function ``hold(conn, key)`` does the same with only a connection at hand.
- ``notify(conn, channel, payload)`` and ``PostgresDatabase.listen(channel, callback)``: wake other
  processes when a transaction commits (LISTEN/NOTIFY; nothing on SQLite, where one process serves).
- ``session_lock(key)``: a context manager holding a lock named ``key`` across processes for longer
  than one transaction (a conversation's turn); a no-op on SQLite.
- ``migrate(schema)``: as above; on PostgreSQL serialised across processes by an advisory lock.
- ``checkpoint()`` (a no-op on PostgreSQL) and ``close()``.

SQL both run: ``INSERT ... ON CONFLICT ... DO NOTHING/UPDATE`` (not ``INSERT OR IGNORE/REPLACE``),
``RETURNING`` (not ``lastrowid``), ``COALESCE``; per dialect in migrations: ``INTEGER PRIMARY KEY
AUTOINCREMENT`` / ``BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY``, ``BLOB`` / ``BYTEA``. PRAGMAs
are SQLite's only. Python ``bool`` parameters are sent as 0/1 on both, as SQLite stores them; keep
such columns INTEGER. ``?`` outside quotes is always a placeholder, so jsonb's ``?`` operators are
out of reach (use ``jsonb_exists``). ``table_columns`` and ``schema_versions`` read the catalogue and
the ledger on either dialect. A wrong or unreachable URL fails at open with ``DatabaseUnavailable``,
which names ``TIERONE_DATABASE_URL`` and the host, never the password; a database lost mid-run
raises it from ``transaction()`` within the pool's 5 s timeout (the API answers 503).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import SecretStr

from core.clock import utc_now
from core.errors import DatabaseUnavailable, MigrationFailed

Dialect = Literal["sqlite", "postgresql"]


class Cursor(Protocol):
    """What a store may use of a statement's result: sqlite3's cursor, or psycopg's with ``Row`` rows."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """Every row left."""

    def __iter__(self) -> Iterator[Any]:
        """The rows, one by one."""


class Connection(Protocol):
    """What a store may use of a connection: sqlite3's, or ``PgConnection`` on PostgreSQL."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor:
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


def table_columns(conn: Connection, dialect: Dialect, table: str) -> set[str]:
    """The column names of a table in either dialect (none when it does not exist)."""
    if dialect == "sqlite":
        return sqlite_columns(conn, table)
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
        (table,),
    )
    return {row[0] for row in rows}


SQLITE_BUSY_TIMEOUT_S = 10.0


def use_wal(conn: sqlite3.Connection, timeout_s: float = SQLITE_BUSY_TIMEOUT_S) -> None:
    """Put the SQLite file in WAL mode, waiting out another process doing the same on a new file.

    The switch takes an exclusive lock, and SQLite answers "database is locked" at once, without its
    busy timeout, when two connections opening a new file meet there (two replicas starting, ``tierone
    index`` beside ``serve``). Once the file is in WAL mode the pragma changes nothing and never waits.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


class Database:
    """One connection to a SQLite file, shared by a store's threads one transaction at a time."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, secure_delete: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Several processes may write (server, CLI): wait rather than fail with "database is locked".
        self._conn = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        use_wal(self._conn)
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

    def hold(self, conn: Connection, key: str) -> None:
        """Nothing to take: a SQLite write transaction (BEGIN IMMEDIATE) already excludes every other."""
        hold(conn, key)

    @contextmanager
    def session_lock(self, key: str) -> Iterator[None]:
        """Nothing to take: on SQLite one server process serves, and it serialises turns itself."""
        yield

    def migrate(self, schema: Migrations) -> list[int]:
        """Apply the component's migrations this database lacks, each in its own transaction; return their versions."""
        return _migrate(self, schema)

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the file and empty it, so no old copy of a deleted row stays there."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


# -- PostgreSQL -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseUrl:
    """Where a PostgreSQL database is: a ``postgresql://`` URL. Its repr and ``safe`` never show the password."""

    url: str = field(repr=False)

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.safe!r})"

    @property
    def misencoded(self) -> bool:
        """A URL whose user or password holds an unescaped ``@``, ``/``, ``#`` or space.

        libpq would read part of the password as the host, and every message would show it.
        """
        scheme = re.match(r"postgres(?:ql)?://", self.url, re.IGNORECASE)
        if scheme is None:
            return False
        before_query = self.url[scheme.end() :].split("?", 1)[0]
        if "@" not in before_query:
            return False
        userinfo = before_query.rsplit("@", 1)[0]
        return any(ch in userinfo for ch in "@/# ")

    @property
    def safe(self) -> str:
        """The URL's host, port and database name, for messages."""
        if self.misencoded:
            return "an unreadable URL"
        try:
            parts = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "an unreadable URL"
        host = parts.get("host") or "localhost"
        port = parts.get("port") or "5432"
        return f"{host}:{port}/{parts.get('dbname') or ''}"


DatabaseTarget = Path | DatabaseUrl


def database_target(path: Path, url: SecretStr | str | None) -> DatabaseTarget:
    """Where a store of that SQLite path lives: the path itself, or the PostgreSQL database when a URL is set."""
    if url is None:
        return path
    text = url.get_secret_value() if isinstance(url, SecretStr) else url
    return DatabaseUrl(text) if text else path


class _Columns:
    """A result's column names, in order, and where each name first appears (as sqlite3.Row finds it)."""

    __slots__ = ("index", "names")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.index: dict[str, int] = {}
        for i, name in enumerate(names):
            self.index.setdefault(name, i)


class Row(tuple[Any, ...]):
    """A PostgreSQL row read like ``sqlite3.Row``: by index, by column name, ``keys()`` and ``dict(row)``."""

    _columns: _Columns

    def __new__(cls, values: Sequence[Any], columns: _Columns) -> Row:  # noqa: D102
        row = super().__new__(cls, values)
        row._columns = columns
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._columns.index[key])
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._columns.names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    columns = _Columns([column.name for column in cursor.description or ()])
    return lambda values: Row(values, columns)


@lru_cache(maxsize=2048)
def pg_sql(sql: str) -> str:
    """A statement with ``?`` placeholders as psycopg's ``%s``; ``%`` doubled, quoted text and comments kept."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"":
            end = i + 1
            while end < n:
                if sql[end] == ch:
                    if end + 1 < n and sql[end + 1] == ch:  # a doubled quote inside the literal
                        end += 2
                        continue
                    break
                end += 1
            out.append(sql[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(sql[i:end].replace("%", "%%"))
            i = end
        elif ch == "?":
            out.append("%s")
            i += 1
        elif ch == "%":
            out.append("%%")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


class PgConnection:
    """A psycopg connection inside one transaction that speaks the stores' SQLite-style statements."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        """Run one statement with ``?`` placeholders; bools go as 0/1, as SQLite stores them."""
        params = tuple(int(p) if isinstance(p, bool) else p for p in parameters or ())
        cursor = self.raw.cursor(row_factory=_row_factory)
        return cursor.execute(pg_sql(sql), params)


def hold(conn: Connection, key: str) -> None:
    """Inside a transaction on ``conn``, wait for and hold the lock named ``key`` until the transaction ends.

    On PostgreSQL a transaction-level advisory lock; on SQLite nothing, as its write transactions
    already run one at a time. For code that has a connection but not its database (``append_on``).
    """
    if isinstance(conn, PgConnection):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (key,))


# One pool per URL and role: "main" for transactions, "locks" for the sessions that hold a lock for
# longer than a transaction (a turn), so that turns waiting for each other never take the connections
# their own transactions need.
_pools: dict[tuple[str, str], tuple[ConnectionPool, int]] = {}
_pools_lock = threading.Lock()
_POOL_SIZES = {"main": (1, 20), "locks": (0, 64)}
# How long a checkout waits for a connection: past it psycopg_pool raises PoolTimeout (an
# OperationalError), which the API answers 503 with Retry-After, so a database that went away never
# holds a request for long. Meanwhile the pool keeps reconnecting in the background.
CHECKOUT_TIMEOUT_S = 10.0


def _configure(conn: psycopg.Connection[Any]) -> None:
    # Transactions are explicit (conn.transaction()), as langgraph's PostgresSaver also expects.
    conn.autocommit = True


def _unavailable(url: DatabaseUrl, exc: Exception) -> DatabaseUnavailable:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        password = conninfo_to_dict(url.url).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        detail = detail.replace(str(password), "***")
    return DatabaseUnavailable(url.safe, detail)


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    # No SQLSTATE (the socket went), class 08 (connection exception), or 57P0x (the server shut down).
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in {"57P01", "57P02", "57P03"}


def _acquire_pool(url: DatabaseUrl, role: str = "main") -> ConnectionPool:
    key = (url.url, role)
    with _pools_lock:
        if key in _pools:
            shared, count = _pools[key]
            _pools[key] = (shared, count + 1)
            return shared
        if url.misencoded:
            raise DatabaseUnavailable(
                url.safe,
                "its user or password holds a character to percent-encode (@ as %40, / as %2F, # as %23, space as %20)",
            )
        try:
            conninfo_to_dict(url.url)
        except psycopg.ProgrammingError as exc:
            raise DatabaseUnavailable(url.safe, "it is not a PostgreSQL URL (postgresql://user@host:port/db)") from exc
        try:
            # One connection first: its error says what is wrong, where the pool's would only time out.
            psycopg.connect(url.url, connect_timeout=10).close()
        except psycopg.Error as exc:
            raise _unavailable(url, exc) from None
        low, high = _POOL_SIZES[role]
        pool: ConnectionPool = ConnectionPool(
            url.url,
            min_size=low,
            max_size=high,
            open=False,
            configure=_configure,
            # A connection that died with the server is found on checkout and replaced.
            check=ConnectionPool.check_connection,
            # While the database is away a request fails within seconds (503), not after half a minute.
            timeout=CHECKOUT_TIMEOUT_S,
            name=f"tierone-{role}",
        )
        pool.open(wait=low > 0, timeout=30)
        _pools[key] = (pool, 1)
        return pool


def _release_pool(url: DatabaseUrl, role: str = "main") -> None:
    key = (url.url, role)
    with _pools_lock:
        pool, count = _pools[key]
        if count > 1:
            _pools[key] = (pool, count - 1)
            return
        del _pools[key]
    pool.close()


_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def notify(conn: Connection, channel: str, payload: str) -> None:
    """Tell every process listening on ``channel`` (``listen``) when this transaction commits; nothing on SQLite."""
    if isinstance(conn, PgConnection):
        conn.execute("SELECT pg_notify(?, ?)", (channel, payload))


class Listener:
    """A thread that LISTENs on a channel on a connection of its own and hands each payload to a callback.

    It reconnects when the database goes away and calls ``on_connect`` each time it (re)starts
    listening, since what was sent meanwhile is lost. It ends with ``stop()``, or once no store of
    this process has the database open any more.
    """

    def __init__(
        self, url: DatabaseUrl, channel: str, callback: Callable[[str], None], on_connect: Callable[[], None]
    ) -> None:
        if not _CHANNEL.fullmatch(channel):
            raise ValueError(f"{channel!r} is not a channel name (lower-case letters, digits and _)")
        self.url, self.channel = url, channel
        self._callback, self._on_connect = callback, on_connect
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen-{channel}", daemon=True)
        self._thread.start()

    def _open(self) -> bool:
        return not self._stop.is_set() and (self.url.url, "main") in _pools

    def _run(self) -> None:
        while self._open():
            try:
                with psycopg.connect(self.url.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {self.channel}")
                    self._on_connect()
                    self.ready.set()
                    while self._open():
                        for note in conn.notifies(timeout=0.5):
                            try:
                                self._callback(note.payload)
                            except Exception:  # one reader's failure must not stop the others' wake-ups
                                logging.getLogger("tierone").exception("a %s listener failed", self.channel)
            except psycopg.Error:
                self.ready.clear()
                self._stop.wait(1.0)  # the database went away: listen again once it is back

    def stop(self) -> None:
        """Stop listening and wait for the thread to end."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class PostgresDatabase:
    """A store's handle on a PostgreSQL database: transactions on the URL's shared connection pool."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: DatabaseUrl) -> None:
        self.url = url
        self.pool = _acquire_pool(url)
        self._lock_pool: ConnectionPool | None = None
        self._listeners: list[Listener] = []
        self._guard = threading.Lock()
        self._closed = False

    @contextmanager
    def transaction(self) -> Iterator[PgConnection]:
        """Run statements in one transaction: commit on success, roll back on error.

        A database that cannot be reached (down, restarting, every connection busy past the pool's
        timeout) raises ``DatabaseUnavailable``, which the service answers with 503; the pool
        reconnects by itself once the database is back.
        """
        try:
            with self.pool.connection() as conn, conn.transaction():
                yield PgConnection(conn)
        except PoolTimeout as exc:
            raise DatabaseUnavailable(self.url.safe, "no connection within the pool's timeout") from exc
        except psycopg.OperationalError as exc:
            if not _connection_lost(exc):
                raise
            raise _unavailable(self.url, exc) from exc

    def hold(self, conn: Connection, key: str) -> None:
        """Wait for, and hold until the transaction ends, the lock named ``key`` (across processes)."""
        hold(conn, key)

    @contextmanager
    def session_lock(self, key: str) -> Iterator[None]:
        """Hold the lock named ``key`` across processes for the block (a whole turn, many transactions).

        A session advisory lock on a connection of its own: a process that dies lets go with its connection.
        """
        with self._guard:
            if self._lock_pool is None:
                self._lock_pool = _acquire_pool(self.url, "locks")
            pool = self._lock_pool
        with pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
            try:
                yield
            finally:
                # A session that died (the database restarted) took its lock with it.
                with contextlib.suppress(psycopg.OperationalError):
                    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))

    def listen(
        self, channel: str, callback: Callable[[str], None], on_connect: Callable[[], None] = lambda: None
    ) -> Listener:
        """Hand every ``notify`` on ``channel``, from any process, to ``callback`` until this handle closes."""
        listener = Listener(self.url, channel, callback, on_connect)
        with self._guard:
            self._listeners.append(listener)
        return listener

    def migrate(self, schema: Migrations) -> list[int]:
        """Apply the component's migrations this database lacks, each in its own transaction; return their versions."""
        return _migrate(self, schema)

    def checkpoint(self) -> None:
        """Nothing to do: PostgreSQL has no write-ahead log for a store to empty."""

    def close(self) -> None:
        """Give the shared pools back (each closed when its last user closes)."""
        with self._guard:
            if self._closed:
                return
            self._closed = True
            lock_pool, self._lock_pool = self._lock_pool, None
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.stop()
        _release_pool(self.url)
        if lock_pool is not None:
            _release_pool(self.url, "locks")


AnyDatabase = Database | PostgresDatabase

# The databases opened within ``opened_together``, in this thread; None outside one.
_OPENED: ContextVar[list[AnyDatabase] | None] = ContextVar("tierone_opened_databases", default=None)


@contextmanager
def opened_together() -> Iterator[list[AnyDatabase]]:
    """Collect every database ``open_database`` opens within the block, for one owner to close them all.

    A runtime opens a dozen stores, each on its own connection; closing the runtime closes them
    (``Runtime.close``), where the stores themselves have no ``close``. When the block raises, what
    it opened is closed at once: there is no owner to close it later.
    """
    opened: list[AnyDatabase] = []
    token = _OPENED.set(opened)
    try:
        yield opened
    except BaseException:
        for db in opened:
            db.close()
        raise
    finally:
        _OPENED.reset(token)


def open_database(
    path: DatabaseTarget, *, settings_url: SecretStr | str | None = None, secure_delete: bool = False
) -> AnyDatabase:
    """Open a store's database: the SQLite file at ``path``, or PostgreSQL when a URL is given or is the target.

    ``secure_delete`` overwrites deleted values on SQLite; PostgreSQL has no such switch (a deleted row's
    space is reused after VACUUM), so it is ignored there.
    """
    target = database_target(path, settings_url) if isinstance(path, Path) else path
    db: AnyDatabase = (
        PostgresDatabase(target) if isinstance(target, DatabaseUrl) else Database(target, secure_delete=secure_delete)
    )
    collecting = _OPENED.get()
    if collecting is not None:
        collecting.append(db)
    return db


# -- the migration runner -------------------------------------------------------------------------

_MIGRATE_LOCK = "tierone.schema_migrations"


def _migrate(db: AnyDatabase, schema: Migrations) -> list[int]:
    with db.transaction() as conn:
        # PostgreSQL: CREATE TABLE IF NOT EXISTS races another process's; the lock orders them.
        db.hold(conn, _MIGRATE_LOCK)
        conn.execute(_LEDGER)
        done = _versions(conn, schema.component)
    applied = []
    for migration in schema.migrations:
        if migration.version in done:
            continue
        try:
            with db.transaction() as conn:
                db.hold(conn, _MIGRATE_LOCK)
                # Another process may have applied it since we looked.
                if migration.version in _versions(conn, schema.component):
                    continue
                migration.apply(conn, db.dialect, schema.component)
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


def schema_versions(db: AnyDatabase) -> dict[str, int]:
    """The latest version recorded per component (empty when nothing was ever migrated)."""
    with db.transaction() as conn:
        if "component" not in table_columns(conn, db.dialect, "schema_migrations"):
            return {}
        rows = conn.execute("SELECT component, MAX(version) FROM schema_migrations GROUP BY component").fetchall()
    return {row[0]: int(row[1]) for row in rows}


def _versions(conn: Connection, component: str) -> set[int]:
    rows = conn.execute("SELECT version FROM schema_migrations WHERE component = ?", (component,))
    return {int(r[0]) for r in rows}
