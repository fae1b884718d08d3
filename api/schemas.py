"""The API's request and response bodies, and the converters from the stores' records to them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from agent.handoff import HandoffPacket
from agent.incidents import Incident, IncidentUpdate
from agent.resolver import CHANNELS
from app.desk import Ticket
from app.erasure import ErasureReport
from app.messages import Line


class NewConversation(BaseModel):
    """Open a conversation."""

    channel: str = Field(default="api", description=f"One of {', '.join(CHANNELS)}")


class ConversationCreated(BaseModel):
    """A new conversation's id and its customer's token (shown once; send it as a bearer token)."""

    conversation_id: str
    token: str


class CustomerMessage(BaseModel):
    """One message from the customer."""

    text: str = Field(description="What the customer wrote")
    client_message_id: str | None = Field(
        default=None,
        description="The client's own id for this message (1 to 100 of A-Z a-z 0-9 . _ : -); sending it again"
        " after a lost answer returns the first answer instead of playing the message twice",
    )


ConversationStatusName = Literal["bot", "queued", "claimed", "resolved"]


class TurnOut(BaseModel):
    """The bot's answer to one message (no replies while a technician holds the conversation)."""

    conversation_id: str
    replies: list[str]
    stage: str
    status: ConversationStatusName
    runbook_id: str | None
    handoff: dict[str, Any] | None
    reasons: list[str]


class LineOut(BaseModel):
    """One line of the transcript (PII-redacted)."""

    seq: int
    role: Literal["customer", "bot", "technician", "system"]
    text: str
    at: str
    channel: str
    author: str | None


class ConversationOut(BaseModel):
    """A conversation as its customer sees it."""

    conversation_id: str
    stage: str
    status: ConversationStatusName
    runbook_id: str | None
    handoff: dict[str, Any] | None
    transcript: list[LineOut]


class MeOut(BaseModel):
    """Who an API key belongs to."""

    name: str
    role: Literal["l2", "admin", "lead"]


class TicketOut(BaseModel):
    """A handoff in the desk's queue."""

    packet_id: str
    conversation_id: str
    status: Literal["queued", "claimed", "resolved", "returned"]
    priority: str
    category: str | None
    runbook_id: str | None
    summary: str
    sentiment_label: str
    reason_codes: list[str]
    created_at: str
    first_response_due: str
    resolve_due: str
    at_risk: bool = Field(description="First response due within the at-risk window and not yet given")
    breached: bool = Field(description="A first-response or resolve due time passed before it was met")
    claimed_by: str | None
    channel: str


class EventOut(BaseModel):
    """One recorded change of a ticket."""

    at: str
    actor: str
    action: str
    note: str | None


class TicketDetail(BaseModel):
    """A ticket with its whole packet, its history and the live transcript."""

    packet: HandoffPacket
    status: Literal["queued", "claimed", "resolved", "returned"]
    claimed_by: str | None
    events: list[EventOut]
    transcript: list[LineOut]


class ClaimOut(BaseModel):
    """A ticket's holder after a claim."""

    status: Literal["claimed"]
    claimed_by: str


class TechnicianReply(BaseModel):
    """A technician's message to the customer."""

    text: str = Field(description="What the customer will read")


class ReplyOut(BaseModel):
    """The transcript line the reply became."""

    line: LineOut


class Note(BaseModel):
    """Why a ticket was closed or returned; kept in its history."""

    note: str = Field(default="", max_length=4000)


class Closed(BaseModel):
    """A ticket's state after resolve or return."""

    packet_id: str
    status: Literal["resolved", "returned"]


# -- teaching: what an L2 resolution tells the bot (app/teaching.py) --------------------------------


class Resolved(Closed):
    """A resolved ticket, and the suggestion its lesson became (None without a lesson)."""

    suggestion_id: str | None = None


class BotCouldHaveIn(BaseModel):
    """The bot could have handled it with this runbook of the pack."""

    runbook_id: str = Field(min_length=1, max_length=200)


class NewRunbookIn(BaseModel):
    """A runbook the pack lacks: its title and the steps that solved it."""

    title: str = Field(min_length=3, max_length=200)
    steps: list[str] = Field(min_length=1, max_length=30)
    category: str | None = Field(default=None, max_length=100, description="A category of policy.yaml (optional)")


