"""Closing a runtime closes the database connections it opened; the server closes the one it opened."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.runtime import Runtime
from core.db import open_database, opened_together
from core.settings import BUNDLED_RUNBOOKS, Settings
from server import create_app

FDS = Path("/proc/self/fd")


def open_files() -> int:
    return len(os.listdir(FDS))


@pytest.mark.skipif(not FDS.is_dir(), reason="counts open files in /proc")
def test_closing_a_runtime_closes_every_connection_it_opened(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "I forgot my password")
    connections = len(runtime.closers)
    assert connections >= 10  # the stores' connections and the checkpointer's
    before = open_files()
    runtime.close()
    # Each SQLite connection held its file open (and its write-ahead log): all of them are let go.
    assert open_files() <= before - connections
    with pytest.raises(sqlite3.ProgrammingError, match="closed database"):
        runtime.resolver.send(cid, "hello again")
    runtime.close()  # a second close does nothing


def test_databases_opened_in_a_block_that_fails_are_closed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="half-built"), opened_together() as opened:
        open_database(tmp_path / "a.sqlite")
        open_database(tmp_path / "b.sqlite")
        raise RuntimeError("half-built")
    assert len(opened) == 2
    for db in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed database"), db.transaction():
            pass
    outside = open_database(tmp_path / "c.sqlite")  # not collected once the block is over
    assert outside not in opened
    outside.close()


def test_the_server_closes_the_runtime_it_opened_and_not_one_it_was_given(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "served", runbooks=BUNDLED_RUNBOOKS))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        opened: Runtime = app.state.runtime
        assert opened.closers
    assert app.state.runtime is None and opened.closers == []

    given = make_runtime()
    with TestClient(create_app(given.settings, runtime=given)) as client:
        assert client.get("/readyz").status_code == 200
    assert given.closers  # still open: the test's fixture closes it
    given.resolver.start()
