"""`tierone runbooks suggestions`: list, reject and accept what L2 resolutions taught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.runtime import desk_target, migrate_databases
from app.teaching import BotCouldHave, Suggestions, lesson_from
from cli import app
from core.db import open_database
from core.pack import load_pack
from core.settings import Settings
from tests.app.test_teaching import T0, packet
from tests.conftest import Clock
from tests.routing_pack import write_pack

runner = CliRunner()


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_backend: str, request: pytest.FixtureRequest) -> Path:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    if db_backend == "postgresql":
        monkeypatch.setenv("TIERONE_DATABASE_URL", request.getfixturevalue("pg_url"))
        migrate_databases(Settings())  # as `tierone migrate` does before anything runs on PostgreSQL
    return tmp_path / "data"


def suggest(data_dir: Path, pack_dir: Path, text: str, runbook_id: str) -> str:
    desk = desk_target(Settings())
    store = Suggestions(desk, Clock(T0))
    p = packet(text)
    with open_database(desk).transaction() as conn:
        return store.add(conn, p, "Alex", lesson_from(p, BotCouldHave(runbook_id), load_pack(pack_dir)))


def test_list_and_reject(tmp_path: Path, data_dir: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    empty = runner.invoke(app, ["runbooks", "suggestions"])
    assert empty.exit_code == 0 and "no open suggestions" in empty.output
    sid = suggest(data_dir, pack_dir, "vpn drops whenever the laptop sleeps", "vpn-connection")
    listed = runner.invoke(app, ["runbooks", "suggestions", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert {k: row[k] for k in ("id", "kind", "runbook_id", "text")} == {
        "id": sid,
        "kind": "example",
        "runbook_id": "vpn-connection",
        "text": "vpn drops whenever the laptop sleeps",
    }
    assert row["case"]["expect"] == {"handoff": False, "runbook": "vpn-connection"}
    assert "vpn drops whenever" in runner.invoke(app, ["runbooks", "suggestions"]).output
    # Redacted values print as placeholders, not swallowed as markup.
    suggest(data_dir, pack_dir, "vpn drops again, write to jo@example.com", "vpn-connection")
    table = " ".join(runner.invoke(app, ["runbooks", "suggestions"]).output.split())
    assert "write to [email]" in table and "jo@example.com" not in table

    no_reason = runner.invoke(app, ["runbooks", "suggestions", "reject", sid, "--why", " "])
    assert no_reason.exit_code == 2 and "say why" in no_reason.output
    rejected = runner.invoke(app, ["runbooks", "suggestions", "reject", sid, "--why", "a sleep setting, not the VPN"])
    assert rejected.exit_code == 0 and f"{sid} rejected" in rejected.output
    assert [r["id"] for r in json.loads(runner.invoke(app, ["runbooks", "suggestions", "--json"]).output)] == ["SUG-2"]
    [kept] = json.loads(runner.invoke(app, ["runbooks", "suggestions", "--json", "--state", "rejected"]).output)
    assert kept["why"] == "a sleep setting, not the VPN"
    again = runner.invoke(app, ["runbooks", "suggestions", "reject", sid, "--why", "twice"])
    assert again.exit_code == 2 and "already rejected" in again.output
    missing = runner.invoke(app, ["runbooks", "suggestions", "reject", "SUG-99", "--why", "x"])
    assert missing.exit_code == 2 and "no suggestion has the id 'SUG-99'" in missing.output


def test_accept_refuses_a_suggestion_that_would_break_lint(tmp_path: Path, data_dir: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "v", "turns": ["no vpn"], "expect": {"handoff": false, "runbook": "vpn-connection"}}\n')
    sid = suggest(data_dir, pack_dir, "the printer is offline", "vpn-connection")
    before = {p: p.read_bytes() for p in [cases, *pack_dir.iterdir()]}
    args = ["runbooks", "suggestions", "accept", sid, "--runbooks", str(pack_dir), "--cases", str(cases)]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2
    said = " ".join(refused.output.split())
    assert "would leave the pack failing lint, so nothing was changed" in said
    assert "is also an example of printer-problem" in said
    assert {p: p.read_bytes() for p in before} == before
    assert json.loads(runner.invoke(app, ["runbooks", "suggestions", "--json"]).output)[0]["state"] == "open"


def test_gaps_refuse_a_period_that_ends_before_it_starts() -> None:
    refused = runner.invoke(app, ["runbooks", "gaps", "--since", "2026-11-02", "--until", "2026-11-01"])
    assert refused.exit_code == 2 and "--until 2026-11-01 is not after --since 2026-11-02" in refused.output
    bad = runner.invoke(app, ["runbooks", "draft", "--gap", "1", "--since", "last tuesday"])
    assert bad.exit_code == 2 and "--since 'last tuesday' is not an ISO date" in " ".join(bad.output.split())


@pytest.mark.model
def test_accept_prints_what_changed_and_writes_the_files(tmp_path: Path, data_dir: Path) -> None:
    pack_dir = write_pack(tmp_path / "pack")
    cases = tmp_path / "cases.jsonl"
    cases.write_text('{"id": "v", "turns": ["no vpn"], "expect": {"handoff": false, "runbook": "vpn-connection"}}\n')
    sid = suggest(data_dir, pack_dir, "my tunnel to the office network keeps dropping", "vpn-connection")
    args = ["runbooks", "suggestions", "accept", sid, "--runbooks", str(pack_dir), "--cases", str(cases)]
    accepted = runner.invoke(app, args)
    assert accepted.exit_code == 0, accepted.output
    said = " ".join(accepted.output.split())
    assert "cases: 1 -> 2 (+1)" in said and "new case l2-HO-1" in said
    wrote = f"{sid} accepted: wrote {pack_dir / 'vpn-connection.md'}, {cases}"
    assert "".join(wrote.split()) in "".join(said.split())  # rich may fold a long path anywhere
    assert "my tunnel to the office network keeps dropping" in (pack_dir / "vpn-connection.md").read_text()
    [row] = json.loads(runner.invoke(app, ["runbooks", "suggestions", "--json", "--state", "accepted"]).output)
    assert row["id"] == sid and "new case l2-HO-1" in row["why"]