class Resolution(Note):
    """Resolve with a note and, optionally, one lesson for the bot."""

    bot_could_have: BotCouldHaveIn | None = None
    new_runbook: NewRunbookIn | None = None

    @model_validator(mode="after")
    def _one_lesson(self) -> Resolution:
        if self.bot_could_have is not None and self.new_runbook is not None:
            raise ValueError("give bot_could_have or new_runbook, not both")
        return self


class RunbookOut(BaseModel):
    """A runbook of the pack, as the desk's resolve form lists it."""

    id: str
    title: str
    category: str
    tier: int


class NewKey(BaseModel):
    """An API key to create."""

    name: str
    role: Literal["l2", "admin", "lead"]


class KeyOut(BaseModel):
    """An API key's record (the key itself only when it is created)."""

    name: str
    role: str
    prefix: str
    created_at: str
    revoked_at: str | None = None
    key: str | None = None


class ErasureRequest(BaseModel):
    """Whom to erase: every conversation of an address, or one conversation (exactly one of the two)."""

    email: str | None = Field(default=None, max_length=320, description="Erase every conversation of this address")
    conversation_id: str | None = Field(default=None, max_length=200, description="Erase this conversation")

    @model_validator(mode="after")
    def one_of_the_two(self) -> ErasureRequest:
        """Exactly one of email and conversation_id."""
        if (self.email is None) == (self.conversation_id is None):
            raise ValueError("give either email or conversation_id, not both and not neither")
        return self


class ErasureOut(BaseModel):
    """What an erasure deleted: counts per store and the conversation ids, never the deleted data."""

    erasure_id: str
    at: str
    requested_by: Literal["conversation", "email"] = Field(description="What the request named")
    actor: str = Field(description='Who asked: "customer", "admin:<key name>" or "cli"')
    conversations: list[str]
    deleted: dict[str, int]
    kept_audit_records: int | None = Field(
        default=None, description="Tool audit records kept (ids, tool names, outcomes; no PII); not in the history"
    )


class InboundOut(BaseModel):
    """What the inbound-mail webhook did with a mail."""

    status: Literal["accepted", "duplicate"]
    conversation_id: str | None = Field(description="None only for a duplicate still being played")
    matched: Literal["new", "thread", "sender"] | None = Field(
        description="How the conversation was found: new, by the thread's Message-IDs, or by the sender's address"
    )
    replies_sent: int
    replies_pending: int


def erasure_out(report: ErasureReport) -> ErasureOut:
    """An erasure's report as the API shows it."""
    return ErasureOut.model_validate(report.as_dict())


def line_out(line: Line) -> LineOut:
    """A transcript line as the API shows it."""
    return LineOut.model_validate(line.as_dict())


def ticket_out(t: Ticket) -> TicketOut:
    """A ticket as the queue lists it."""
    p = t.packet
    return TicketOut(
        packet_id=p.packet_id,
        conversation_id=p.conversation_id,
        status=p.status,
        priority=p.sla.priority,
        category=p.category,
        runbook_id=p.runbook_id,
        summary=p.summary,
        sentiment_label=p.sentiment.label,
        reason_codes=p.reason_codes,
        created_at=p.created_at.isoformat(),
        first_response_due=p.sla.first_response_due.isoformat(),
        resolve_due=p.sla.resolve_due.isoformat(),
        at_risk=t.at_risk,
        breached=t.breached,
        claimed_by=t.claimed_by,
        channel=p.channel,
    )


# -- incidents (api/routes/incidents.py) ------------------------------------------------------------


class IncidentText(BaseModel):
    """An update or resolution: what every attached customer will read."""

    text: str = Field(description="What the customers will read; empty is refused (422)")


class IncidentDeclared(BaseModel):
    """An incident declared by hand."""

    title: str = Field(description="What is broken, in a few words")
    category: str | None = Field(None, description="Customers whose problem is of this category join it")
    text: str = Field("", description="What is known so far (default: 'We are looking into it.')")


class IncidentDetach(BaseModel):
    """The conversation to take off an incident."""

    conversation_id: str


class AttachedOut(BaseModel):
    """One conversation attached to an incident."""

    conversation_id: str
    attached_at: str


class IncidentDetail(Incident):
    """An incident with its attached conversations."""

    conversations: list[AttachedOut]


class IncidentPosted(BaseModel):
    """An update as posted, and the incident after it."""

    update: IncidentUpdate
    incident: Incident
