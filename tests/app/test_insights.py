"""Honest outcomes on a scripted timeline: each outcome, the 72-hour edges, a reopen across channels."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.episodes import Episode, EpisodeStore
from app.insights import Insights, Period, PeriodRejected, containment, parse_moment
from core.db import DatabaseTarget, DatabaseUrl
from core.pack import Pack, load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.conftest import Clock

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def pack() -> Pack:
    return load_pack(BUNDLED_RUNBOOKS)


class Timeline:
    """Episodes written through the store's own calls, at scripted moments."""

    def __init__(self, target: DatabaseTarget, pack: Pack) -> None:
        self.clock = Clock(T0)
        self.store = EpisodeStore(target, self.clock)
        self.insights = Insights(self.store.db, pack)

    def at(self, when: timedelta) -> Timeline:
        self.clock.now = T0 + when
        return self

    def open(
        self, eid: str, runbook: str | None, *, conversation: str | None = None, subject: str | None = None
    ) -> str:
        self.store.open(
            Episode(
                episode_id=eid,
                conversation_id=conversation or eid.split(":")[0],
                runbook_id=runbook,
                subject=subject,
                opened_at=self.clock(),
            )
        )
        return eid

    def outcomes(self, as_of: timedelta, since: timedelta | None = None) -> dict[str, str]:
        period = Period.of(T0 + since if since is not None else None, T0 + as_of)
        return {row["episode_id"]: row["outcome"] for row in self.insights.outcomes(period)}


@pytest.fixture
def timeline(db_target: DatabaseTarget, pack: Pack) -> Timeline:
    return Timeline(db_target, pack)


def h(hours: float, minutes: float = 0) -> timedelta:
    return timedelta(hours=hours, minutes=minutes)


def test_each_outcome_on_one_timeline(timeline: Timeline) -> None:
    t = timeline
    # confirmed: a step shown, the customer said it worked
    t.open("c1:e0", "vpn-connection")
    t.at(h(0, 2)).store.tried("c1:e0", 0)
    t.at(h(0, 4)).store.close("c1:e0", "confirmed")
    # no_recontact: a step shown, then silence for more than 72 hours
    t.at(h(0)).open("c2:e0", "printer-problem")
    t.at(h(0, 3)).store.tried("c2:e0", 0)
    # abandoned: asked for identity, no fix shown, quiet past the 30-minute time limit
    t.at(h(0)).open("c3:e0", "password-reset")
    t.at(h(0, 1)).store.touch("c3:e0")
    # handed_off, with its reason
    t.at(h(0)).open("c4:e0", None)
    t.store.close("c4:e0", "handed_off", reason="no_runbook_fits", packet_id="p4")
    # pending: a fix shown 10 hours before as_of
    t.at(h(80)).open("c5:e0", "wifi-connection")
    t.store.tried("c5:e0", 0)
    # in_progress: no fix yet, last move 10 minutes before as_of
    t.at(h(89, 50)).open("c6:e0", "email-sync")
    # reopened: confirmed, then the same conversation came back about the same runbook a day later
    t.at(h(0)).open("c7:e0", "disk-full")
    t.store.tried("c7:e0", 0)
    t.store.close("c7:e0", "confirmed")
    t.at(h(24)).open("c7:e1", "disk-full")

    got = t.outcomes(as_of=h(90))
    assert got == {
        "c1:e0": "confirmed",
        "c2:e0": "no_recontact",
        "c3:e0": "abandoned",
        "c4:e0": "handed_off",
        "c5:e0": "pending",
        "c6:e0": "in_progress",
        "c7:e0": "reopened",
        "c7:e1": "abandoned",  # the customer came back, then went quiet before any step
    }
    report = t.insights.report(Period.of(None, T0 + h(90)))
    assert {k: report[k] for k in ("episodes", "confirmed", "no_recontact", "reopened", "abandoned")} == {
        "episodes": 8,
        "confirmed": 1,
        "no_recontact": 1,
        "reopened": 1,
        "abandoned": 2,
    }
    assert (report["handed_off"], report["pending"], report["in_progress"], report["resolved_by_incident"]) == (
        1,
        1,
        1,
        0,
    )
    # (1 confirmed + 1 no_recontact) / (8 episodes - 1 pending - 1 in progress)
    assert report["containment_rate"] == round(2 / 6, 4)
    assert report["gaps"] == []
    devices = next(c for c in report["categories"] if c["category"] == "devices")
    assert (devices["episodes"], devices["no_recontact"], devices["reopened"]) == (3, 1, 1)
    none = next(c for c in report["categories"] if c["category"] == "uncategorised")
    assert none["reasons"] == {"no_runbook_fits": 1} and none["handoff_rate"] == 1.0


