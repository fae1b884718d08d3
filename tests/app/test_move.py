"""`tierone migrate --from-sqlite DATA_DIR`: an embedded deployment moves into PostgreSQL and carries on there."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from app.insights import Period
from app.mail.inbound import parse_inbound
from app.runtime import Runtime, open_runtime
from cli import app
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.conftest import Clock, latest_code
from vectorstore.index import RunbookIndex

pytestmark = pytest.mark.postgres

JANE, BOB = "jane.doe@example.com", "bob.smith@example.com"


def converse(runtime: Runtime, *turns: str) -> str:
    cid = runtime.resolver.start()
    for turn in turns:
        runtime.resolver.send(cid, latest_code(runtime, cid) if turn == "{otp}" else turn)
    return cid


def mail(text: str, message_id: str, sender: str) -> Any:
    fields = {"from": sender, "subject": "Help", "text": text, "message_id": message_id}
    return parse_inbound(fields, own_address="help@acme.example", validate=lambda t: t)


def move(source: Path, target_dir: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(target_dir))
    monkeypatch.setenv("TIERONE_DATABASE_URL", url)
    monkeypatch.delenv("TIERONE_VAULT_KEY", raising=False)
    return CliRunner().invoke(app, ["migrate", "--from-sqlite", str(source)])


def one(cursor: Any) -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None
    return tuple(row)


def copied_lines(result: Any) -> list[str]:
    return [line for line in result.stdout.splitlines() if ": copied " in line and ", already there " in line]


def figures(runtime: Runtime, clock: Clock, cids: list[str]) -> dict[str, Any]:
    """What an operator would compare: transcripts, the queue with its events, the lead's figures."""
    assert runtime.insights is not None and runtime.incidents is not None
    tickets = runtime.desk.tickets("all")
    return {
        "views": [runtime.resolver.view(cid) for cid in cids],
        "tickets": tickets,
        "events": [runtime.desk.events(t.packet.packet_id) for t in tickets],
        "insights": runtime.insights.report(Period(None, clock())),
        "incidents": runtime.incidents.find("all"),
    }


@pytest.fixture
def deployment(make_runtime: Callable[..., Runtime], tmp_path: Path) -> tuple[Runtime, dict[str, str]]:
    """An embedded deployment that saw a handoff, a mail thread, vault values, episodes and an incident."""
    runtime = make_runtime(tmp_path / "old")
    handed = converse(runtime, "I forgot my password", JANE, "{otp}", "no, get me a human")
    waiting = converse(runtime, "my account is locked", BOB, "{otp}")
    assert runtime.email is not None and runtime.incidents is not None
    mailed = runtime.email.receive(
        mail("My VPN keeps disconnecting every hour", "<m1@client.example>", "Carol <carol@example.com>")
    )
    [ticket] = runtime.desk.tickets("open")
    runtime.desk.claim(ticket.packet.packet_id, "tech.anna")
    runtime.desk.reply(ticket.packet.packet_id, "tech.anna", "Looking at your account now.")
    runtime.incidents.declare("VPN gateway down", None, "tech.anna", "We are on it.")
    return runtime, {"handed": handed, "waiting": waiting, "mailed": str(mailed.conversation_id)}


