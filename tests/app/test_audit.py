"""The monthly tier-boundary audit on a scripted month: each recommendation, its evidence and its policy.yaml line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.episodes import Episode, EpisodeStore
from app.audit import AuditRejected, build_audit, month_period, policy_line, to_html, to_markdown, write_audit
from app.insights import Insights
from core.pack import Pack, load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.conftest import Clock

NOV = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pack() -> Pack:
    return load_pack(BUNDLED_RUNBOOKS)


def line_of(text: str) -> int:
    lines = (BUNDLED_RUNBOOKS / "policy.yaml").read_text().splitlines()
    return lines.index(text) + 1


@pytest.fixture
def month(tmp_path: Path, pack: Pack) -> Insights:
    clock = Clock(NOV)
    store = EpisodeStore(tmp_path / "desk.sqlite", clock)
    insights = Insights(store.db, pack, clock=clock)

    def episode(eid: str, runbook: str, day: float, conversation: str | None = None) -> str:
        clock.now = NOV + timedelta(days=day)
        store.open(Episode(episode_id=eid, conversation_id=conversation or eid, runbook_id=runbook, opened_at=clock()))
        return eid

    # devices, tier 1: 12 episodes; 2 confirmed, then back half a day later (2 reopened of 12)
    for n in range(8):
        store.close(episode(f"dev{n}", "printer-problem", n), "confirmed")
    for n in range(2):
        store.tried(episode(f"back{n}", "disk-full", 10 + n), 0)
        store.close(f"back{n}", "confirmed")
        episode(f"back{n}:again", "disk-full", 10.5 + n, conversation=f"back{n}")
    # network, tier 1: 10 episodes, 4 handed off because nothing fitted them
    for n in range(10):
        eid = episode(f"net{n}", "vpn-connection", n)
        if n < 4:
            store.close(eid, "handed_off", reason="no_runbook_fits", packet_id=f"p-net{n}")
        else:
            store.close(eid, "confirmed")
    # security, tier 2: 10 handoffs; L2 resolved 9, 8 of them with a step the bot has
    phishing = pack.runbooks["phishing-report"]
    for n in range(10):
        eid = episode(f"sec{n}", "phishing-report", n)
        store.close(eid, "handed_off", reason="tier2_runbook", packet_id=f"p-sec{n}")
        if n < 9:
            note = phishing.steps[0].text if n < 5 else "followed phishing-report" if n < 8 else "reset the router"
            with store.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO handoff_events (packet_id, conversation_id, at, actor, action, note)"
                    " VALUES (?, ?, ?, 'Sam', 'resolved', ?)",
                    (f"p-sec{n}", eid, (clock() + timedelta(hours=1)).isoformat(), note + " for jane@example.com"),
                )
    # billing: too few to judge; email: all confirmed
    for n in range(3):
        episode(f"bill{n}", "billing-question", n)
    for n in range(10):
        store.close(episode(f"mail{n}", "email-sync", n), "confirmed")
    # October's and December's episodes stay out of November's audit
    clock.now = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    store.open(Episode(episode_id="oct", conversation_id="oct", runbook_id="email-sync", opened_at=clock()))
    clock.now = datetime(2026, 12, 10, tzinfo=UTC)
    store.open(Episode(episode_id="dec", conversation_id="dec", runbook_id="email-sync", opened_at=clock()))
    return insights


def test_each_category_gets_its_recommendation_with_evidence_and_line(month: Insights, pack: Pack) -> None:
    audit = build_audit(month, pack, "2026-11")
    by = {c["category"]: c for c in audit["categories"]}
    assert audit["totals"]["episodes"] == 12 + 10 + 10 + 3 + 10
    devices = by["devices"]["recommendation"]
    assert devices["action"] == "tier_up" and "reopen rate 17% (2 of 12 episodes)" in devices["text"]
    assert f"policy.yaml line {line_of('  devices: {tier: 1}')}" in devices["text"]
    assert "`devices: {tier: 2}`" in devices["text"]
    network = by["network"]["recommendation"]
    assert network["action"] == "knowledge" and "40% of tier-1 episodes (4 of 10)" in network["text"]
    assert "no_runbook_fits 4" in network["text"]
    security = by["security"]
    assert security["recommendation"]["action"] == "tier_down"
    assert "8 of 9 L2 resolutions (89%) used a runbook step" in security["recommendation"]["text"]
    assert f"policy.yaml line {line_of('  security: {tier: 2}')}" in security["recommendation"]["text"]
    assert len(security["l2_notes"]) == 9 and all("jane@example.com" not in n["note"] for n in security["l2_notes"])
    assert by["billing"]["recommendation"]["action"] == "too_few"
    assert by["email"]["recommendation"]["action"] == "keep"
    assert by["email"]["episodes"] == 10  # October's and December's left out


def test_markdown_and_html_carry_the_same_audit(month: Insights, pack: Pack, tmp_path: Path) -> None:
    audit = build_audit(month, pack, "2026-11")
    markdown = to_markdown(audit)
    assert markdown.startswith("# Tier-boundary audit, 2026-11")
    assert "## security" in markdown and "What L2 wrote" in markdown
    page = to_html(audit)
    assert "<table>" in page and "<h2>security</h2>" in page and "<script" not in page
    write_audit(audit, tmp_path / "nov.html")
    assert (tmp_path / "nov.html").read_text() == page
    with pytest.raises(AuditRejected, match=r"must end in \.md or \.html"):
        write_audit(audit, tmp_path / "nov.pdf")
    assert not (tmp_path / "nov.pdf").exists()


def test_months_that_are_not_months_are_refused() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    for bad in ("2026-13", "11-2026", "2026-1"):
        with pytest.raises(AuditRejected, match="write it as YYYY-MM"):
            month_period(bad, now, 72)
    with pytest.raises(AuditRejected, match="has not begun"):
        month_period("2027-01", now, 72)
    period = month_period("2026-11", now, 72)
    assert (period.since, period.as_of) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 4, tzinfo=UTC))


def test_a_category_missing_from_policy_yaml_is_added_under_categories(pack: Pack) -> None:
    where = policy_line(pack, "no-such-category")
    assert not where.present and where.line == line_of("categories:")
