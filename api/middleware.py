"""The ASGI middlewares around the app: request logs, CORS, and the request-body size limit."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs
from core.settings import Settings


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """Wrap the app: log every request, then CORS (only when origins are set), then refuse oversized bodies."""
    # Added innermost first: the body limit runs before anything reads the body, the log sees every answer.
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