@pytest.mark.parametrize(("quiet", "outcome"), [(h(71, 59), "pending"), (h(72, 1), "no_recontact")])
def test_no_recontact_only_once_72_hours_have_passed(timeline: Timeline, quiet: timedelta, outcome: str) -> None:
    timeline.open("c1:e0", "vpn-connection")
    timeline.at(h(0, 5)).store.tried("c1:e0", 1)
    assert timeline.outcomes(as_of=h(0, 5) + quiet) == {"c1:e0": outcome}


@pytest.mark.parametrize(("back_after", "first"), [(h(71, 59), "reopened"), (h(72, 1), "confirmed")])
def test_coming_back_reopens_only_within_72_hours(timeline: Timeline, back_after: timedelta, first: str) -> None:
    timeline.open("c1:e0", "vpn-connection")
    timeline.store.tried("c1:e0", 0)
    timeline.at(h(0, 10)).store.close("c1:e0", "confirmed")
    timeline.at(h(0, 10) + back_after).open("c1:e1", "vpn-connection")
    assert timeline.outcomes(as_of=h(200))["c1:e0"] == first


def test_a_reopen_across_channels_by_the_verified_address(timeline: Timeline) -> None:
    # Chat: the fix is shown to a customer who verified their address by code, then silence.
    timeline.open("chat-1:e0", "password-reset", subject="hash-jane")
    timeline.at(h(0, 4)).store.tried("chat-1:e0", 0)
    # Email, two days later: another conversation, the same verified address, the same runbook.
    timeline.at(h(48)).open("mail-9:e0", "password-reset")
    timeline.store.verified("mail-9:e0", "hash-jane")
    # A stranger's and another runbook's episodes do not reopen it.
    timeline.at(h(0)).open("chat-2:e0", "vpn-connection", subject="hash-jane")
    timeline.store.tried("chat-2:e0", 0)
    timeline.at(h(10)).open("chat-3:e0", "password-reset", subject="hash-bob")
    got = timeline.outcomes(as_of=h(100))
    assert (got["chat-1:e0"], got["chat-2:e0"]) == ("reopened", "no_recontact")
    # Judged before the mail came in, it was still waiting for its 72 hours.
    assert timeline.outcomes(as_of=h(47))["chat-1:e0"] == "pending"


def test_abandonment_waits_for_the_time_limit(timeline: Timeline) -> None:
    timeline.open("c1:e0", "password-reset")
    timeline.at(h(0, 5)).store.touch("c1:e0")
    assert timeline.outcomes(as_of=h(0, 34)) == {"c1:e0": "in_progress"}
    assert timeline.outcomes(as_of=h(0, 36)) == {"c1:e0": "abandoned"}


def test_as_of_sees_only_what_had_happened(timeline: Timeline) -> None:
    timeline.open("c1:e0", "vpn-connection")
    timeline.at(h(0, 2)).store.tried("c1:e0", 0)
    timeline.at(h(1)).store.close("c1:e0", "confirmed")
    timeline.at(h(5)).open("c2:e0", "vpn-connection")
    assert timeline.outcomes(as_of=h(0, 30)) == {"c1:e0": "pending"}
    assert timeline.outcomes(as_of=h(2)) == {"c1:e0": "confirmed"}
    assert timeline.outcomes(as_of=h(5, 10), since=h(3)) == {"c2:e0": "in_progress"}


def test_didnt_work_answers_are_counted_per_runbook(timeline: Timeline) -> None:
    timeline.open("c1:e0", "vpn-connection")
    timeline.store.tried("c1:e0", 0)
    timeline.store.did_not_work("c1:e0", 0)
    timeline.store.did_not_work("c1:e0", 0)  # a replayed turn counts once
    timeline.store.tried("c1:e0", 1)
    timeline.store.did_not_work("c1:e0", 1)
    report = timeline.insights.report(Period.of(None, T0 + h(1)))
    assert report["didnt_work"] == [{"runbook_id": "vpn-connection", "answers": 2, "episodes": 1}]


