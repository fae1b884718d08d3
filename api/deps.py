"""What the routes ask for: the runtime and settings, who is calling (customer, technician, admin), rate limits.

A conversation's token (``Authorization: Bearer``, or ``?token=`` on the SSE stream) is its
customer's credential; technicians and admins send their API key the same way (app/auth.py).
Everything here reads ``app.state``, which create_app fills. The plain reads of it are ``async``:
FastAPI runs a plain ``def`` dependency in a worker thread, and a hop per dependency cost every turn
latency under load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.schemas import CustomerMessage
from app.auth import ApiKeys, CustomerTokens, Principal, RateLimiter
from app.metrics import Metrics
from app.runtime import Runtime
from core.errors import ConversationNotFound
from core.settings import Settings


@dataclass(frozen=True)
class RateLimits:
    """The app's rate limiters: one bucket per conversation, one per client address."""

    conversation: RateLimiter
    ip: RateLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        """The limiters the settings ask for."""
        return cls(
            RateLimiter(settings.rate_conversation_per_minute, settings.rate_conversation_burst),
            RateLimiter(settings.rate_ip_per_minute, settings.rate_ip_burst),
        )


async def _runtime(request: Request) -> Runtime:
    value: Runtime = request.app.state.runtime
    return value


async def _settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def _metrics(request: Request) -> Metrics | None:
    value: Metrics | None = request.app.state.metrics
    return value


async def _keys(request: Request) -> ApiKeys:
    value: ApiKeys = request.app.state.keys
    return value


async def _tokens(request: Request) -> CustomerTokens:
    value: CustomerTokens = request.app.state.tokens
    return value


AppRuntime = Annotated[Runtime, Depends(_runtime)]
AppSettings = Annotated[Settings, Depends(_settings)]
# None until start-up has run.
AppMetrics = Annotated[Metrics | None, Depends(_metrics)]
Keys = Annotated[ApiKeys, Depends(_keys)]
Tokens = Annotated[CustomerTokens, Depends(_tokens)]

_bearer = HTTPBearer(auto_error=False, description="A conversation token, or a technician's API key")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


# -- rate limits -----------------------------------------------------------------------------------


def _take(request: Request, limiter: RateLimiter, key: str, what: str) -> None:
    wait = limiter.take(key)
    if wait > 0:
        metrics: Metrics | None = request.app.state.metrics
        if metrics is not None:
            metrics.rate_limited.labels(what).inc()
        raise HTTPException(
            429,
            f"too many requests from this {what}; try again in {max(1, round(wait))} s",
            headers={"Retry-After": str(max(1, int(wait + 0.999)))},
        )


def _client_ip(request: Request) -> str:
    # Behind a proxy, run uvicorn with --proxy-headers and --forwarded-allow-ips so this is the client.
    return request.client.host if request.client else "unknown"


def ip_limit(request: Request) -> None:
    """Refuse (429) a client address over its rate limit."""
    limits: RateLimits = request.app.state.limits
    _take(request, limits.ip, _client_ip(request), "client address")


# -- customers -------------------------------------------------------------------------------------


def _let_in(request: Request, conversation_id: str, given: str | None) -> None:
    """Let only the holder of the conversation's token in; a wrong token looks like an unknown id."""
    if not given:
        raise HTTPException(
            401,
            "send this conversation's token as 'Authorization: Bearer <token>' (POST /conversations gave it)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tokens: CustomerTokens = request.app.state.tokens
    if not tokens.verify(conversation_id, given):
        raise ConversationNotFound(conversation_id)


def _customer(request: Request, conversation_id: str, credentials: Credentials) -> str:
    _let_in(request, conversation_id, credentials.credentials if credentials else None)
    return conversation_id


def _customer_message(
    request: Request, conversation_id: str, body: CustomerMessage, credentials: Credentials
) -> CustomerMessage:
    # The body is this dependency's parameter, so a malformed one is refused (422) before it is let in
    # or counted against a limit; then the client address's limit, the token, the conversation's limit.
    ip_limit(request)
    _let_in(request, conversation_id, credentials.credentials if credentials else None)
    limits: RateLimits = request.app.state.limits
    _take(request, limits.conversation, conversation_id, "conversation")
    return body


def _stream_after(
    request: Request,
    conversation_id: str,
    credentials: Credentials,
    token: Annotated[str | None, Query(description="The conversation token (for EventSource)")] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="Send lines with a greater seq only")] = 0,
) -> int:
    # The query is this dependency's, so a bad `after` is refused (422) before the token is checked.
    _let_in(request, conversation_id, credentials.credentials if credentials else token)
    last_event = request.headers.get("last-event-id", "")  # EventSource's own resume point
    if last_event.isdigit() and len(last_event) <= 18:
        after = max(after, int(last_event))
    return after


# The conversation's id, once the request showed its token.
Customer = Annotated[str, Depends(_customer)]
# The customer's message, once the sender is let in and within the rate limits.
CustomerMessageIn = Annotated[CustomerMessage, Depends(_customer_message)]
# The seq after which a customer's event stream starts (?after= or Last-Event-ID), once the token is checked.
StreamAfter = Annotated[int, Depends(_stream_after)]


# -- technicians and admins ------------------------------------------------------------------------


def _signed_in(request: Request, credentials: Credentials) -> Principal:
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


def _technician(who: Annotated[Principal, Depends(_signed_in)]) -> Principal:
    if who.role == "lead":
        raise HTTPException(403, f"{who.name} holds a lead's key: it reads insights and audits, not tickets")
    return who


def _admin(who: Annotated[Principal, Depends(_signed_in)]) -> Principal:
    if who.role != "admin":
        raise HTTPException(403, f"{who.name}'s key has the {who.role} role; this needs an admin's key")
    return who


def _lead(who: Annotated[Principal, Depends(_signed_in)]) -> Principal:
    if who.role not in ("lead", "admin"):
        raise HTTPException(403, f"{who.name} is an L2 technician; insights and audits need a lead's or an admin's key")
    return who


Technician = Annotated[Principal, Depends(_technician)]
Admin = Annotated[Principal, Depends(_admin)]
# A support lead or an admin: reads insights and audits.
Lead = Annotated[Principal, Depends(_lead)]

# For a route that decides itself whether it needs a key (GET /insights also serves the page to a browser).
signed_in = _signed_in
lead = _lead
