"""The handoff packet L2 receives, and the durable queue that holds packets."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from core.db import DatabaseTarget, Migration, Migrations, PersonalTables, open_database
from core.errors import PacketNotFound

PacketStatus = Literal["queued", "claimed", "resolved", "returned"]


class CustomerState(BaseModel):
    """Who the customer is, as far as the conversation established it."""

    account_id: str | None = Field(None, description="Directory id; set only once verified")
    email: str | None = Field(None, description="Address the customer gave (unverified unless `verified`)")
    verified: bool = False
    verified_at: datetime | None = None
    account_state: dict[str, Any] | None = Field(None, description="The account as the tools last saw it")


class CandidateScore(BaseModel):
    """A runbook routing considered, with its score."""

    runbook_id: str
    score: float


class Sla(BaseModel):
    """Priority and due times, from policy.yaml's matrix."""

    priority: Literal["P1", "P2", "P3", "P4"]
    first_response_due: datetime
    resolve_due: datetime


class Attempt(BaseModel):
    """One thing the bot tried: a step shown, or a tool call and what it returned."""

    at: datetime
    kind: Literal["step", "tool", "answer"]
    step: int | None = None
    # A step of a runbook that branches, and (kind "answer") the outcome the customer's answer matched.
    step_id: str | None = None
    outcome: str | None = None
    tool: str | None = None
    ok: bool | None = None
    detail: str = ""
    idempotency_key: str | None = None
    args: dict[str, Any] = Field(default_factory=dict, description="What the tool was called with (redacted)")
    result: dict[str, Any] = Field(default_factory=dict)


class TranscriptLine(BaseModel):
    """One message, PII-redacted."""

    at: datetime
    role: Literal["customer", "bot", "technician"]
    text: str
    channel: str = "chat"


class Sentiment(BaseModel):
    """How the customer feels, from the latest messages."""

    score: float = Field(description="-1 furious .. 0 neutral .. 1 delighted")
    label: Literal["angry", "frustrated", "neutral", "positive"]


