"""Incidents on the desk: list, one, declare, claim, update, resolve, detach (the desk's keys and roles)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api.deps import AppRuntime, Technician
from api.errors import DESK_ERRORS, error_doc
from api.schemas import (
    AttachedOut,
    IncidentDeclared,
    IncidentDetach,
    IncidentDetail,
    IncidentPosted,
    IncidentText,
)
from app.incidents import IncidentDesk
from app.runtime import Runtime
from core import logs

router = APIRouter(tags=["incidents"])

NOT_FOUND = {**DESK_ERRORS, 404: error_doc("No incident has that id")}
CHANGES = {
    **NOT_FOUND,
    409: error_doc("The incident is resolved already, or the conversation is not attached; nothing was sent"),
    422: error_doc("The text is empty or too long; nothing was sent"),
}


def _desk(runtime: Runtime) -> IncidentDesk:
    assert runtime.incidents is not None  # open_runtime always makes one
    return runtime.incidents


def _detail(desk: IncidentDesk, incident_id: str) -> IncidentDetail:
    found = desk.get(incident_id)
    members = desk.members(found.id)
    attached = [AttachedOut(conversation_id=m.conversation_id, attached_at=m.attached_at) for m in members]
    return IncidentDetail(**found.model_dump(), conversations=attached)


@router.get("/incidents", responses=DESK_ERRORS)
def list_incidents(
    runtime: AppRuntime, who: Technician, status: Literal["open", "resolved", "all"] = "open"
) -> list[IncidentDetail]:
    """Incidents, newest first, each with its affected count, first and last report and attached conversations."""
    desk = _desk(runtime)
    desk.watch_status_now_and_then()  # a service the status page shows in outage opens one
    return [_detail(desk, i.id) for i in desk.find(status)]


@router.get("/incidents/{incident_id}", responses=NOT_FOUND)
def get_incident(runtime: AppRuntime, incident_id: str, who: Technician) -> IncidentDetail:
    """One incident with its updates and attached conversations."""
    return _detail(_desk(runtime), incident_id)


@router.post("/incidents", responses={**DESK_ERRORS, 422: error_doc("The title is empty")}, status_code=201)
def declare(runtime: AppRuntime, body: IncidentDeclared, who: Technician) -> IncidentDetail:
    """Declare an incident by hand; customers who write in about its category join it."""
    desk = _desk(runtime)
    found = desk.declare(body.title, body.category, who.name, body.text)
    logs.log("incident_declared", incident_id=found.id, actor=who.name)
    return _detail(desk, found.id)


@router.post("/incidents/{incident_id}/claim", responses=CHANGES)
def claim(runtime: AppRuntime, incident_id: str, who: Technician) -> IncidentDetail:
    """Take the incident."""
    desk = _desk(runtime)
    desk.claim(incident_id, who.name)
    logs.log("incident_claimed", incident_id=incident_id, actor=who.name)
    return _detail(desk, incident_id)


@router.post("/incidents/{incident_id}/update", responses=CHANGES)
def update(runtime: AppRuntime, incident_id: str, body: IncidentText, who: Technician) -> IncidentPosted:
    """Post an update: each attached customer gets it once, in their own channel (chat, or email)."""
    desk = _desk(runtime)
    posted = desk.update(incident_id, body.text, who.name)
    logs.log("incident_update", incident_id=incident_id, actor=who.name)
    return IncidentPosted(update=posted, incident=desk.get(incident_id))


@router.post("/incidents/{incident_id}/resolve", responses=CHANGES)
def resolve(runtime: AppRuntime, incident_id: str, body: IncidentText, who: Technician) -> IncidentPosted:
    """Resolve: each attached customer is told once, and their episodes close as resolved_by_incident."""
    desk = _desk(runtime)
    posted = desk.resolve(incident_id, body.text, who.name)
    logs.log("incident_resolved", incident_id=incident_id, actor=who.name)
    return IncidentPosted(update=posted, incident=desk.get(incident_id))


@router.post("/incidents/{incident_id}/detach", responses=CHANGES)
def detach(runtime: AppRuntime, incident_id: str, body: IncidentDetach, who: Technician) -> IncidentDetail:
    """Take a conversation that is not part of the incident off it; its next message is routed anew."""
    desk = _desk(runtime)
    desk.detach(incident_id, body.conversation_id, who.name)
    logs.log("incident_detached", incident_id=incident_id, conversation_id=body.conversation_id, actor=who.name)
    return _detail(desk, incident_id)
