"""The support lead's figures: honest outcomes per episode, computed in SQL at a given moment.

DESIGN.md, "Counting resolutions honestly", is the contract. An episode's outcome at ``as_of``:

- ``handed_off`` / ``resolved_by_incident``: as the episode was closed (if closed by ``as_of``);
- ``reopened``: confirmed, or a fix was shown, and the same customer (same conversation, which is
  also the same mail thread, or the same code-verified address) opened an episode about the same
  runbook less than the recontact window (72 h) later;
- ``confirmed``: the customer said it worked;
- ``no_recontact``: a fix was shown, nobody came back, and the window has passed (else ``pending``);
- ``abandoned``: no fix was shown and the episode has been quiet longer than the conversation time
  limit (policy.yaml ``limits.max_conversation_minutes``);
- ``in_progress``: anything else.

containment_rate = (confirmed + no_recontact) / (episodes - pending - in_progress). Everything is
aggregated by the database (SQLite or PostgreSQL: one query, with the few functions they spell
differently in ``_DIALECT``); Python only arranges the grouped rows into the JSON object.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.episodes import EpisodeStore
from agent.handoff import HandoffQueue
from app.desk import Desk
from core.clock import utc_now
from core.db import AnyDatabase, Connection, Database, Dialect, database_target, open_database
from core.errors import TieroneError
from core.pack import Pack
from core.settings import Settings

OUTCOMES: tuple[str, ...] = (
    "confirmed",
    "no_recontact",
    "reopened",
    "abandoned",
    "handed_off",
    "resolved_by_incident",
    "pending",
    "in_progress",
)
UNCATEGORISED = "uncategorised"

# Gaps in the runbooks for a period (part 4 of issue 13): (since, until) -> [{size, examples, nearest_runbook}].
GapsProvider = Callable[[datetime | None, datetime], list[dict[str, Any]]]


class PeriodRejected(TieroneError):
    """A period to report on is not usable; the text says why."""


def parse_moment(value: str | None, what: str) -> datetime | None:
    """An ISO date or date-time from the command line or a query (UTC when it names no zone)."""
    if value is None or value == "":
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PeriodRejected(
            f"{what} {value!r} is not an ISO date or date-time; write e.g. 2026-11-01 or 2026-11-01T09:00:00Z"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# What the dialects spell differently, and nothing else: JSON, date arithmetic, the scratch table.
# The window's end is written as SQLite's strftime writes it (milliseconds, "+00:00"), so that the ISO
# strings compare the same way on both and the two backends give the same figures.
_DIALECT: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        "categories": "SELECT key AS runbook_id, value AS category FROM json_each(:categories)",
        "window_end": "strftime('%Y-%m-%dT%H:%M:%f+00:00', julianday({t}) + :window_days)",
        # Whole milliseconds: SQLite keeps a moment to the millisecond (rounded), so both count the same.
        "ms": "CAST(ROUND((julianday({end}) - julianday({start})) * 86400000) AS INTEGER)",
        "resolve_due": "json_extract(h.packet, '$.sla.resolve_due')",
        "answers": "json_array_length(failed_steps)",
        "scratch": "temp.judged_episodes",
        "create_scratch": "CREATE TEMP TABLE judged_episodes AS",
        "snapshot": "",
    },
    "postgresql": {
        "categories": "SELECT key AS runbook_id, value AS category FROM json_each_text(CAST(:categories AS json))",
        # to_char's MS truncates where SQLite rounds to the millisecond: half a millisecond evens that.
        # Hours, not days: a day is 23 or 25 hours across a DST change in the session's time zone.
        "window_end": "to_char((CAST({t} AS timestamptz) + :window_days * interval '24 hours'"
        " + interval '500 microseconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"+00:00\"')",
        "ms": "CAST(ROUND(EXTRACT(EPOCH FROM CAST({end} AS timestamptz)) * 1000)"
        " - ROUND(EXTRACT(EPOCH FROM CAST({start} AS timestamptz)) * 1000) AS BIGINT)",
        "resolve_due": "(CAST(h.packet AS json) #>> '{sla,resolve_due}')",
        "answers": "json_array_length(CAST(failed_steps AS json))",
        "scratch": "pg_temp.judged_episodes",
        "create_scratch": "CREATE TEMP TABLE judged_episodes ON COMMIT DROP AS",
        "snapshot": "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    },
}
_NAMED = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


def _bind(sql: str, params: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The query with ``?`` for each ``:name`` and its values in order (the one style both databases take)."""
    return _NAMED.sub("?", sql), tuple(params[name] for name in _NAMED.findall(sql))


