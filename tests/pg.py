"""A real PostgreSQL for the tests: one server per session, one fresh empty database per test.

The server is the Debian package's (``make postgres`` installs it): initdb into a temporary folder and
pg_ctl on a free loopback port. initdb refuses to run as root, so as root the folder belongs to the
``postgres`` user and the commands run as that user. Missing binaries fail the tests that need them,
never skip them.

``db_backend`` parametrises a test over "sqlite" and "postgresql"; ``db_target`` then gives a store
its place (a SQLite file in tmp_path, or the test's fresh PostgreSQL database) and ``db_target_of``
one per SQLite file name (on PostgreSQL every name is the same database, as in production).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core import db as core_db
from core.db import DatabaseTarget, DatabaseUrl, open_database
from tests.net import free_port

_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def bin_dir(pattern: str = _BIN_GLOB) -> Path:
    """The newest PostgreSQL's binaries; missing, the test fails and says how to install them."""
    found = sorted(d for d in glob.glob(pattern) if os.access(os.path.join(d, "initdb"), os.X_OK))
    if not found:
        pytest.fail(f"PostgreSQL's binaries are missing ({pattern}/initdb): run `make postgres`", pytrace=False)
    return Path(found[-1])


def _as_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse root: run them as the package's user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PgServer:
    """A PostgreSQL server in a temporary folder on a free loopback port, that a test may stop and start."""

    def __init__(self, *, fsync: bool = False) -> None:
        binaries = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="tierone-pg-"))
        self.root.chmod(0o755)
        data = self.root / "data"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"
        self._ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-t", "60"]
        # The tests need no durability against power loss (fsync off); a benchmark does.
        self._options = f"-p {self.port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300" + (
            "" if fsync else " -c fsync=off"
        )
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        self._run(initdb)
        self.start()

    def _run(self, argv: list[str]) -> None:
        try:
            subprocess.run(_as_owner(argv), check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            self.remove()
            pytest.fail(f"PostgreSQL failed ({argv[-1]}): {exc.stderr or exc.stdout}", pytrace=False)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run([*self._ctl, "-o", self._options, "start"])

    def stop(self) -> None:
        """Stop it at once, as a crash or a failover would (open connections are cut)."""
        self._run([*self._ctl, "-m", "immediate", "stop"])

    def remove(self) -> None:
        """Stop it if it runs and delete its folder."""
        subprocess.run(_as_owner([*self._ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL on a free loopback port for the session; yield the URL of its server (no database)."""
    server = PgServer()
    try:
        yield server.url
    finally:
        server.remove()


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's server."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = f"{postgres_server}/{name}"
    yield url
    # A store the test left open must not keep its pool's connections for the rest of the session.
    for key in [k for k in core_db._pools if k[0] == url]:
        pool, _ = core_db._pools.pop(key)
        pool.close()
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_backend(request: pytest.FixtureRequest) -> str:
    """The backend a parametrised store test runs on."""
    return str(request.param)


@pytest.fixture
def db_target_of(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], DatabaseTarget]:
    """Where a store of the given SQLite file name lives on this test's backend."""
    if db_backend == "sqlite":
        return lambda name: tmp_path / name
    url = DatabaseUrl(request.getfixturevalue("pg_url"))
    return lambda name: url


@pytest.fixture
def db_target(db_target_of: Callable[[str], DatabaseTarget]) -> DatabaseTarget:
    """The desk database's place on this test's backend."""
    return db_target_of("desk.sqlite")


def table_rows(target: DatabaseTarget, table: str) -> list[tuple[Any, ...]]:
    """Every row of a table as stored, on either backend (a look at what is at rest)."""
    database = open_database(target)
    try:
        with database.transaction() as conn:
            return [tuple(row) for row in conn.execute(f'SELECT * FROM "{table}"')]
    finally:
        database.close()