def test_as_of_before_since_is_a_clear_error() -> None:
    with pytest.raises(PeriodRejected, match="as-of .* is before since"):
        Period.of(T0, T0 - timedelta(seconds=1))
    with pytest.raises(PeriodRejected, match="'yesterday' is not an ISO date"):
        parse_moment("yesterday", "--since")
    assert parse_moment("2026-11-02", "--since") == datetime(2026, 11, 2, tzinfo=UTC)


def test_containment_counts_incidents_apart_and_nothing_decided_is_zero() -> None:
    counts = {"confirmed": 3, "no_recontact": 1, "resolved_by_incident": 4, "pending": 5, "in_progress": 7}
    assert containment(counts) == 0.5
    assert containment({"pending": 2}) == 0.0


def test_resolved_by_incident_is_counted_apart_from_the_bot(timeline: Timeline) -> None:
    # Another part of the product (incidents) closes episodes with this outcome; it is decided, not contained.
    timeline.open("c1:e0", "vpn-connection")
    timeline.open("c2:e0", "vpn-connection")
    timeline.store.tried("c2:e0", 0)
    timeline.store.close("c2:e0", "confirmed")
    with timeline.store.db.transaction() as conn:
        conn.execute(
            "UPDATE episodes SET outcome = 'resolved_by_incident', closed_at = ? WHERE episode_id = 'c1:e0'",
            ((T0 + h(1)).isoformat(),),
        )
    report = timeline.insights.report(Period.of(None, T0 + h(2)))
    assert (report["resolved_by_incident"], report["confirmed"], report["containment_rate"]) == (1, 1, 0.5)
    assert timeline.outcomes(as_of=h(0, 1))["c1:e0"] == "in_progress"  # not yet closed at that moment


def test_reading_figures_never_holds_the_write_lock(timeline: Timeline) -> None:
    timeline.open("c1:e0", "vpn-connection")
    with timeline.insights._snapshot() as conn:
        assert conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] == 1
        # The resolver writes while a report reads (a locked database would fail this write); the
        # report goes on seeing its own snapshot.
        timeline.open("c2:e0", "vpn-connection")
        assert conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0] == 1
    assert len(timeline.outcomes(as_of=h(1))) == 2


