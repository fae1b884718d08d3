"""The support lead's commands: insights (and, as they come, audit and simulate), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.episodes import Episode, EpisodeStore
from app.runtime import desk_target
from cli import app
from core.settings import Settings
from tests.conftest import Clock

runner = CliRunner()
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_backend: str, request: pytest.FixtureRequest) -> Path:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    if db_backend == "postgresql":
        monkeypatch.setenv("TIERONE_DATABASE_URL", request.getfixturevalue("pg_url"))
    return tmp_path / "data"


@pytest.fixture
def store() -> EpisodeStore:
    clock = Clock(T0)
    store = EpisodeStore(desk_target(Settings()), clock)
    for n, runbook in enumerate(("vpn-connection", "printer-problem", "password-reset")):
        store.open(Episode(episode_id=f"c{n}:e0", conversation_id=f"c{n}", runbook_id=runbook, opened_at=T0))
    store.tried("c0:e0", 0)
    store.close("c0:e0", "confirmed")
    store.tried("c1:e0", 0)
    store.close("c2:e0", "handed_off", reason="verification_failed", packet_id="p2")
    return store


def test_insights_json_judged_as_of_a_moment(store: EpisodeStore) -> None:
    early = runner.invoke(app, ["insights", "--json", "--as-of", "2026-11-03T09:00:00Z"])
    assert early.exit_code == 0, early.output
    got = json.loads(early.output)
    assert (got["episodes"], got["confirmed"], got["pending"], got["handed_off"]) == (3, 1, 1, 1)
    assert got["containment_rate"] == 0.5
    late = json.loads(runner.invoke(app, ["insights", "--json", "--as-of", "2026-11-06T09:00:00Z"]).output)
    assert (late["no_recontact"], late["pending"], late["containment_rate"]) == (1, 0, round(2 / 3, 4))
    access = next(c for c in late["categories"] if c["category"] == "account-access")
    assert access["reasons"] == {"verification_failed": 1}
    text = runner.invoke(app, ["insights", "--as-of", "2026-11-06T09:00:00Z"])
    assert "containment 66.7%" in text.output and "account-access" in text.output


def test_insights_as_of_before_since_exits_2_saying_so(store: EpisodeStore) -> None:
    result = runner.invoke(app, ["insights", "--since", "2026-11-05", "--as-of", "2026-11-01"])
    assert result.exit_code == 2
    assert "is before since" in " ".join(result.output.split())
    bad = runner.invoke(app, ["insights", "--since", "last week"])
    assert bad.exit_code == 2 and "not an ISO date" in " ".join(bad.output.split())


def test_audit_writes_markdown_and_html_and_refuses_a_bad_month(store: EpisodeStore, tmp_path: Path) -> None:
    for name in ("nov.md", "nov.html"):
        result = runner.invoke(app, ["audit", "--month", "2026-11", "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert f"wrote {tmp_path / name}: 3 categories" in " ".join(result.output.split())
    assert "## account-access" in (tmp_path / "nov.md").read_text()
    assert "<h2>account-access</h2>" in (tmp_path / "nov.html").read_text()
    bad = runner.invoke(app, ["audit", "--month", "Nov 2026", "--out", str(tmp_path / "x.md")])
    assert bad.exit_code == 2 and "write it as YYYY-MM" in " ".join(bad.output.split())
    assert not (tmp_path / "x.md").exists()


def test_simulate_refuses_a_start_that_is_not_a_date() -> None:
    for start in ("", "next monday"):
        result = runner.invoke(app, ["simulate", "--start", start, "--conversations", "1"])
        assert result.exit_code == 2
        assert "--start" in " ".join(result.output.split())
