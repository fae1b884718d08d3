"""`tierone migrate`, the schema check `tierone serve` makes on PostgreSQL, and LangGraph's PostgreSQL checkpoints."""

from __future__ import annotations

import operator
import threading
from pathlib import Path
from typing import Annotated, TypedDict

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from typer.testing import CliRunner

from agent.episodes import EpisodeStore
from agent.handoff import HandoffQueue
from agent.incidents import IncidentStore
from agent.resolver import ClientMessages, Conversations
from app.auth import ApiKeys, CustomerTokens
from app.messages import MessageLog
from app.runtime import (
    DESK_STORES,
    desk_target,
    migrate_databases,
    open_checkpointer,
    require_current_schema,
    schema_behind,
)
from cli import app
from core.db import Store
from core.errors import SchemaOutdated
from core.settings import Settings
from tests.pg import table_rows
from tools.ledger import Ledger
from tools.sqlite_backend import SqliteDirectory

# The desk stores ported to PostgreSQL on this branch (the others follow on theirs).
PORTED: tuple[type[Store], ...] = (
    Conversations,
    ClientMessages,
    HandoffQueue,
    EpisodeStore,
    MessageLog,
    Ledger,
    SqliteDirectory,
    CustomerTokens,
    ApiKeys,
    IncidentStore,
)


def test_migrate_on_sqlite_applies_every_store_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TIERONE_DATABASE_URL", raising=False)
    runner = CliRunner()
    first = runner.invoke(app, ["migrate"])
    assert first.exit_code == 0, first.output
    for store in DESK_STORES:
        assert f"{store.MIGRATIONS.component}: applied 1" in first.stdout
    assert "vault: applied 1" in first.stdout and "erasure: applied 1, 2" in first.stdout
    assert first.stdout.strip().endswith(f"SQLite files in {tmp_path / 'data'}: up to date")
    again = runner.invoke(app, ["migrate"])
    assert again.exit_code == 0 and "applied" not in again.stdout.replace("nothing applied", "")
    assert "already up to date" in again.stdout


@pytest.mark.postgres
def test_migrate_on_postgresql_applies_the_stores_and_langgraphs_tables_once(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=pg_url)  # type: ignore[arg-type]
    behind = schema_behind(settings, PORTED)
    assert behind["ledger"] == (0, 1) and behind["incidents"] == (0, 3) and behind["langgraph_checkpoints"][0] == 0
    applied = migrate_databases(settings, PORTED)
    assert applied["incidents"] == [1, 2, 3] and applied["vault"] == [1]
    assert applied["langgraph_checkpoints"] == list(range(1, len(PostgresSaver.MIGRATIONS) + 1))
    assert schema_behind(settings, PORTED) == {}
    assert all(versions == [] for versions in migrate_databases(settings, PORTED).values())
    assert ("incidents", 3) in {row[:2] for row in table_rows(desk_target(settings), "schema_migrations")}


@pytest.mark.postgres
def test_an_older_schema_on_postgresql_is_refused_and_named(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=pg_url)  # type: ignore[arg-type]
    migrate_databases(settings, PORTED)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE component = 'incidents' AND version = 3")
    with pytest.raises(SchemaOutdated, match=r"incidents at 2 of 3.*run `tierone migrate`") as info:
        require_current_schema(settings)
    assert info.value.behind["incidents"] == (2, 3)


@pytest.mark.postgres
def test_serve_refuses_a_database_that_was_never_migrated(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_DATABASE_URL", pg_url)
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "holds no Tierone schema yet; run `tierone migrate`" in " ".join(result.output.split())
    assert not (tmp_path / "data").exists()  # nothing was opened as SQLite instead


def test_serve_with_an_unreachable_database_names_the_setting_and_host_not_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_DATABASE_URL", "postgresql://tierone:hunter2@127.0.0.1:1/tierone")
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "TIERONE_DATABASE_URL" in output and "127.0.0.1:1/tierone" in output
    assert "hunter2" not in result.output


def test_without_a_url_serve_checks_nothing(tmp_path: Path) -> None:
    require_current_schema(Settings(data_dir=tmp_path / "never"))
    assert not (tmp_path / "never").exists()


class Count(TypedDict):
    seen: Annotated[list[str], operator.add]


def _graph(checkpointer: object) -> object:
    builder = StateGraph(Count)
    builder.add_node("note", lambda state: {"seen": [f"turn {len(state['seen']) + 1}"]})
    builder.add_edge(START, "note")
    builder.add_edge("note", END)
    return builder.compile(checkpointer=checkpointer)  # type: ignore[arg-type]


@pytest.mark.postgres
def test_conversation_state_is_checkpointed_in_postgresql_and_read_by_another_process(
    pg_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=pg_url)  # type: ignore[arg-type]
    migrate_databases(settings, PORTED)
    config = {"configurable": {"thread_id": "c1"}}
    graph = _graph(open_checkpointer(settings))
    graph.invoke({"seen": []}, config)  # type: ignore[attr-defined]
    graph.invoke({"seen": []}, config)  # type: ignore[attr-defined]
    # A second saver on its own connection (another replica) continues the same thread.
    with PostgresSaver.from_conn_string(pg_url) as other:
        state = _graph(other).invoke({"seen": []}, config)  # type: ignore[attr-defined]
    assert state["seen"] == ["turn 1", "turn 2", "turn 3"]
    assert not (tmp_path / "conversations.sqlite").exists()


@pytest.mark.postgres
def test_the_checkpointer_lets_two_threads_query_at_once_on_its_pool(pg_url: str, tmp_path: Path) -> None:
    # The library's saver queues every query of the process behind one lock; on a pool it need not.
    settings = Settings(data_dir=tmp_path, database_url=pg_url)  # type: ignore[arg-type]
    migrate_databases(settings, PORTED)
    saver = open_checkpointer(settings)
    assert isinstance(saver, PostgresSaver)
    both_inside = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def query() -> None:
        try:
            with saver._cursor() as cur:
                cur.execute("SELECT 1")
                both_inside.wait()  # broken (an error) if the other thread cannot get in meanwhile
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=query) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
