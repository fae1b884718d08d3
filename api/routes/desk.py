"""The L2 desk's API: the handoff queue, a ticket, claim, reply, resolve, return; and who a key belongs to."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter

from agent.handoff import HandoffPacket
from agent.resolver import validate_message
from api.deps import AppRuntime, Technician
from api.errors import CONFLICTS, DESK_ERRORS, PACKET_ERRORS, TEACHING_ERRORS
from api.schemas import (
    ClaimOut,
    Closed,
    EventOut,
    MeOut,
    Note,
    ReplyOut,
    Resolution,
    Resolved,
    RunbookOut,
    TechnicianReply,
    TicketDetail,
    TicketOut,
    line_out,
    ticket_out,
)
from app.teaching import BotCouldHave, Lesson, NewRunbook, resolve_with_lesson
from core import logs

router = APIRouter(tags=["desk"])


@router.get("/handoffs/schema")
def packet_schema() -> dict[str, Any]:
    """The handoff packet's JSON Schema (public, for helpdesks that take packets)."""
    return HandoffPacket.model_json_schema()


@router.get("/me", responses=DESK_ERRORS)
def me(who: Technician) -> MeOut:
    """Who the API key belongs to."""
    return MeOut(name=who.name, role=who.role)


@router.get("/handoffs", responses=DESK_ERRORS)
def list_handoffs(
    runtime: AppRuntime,
    who: Technician,
    status: Literal["open", "queued", "claimed", "resolved", "returned", "all"] = "open",
    priority: Literal["P1", "P2", "P3", "P4"] | None = None,
    category: str | None = None,
) -> list[TicketOut]:
    """The handoff queue, the soonest first-response due time first ("open" is queued and claimed)."""
    return [ticket_out(t) for t in runtime.desk.tickets(status, priority, category)]


@router.get("/handoffs/{packet_id}", responses=PACKET_ERRORS)
def get_handoff(runtime: AppRuntime, packet_id: str, who: Technician) -> TicketDetail:
    """One ticket: the whole packet, who holds it, its history and the live transcript."""
    ticket = runtime.desk.ticket(packet_id)
    return TicketDetail(
        packet=ticket.packet,
        status=ticket.packet.status,
        claimed_by=ticket.claimed_by,
        events=[EventOut(**e) for e in runtime.desk.events(packet_id)],
        transcript=[line_out(line) for line in runtime.messages.lines(ticket.packet.conversation_id)],
    )


@router.post("/handoffs/{packet_id}/claim", responses=CONFLICTS)
def claim(runtime: AppRuntime, packet_id: str, who: Technician) -> ClaimOut:
    """Take the ticket: the bot goes silent and the customer's messages come to you."""
    ticket = runtime.desk.claim(packet_id, who.name)
    logs.log("claimed", packet_id=packet_id, conversation_id=ticket.packet.conversation_id, actor=who.name)
    return ClaimOut(status="claimed", claimed_by=who.name)


@router.post("/handoffs/{packet_id}/reply", responses=CONFLICTS)
def reply(runtime: AppRuntime, packet_id: str, body: TechnicianReply, who: Technician) -> ReplyOut:
    """Write to the customer (their chat, or email when they wrote by email); you must hold the claim."""
    text = validate_message(body.text, runtime.settings.max_message_chars)
    line = runtime.desk.reply(packet_id, who.name, text)  # only the holder of the claim, admins too
    logs.log("replied", packet_id=packet_id, actor=who.name, seq=line.seq)
    return ReplyOut(line=line_out(line))


@router.post("/handoffs/{packet_id}/resolve", responses=CONFLICTS | TEACHING_ERRORS)
def resolve(runtime: AppRuntime, packet_id: str, who: Technician, body: Resolution | None = None) -> Resolved:
    """Close the ticket as resolved, with a note and optionally a lesson: which runbook could have solved it.

    ``bot_could_have`` or ``new_runbook`` becomes a suggestion for the runbook authors (`tierone runbooks
    suggestions`); a lesson naming a runbook the pack lacks is refused (422) and the ticket stays open.
    """
    body = body or Resolution()
    lesson: Lesson | None = None
    if body.bot_could_have is not None:
        lesson = BotCouldHave(body.bot_could_have.runbook_id)
    elif body.new_runbook is not None:
        lesson = NewRunbook(body.new_runbook.title, body.new_runbook.steps, body.new_runbook.category)
    _, suggestion_id = resolve_with_lesson(
        runtime.desk,
        runtime.suggestions,
        runtime.resolver.deps.pack,
        packet_id,
        who.name,
        body.note,
        lesson,
        admin=who.role == "admin",
    )
    logs.log("resolved", packet_id=packet_id, actor=who.name, suggestion_id=suggestion_id)
    return Resolved(packet_id=packet_id, status="resolved", suggestion_id=suggestion_id)


@router.get("/runbooks", responses=DESK_ERRORS)
def list_runbooks(runtime: AppRuntime, who: Technician) -> list[RunbookOut]:
    """The pack's runbooks, by id: what the resolve form offers for "the bot could have handled this"."""
    pack = runtime.resolver.deps.pack
    return [
        RunbookOut(id=rb.id, title=rb.meta.title, category=rb.meta.category, tier=pack.effective_tier(rb))
        for rb in sorted(pack.runbooks.values(), key=lambda rb: rb.meta.title.lower())
    ]


@router.get("/suggestions", responses=DESK_ERRORS)
def list_suggestions(
    runtime: AppRuntime, who: Technician, state: Literal["open", "accepted", "rejected", "all"] = "open"
) -> list[dict[str, Any]]:
    """What L2 resolutions taught: suggested examples and runbooks, each with its regression case."""
    return [s.as_dict() for s in runtime.suggestions.list(state)]


@router.post("/handoffs/{packet_id}/return", responses=CONFLICTS)
def return_to_bot(runtime: AppRuntime, packet_id: str, who: Technician, body: Note | None = None) -> Closed:
    """Hand the conversation back to the bot, with a note."""
    runtime.desk.return_to_bot(packet_id, who.name, (body or Note()).note, admin=who.role == "admin")
    logs.log("returned", packet_id=packet_id, actor=who.name)
    return Closed(packet_id=packet_id, status="returned")