class PacketUsage(BaseModel):
    """What the conversation cost in LLM tokens (all zero with the offline brain)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float = Field(0.0, description="At the configured prices per million tokens")


class QueuedProblem(BaseModel):
    """Another problem the customer raised in the same message, not yet worked on."""

    summary: str = Field(description="The customer's words for it, PII-redacted")
    runbook_id: str | None = Field(description="The runbook it routed to when it was raised")
    score: float = 0.0


class EarlierEpisode(BaseModel):
    """An earlier problem of this conversation, mail thread or verified customer, and how it ended."""

    episode_id: str
    conversation_id: str
    runbook_id: str | None
    opened_at: datetime
    closed_at: datetime | None = None
    outcome: str = Field(description="in_progress, confirmed, handed_off or reopened")
    steps_tried: list[int] = Field(default_factory=list, description="Runbook steps shown (0-based)")


class HandoffPacket(BaseModel):
    """Everything L2 needs so nobody asks the customer again."""

    packet_id: str
    conversation_id: str
    channel: str
    created_at: datetime
    status: PacketStatus = "queued"
    customer: CustomerState
    category: str | None
    runbook_id: str | None = Field(description="The runbook the bot settled on, if any")
    started_runbook_id: str | None = Field(
        None,
        description="The runbook the problem began with; not runbook_id when the customer's answers switched it",
    )
    slots: dict[str, Any] = Field(
        default_factory=dict, description="Values the customer gave for the runbook's slots (a phone number masked)"
    )
    runbook_candidates: list[CandidateScore]
    sla: Sla
    reason_codes: list[str]
    attempts: list[Attempt]
    hypothesis: str
    summary: str
    transcript: list[TranscriptLine]
    sentiment: Sentiment
    # Written by an LLM brain alongside (never instead of) the structured fields above.
    summary_en: str | None = Field(None, description="One-line English summary of the problem (LLM brain)")
    language: str = Field("en", description="ISO 639-1 code of the language the customer wrote in")
    usage: PacketUsage | None = None
    queued_problems: list[QueuedProblem] = Field(
        default_factory=list, description="Other problems the customer raised, in the order they were to be taken up"
    )
    earlier_episodes: list[EarlierEpisode] = Field(
        default_factory=list,
        description="Earlier problems of this conversation or verified customer within the recontact window",
    )


def sentiment_label(score: float) -> Literal["angry", "frustrated", "neutral", "positive"]:
    """Name a sentiment score."""
    if score <= -0.6:
        return "angry"
    if score < -0.1:
        return "frustrated"
    if score > 0.2:
        return "positive"
    return "neutral"


_HANDOFFS = """CREATE TABLE IF NOT EXISTS handoffs (
    packet_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    priority TEXT NOT NULL,
    first_response_due TEXT NOT NULL,
    status TEXT NOT NULL,
    packet TEXT NOT NULL
)"""


class HandoffQueue:
    """Packets in the desk database, written the moment they are created; ids make writes idempotent."""

    MIGRATIONS: ClassVar[Migrations] = Migrations(
        "handoffs",
        Migration(1, _HANDOFFS, "CREATE INDEX IF NOT EXISTS handoffs_due ON handoffs (status, first_response_due)"),
    )
    PERSONAL_TABLES: ClassVar[PersonalTables] = {"handoffs": {"conversation_id": "conversation", "packet_id": "packet"}}

    def __init__(
        self,
        path: DatabaseTarget,
        clock: Callable[[], datetime],
        *,
        on_store: Callable[[Any, HandoffPacket], None] | None = None,
    ) -> None:
        self.target = path
        # Runs inside the transaction that stores a new packet (the delivery outbox, app/notify.py), on
        # its connection (a core.db.Connection).
        self._on_store = on_store
        self._db = open_database(path)
        self._clock = clock
        self._db.migrate(self.MIGRATIONS)

    @property
    def path(self) -> Path:
        """The SQLite file of the queue (on PostgreSQL there is none: open ``target`` instead)."""
        if not isinstance(self.target, Path):
            raise TypeError("the handoff queue is in PostgreSQL: open_database(queue.target), not queue.path")
        return self.target

    def put(self, packet: HandoffPacket) -> bool:
        """Store a packet; False when a packet with that id was already stored (a replay)."""
        with self._db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO handoffs VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    packet.packet_id,
                    packet.conversation_id,
                    packet.created_at.isoformat(),
                    packet.sla.priority,
                    packet.sla.first_response_due.isoformat(),
                    packet.status,
                    packet.model_dump_json(),
                ),
            )
            stored = cur.rowcount == 1
            if stored and self._on_store is not None:
                self._on_store(conn, packet)
            return stored

    def get(self, packet_id: str) -> HandoffPacket:
        """One packet by id."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT packet, status FROM handoffs WHERE packet_id = ?", (packet_id,)).fetchone()
        if row is None:
            raise PacketNotFound(packet_id)
        packet = HandoffPacket.model_validate_json(row["packet"])
        return packet.model_copy(update={"status": row["status"]})

    def packets(self, status: PacketStatus | None = "queued") -> list[HandoffPacket]:
        """Packets, the most urgent first (first-response due time)."""
        query = "SELECT packet, status FROM handoffs"
        args: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        with self._db.transaction() as conn:
            rows = conn.execute(query + " ORDER BY first_response_due, created_at", args).fetchall()
        return [HandoffPacket.model_validate_json(r["packet"]).model_copy(update={"status": r["status"]}) for r in rows]

    def for_conversation(self, conversation_id: str) -> list[HandoffPacket]:
        """Packets of one conversation, oldest first."""
        with self._db.transaction() as conn:
            rows = conn.execute(
                "SELECT packet, status FROM handoffs WHERE conversation_id = ? ORDER BY created_at",
                (conversation_id,),
            ).fetchall()
        return [HandoffPacket.model_validate_json(r["packet"]).model_copy(update={"status": r["status"]}) for r in rows]

    def set_summary(self, packet_id: str, summary: str) -> None:
        """Rewrite a packet's summary (an incident ticket's affected count grows as customers report)."""
        if self._db.dialect == "sqlite":
            update = "UPDATE handoffs SET packet = json_set(packet, '$.summary', ?) WHERE packet_id = ?"
        else:
            update = "UPDATE handoffs SET packet = jsonb_set(packet::jsonb, '{summary}', to_jsonb(?::text))::text"
            update += " WHERE packet_id = ?"
        with self._db.transaction() as conn:
            conn.execute(update, (summary, packet_id))

    def schema(self) -> dict[str, Any]:
        """The packet's JSON Schema, for helpdesks that take packets."""
        return HandoffPacket.model_json_schema()

    @staticmethod
    def dumps(packet: HandoffPacket) -> str:
        """The packet as indented JSON."""
        return json.dumps(packet.model_dump(mode="json"), indent=2)
