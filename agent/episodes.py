"""Episodes: one problem of a conversation, from its first message to its outcome, stored durably.

DESIGN.md, "Counting resolutions honestly": after ``resolved`` a new message starts a new episode.
The resolver records what it knows as it happens (``in_progress``, ``confirmed``, ``handed_off``,
``reopened``) and the facts the other outcomes are derived from: when a fix was last shown
(``fix_at``), when the episode last moved (``last_at``), whether the customer confirmed, which steps
the customer said did not work, and the handoff's reason and packet. Outcomes that depend on time
passing (``no_recontact``, ``abandoned``, ``pending``, and ``reopened`` across conversations) are
derived in SQL at a given moment by app/insights.py. Rows are keyed so that a replayed turn writes
nothing twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from core.db import AnyDatabase, DatabaseTarget, Migration, Migrations, PersonalTables, open_database

EpisodeOutcome = Literal["in_progress", "confirmed", "handed_off", "reopened", "resolved_by_incident"]

# The reason codes that end an episode with a person (agent/state.py ReasonCode, its handoff part).
HANDOFF_REASONS: frozenset[str] = frozenset(
    {
        "no_runbook_fits",
        "tier2_runbook",
        "customer_requested_human",
        "negative_sentiment",
        "escalation_keyword",
        "steps_exhausted",
        "verification_failed",
        "identity_not_provided",
        "step_failed",
        "time_limit",
        "turn_limit",
        "unclear_response",
        "tool_failed",
        "outcome_handoff",
        "slot_invalid",
        "ambiguous_after_clarifying",
        "repeat_contact",
        "manipulation_suspected",
        "llm_unavailable",
    }
)

_EPISODES = """CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    runbook_id TEXT,
    subject TEXT,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    outcome TEXT NOT NULL,
    steps_tried TEXT NOT NULL
)"""


class Episode(BaseModel):
    """One problem of one conversation and what came of it."""

    episode_id: str
    conversation_id: str
    runbook_id: str | None = Field(description="The runbook the bot settled on; None when none fit")
    # Keyed hash of the code-verified address (core/vault.py Vault.subject), once verified.
    subject: str | None = None
    opened_at: datetime
    closed_at: datetime | None = None
    outcome: EpisodeOutcome = "in_progress"
    steps_tried: list[int] = Field(default_factory=list, description="Runbook steps shown (0-based)")
    fix_at: datetime | None = Field(default=None, description="When a fix (a step or a tool result) was last shown")
    last_at: datetime | None = Field(default=None, description="When the episode last moved")
    confirmed: bool = Field(default=False, description="The customer said it worked (kept if it reopens)")
    failed_steps: list[int] = Field(default_factory=list, description="Steps the customer said did not work")
    reason: str | None = Field(default=None, description="The handoff's reason code, once handed off")
    packet_id: str | None = None


def handoff_reason(reasons: list[str]) -> str:
    """The one reason code an episode is handed off for: the first handoff reason of a decision."""
    return next((r for r in reasons if r in HANDOFF_REASONS), reasons[-1] if reasons else "unknown")


# Migration 2: the facts honest outcomes are derived from. Rows written before it keep what can be
# recovered: a confirmation from the outcome, a fix from the steps shown, their last move from their times.
_OUTCOME_FACTS = (
    "ALTER TABLE episodes ADD COLUMN fix_at TEXT",
    "ALTER TABLE episodes ADD COLUMN last_at TEXT",
    "ALTER TABLE episodes ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE episodes ADD COLUMN failed_steps TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE episodes ADD COLUMN reason TEXT",
    "ALTER TABLE episodes ADD COLUMN packet_id TEXT",
    "UPDATE episodes SET confirmed = 1 WHERE outcome = 'confirmed'",
    "UPDATE episodes SET last_at = COALESCE(closed_at, opened_at)",
    "UPDATE episodes SET fix_at = COALESCE(closed_at, opened_at) WHERE steps_tried <> '[]'",
    "CREATE INDEX IF NOT EXISTS episodes_opened ON episodes (opened_at)",
    "CREATE INDEX IF NOT EXISTS episodes_runbook ON episodes (runbook_id, opened_at)",
)

_COLUMNS = (
    "episode_id, conversation_id, runbook_id, subject, opened_at, closed_at, outcome, steps_tried,"
    " fix_at, last_at, confirmed, failed_steps, reason, packet_id"
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class EpisodeStore:
    """Episodes in the desk database, by conversation, runbook and verified customer."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "episodes",
        Migration(
            1,
            _EPISODES,
            "CREATE INDEX IF NOT EXISTS episodes_conversation ON episodes (conversation_id, opened_at)",
            "CREATE INDEX IF NOT EXISTS episodes_subject ON episodes (subject, opened_at)",
        ),
        Migration(2, *_OUTCOME_FACTS),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"episodes": {"conversation_id": "conversation"}}

    def __init__(
        self, path: DatabaseTarget, clock: Callable[[], datetime], *, across_conversations: bool = True
    ) -> None:
        self.target = path
        self._db = open_database(path)
        self._clock = clock
        # False: only a conversation's own episodes are earlier ones (eval cases are strangers to each other).
        self._across = across_conversations
        self._db.migrate(self.MIGRATIONS)

    @property
    def db(self) -> AnyDatabase:
        """The database the episodes live in (app/insights.py reads it)."""
        return self._db

    def open(self, episode: Episode) -> bool:
        """Store a new episode; False when one with that id exists already (a replayed turn)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                f"INSERT INTO episodes ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (
                    episode.episode_id,
                    episode.conversation_id,
                    episode.runbook_id,
                    episode.subject,
                    episode.opened_at.isoformat(),
                    _iso(episode.closed_at),
                    episode.outcome,
                    json.dumps(episode.steps_tried),
                    _iso(episode.fix_at),
                    _iso(episode.last_at or episode.closed_at or episode.opened_at),
                    int(episode.confirmed or episode.outcome == "confirmed"),
                    json.dumps(episode.failed_steps),
                    episode.reason,
                    episode.packet_id,
                ),
            )
            return cur.rowcount == 1

    def get(self, episode_id: str) -> Episode | None:
        """One episode by id."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT * FROM episodes WHERE episode_id = ?", (episode_id,)).fetchone()
        return _episode(row) if row else None

    def retarget(self, episode_id: str, runbook_id: str | None) -> None:
        """The customer's problem turned out to fit another runbook (a topic change)."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE episodes SET runbook_id = ? WHERE episode_id = ?", (runbook_id, episode_id))

    def verified(self, episode_id: str, subject: str) -> None:
        """The customer proved the address: the episode counts among that customer's."""
        with self._db.transaction() as conn:
            conn.execute("UPDATE episodes SET subject = ? WHERE episode_id = ?", (subject, episode_id))

    def touch(self, episode_id: str) -> None:
        """The episode moved (a message of its customer, a reply of the bot): it is not quiet yet."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE episodes SET last_at = ? WHERE episode_id = ?", (self._clock().isoformat(), episode_id)
            )

    def tried(self, episode_id: str, step: int) -> None:
        """Record that a step was shown (once, however often it was shown) and that a fix was shown now."""
        self._add_step(episode_id, "steps_tried", step, fix=True)

    def did_not_work(self, episode_id: str, step: int) -> None:
        """Record that the customer said a step did not work (once per step, so a replayed turn counts once)."""
        self._add_step(episode_id, "failed_steps", step, fix=False)

    def _add_step(
        self, episode_id: str, column: Literal["steps_tried", "failed_steps"], step: int, *, fix: bool
    ) -> None:
        now = self._clock().isoformat()
        with self._db.transaction() as conn:
            row = conn.execute(f"SELECT {column} FROM episodes WHERE episode_id = ?", (episode_id,)).fetchone()
            if row is None:
                return
            steps = json.loads(row[column])
            if step not in steps:
                steps = [*steps, step]
            conn.execute(
                f"UPDATE episodes SET {column} = ?, last_at = ?, fix_at = CASE WHEN ? = 1 THEN ? ELSE fix_at END"
                " WHERE episode_id = ?",
                (json.dumps(steps), now, int(fix), now, episode_id),
            )

    def close(
        self, episode_id: str, outcome: EpisodeOutcome, *, reason: str | None = None, packet_id: str | None = None
    ) -> None:
        """Record how an episode ended; the first close keeps its time, a confirmation is kept for good."""
        now = self._clock().isoformat()
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE episodes SET outcome = ?, closed_at = COALESCE(closed_at, ?), last_at = ?,"
                " confirmed = CASE WHEN ? = 1 THEN 1 ELSE confirmed END, reason = COALESCE(?, reason),"
                " packet_id = COALESCE(?, packet_id)"
                " WHERE episode_id = ?",
                (outcome, now, now, int(outcome == "confirmed"), reason, packet_id, episode_id),
            )

    def for_conversation(self, conversation_id: str) -> list[Episode]:
        """A conversation's episodes, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM episodes WHERE conversation_id = ? ORDER BY opened_at, episode_id", (conversation_id,)
            ).fetchall()
        return [_episode(r) for r in rows]

    def earlier(self, conversation_id: str, subject: str | None, since: datetime) -> list[Episode]:
        """Episodes opened since ``since`` in this conversation (its mail thread) or by this verified customer."""
        subject = subject if self._across else None
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM episodes WHERE (conversation_id = ? OR (CAST(? AS TEXT) IS NOT NULL AND subject = ?))"
                " AND opened_at >= ? ORDER BY opened_at, episode_id",
                (conversation_id, subject, subject, since.isoformat()),
            ).fetchall()
        return [_episode(r) for r in rows]


def _episode(row: Any) -> Episode:
    data = dict(row)
    data["steps_tried"] = json.loads(data["steps_tried"])
    data["failed_steps"] = json.loads(data["failed_steps"])
    return Episode.model_validate(data)