def test_a_deployment_moves_to_postgresql_loses_nothing_and_carries_on(
    deployment: tuple[Runtime, dict[str, str]],
    pg_url: str,
    tmp_path: Path,
    clock: Clock,
    bundled_index: RunbookIndex,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, cids = deployment
    source = old.settings.data_dir
    with sqlite3.connect(source / "tierone.sqlite") as lite:
        handoffs = lite.execute("SELECT COUNT(*) FROM handoffs").fetchone()[0]
    result = move(source, tmp_path / "new", pg_url, monkeypatch)
    assert result.exit_code == 0, result.output
    assert f"tierone.sqlite handoffs: copied {handoffs}, already there 0" in result.stdout
    assert "conversations.sqlite checkpoints: copied" in result.stdout
    assert "vault.sqlite entries: copied" in result.stdout
    assert "rebuilds it from the runbook pack" in result.stdout
    # The development vault key travelled with the data, so the copied values still open.
    assert (tmp_path / "new" / "vault.key").read_bytes() == (source / "vault.key").read_bytes()

    # Run again: nothing new; every row the first run copied is found there.
    again = move(source, tmp_path / "new", pg_url, monkeypatch)
    assert again.exit_code == 0, again.output
    assert "nothing new to copy" in again.stdout
    first = {line.split(": copied ")[0]: int(line.split(": copied ")[1].split(",")[0]) for line in copied_lines(result)}
    second = {line.split(": copied ")[0]: line.split(": copied ")[1] for line in copied_lines(again)}
    assert sum(first.values()) > 50 and first.keys() == second.keys()
    assert all(second[table] == f"0, already there {n}" for table, n in first.items())
    # Every identity sequence is past the ids copied, so new rows never collide with them.
    with psycopg.connect(pg_url) as conn:
        identities = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
        ).fetchall()
        filled = []
        for table, column in identities:
            [top] = one(conn.execute(f'SELECT MAX("{column}") FROM "{table}"'))
            [seq] = one(conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column)))
            last, called = one(conn.execute(f"SELECT last_value, is_called FROM {seq}"))
            assert top is None or (called and last >= top), (table, column, top, last)
            filled += [table] if top is not None else []
        assert {"audit", "incidents", "incident_updates"} <= set(filled), filled

    settings = Settings(data_dir=tmp_path / "new", runbooks=BUNDLED_RUNBOOKS, database_url=pg_url)  # type: ignore[arg-type]
    new = open_runtime(settings, clock=clock, index=bundled_index)
    order = [cids["handed"], cids["waiting"], cids["mailed"]]
    before = figures(old, clock, order)
    assert before["tickets"] and before["incidents"] and before["insights"]["episodes"] >= 3
    assert figures(new, clock, order) == before
    with sqlite3.connect(source / "vault.sqlite") as lite:
        refs = [row[0] for row in lite.execute("SELECT ref FROM entries")]
    assert refs and all(new.erasure.vault.get("vault:" + ref) == old.erasure.vault.get("vault:" + ref) for ref in refs)
    assert old.erasure.vault.get("vault:" + refs[0]) is not None

    # Both carry on the waiting conversation the same way: the checkpoint was continued, not restarted.
    for runtime in (old, new):
        runtime.resolver.send(cids["waiting"], "yes, that worked, thanks")
    assert figures(new, clock, order) == figures(old, clock, order)


def test_a_target_holding_other_data_for_the_same_keys_is_refused_by_table(
    deployment: tuple[Runtime, dict[str, str]], pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, cids = deployment
    source = old.settings.data_dir
    assert move(source, tmp_path / "new", pg_url, monkeypatch).exit_code == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE handoffs SET priority = 'P1-other' WHERE conversation_id = %s", (cids["handed"],))
        copied = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()
    converse(old, "my account is locked", BOB)  # new rows that the refused run must not copy
    refused = move(source, tmp_path / "new", pg_url, monkeypatch)
    message = " ".join(refused.output.split())
    assert refused.exit_code == 2
    assert "table handoffs" in message and "different data" in message and "nothing was copied" in message
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone() == copied


def test_bad_sources_and_targets_say_what_is_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIERONE_DATABASE_URL", raising=False)
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "new"))
    no_url = CliRunner().invoke(app, ["migrate", "--from-sqlite", str(tmp_path)])
    assert no_url.exit_code == 2 and "TIERONE_DATABASE_URL is not set" in no_url.output
    monkeypatch.setenv("TIERONE_DATABASE_URL", "postgresql://tierone:s3cr%40t@127.0.0.1:1/tierone")
    empty = CliRunner().invoke(app, ["migrate", "--from-sqlite", str(tmp_path / "nowhere")])
    assert empty.exit_code == 2 and "holds no tierone.sqlite" in " ".join(empty.output.split())


def test_the_vault_key_must_open_the_copied_values(
    deployment: tuple[Runtime, dict[str, str]], pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = deployment[0].settings.data_dir
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "new"))
    monkeypatch.setenv("TIERONE_DATABASE_URL", pg_url)
    monkeypatch.setenv("TIERONE_VAULT_KEY", Fernet.generate_key().decode())
    refused = CliRunner().invoke(app, ["migrate", "--from-sqlite", str(source)])
    assert refused.exit_code == 2
    assert "encrypted with another key" in " ".join(refused.output.split())
    with psycopg.connect(pg_url) as conn:
        assert one(conn.execute("SELECT COUNT(*) FROM entries")) == (0,)
    # The old deployment's key, set as the setting: copied, and no key file is left in the new folder.
    monkeypatch.setenv("TIERONE_VAULT_KEY", (source / "vault.key").read_text().strip())
    moved = CliRunner().invoke(app, ["migrate", "--from-sqlite", str(source)])
    assert moved.exit_code == 0, moved.output
    assert "vault.sqlite entries: copied" in moved.stdout and not (tmp_path / "new" / "vault.key").exists()
