"""Episodes: one problem of a conversation, from its first message to its outcome, stored durably.

DESIGN.md, "Counting resolutions honestly": after ``resolved`` a new message starts a new episode.
The resolver records what it knows as it happens (``in_progress``, ``confirmed``, ``handed_off``,
``reopened``); outcomes that depend on time passing (``no_recontact``, ``abandoned``, ``pending``)
are for whoever reads the store later to derive from ``opened_at``, ``closed_at`` and
``steps_tried``. Rows are keyed so that a replayed turn writes nothing twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from core.db import Database, Migration, Migrations, PersonalTables

EpisodeOutcome = Literal["in_progress", "confirmed", "handed_off", "reopened", "resolved_by_incident"]

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


class EpisodeStore:
    """Episodes in SQLite, by conversation, runbook and verified customer."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "episodes",
        Migration(
            1,
            _EPISODES,
            "CREATE INDEX IF NOT EXISTS episodes_conversation ON episodes (conversation_id, opened_at)",
            "CREATE INDEX IF NOT EXISTS episodes_subject ON episodes (subject, opened_at)",
        ),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"episodes": {"conversation_id": "conversation"}}

    def __init__(self, path: Path, clock: Callable[[], datetime], *, across_conversations: bool = True) -> None:
        self._db = Database(path)
        self._clock = clock
        # False: only a conversation's own episodes are earlier ones (eval cases are strangers to each other).
        self._across = across_conversations
        self._db.migrate(self.MIGRATIONS)

    def open(self, episode: Episode) -> bool:
        """Store a new episode; False when one with that id exists already (a replayed turn)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO episodes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    episode.episode_id,
                    episode.conversation_id,
                    episode.runbook_id,
                    episode.subject,
                    episode.opened_at.isoformat(),
                    episode.closed_at.isoformat() if episode.closed_at else None,
                    episode.outcome,
                    json.dumps(episode.steps_tried),
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

    def tried(self, episode_id: str, step: int) -> None:
        """Record that a step was shown (once, however often it was shown)."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT steps_tried FROM episodes WHERE episode_id = ?", (episode_id,)).fetchone()
            if row is None:
                return
            steps = json.loads(row["steps_tried"])
            if step not in steps:
                conn.execute(
                    "UPDATE episodes SET steps_tried = ? WHERE episode_id = ?",
                    (json.dumps([*steps, step]), episode_id),
                )

    def close(self, episode_id: str, outcome: EpisodeOutcome) -> None:
        """Record how an episode ended; the first close keeps its time."""
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE episodes SET outcome = ?, closed_at = COALESCE(closed_at, ?) WHERE episode_id = ?",
                (outcome, self._clock().isoformat(), episode_id),
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
                "SELECT * FROM episodes WHERE (conversation_id = ? OR (? IS NOT NULL AND subject = ?))"
                " AND opened_at >= ? ORDER BY opened_at, episode_id",
                (conversation_id, subject, subject, since.isoformat()),
            ).fetchall()
        return [_episode(r) for r in rows]


def _episode(row: sqlite3.Row) -> Episode:
    data = dict(row)
    data["steps_tried"] = json.loads(data["steps_tried"])
    return Episode.model_validate(data)
