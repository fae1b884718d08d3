"""The customers' API: open a conversation, send messages, read it, follow it live (SSE), erase it."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from agent.brains.streaming import Delta
from api.deps import AppMetrics, AppRuntime, AppSettings, Customer, CustomerMessageIn, StreamAfter, Tokens, ip_limit
from api.errors import CUSTOMER_ERRORS
from api.schemas import (
    ConversationCreated,
    ConversationOut,
    ErasureOut,
    NewConversation,
    TurnOut,
    erasure_out,
    line_out,
)
from app.desk import ConversationStatus
from app.erasure import Eraser, ErasureReport
from app.messages import Feed
from app.runtime import Runtime
from core import logs

router = APIRouter(tags=["customers"])


@router.post("/conversations", status_code=201, dependencies=[Depends(ip_limit)])
def new_conversation(runtime: AppRuntime, tokens: Tokens, body: NewConversation | None = None) -> ConversationCreated:
    """Open a conversation; keep the token, it is the only way back into it."""
    channel = (body or NewConversation()).channel
    conversation_id = runtime.resolver.start(channel)
    token = tokens.issue(conversation_id)
    logs.log("conversation opened", conversation_id=conversation_id, channel=channel)
    return ConversationCreated(conversation_id=conversation_id, token=token)


def _deltas_to(feed: Feed, conversation_id: str) -> Callable[[Delta], None] | None:
    """Pass the reply's pieces to open SSE streams as `delta` events; None when nobody listens."""
    if not feed.listeners(conversation_id):
        return None

    def on_delta(delta: Delta) -> None:
        feed.publish(conversation_id, "delta", delta.as_dict())

    return on_delta


@router.post("/conversations/{conversation_id}/messages", responses=CUSTOMER_ERRORS)
def post_message(conversation_id: str, body: CustomerMessageIn, runtime: AppRuntime, metrics: AppMetrics) -> TurnOut:
    """Send the customer's message; the bot's replies come back in the response."""
    started = time.perf_counter()
    result = runtime.resolver.send(
        conversation_id,
        body.text,
        client_message_id=body.client_message_id,
        on_delta=_deltas_to(runtime.messages.feed, conversation_id),
    )
    status = runtime.desk.status(conversation_id)
    if metrics is not None:
        metrics.observe_latency(result.channel, time.perf_counter() - started)
    logs.log(
        "turn",
        conversation_id=conversation_id,
        stage=result.stage,
        status=status.status,
        runbook_id=result.runbook_id,
        reasons=result.reasons,
        ms=round(result.latency_ms, 1),
    )
    return TurnOut(
        conversation_id=conversation_id,
        replies=result.replies,
        stage=result.stage,
        status=status.status,
        runbook_id=result.runbook_id,
        handoff=result.handoff,
        reasons=result.reasons,
    )


@router.get("/conversations/{conversation_id}", responses=CUSTOMER_ERRORS)
def get_conversation(conversation_id: Customer, runtime: AppRuntime) -> ConversationOut:
    """The conversation's stage, status and whole transcript (bot, technician and system lines)."""
    state = runtime.resolver.view(conversation_id)
    # Conversations from before the log existed catch up here; a no-op otherwise.
    runtime.messages.mirror(conversation_id, list(state.get("transcript", [])))
    return ConversationOut(
        conversation_id=conversation_id,
        stage=state.get("stage", "triage"),
        status=runtime.desk.status(conversation_id).status,
        runbook_id=state.get("runbook_id"),
        handoff=state.get("handoff"),
        transcript=[line_out(line) for line in runtime.messages.lines(conversation_id)],
    )


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


async def _status_event(runtime: Runtime, status: ConversationStatus) -> str:
    handoff = None
    if status.status != "bot":
        handoff = await to_thread.run_sync(runtime.desk.handoff_info, status.packet_id)
    technician_name = status.technician if status.status == "claimed" else None
    return _sse("status", {"status": status.status, "handoff": handoff, "technician": technician_name})


@router.get(
    "/conversations/{conversation_id}/events",
    responses={**CUSTOMER_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}},
    response_class=StreamingResponse,
)
async def conversation_events(
    conversation_id: str, after: StreamAfter, runtime: AppRuntime, settings: AppSettings
) -> StreamingResponse:
    """Stream the transcript (history, then live lines) and status changes as server-sent events."""
    # Subscribe before reading history, so nothing written in between is missed.
    subscription = runtime.messages.feed.subscribe(conversation_id)

    async def stream() -> AsyncIterator[str]:
        seen = after
        sent_status: ConversationStatus | None = None
        try:
            yield "retry: 3000\n\n"
            while True:
                for event, data in subscription.passing():
                    yield _sse(event, data)
                    if event == "erased":  # the conversation is gone: nothing more will come
                        return
                lines = await to_thread.run_sync(runtime.messages.lines, conversation_id, seen)
                for line in lines:
                    yield _sse("line", line.as_dict(), line.seq)
                    seen = line.seq
                status = await to_thread.run_sync(runtime.desk.status, conversation_id)
                if status != sent_status:
                    yield await _status_event(runtime, status)
                    sent_status = status
                if not await subscription.wait(settings.sse_ping_seconds):
                    yield ": ping\n\n"
        finally:
            subscription.close()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def announce_erasure(runtime: Runtime, report: ErasureReport) -> ErasureOut:
    """Tell the erased conversations' open SSE streams (they end), log the erasure, and answer with it."""
    for conversation_id in report.conversations:
        runtime.messages.feed.publish(conversation_id, "erased", {"erasure_id": report.erasure_id})
    logs.log("erased", erasure_id=report.erasure_id, actor=report.actor, conversations=len(report.conversations))
    return erasure_out(report)


@router.delete("/conversations/{conversation_id}", responses=CUSTOMER_ERRORS, dependencies=[Depends(ip_limit)])
def erase_conversation(conversation_id: Customer, runtime: AppRuntime) -> ErasureOut:
    """Erase this conversation and, while its code check has not expired, every conversation of that address.

    Checkpoints, transcript, packets, tool runs, vault entries and mail go; the tool audit log is
    kept without personal data, and an erasure record says who asked and what went. The token
    stops working: a later request answers 404.
    """
    report = Eraser(runtime.erasure).forget_customer(conversation_id, actor="customer")
    return announce_erasure(runtime, report)