# One row per episode opened in the period, with its outcome at :as_of. Times are compared as ISO strings
# (all UTC, as every store writes them), which keeps the look-ups index range scans; thresholds come computed.
_CLASSIFIED = """
WITH cat AS ({categories}),
base AS (
    SELECT e.episode_id, e.conversation_id, e.runbook_id, e.subject, e.opened_at, e.reason, e.packet_id,
        e.failed_steps,
        CASE WHEN e.closed_at IS NOT NULL AND e.closed_at <= :as_of THEN e.outcome ELSE 'in_progress' END AS stored,
        CASE WHEN CAST(e.confirmed AS INTEGER) = 1 AND e.closed_at <= :as_of THEN e.closed_at END AS confirmed_at,
        CASE WHEN e.fix_at <= :as_of THEN e.fix_at END AS fix_at,
        COALESCE(e.last_at, e.opened_at) AS last_at
    FROM episodes e
    WHERE e.opened_at <= :until AND (CAST(:since AS TEXT) IS NULL OR e.opened_at >= :since)
),
anchored AS (
    SELECT b.*, COALESCE(b.confirmed_at, b.fix_at) AS anchor,
        -- The window's end as an ISO string, so the look-ups below stay index range scans.
        {anchor_end} AS anchor_end
    FROM base b
),
judged AS (
    SELECT a.*,
        a.anchor IS NOT NULL AND a.runbook_id IS NOT NULL AND (
            EXISTS (SELECT 1 FROM episodes r
                WHERE r.conversation_id = a.conversation_id AND r.runbook_id = a.runbook_id
                AND r.episode_id <> a.episode_id AND r.opened_at > a.anchor AND r.opened_at <= :as_of
                AND r.opened_at < a.anchor_end)
            OR (a.subject IS NOT NULL AND EXISTS (SELECT 1 FROM episodes r
                WHERE r.subject = a.subject AND r.runbook_id = a.runbook_id
                AND r.episode_id <> a.episode_id AND r.opened_at > a.anchor AND r.opened_at <= :as_of
                AND r.opened_at < a.anchor_end))
        ) AS came_back
    FROM anchored a
)
SELECT j.episode_id, j.conversation_id, j.runbook_id, j.opened_at, j.reason, j.packet_id, j.failed_steps,
    COALESCE(cat.category, :uncategorised) AS category,
    CASE
        WHEN j.stored IN ('handed_off', 'resolved_by_incident') THEN j.stored
        WHEN j.came_back OR (j.stored = 'reopened' AND j.anchor IS NOT NULL) THEN 'reopened'
        WHEN j.confirmed_at IS NOT NULL THEN 'confirmed'
        WHEN j.fix_at IS NOT NULL AND j.fix_at <= :settled_before THEN 'no_recontact'
        WHEN j.fix_at IS NOT NULL THEN 'pending'
        WHEN j.last_at < :quiet_before THEN 'abandoned'
        ELSE 'in_progress'
    END AS outcome
FROM judged j LEFT JOIN cat ON cat.runbook_id = j.runbook_id
"""


@dataclass(frozen=True)
class Period:
    """The episodes opened from ``since`` (None: from the first) until ``as_of``, judged at ``as_of``."""

    since: datetime | None
    as_of: datetime
    # The last moment an episode may open (a month's end, judged later); None: as_of.
    until: datetime | None = None

    @classmethod
    def of(cls, since: datetime | None, as_of: datetime | None, clock: Callable[[], datetime] = utc_now) -> Period:
        """A checked period; ``as_of`` defaults to now."""
        until = as_of or clock()
        if since is not None and since > until:
            raise PeriodRejected(
                f"as-of {until.isoformat()} is before since {since.isoformat()}: the moment the figures are"
                " judged at must come after the start of the period (--as-of / --since, or ?as_of= / ?since=)"
            )
        return cls(since, until)


