"""How errors become HTTP answers: one table from error class to status, and the documented error bodies.

Every error in the table answers ``{"detail": str(error)}``; the most specific class listed wins
(a MessageRejected is a 422, any other TieroneError a 400). Errors that need headers (401 with
WWW-Authenticate, 429 with Retry-After) are raised as HTTPException where they happen, except a
database that went away (PostgreSQL stopped, unreachable, or no pooled connection free in time):
503 with Retry-After, from whichever store met it; the pool reconnects once the database is back.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout

from app.auth import ApiKeyRejected
from app.desk import DeskConflict
from app.erasure import ErasureRequestError
from app.insights import PeriodRejected
from app.teaching import SuggestionNotFound, TeachingError
from core.errors import (
    ConversationNotFound,
    DatabaseUnavailable,
    IncidentConflict,
    IncidentNotFound,
    MessageRejected,
    PacketNotFound,
    TieroneError,
)

STATUS: dict[type[Exception], int] = {
    ConversationNotFound: 404,
    PacketNotFound: 404,
    MessageRejected: 422,
    ErasureRequestError: 422,
    ApiKeyRejected: 422,
    SuggestionNotFound: 404,
    TeachingError: 422,
    PeriodRejected: 422,
    DeskConflict: 409,
    IncidentNotFound: 404,
    IncidentConflict: 409,
    TieroneError: 400,
}


def _answer(status: int) -> Callable[[Request, Exception], Awaitable[Response]]:
    async def answer(_: Request, exc: Exception) -> Response:
        return JSONResponse(status_code=status, content={"detail": str(exc)})

    return answer


# PostgreSQL away (restarting, failing over) or its pool exhausted: the client should try again soon.
UNAVAILABLE: tuple[type[Exception], ...] = (DatabaseUnavailable, PoolTimeout, psycopg.OperationalError)
RETRY_AFTER_S = 5


async def _unavailable(_: Request, exc: Exception) -> Response:
    logging.getLogger("tierone").warning("database unavailable: %s", exc)
    return JSONResponse(
        status_code=503,
        content={"detail": "the service's database is unavailable for a moment; try again shortly"},
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error class in STATUS with its status and the error's message; UNAVAILABLE with 503."""
    for error, status in STATUS.items():
        app.add_exception_handler(error, _answer(status))
    for error in UNAVAILABLE:
        app.add_exception_handler(error, _unavailable)


def error_doc(description: str) -> dict[str, Any]:
    """A `responses=` entry: an error status documented with its description as the example detail."""
    return {"description": description, "content": {"application/json": {"example": {"detail": description}}}}


CUSTOMER_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("No conversation token was sent"),
    404: error_doc("No such conversation, or the token is not this conversation's"),
}
DESK_ERRORS: dict[int | str, dict[str, Any]] = {
    401: error_doc("No API key, or an unknown or revoked one"),
    403: error_doc("The credential is not a technician's (a customer token, or too small a role)"),
}
PACKET_ERRORS: dict[int | str, dict[str, Any]] = {**DESK_ERRORS, 404: error_doc("No such packet")}
CONFLICTS: dict[int | str, dict[str, Any]] = {**PACKET_ERRORS, 409: error_doc("The ticket's state does not allow it")}
TEACHING_ERRORS: dict[int | str, dict[str, Any]] = {
    422: error_doc("The lesson names a runbook the pack lacks, or is malformed; the ticket was not resolved")
}
