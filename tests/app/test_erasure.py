"""Erasure on request: a customer's conversations, packets, messages and vault entries go; the deletion is audited."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from app.erasure import Eraser, ErasureRequestError
from app.runtime import Runtime, migrate_databases, open_runtime
from cli import app
from core.errors import ConversationNotFound
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.conftest import Clock, latest_code
from vectorstore.index import RunbookIndex

JANE, BOB = "jane.doe@example.com", "bob.smith@example.com"


def converse(runtime: Runtime, *turns: str) -> str:
    cid = runtime.resolver.start()
    for turn in turns:
        runtime.resolver.send(cid, latest_code(runtime, cid) if turn == "{otp}" else turn)
    return cid


def rows_of(path: Path, cid: str) -> dict[str, int]:
    """How many rows of each table name this conversation, in any column."""
    found: dict[str, int] = {}
    with sqlite3.connect(path) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            where = " OR ".join(f'CAST("{c}" AS TEXT) LIKE ?' for c in columns)
            n = conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE {where}', [f"%{cid}%"] * len(columns)).fetchone()[0]
            if n:
                found[table] = n
    return found


@pytest.fixture
def three(runtime: Runtime) -> tuple[str, str, str]:
    """Jane: one verified conversation ending with L2, one that only gave her address. Bob: one."""
    first = converse(runtime, "I forgot my password", JANE, "{otp}", "no, get me a human")
    second = converse(runtime, "my account is locked", f"it's {JANE}")
    bobs = converse(runtime, "my account is locked", BOB, "{otp}")
    return first, second, bobs


def test_forgetting_an_address_deletes_every_conversation_of_it(runtime: Runtime, three: tuple[str, str, str]) -> None:
    first, second, bobs = three
    resolver = runtime.resolver
    assert resolver.deps.handoffs.for_conversation(first)
    report = Eraser(runtime.erasure).forget(email=JANE.upper())
    assert report.conversations == sorted([first, second])
    assert report.requested_by == "email"
    assert report.deleted["checkpoints"] > 0 and report.deleted["handoffs"] == 1
    assert report.deleted["vault"] >= 2 and report.deleted["outbox_mail"] == 2  # a code in each
    assert report.kept_audit_records >= 3  # send_code, verify_identity, reset_password
    for cid in (first, second):
        with pytest.raises(ConversationNotFound):
            resolver.view(cid)
        assert resolver.deps.handoffs.for_conversation(cid) == []
        assert resolver.graph.get_state({"configurable": {"thread_id": cid}}).values == {}
        # Only the audit log (ids and outcomes) and the erasure record still name it.
        assert set(rows_of(runtime.settings.desk_db, cid)) <= {"audit", "erasures"}
        assert runtime.outbox.messages(cid) == []
    # Bob is untouched.
    assert resolver.view(bobs)["stage"] == "confirm"
    assert runtime.outbox.messages(bobs)
    # Deleted rows were overwritten, not left in free pages or the write-ahead log.
    raw = b"".join(p.read_bytes() for p in runtime.settings.data_dir.glob("conversations.sqlite*"))
    assert first.encode() not in raw and second.encode() not in raw and bobs.encode() in raw


def test_the_erasure_record_counts_and_names_no_one(runtime: Runtime, three: tuple[str, str, str]) -> None:
    eraser = Eraser(runtime.erasure)
    report = eraser.forget(email=JANE)
    [record] = eraser.history()
    assert record["erasure_id"] == report.erasure_id
    assert record["deleted"] == report.deleted and record["conversations"] == report.conversations
    assert "jane" not in json.dumps(record).lower()


def test_forgetting_one_conversation_leaves_the_others(runtime: Runtime, three: tuple[str, str, str]) -> None:
    first, second, _ = three
    report = Eraser(runtime.erasure).forget(conversation_id=second)
    assert report.conversations == [second] and report.requested_by == "conversation"
    assert runtime.resolver.view(first)["stage"] == "handed_off"
    # Jane's other conversation is still found by her address afterwards.
    assert Eraser(runtime.erasure).conversations_of(JANE) == [first]


def test_bad_requests_say_what_was_wrong(runtime: Runtime) -> None:
    eraser = Eraser(runtime.erasure)
    with pytest.raises(ErasureRequestError, match="either"):
        eraser.forget()
    with pytest.raises(ErasureRequestError, match="either"):
        eraser.forget(conversation_id="c_1", email=JANE)
    with pytest.raises(ErasureRequestError, match="not an email address"):
        eraser.forget(email="jane")
    with pytest.raises(ConversationNotFound):
        eraser.forget(conversation_id="c_nope")
    report = eraser.forget(email="nobody@example.com")
    assert report.conversations == [] and report.deleted == {}
    assert len(eraser.history()) == 1  # a request that found nothing is recorded too


def test_cli_forget_by_email(
    make_runtime: Callable[..., Runtime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    runtime = make_runtime(data)
    cid = converse(runtime, "my account is locked", BOB, "{otp}")
    monkeypatch.setenv("TIERONE_DATA_DIR", str(data))
    result = CliRunner().invoke(app, ["forget", "--email", BOB])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["conversations"] == [cid] and printed["deleted"]["checkpoints"] > 0
    assert CliRunner().invoke(app, ["forget"]).exit_code == 2


def pg_rows_of(url: str, cid: str) -> dict[str, int]:
    """How many rows of each PostgreSQL table name this conversation, in any column."""
    found: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        for (table,) in tables:
            columns = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            ]
            where = " OR ".join(f'CAST("{c}" AS TEXT) LIKE %s' for c in columns)
            row = conn.execute(f'SELECT COUNT(*) FROM "{table}" WHERE {where}', [f"%{cid}%"] * len(columns)).fetchone()
            if row and row[0]:
                found[table] = row[0]
    return found


@pytest.mark.postgres
def test_on_postgresql_forgetting_an_address_deletes_every_row_of_its_conversations(
    pg_url: str, tmp_path: Path, bundled_index: RunbookIndex, clock: Clock
) -> None:
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, database_url=pg_url)  # type: ignore[arg-type]
    migrate_databases(settings)
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    first = converse(runtime, "I forgot my password", JANE, "{otp}", "no, get me a human")
    second = converse(runtime, "my account is locked", f"it's {JANE}")
    bobs = converse(runtime, "my account is locked", BOB, "{otp}")
    assert {"handoffs", "messages", "checkpoints"} <= set(pg_rows_of(pg_url, first))
    report = Eraser(runtime.erasure).forget(email=JANE)
    assert report.conversations == sorted([first, second])
    assert report.deleted["checkpoints"] > 0 and report.deleted["handoffs"] == 1 and report.deleted["vault"] >= 2
    for cid in (first, second):
        with pytest.raises(ConversationNotFound):
            runtime.resolver.view(cid)
        # Only the audit log (ids and outcomes) and the erasure record still name it.
        assert set(pg_rows_of(pg_url, cid)) <= {"audit", "erasures"}
    assert runtime.resolver.view(bobs)["stage"] == "confirm" and "checkpoints" in pg_rows_of(pg_url, bobs)
    assert [r["erasure_id"] for r in Eraser(runtime.erasure).history()] == [report.erasure_id]