def _percentiles(conn: Connection, values_sql: str, params: dict[str, Any]) -> dict[str, float | int | None]:
    """Count, median and p90 (in minutes) of a one-column query of milliseconds, picked by rank in SQL."""
    # The ranks are at least 1: ranked holds a row only when total is 1 or more.
    row = conn.execute(
        *_bind(
            f"""WITH v AS (SELECT x FROM ({values_sql}) AS s WHERE x IS NOT NULL),
        ranked AS (SELECT x, ROW_NUMBER() OVER (ORDER BY x) AS n, COUNT(*) OVER () AS total FROM v)
        SELECT MAX(total),
            MAX(CASE WHEN n = CAST((total * 50 + 99) / 100 AS INTEGER) THEN x END),
            MAX(CASE WHEN n = CAST((total * 90 + 99) / 100 AS INTEGER) THEN x END)
        FROM ranked""",
            params,
        )
    ).fetchone()
    count = int(row[0] or 0)
    return {
        "count": count,
        "median_minutes": round(int(row[1]) / 60000, 1) if row[1] is not None else None,
        "p90_minutes": round(int(row[2]) / 60000, 1) if row[2] is not None else None,
    }


class Insights:
    """Figures of one deployment's desk database, for the lead (CLI, GET /insights, the page, the audit)."""

    def __init__(
        self,
        db: AnyDatabase,
        pack: Pack,
        gaps: GapsProvider | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        # The tables it reads, in case no resolver or desk has opened this database yet.
        for store in (EpisodeStore, HandoffQueue, Desk):
            db.migrate(store.MIGRATIONS)
        self._db = db
        self._sql = _DIALECT[db.dialect]
        self._classified = _CLASSIFIED.format(
            categories=self._sql["categories"],
            anchor_end=self._sql["window_end"].format(t="COALESCE(b.confirmed_at, b.fix_at)"),
        )
        # Figures are read in one snapshot that never holds the write lock the resolver and the desk
        # need, so a long report (a scrape of /metrics, the page) never stalls a turn: on SQLite a
        # read-only connection of their own; on PostgreSQL a repeatable-read transaction (it writes only its
        # temporary scratch table).
        self._read: sqlite3.Connection | None = None
        if isinstance(db, Database):
            self._read = sqlite3.connect(
                db.path.resolve().as_uri() + "?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=10,
            )
            self._read.row_factory = sqlite3.Row
        self._read_lock = threading.Lock()
        self._pack = pack
        self._gaps = gaps
        self.clock = clock
        self._categories = json.dumps({rid: rb.meta.category for rid, rb in pack.runbooks.items()})

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        if self._read is None:
            with self._db.transaction() as conn:
                conn.execute(self._sql["snapshot"])
                yield conn
            return
        with self._read_lock:
            self._read.execute("BEGIN")
            try:
                yield self._read
            finally:
                self._read.execute("COMMIT")

    def _params(self, period: Period) -> dict[str, Any]:
        policy = self._pack.policy
        as_of = period.as_of.astimezone(UTC)
        return {
            "categories": self._categories,
            "uncategorised": UNCATEGORISED,
            "as_of": as_of.isoformat(),
            "until": min(period.until or as_of, as_of).astimezone(UTC).isoformat(),
            # A fix shown by then has had its whole recontact window; a move before then is past the time limit.
            "settled_before": (as_of - timedelta(hours=policy.recontact.window_hours)).isoformat(),
            "quiet_before": (as_of - timedelta(minutes=policy.limits.max_conversation_minutes)).isoformat(),
            "since": period.since.astimezone(UTC).isoformat() if period.since else None,
            "window_days": policy.recontact.window_hours / 24.0,
        }

    def outcomes(self, period: Period) -> list[dict[str, Any]]:
        """Every episode of the period with its category and outcome (for tests and small exports)."""
        with self._snapshot() as conn:
            rows = conn.execute(
                *_bind(self._classified + " ORDER BY j.opened_at, j.episode_id", self._params(period))
            ).fetchall()
        return [dict(r) for r in rows]

    def totals(self, period: Period) -> dict[str, Any]:
        """Episodes, each outcome's count and the containment rate (what /metrics reads at scrape time)."""
        with self._snapshot() as conn:
            grouped = conn.execute(
                *_bind(
                    "SELECT outcome, COUNT(*) AS n FROM (" + self._classified + ") AS j GROUP BY outcome",
                    self._params(period),
                )
            ).fetchall()
        return _totals(grouped)

    def report(self, period: Period) -> dict[str, Any]:
        """The insights object: totals, categories, gaps, and what the page charts."""
        params = self._params(period)
        with self._snapshot() as conn:
            scratch = self._sql["scratch"]
            conn.execute(f"DROP TABLE IF EXISTS {scratch}")
            conn.execute(*_bind(f"{self._sql['create_scratch']} {self._classified}", params))
            grouped = conn.execute(
                "SELECT category, outcome, COALESCE(reason, 'unknown') AS reason, COUNT(*) AS n"
                f" FROM {scratch} GROUP BY category, outcome, reason"
            ).fetchall()
            timeline = conn.execute(
                f"SELECT substr(opened_at, 1, 10) AS day, outcome, COUNT(*) AS n FROM {scratch}"
                " GROUP BY day, outcome ORDER BY day"
            ).fetchall()
            answers = self._sql["answers"]
            didnt_work = conn.execute(
                f"SELECT runbook_id, SUM({answers}) AS answers, COUNT(*) AS episodes"
                f" FROM {scratch} WHERE runbook_id IS NOT NULL GROUP BY runbook_id"
                f" HAVING SUM({answers}) > 0 ORDER BY answers DESC, runbook_id LIMIT 10"
            ).fetchall()
            desk = self._desk_figures(conn, params)
            conn.execute(f"DROP TABLE {scratch}")
        result = _totals(grouped)
        result |= {
            "since": params["since"],
            "as_of": params["as_of"],
            "categories": _categories(grouped),
            "gaps": self._gaps(period.since, period.as_of) if self._gaps else [],
            "timeline": _timeline(timeline),
            "didnt_work": [dict(r) for r in didnt_work],
            **desk,
        }
        return result

    def resolution_notes(self, period: Period) -> list[dict[str, Any]]:
        """What L2 wrote when they resolved the period's handed-off episodes, with category and reason."""
        with self._snapshot() as conn:
            rows = conn.execute(
                *_bind(
                    "WITH j AS (" + self._classified + ") SELECT j.category, j.runbook_id, j.reason, ev.note, ev.at"
                    " FROM j JOIN handoff_events ev ON ev.packet_id = j.packet_id"
                    " WHERE j.outcome = 'handed_off' AND ev.action = 'resolved' AND ev.at <= :as_of"
                    " ORDER BY j.category, ev.at",
                    self._params(period),
                )
            ).fetchall()
        return [dict(r) for r in rows]

    def _desk_figures(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        """Times to first human response and to resolve, and SLA breaches, of the period's handoffs."""
        window = (
            "FROM handoffs h LEFT JOIN handoff_desk d ON d.packet_id = h.packet_id"
            " WHERE h.created_at <= :until AND (CAST(:since AS TEXT) IS NULL OR h.created_at >= :since)"
        )
        ms, resolve_due = self._sql["ms"], self._sql["resolve_due"]
        first = _percentiles(
            conn,
            "SELECT "
            + ms.format(start="h.created_at", end="d.first_response_at")
            + " AS x "
            + window
            + " AND d.first_response_at <= :as_of",
            params,
        )
        resolve = _percentiles(
            conn,
            "SELECT "
            + ms.format(start="h.created_at", end="d.closed_at")
            + " AS x "
            + window
            + " AND h.status = 'resolved' AND d.closed_at <= :as_of",
            params,
        )
        late = conn.execute(
            *_bind(
                "SELECT"
                " COALESCE(SUM(CASE WHEN COALESCE(d.first_response_at, :as_of) > h.first_response_due THEN 1 END), 0),"
                f" COALESCE(SUM(CASE WHEN COALESCE(d.closed_at, :as_of) > {resolve_due}"
                " THEN 1 END), 0), COUNT(*) " + window,
                params,
            )
        ).fetchone()
        by_priority = conn.execute(
            *_bind(
                "SELECT h.priority, COUNT(*) AS n " + window + " AND (COALESCE(d.first_response_at, :as_of) >"
                f" h.first_response_due OR COALESCE(d.closed_at, :as_of) > {resolve_due})"
                " GROUP BY h.priority ORDER BY h.priority",
                params,
            )
        ).fetchall()
        return {
            "handoff_times": {"first_response": first, "resolve": resolve},
            "sla": {
                "handoffs": int(late[2]),
                "first_response_breached": int(late[0]),
                "resolve_breached": int(late[1]),
                "breached_by_priority": {r["priority"]: int(r["n"]) for r in by_priority},
            },
        }


def _totals(grouped: list[Any]) -> dict[str, Any]:
    counts = dict.fromkeys(OUTCOMES, 0)
    for row in grouped:
        counts[row["outcome"]] += int(row["n"])
    episodes = sum(counts.values())
    return {"episodes": episodes, **counts, "containment_rate": containment(counts)}


def containment(counts: dict[str, int]) -> float:
    """(confirmed + no_recontact) / (episodes - pending - in_progress); 0.0 when nothing is decided yet."""
    decided = sum(counts.values()) - counts.get("pending", 0) - counts.get("in_progress", 0)
    resolved = counts.get("confirmed", 0) + counts.get("no_recontact", 0)
    return round(resolved / decided, 4) if decided else 0.0


def _categories(grouped: list[Any]) -> list[dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for row in grouped:
        entry = table.setdefault(row["category"], {"category": row["category"], **dict.fromkeys(OUTCOMES, 0)})
        entry[row["outcome"]] += int(row["n"])
        if row["outcome"] == "handed_off":
            reasons = entry.setdefault("reasons", {})
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + int(row["n"])
    result = []
    for name in sorted(table):
        entry = table[name]
        counts = {k: entry[k] for k in OUTCOMES}
        episodes = sum(counts.values())
        result.append(
            {
                "category": name,
                "episodes": episodes,
                **counts,
                "handoff_rate": round(counts["handed_off"] / episodes, 4) if episodes else 0.0,
                "reopen_rate": round(counts["reopened"] / episodes, 4) if episodes else 0.0,
                "containment_rate": containment(counts),
                "reasons": dict(sorted(entry.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))),
            }
        )
    return result


def _timeline(rows: list[Any]) -> list[dict[str, Any]]:
    days: dict[str, dict[str, Any]] = {}
    for row in rows:
        days.setdefault(row["day"], {"day": row["day"], **dict.fromkeys(OUTCOMES, 0)})[row["outcome"]] = int(row["n"])
    return list(days.values())


def open_insights(
    settings: Settings, pack: Pack, gaps: GapsProvider | None = None, *, clock: Callable[[], datetime] = utc_now
) -> Insights:
    """The lead's figures over the deployment's desk database (its schema brought up to date first)."""
    return Insights(open_database(database_target(settings.desk_db, settings.database_url)), pack, gaps, clock=clock)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The insights object as a few lines of plain text for a terminal."""
    since = report["since"] or "the first episode"
    lines = [
        f"Episodes opened from {since} until {report['as_of']}: {report['episodes']}",
        f"  containment {report['containment_rate']:.1%}"
        " = (confirmed + no_recontact) / (episodes - pending - in_progress)",
        "  " + "  ".join(f"{name} {report[name]}" for name in OUTCOMES),
        "",
        f"{'category':<18}{'episodes':>9}{'confirmed':>10}{'no_recontact':>13}{'reopened':>9}"
        f"{'handed_off':>11}{'handoff':>8}  top handoff reasons",
    ]
    for c in report["categories"]:
        reasons = ", ".join(f"{code} {n}" for code, n in list(c["reasons"].items())[:3])
        lines.append(
            f"{c['category']:<18}{c['episodes']:>9}{c['confirmed']:>10}{c['no_recontact']:>13}{c['reopened']:>9}"
            f"{c['handed_off']:>11}{c['handoff_rate']:>8.0%}  {reasons}"
        )
    times, sla = report["handoff_times"], report["sla"]
    first, resolve = times["first_response"], times["resolve"]

    def took(value: float | None) -> str:
        return "-" if value is None else f"{value:g} min"

    lines += [
        "",
        f"Handoffs {sla['handoffs']}: first human response median {took(first['median_minutes'])},"
        f" p90 {took(first['p90_minutes'])}; resolved median {took(resolve['median_minutes'])},"
        f" p90 {took(resolve['p90_minutes'])}",
        f"SLA breaches: first response {sla['first_response_breached']}, resolve {sla['resolve_breached']}",
    ]
    if report["didnt_work"]:
        worst = ", ".join(f"{r['runbook_id']} {r['answers']}" for r in report["didnt_work"][:5])
        lines.append(f'Most "didn\'t work" answers: {worst}')
    lines.append(f"Knowledge gaps: {len(report['gaps'])}")
    return lines
