"""Time of the lead's insights over 100,000 episodes (issue 13's target: at most 2 s on this machine).

Writes a desk database of synthetic episodes (a month, 25 runbooks, a third of customers verified,
some coming back within 72 hours, a fifth handed off with their tickets and desk times), then prints
the median and spread of several runs of the full report (GET /insights) and of the totals alone
(what /metrics reads at scrape time).

    .venv/bin/python bench/insights.py [--episodes 100000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.insights import Period, open_insights
from core.db import Database
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings

START = datetime(2026, 11, 1, tzinfo=UTC)


def seed(settings: Settings, episodes: int, rng: random.Random) -> None:
    """Fill the desk database with ``episodes`` episodes, in bulk."""
    pack = load_pack(BUNDLED_RUNBOOKS)
    runbooks = sorted(pack.runbooks)
    open_insights(settings, pack)  # migrates the tables
    rows, packets, desk = [], [], []
    for n in range(episodes):
        opened = START + timedelta(minutes=rng.uniform(0, 30 * 1440))
        runbook = rng.choice(runbooks) if rng.random() > 0.1 else None
        subject = f"s{rng.randrange(episodes // 4)}" if rng.random() < 0.33 else None
        cid = f"c{n // 2 if rng.random() < 0.2 else n}"
        draw = rng.random()
        fix = opened + timedelta(minutes=3) if draw < 0.7 else None
        outcome, closed, confirmed, reason, packet_id = "in_progress", None, 0, None, None
        if draw < 0.4:
            outcome, closed, confirmed = "confirmed", opened + timedelta(minutes=5), 1
        elif draw > 0.8:
            outcome, closed, reason, packet_id = "handed_off", opened + timedelta(minutes=4), "steps_exhausted", f"p{n}"
            due = opened + timedelta(hours=4)
            packets.append(
                (
                    packet_id,
                    cid,
                    opened.isoformat(),
                    "P3",
                    (opened + timedelta(hours=1)).isoformat(),
                    "resolved",
                    json.dumps({"sla": {"resolve_due": due.isoformat()}}),
                )
            )
            first = opened + timedelta(minutes=rng.lognormvariate(3.5, 0.8))
            desk.append(
                (packet_id, first.isoformat(), (first + timedelta(minutes=rng.lognormvariate(5, 1))).isoformat())
            )
        failed = json.dumps([0] if rng.random() < 0.15 else [])
        last = (closed or fix or opened).isoformat()
        rows.append(
            (
                f"{cid}:e{n}",
                cid,
                runbook,
                subject,
                opened.isoformat(),
                closed.isoformat() if closed else None,
                outcome,
                "[0]" if fix else "[]",
                fix.isoformat() if fix else None,
                last,
                confirmed,
                failed,
                reason,
                packet_id,
            )
        )
    with Database(settings.desk_db).transaction() as conn:
        conn.executemany(
            "INSERT INTO episodes (episode_id, conversation_id, runbook_id, subject, opened_at, closed_at, outcome,"
            " steps_tried, fix_at, last_at, confirmed, failed_steps, reason, packet_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT INTO handoffs VALUES (?, ?, ?, ?, ?, ?, ?)", packets)
        conn.executemany("INSERT INTO handoff_desk (packet_id, first_response_at, closed_at) VALUES (?, ?, ?)", desk)
        conn.execute("ANALYZE")


def main() -> None:
    """Seed, then time the report and the totals."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), runbooks=BUNDLED_RUNBOOKS)
        started = time.perf_counter()
        seed(settings, args.episodes, random.Random(13))
        print(f"seeded {args.episodes} episodes in {time.perf_counter() - started:.1f} s")
        insights = open_insights(settings, load_pack(BUNDLED_RUNBOOKS))
        period = Period.of(None, START + timedelta(days=34))
        for name, work in (("report (GET /insights)", insights.report), ("totals (/metrics)", insights.totals)):
            times = []
            for _ in range(args.runs):
                started = time.perf_counter()
                result = work(period)
                times.append(time.perf_counter() - started)
            print(
                f"{name}: median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s"
                f" over {args.runs} runs; {result['episodes']} episodes, containment {result['containment_rate']:.1%}"
            )


if __name__ == "__main__":
    main()
