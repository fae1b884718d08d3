"""The FastAPI app: the customers' conversations API, the L2 desk API, health, readiness and metrics.

Access: a conversation's token (``Authorization: Bearer``, or ``?token=`` on the SSE stream) is its
customer's credential; technicians and admins send their API key the same way (app/auth.py).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from anyio import to_thread
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.brains.streaming import Delta
from agent.handoff import HandoffPacket
from agent.resolver import CHANNELS, validate_message
from app.auth import ApiKeyRejected, ApiKeys, CustomerTokens, Principal, RateLimiter
from app.desk import DeskConflict, Ticket
from app.erasure import Eraser, ErasureReport, ErasureRequestError
from app.mail.inbound import authenticate, parse_inbound
from app.messages import Line
from app.metrics import CONTENT_TYPE, Metrics
from app.runtime import Runtime, open_runtime
from core import logs
from core.errors import ConversationNotFound, MessageRejected, PacketNotFound, TieroneError
from core.settings import Settings
from pages import mount_pages

# -- request and response bodies -------------------------------------------------------------------


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
    role: Literal["l2", "admin"]


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


class NewKey(BaseModel):
    """An API key to create."""

    name: str
    role: Literal["l2", "admin"]


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


def _erasure(report: ErasureReport) -> ErasureOut:
    return ErasureOut.model_validate(report.as_dict())


def _line(line: Line) -> LineOut:
    return LineOut.model_validate(line.as_dict())


def _ticket(t: Ticket) -> TicketOut:
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


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": {"detail": description}}}}


CUSTOMER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No conversation token was sent"),
    404: _error("No such conversation, or the token is not this conversation's"),
}
DESK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No API key, or an unknown or revoked one"),
    403: _error("The credential is not a technician's (a customer token, or too small a role)"),
}


class InboundOut(BaseModel):
    """What the inbound-mail webhook did with a mail."""

    status: Literal["accepted", "duplicate"]
    conversation_id: str | None = Field(description="None only for a duplicate still being played")
    matched: Literal["new", "thread", "sender"] | None = Field(
        description="How the conversation was found: new, by the thread's Message-IDs, or by the sender's address"
    )
    replies_sent: int
    replies_pending: int


# -- HTTP plumbing: body size, request logs ---------------------------------------------------------


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over a limit with 413 before the app parses them.

    The declared Content-Length is checked first; a body sent without one (chunked) is counted
    as it arrives and cut off at the limit.
    """

    def __init__(self, app: ASGIApp, default: int, overrides: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.overrides = overrides

    def _limit(self, path: str) -> int:
        for prefix, limit in self.overrides.items():
            if path.startswith(prefix):
                return limit
        return self.default

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or refuse it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > limit:
                await self._refuse(send, 413, f"the request body is {int(declared):,} bytes; the limit is {limit:,}")
                return
        received = 0
        started = too_large = False

        async def counted() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the app's answer to a cut-off body (FastAPI makes it a 400); the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            pass
        if too_large and not started:
            await self._refuse(send, 413, f"the request body is over the limit of {limit:,} bytes")


class RequestLog:
    """One structured log line per request: route, status, time, conversation id; no query, no body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = scope.get("route")
            params = scope.get("path_params") or {}
            fields: dict[str, Any] = {
                "method": scope["method"],
                # The route's template, not the path: ids go in their own fields, tokens nowhere.
                "route": getattr(route, "path", "unmatched"),
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
            for name in ("conversation_id", "packet_id"):
                if name in params:
                    fields[name] = params[name]
            logs.log("request", logging.WARNING if status >= 500 else logging.INFO, **fields)


def _validated(runtime: Runtime, text: str) -> str:
    return validate_message(text, runtime.settings.max_message_chars)


def _client_ip(request: Request) -> str:
    # Behind a proxy, run uvicorn with --proxy-headers and --forwarded-allow-ips so this is the client.
    return request.client.host if request.client else "unknown"


_bearer = HTTPBearer(auto_error=False, description="A conversation token, or a technician's API key")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _customer(
    request: Request, conversation_id: str, credentials: HTTPAuthorizationCredentials | None, token: str | None
) -> None:
    """Let only the holder of the conversation's token in; a wrong token looks like an unknown id."""
    given = credentials.credentials if credentials else token
    if not given:
        raise HTTPException(
            401,
            "send this conversation's token as 'Authorization: Bearer <token>' (POST /conversations gave it)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tokens: CustomerTokens = request.app.state.tokens
    if not tokens.verify(conversation_id, given):
        raise ConversationNotFound(conversation_id)


def _technician(request: Request, credentials: Credentials) -> Principal:
    if credentials is None:
        raise HTTPException(
            401, "send a technician's API key as 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )
    keys: ApiKeys = request.app.state.keys
    principal = keys.verify(credentials.credentials)
    if principal is not None:
        return principal
    tokens: CustomerTokens = request.app.state.tokens
    if tokens.known(credentials.credentials):
        raise HTTPException(403, "a conversation token cannot open the desk; use a technician's API key")
    raise HTTPException(401, "the API key is unknown or revoked; ask an admin for one", {"WWW-Authenticate": "Bearer"})


def _admin(who: Annotated[Principal, Depends(_technician)]) -> Principal:
    if who.role != "admin":
        raise HTTPException(403, f"{who.name} is an L2 technician; this needs an admin's key")
    return who


Technician = Annotated[Principal, Depends(_technician)]
Admin = Annotated[Principal, Depends(_admin)]


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the runtime (pack, index, stores) opens at start-up unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = open_runtime(settings)
        app.state.metrics = app.state.runtime.metrics
        app.state.runtime.resolver.recover()
        # A process stopped between a turn's last checkpoint and its log write left lines unmirrored.
        for conversation_id in app.state.runtime.resolver.conversations.ids():
            app.state.runtime.desk.catch_up(conversation_id, app.state.runtime.resolver.view(conversation_id))
        notifier = app.state.runtime.notifier  # handoff delivery to the helpdesk webhook, if one is set
        if notifier is not None:
            notifier.start()
        yield
        if notifier is not None:
            notifier.stop()

    app = FastAPI(
        title="Tierone",
        version="0.1.0",
        lifespan=lifespan,
        description="Tier-1 support resolver: customers' conversations, the L2 desk, health and metrics.",
    )
    app.state.runtime = runtime
    keys = ApiKeys(settings.desk_db)
    tokens = CustomerTokens(settings.desk_db)
    app.state.keys, app.state.tokens = keys, tokens
    per_conversation = RateLimiter(settings.rate_conversation_per_minute, settings.rate_conversation_burst)
    per_ip = RateLimiter(settings.rate_ip_per_minute, settings.rate_ip_burst)

    # Outermost first: log every request, then refuse oversized bodies before anything reads them.
    app.add_middleware(BodyLimit, default=settings.max_body_bytes, overrides={"/inbound/": settings.inbound_max_bytes})
    if settings.cors_origins:
        # Bearer tokens, not cookies: no credentials mode, and only the listed origins.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            max_age=600,
        )
    app.add_middleware(RequestLog)

    def rt(request: Request) -> Runtime:
        value: Runtime = request.app.state.runtime
        return value

    def limited(limiter: RateLimiter, key: str, what: str, request: Request) -> None:
        wait = limiter.take(key)
        if wait > 0:
            metrics: Metrics | None = getattr(request.app.state, "metrics", None)
            if metrics is not None:
                metrics.rate_limited.labels(what).inc()
            raise HTTPException(
                429,
                f"too many requests from this {what}; try again in {max(1, round(wait))} s",
                headers={"Retry-After": str(max(1, int(wait + 0.999)))},
            )

    def ip_limit(request: Request) -> None:
        limited(per_ip, _client_ip(request), "client address", request)

    @app.exception_handler(ConversationNotFound)
    async def not_found(_: Request, exc: ConversationNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(PacketNotFound)
    async def packet_not_found(_: Request, exc: PacketNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(MessageRejected)
    async def rejected(_: Request, exc: MessageRejected) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(ErasureRequestError)
    async def erasure_refused(_: Request, exc: ErasureRequestError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    def erased(runtime: Runtime, report: ErasureReport) -> None:
        # Open SSE streams of the erased conversations say so and end.
        for conversation_id in report.conversations:
            runtime.messages.feed.publish(conversation_id, "erased", {"erasure_id": report.erasure_id})
        logs.log(
            "erased",
            erasure_id=report.erasure_id,
            actor=report.actor,
            conversations=len(report.conversations),
        )

    @app.exception_handler(ApiKeyRejected)
    async def key_rejected(_: Request, exc: ApiKeyRejected) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(DeskConflict)
    async def conflict(_: Request, exc: DeskConflict) -> JSONResponse:
        return JSONResponse(status_code=409, content={"detail": str(exc)})

    # -- operations ---------------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    def healthz(request: Request) -> dict[str, str]:
        """200 once the pack, index and stores are open."""
        if getattr(request.app.state, "runtime", None) is None:
            raise HTTPException(503, "starting")
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: _error("Not ready; the body says which check failed")})
    def readyz(request: Request) -> JSONResponse:
        """200 when the routing index holds the pack and both SQLite databases answer a query."""
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        checks: dict[str, str] = {}
        if runtime is None:
            checks["runtime"] = "starting"
        else:
            try:
                vectors = runtime.index.count()
                checks["index"] = "ok" if vectors > 0 else "the routing index is empty; run `tierone index`"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready, and says so
                checks["index"] = f"unreachable: {type(exc).__name__}"
            for name, path in (("desk_db", settings.desk_db), ("conversations_db", settings.conversations_db)):
                try:
                    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
                    try:
                        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    finally:
                        conn.close()
                    checks[name] = "ok"
                except sqlite3.Error as exc:
                    checks[name] = f"unreachable: {exc}"
        ready = bool(checks) and all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics: turns, handoffs by reason, containment, latency, SLA standing."""
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if metrics is None:
            raise HTTPException(503, "starting")
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # -- customers ------------------------------------------------------------------------------------

    @app.post("/conversations", status_code=201, tags=["customers"], dependencies=[Depends(ip_limit)])
    def new_conversation(request: Request, body: NewConversation | None = None) -> ConversationCreated:
        """Open a conversation; keep the token, it is the only way back into it."""
        channel = (body or NewConversation()).channel
        conversation_id = rt(request).resolver.start(channel)
        token = tokens.issue(conversation_id)
        logs.log("conversation opened", conversation_id=conversation_id, channel=channel)
        return ConversationCreated(conversation_id=conversation_id, token=token)

    @app.post("/conversations/{conversation_id}/messages", tags=["customers"], responses=CUSTOMER_ERRORS)
    def post_message(
        request: Request, conversation_id: str, body: CustomerMessage, credentials: Credentials
    ) -> TurnOut:
        """Send the customer's message; the bot's replies come back in the response."""
        ip_limit(request)
        _customer(request, conversation_id, credentials, None)
        limited(per_conversation, conversation_id, "conversation", request)
        runtime = rt(request)
        started = time.perf_counter()
        feed = runtime.messages.feed
        # Stream the reply's pieces to open SSE streams as `delta` events, only when someone listens.
        on_delta = None
        if feed.listeners(conversation_id):

            def on_delta(delta: Delta) -> None:
                feed.publish(conversation_id, "delta", delta.as_dict())

        result = runtime.resolver.send(
            conversation_id, body.text, client_message_id=body.client_message_id, on_delta=on_delta
        )
        status = runtime.desk.status(conversation_id)
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
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

    @app.get("/conversations/{conversation_id}", tags=["customers"], responses=CUSTOMER_ERRORS)
    def get_conversation(request: Request, conversation_id: str, credentials: Credentials) -> ConversationOut:
        """The conversation's stage, status and whole transcript (bot, technician and system lines)."""
        _customer(request, conversation_id, credentials, None)
        runtime = rt(request)
        state = runtime.resolver.view(conversation_id)
        # Conversations from before the log existed catch up here; a no-op otherwise.
        runtime.messages.mirror(conversation_id, list(state.get("transcript", [])))
        return ConversationOut(
            conversation_id=conversation_id,
            stage=state.get("stage", "triage"),
            status=runtime.desk.status(conversation_id).status,
            runbook_id=state.get("runbook_id"),
            handoff=state.get("handoff"),
            transcript=[_line(line) for line in runtime.messages.lines(conversation_id)],
        )

    def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
        head = f"id: {event_id}\n" if event_id is not None else ""
        return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"

    @app.get(
        "/conversations/{conversation_id}/events",
        tags=["customers"],
        responses={**CUSTOMER_ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "An SSE stream"}},
        response_class=StreamingResponse,
    )
    async def conversation_events(
        request: Request,
        conversation_id: str,
        credentials: Credentials,
        token: Annotated[str | None, Query(description="The conversation token (for EventSource)")] = None,
        after: Annotated[int, Query(ge=0, le=2**62, description="Send lines with a greater seq only")] = 0,
    ) -> StreamingResponse:
        """Stream the transcript (history, then live lines) and status changes as server-sent events."""
        await to_thread.run_sync(_customer, request, conversation_id, credentials, token)
        last_event = request.headers.get("last-event-id", "")
        if last_event.isdigit() and len(last_event) <= 18:
            after = max(after, int(last_event))
        runtime = rt(request)
        feed = runtime.messages.feed
        # Subscribe before reading history, so nothing written in between is missed.
        subscription = feed.subscribe(conversation_id)

        async def stream() -> AsyncIterator[str]:
            seen = after
            sent_status: Any = None
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
                        handoff = None
                        if status.status != "bot":
                            handoff = await to_thread.run_sync(runtime.desk.handoff_info, status.packet_id)
                        technician_name = status.technician if status.status == "claimed" else None
                        payload = {"status": status.status, "handoff": handoff, "technician": technician_name}
                        yield _sse("status", payload)
                        sent_status = status
                    if not await subscription.wait(settings.sse_ping_seconds):
                        yield ": ping\n\n"
            finally:
                subscription.close()

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.delete(
        "/conversations/{conversation_id}",
        tags=["customers"],
        responses=CUSTOMER_ERRORS,
        dependencies=[Depends(ip_limit)],
    )
    def erase_conversation(request: Request, conversation_id: str, credentials: Credentials) -> ErasureOut:
        """Erase this conversation and, while its code check has not expired, every conversation of that address.

        Checkpoints, transcript, packets, tool runs, vault entries and mail go; the tool audit log is
        kept without personal data, and an erasure record says who asked and what went. The token
        stops working: a later request answers 404.
        """
        _customer(request, conversation_id, credentials, None)
        runtime = rt(request)
        report = Eraser(runtime).forget_customer(conversation_id, actor="customer")
        erased(runtime, report)
        return _erasure(report)

    # -- L2 technicians and admins ----------------------------------------------------------------------

    @app.get("/handoffs/schema", tags=["desk"])
    def packet_schema() -> dict[str, Any]:
        """The handoff packet's JSON Schema (public, for helpdesks that take packets)."""
        return HandoffPacket.model_json_schema()

    @app.get("/me", tags=["desk"], responses=DESK_ERRORS)
    def me(who: Technician) -> MeOut:
        """Who the API key belongs to."""
        return MeOut(name=who.name, role=who.role)

    @app.get("/handoffs", tags=["desk"], responses=DESK_ERRORS)
    def list_handoffs(
        request: Request,
        who: Technician,
        status: Literal["open", "queued", "claimed", "resolved", "returned", "all"] = "open",
        priority: Literal["P1", "P2", "P3", "P4"] | None = None,
        category: str | None = None,
    ) -> list[TicketOut]:
        """The handoff queue, the soonest first-response due time first ("open" is queued and claimed)."""
        return [_ticket(t) for t in rt(request).desk.tickets(status, priority, category)]

    @app.get("/handoffs/{packet_id}", tags=["desk"], responses={**DESK_ERRORS, 404: _error("No such packet")})
    def get_handoff(request: Request, packet_id: str, who: Technician) -> TicketDetail:
        """One ticket: the whole packet, who holds it, its history and the live transcript."""
        desk = rt(request).desk
        ticket = desk.ticket(packet_id)
        return TicketDetail(
            packet=ticket.packet,
            status=ticket.packet.status,
            claimed_by=ticket.claimed_by,
            events=[EventOut(**e) for e in desk.events(packet_id)],
            transcript=[_line(line) for line in rt(request).messages.lines(ticket.packet.conversation_id)],
        )

    conflicts = {**DESK_ERRORS, 404: _error("No such packet"), 409: _error("The ticket's state does not allow it")}

    @app.post("/handoffs/{packet_id}/claim", tags=["desk"], responses=conflicts)
    def claim(request: Request, packet_id: str, who: Technician) -> ClaimOut:
        """Take the ticket: the bot goes silent and the customer's messages come to you."""
        ticket = rt(request).desk.claim(packet_id, who.name)
        logs.log("claimed", packet_id=packet_id, conversation_id=ticket.packet.conversation_id, actor=who.name)
        return ClaimOut(status="claimed", claimed_by=who.name)

    @app.post("/handoffs/{packet_id}/reply", tags=["desk"], responses=conflicts)
    def reply(request: Request, packet_id: str, body: TechnicianReply, who: Technician) -> ReplyOut:
        """Write to the customer (their chat, or email when they wrote by email); you must hold the claim."""
        runtime = rt(request)
        text = _validated(runtime, body.text)
        line = runtime.desk.reply(packet_id, who.name, text)  # only the holder of the claim, admins too
        logs.log("replied", packet_id=packet_id, actor=who.name, seq=line.seq)
        return ReplyOut(line=_line(line))

    @app.post("/handoffs/{packet_id}/resolve", tags=["desk"], responses=conflicts)
    def resolve(request: Request, packet_id: str, who: Technician, body: Note | None = None) -> Closed:
        """Close the ticket as resolved, with a note; the customer may write again and the bot answers."""
        rt(request).desk.resolve(packet_id, who.name, (body or Note()).note, admin=who.role == "admin")
        logs.log("resolved", packet_id=packet_id, actor=who.name)
        return Closed(packet_id=packet_id, status="resolved")

    @app.post("/handoffs/{packet_id}/return", tags=["desk"], responses=conflicts)
    def return_to_bot(request: Request, packet_id: str, who: Technician, body: Note | None = None) -> Closed:
        """Hand the conversation back to the bot, with a note."""
        rt(request).desk.return_to_bot(packet_id, who.name, (body or Note()).note, admin=who.role == "admin")
        logs.log("returned", packet_id=packet_id, actor=who.name)
        return Closed(packet_id=packet_id, status="returned")

    @app.get("/admin/keys", tags=["admin"], responses=DESK_ERRORS)
    def list_keys(who: Admin) -> list[KeyOut]:
        """Every API key's record (never the keys)."""
        return [KeyOut(**vars(k)) for k in keys.list()]

    @app.post("/admin/keys", status_code=201, tags=["admin"], responses=DESK_ERRORS)
    def create_key(body: NewKey, who: Admin) -> KeyOut:
        """Make an API key; the response is the only time it is shown."""
        key = keys.create(body.name, body.role)
        record = next(k for k in reversed(keys.list()) if k.prefix == key[:9] and k.name == body.name.strip())
        logs.log("key created", actor=who.name, name=body.name, role=body.role)
        return KeyOut(**vars(record), key=key)

    @app.delete("/admin/keys/{name}", tags=["admin"], responses={**DESK_ERRORS, 422: _error("No live key")})
    def revoke_key(name: str, who: Admin) -> dict[str, int]:
        """Revoke every live key of a technician."""
        revoked = keys.revoke(name)
        logs.log("key revoked", actor=who.name, name=name)
        return {"revoked": revoked}

    @app.post(
        "/admin/erasures",
        tags=["admin"],
        responses={
            **DESK_ERRORS,
            404: _error("No such conversation"),
            422: _error("Neither or both of email and conversation_id, or not an address"),
        },
    )
    def erase_customer(request: Request, body: ErasureRequest, who: Admin) -> ErasureOut:
        """Erase a customer by address (every conversation that gave it or acted on its account), or a conversation."""
        runtime = rt(request)
        eraser = Eraser(runtime)
        actor = f"admin:{who.name}"
        if body.email is not None:
            report = eraser.forget(email=body.email.strip(), actor=actor)
        else:
            report = eraser.forget(conversation_id=body.conversation_id, actor=actor)
        erased(runtime, report)
        return _erasure(report)

    @app.get("/admin/erasures", tags=["admin"], responses=DESK_ERRORS)
    def list_erasures(request: Request, who: Admin) -> list[ErasureOut]:
        """Every erasure so far, oldest first (ids, who asked, counts; no personal data)."""
        return [ErasureOut.model_validate(r) for r in Eraser(rt(request)).history()]

    # -- email: the inbound-mail webhook (app/mail/; the email helper's block) ---------------------

    @app.post(
        "/inbound/email",
        tags=["email"],
        response_model=InboundOut,
        responses={
            401: _error("Neither an X-Tierone-Signature header nor basic auth was sent"),
            403: _error("The signature or the basic-auth password does not match TIERONE_INBOUND_SECRET"),
            413: _error("The post is over TIERONE_INBOUND_MAX_BYTES"),
            415: _error("The body is neither JSON nor a form"),
            422: _error("A field is missing, empty or malformed; the detail names it"),
            502: _error("The mail was played but its reply could not be sent; post it again to retry the send"),
            503: _error("TIERONE_INBOUND_SECRET is not set, so inbound mail is refused"),
        },
    )
    async def inbound_email(request: Request) -> InboundOut | JSONResponse:
        """Take one customer mail from an inbound-parse service, authenticated by the shared secret.

        Fields from, subject, text, message_id, in_reply_to (JSON or a form). The mail opens or
        continues a conversation; the bot's reply goes back by mail. A Message-ID already taken
        answers 200 with status "duplicate" and plays nothing again.
        """
        runtime = rt(request)
        secret = settings.inbound_secret
        if not secret or runtime.email is None:
            raise HTTPException(503, "inbound email is not set up: set TIERONE_INBOUND_SECRET and restart")
        raw = await request.body()
        verdict = authenticate(
            secret, raw, request.headers.get("x-tierone-signature"), request.headers.get("authorization")
        )
        if verdict == "missing":
            raise HTTPException(
                401,
                "sign the body (X-Tierone-Signature: hex HMAC-SHA256 with the shared secret) or send the secret"
                " as the basic-auth password",
                headers={"WWW-Authenticate": 'Basic realm="tierone-inbound"'},
            )
        if verdict == "wrong":
            raise HTTPException(403, "the signature or password does not match the shared secret")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fields: dict[str, Any]
        if kind == "application/json":
            try:
                posted = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise MessageRejected(f"the body is not valid JSON: {exc}") from exc
            if not isinstance(posted, dict):
                raise MessageRejected("the JSON body must be an object with the fields from, subject, text, message_id")
            fields = posted
        elif kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            async with request.form() as form:
                fields = {}
                for key, value in form.multi_items():  # the first of repeated fields; attachments are skipped
                    if isinstance(value, str):
                        fields.setdefault(key, value)
        else:
            raise HTTPException(415, "post the mail as JSON or as a form (urlencoded or multipart)")
        email = runtime.email
        mail = parse_inbound(fields, own_address=email.sender, validate=email.validate)
        got = await to_thread.run_sync(email.receive, mail)
        logs.log(
            "mail in",
            conversation_id=got.conversation_id,
            status=got.status,
            matched=got.matched,
            sent=got.replies_sent,
            pending=got.replies_pending,
        )
        out = InboundOut(
            status=got.status,
            conversation_id=got.conversation_id,
            matched=got.matched,
            replies_sent=got.replies_sent,
            replies_pending=got.replies_pending,
        )
        if got.replies_pending:
            # A parse service retries a failed post: the retry finds the mail played and sends the reply.
            detail = f"the mail was taken, but its reply could not be sent ({got.error}); post it again to retry"
            return JSONResponse(status_code=502, content={"detail": detail, **out.model_dump()})
        return out

    @app.exception_handler(TieroneError)
    async def other(_: Request, exc: TieroneError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    mount_pages(app)  # /, /chat, /desk and /static (web/)
    return app