def test_desk_times_are_nearest_rank_median_and_p90_and_late_tickets_are_breaches(timeline: Timeline) -> None:
    import json

    rows, desk = [], []
    for n in range(1, 11):
        created = T0 + h(n)
        due_first, due_resolve = created + h(0, 45), created + h(4)
        first = created + h(0, 10 * n)  # 10, 20, ... 100 minutes: 6 of 10 past the 45-minute due time
        closed = created + h(n) if n <= 8 else None  # 1 h ... 8 h to resolve; two still open
        rows.append(
            (
                f"p{n}",
                f"c{n}",
                created.isoformat(),
                "P2",
                due_first.isoformat(),
                "resolved" if closed else "claimed",
                json.dumps({"sla": {"resolve_due": due_resolve.isoformat()}}),
            )
        )
        desk.append((f"p{n}", first.isoformat(), closed.isoformat() if closed else None))
    with timeline.store.db.transaction() as conn:
        for row in rows:
            conn.execute("INSERT INTO handoffs VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        for times in desk:
            conn.execute("INSERT INTO handoff_desk (packet_id, first_response_at, closed_at) VALUES (?, ?, ?)", times)
    report = timeline.insights.report(Period.of(None, T0 + h(40)))
    first, resolve = report["handoff_times"]["first_response"], report["handoff_times"]["resolve"]
    assert (first["count"], first["median_minutes"], first["p90_minutes"]) == (10, 50.0, 90.0)
    assert (resolve["count"], resolve["median_minutes"], resolve["p90_minutes"]) == (8, 240.0, 480.0)
    # Resolved after 5, 6, 7, 8 hours (due in 4), and the two still open at as_of are late too.
    assert report["sla"] == {
        "handoffs": 10,
        "first_response_breached": 6,
        "resolve_breached": 6,
        "breached_by_priority": {"P2": 6},  # the same six tickets, late both ways
    }


def _seed(t: Timeline) -> None:
    """A month of episodes at moments with microseconds, the recontact window's edges and desk handoffs."""
    rng = random.Random(15)
    runbooks = ["vpn-connection", "printer-problem", "password-reset", "disk-full", None]
    for n in range(80):
        opened = timedelta(hours=rng.uniform(0, 700), microseconds=rng.randrange(1_000_000))
        eid, runbook = f"c{n % 23}:e{n}", rng.choice(runbooks)
        t.at(opened).open(eid, runbook, subject=f"s{n % 7}" if n % 3 == 0 else None)
        roll = rng.random()
        if roll < 0.6 and runbook:
            t.at(opened + timedelta(minutes=rng.uniform(1, 20))).store.tried(eid, 0)
            if rng.random() < 0.3:
                t.store.did_not_work(eid, rng.randrange(3))
            if rng.random() < 0.5:
                t.at(opened + timedelta(minutes=rng.uniform(20, 40))).store.close(eid, "confirmed")
        elif roll < 0.8:
            t.at(opened + timedelta(minutes=2)).store.close(eid, "handed_off", reason="no_runbook_fits", packet_id=eid)
        else:
            t.at(opened + timedelta(minutes=rng.uniform(1, 90))).store.touch(eid)
    # Returns about the same runbook at the window's edge: just inside, exactly at it, just past it.
    for n, back in enumerate([h(72) - timedelta(microseconds=600), h(72), h(72) + timedelta(milliseconds=1)]):
        fix = h(100 + n, 0) + timedelta(microseconds=123_456)
        t.at(h(100 + n)).open(f"edge{n}:e0", "disk-full")
        t.at(fix).store.tried(f"edge{n}:e0", 0)
        t.at(fix + back).open(f"edge{n}:e1", "disk-full")
    with t.store.db.transaction() as conn:
        for n in range(12):
            created = T0 + h(n * 7, n) + timedelta(microseconds=n * 37_001)
            first = created + timedelta(minutes=7 * n, seconds=3 * n, microseconds=n * 499)
            closed = created + h(n, 1) if n % 4 else None
            packet = json.dumps({"sla": {"resolve_due": (created + h(4)).isoformat()}})
            row = (f"p{n}", f"c{n}", created.isoformat(), f"P{1 + n % 3}", (created + h(0, 45)).isoformat())
            conn.execute(
                "INSERT INTO handoffs VALUES (?, ?, ?, ?, ?, ?, ?)", (*row, "resolved" if closed else "queued", packet)
            )
            conn.execute(
                "INSERT INTO handoff_desk (packet_id, first_response_at, closed_at) VALUES (?, ?, ?)",
                (f"p{n}", first.isoformat(), closed.isoformat() if closed else None),
            )


@pytest.mark.postgres
def test_sqlite_and_postgresql_give_the_same_figures_for_the_same_episodes(
    tmp_path: Path, pg_url: str, pack: Pack
) -> None:
    on_sqlite, on_postgresql = Timeline(tmp_path / "desk.sqlite", pack), Timeline(DatabaseUrl(pg_url), pack)
    _seed(on_sqlite)
    _seed(on_postgresql)
    edges = on_sqlite.outcomes(as_of=h(800))
    assert [edges[f"edge{n}:e0"] for n in range(3)] == ["reopened", "no_recontact", "no_recontact"]
    for as_of in (h(30), h(200), h(500, 17), h(800)):
        for since in (None, h(20)):
            period = Period.of(T0 + since if since is not None else None, T0 + as_of)
            sqlite_report, postgresql_report = on_sqlite.insights.report(period), on_postgresql.insights.report(period)
            assert sqlite_report == postgresql_report, (as_of, since)
            assert on_sqlite.insights.outcomes(period) == on_postgresql.insights.outcomes(period)
    report = on_sqlite.insights.report(Period.of(None, T0 + h(800)))
    assert report["episodes"] == 86 and report["sla"]["handoffs"] == 12 and report["didnt_work"]
    assert all(report[o] > 0 for o in ("confirmed", "no_recontact", "reopened", "abandoned", "handed_off"))
    assert report["handoff_times"]["first_response"]["count"] == 12
