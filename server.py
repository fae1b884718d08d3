"""The FastAPI app: conversations API and health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from agent.errors import ConversationNotFound, MessageRejected, PacketNotFound, TieroneError
from agent.handoff import HandoffPacket
from agent.service import CHANNELS, Runtime, open_runtime
from agent.settings import Settings
from pages import mount_pages


class NewConversation(BaseModel):
    """Open a conversation."""

    channel: str = Field(default="api", description=f"One of {', '.join(CHANNELS)}")


class ConversationCreated(BaseModel):
    """A new conversation's id."""

    conversation_id: str


class CustomerMessage(BaseModel):
    """One message from the customer."""

    text: str = Field(description="What the customer wrote")


class TurnOut(BaseModel):
    """The bot's answer to one message."""

    conversation_id: str
    replies: list[str]
    stage: str
    runbook_id: str | None
    handoff: dict[str, Any] | None
    reasons: list[str]


class MessageOut(BaseModel):
    """One line of the transcript (PII-redacted)."""

    role: str
    text: str
    at: str
    channel: str


class ConversationOut(BaseModel):
    """A conversation as its customer sees it."""

    conversation_id: str
    stage: str
    runbook_id: str | None
    handoff: dict[str, Any] | None
    transcript: list[MessageOut]


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the runtime (pack, index, stores) opens at start-up unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "runtime", None) is None:
            app.state.runtime = open_runtime(settings)
        app.state.runtime.resolver.recover()
        notifier = app.state.runtime.notifier  # handoff delivery to the helpdesk webhook, if one is set
        if notifier is not None:
            notifier.start()
        yield
        if notifier is not None:
            notifier.stop()

    app = FastAPI(title="Tierone", version="0.1.0", lifespan=lifespan)
    app.state.runtime = runtime

    def rt(request: Request) -> Runtime:
        value: Runtime = request.app.state.runtime
        return value

    @app.exception_handler(ConversationNotFound)
    async def not_found(_: Request, exc: ConversationNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(PacketNotFound)
    async def packet_not_found(_: Request, exc: PacketNotFound) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": str(exc)})

    @app.exception_handler(MessageRejected)
    async def rejected(_: Request, exc: MessageRejected) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.get("/healthz")
    def healthz(request: Request) -> dict[str, str]:
        """200 once the pack, index and stores are open."""
        if getattr(request.app.state, "runtime", None) is None:
            raise HTTPException(503, "starting")
        return {"status": "ok"}

    @app.post("/conversations", status_code=201)
    def new_conversation(request: Request, body: NewConversation | None = None) -> ConversationCreated:
        """Open a conversation; post messages to it next."""
        channel = (body or NewConversation()).channel
        return ConversationCreated(conversation_id=rt(request).resolver.start(channel))

    @app.post("/conversations/{conversation_id}/messages")
    def post_message(request: Request, conversation_id: str, body: CustomerMessage) -> TurnOut:
        """Send the customer's message; the reply comes back in the response."""
        result = rt(request).resolver.send(conversation_id, body.text)
        return TurnOut(
            conversation_id=conversation_id,
            replies=result.replies,
            stage=result.stage,
            runbook_id=result.runbook_id,
            handoff=result.handoff,
            reasons=result.reasons,
        )

    @app.get("/conversations/{conversation_id}")
    def get_conversation(request: Request, conversation_id: str) -> ConversationOut:
        """The conversation's stage and transcript."""
        state = rt(request).resolver.view(conversation_id)
        return ConversationOut(
            conversation_id=conversation_id,
            stage=state.get("stage", "triage"),
            runbook_id=state.get("runbook_id"),
            handoff=state.get("handoff"),
            transcript=[MessageOut(**line) for line in state.get("transcript", [])],
        )

    @app.get("/handoffs/schema")
    def packet_schema() -> dict[str, Any]:
        """The handoff packet's JSON Schema."""
        return HandoffPacket.model_json_schema()

    @app.exception_handler(TieroneError)
    async def other(_: Request, exc: TieroneError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": str(exc)})

    mount_pages(app)  # /, /chat, /desk and /static (web/)
    return app
