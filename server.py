"""The FastAPI app, assembled: start-up and shutdown, middleware, error handlers, routers, web pages.

Where to look:
  api/routes/ops.py            /healthz, /readyz, /metrics
  api/routes/conversations.py  the customers' API: /conversations... (messages, SSE events, erasure)
  api/routes/desk.py           the L2 desk: /handoffs..., /me
  api/routes/admin.py          /admin/keys, /admin/erasures
  api/routes/inbound.py        POST /inbound/email
  api/routes/lead.py           the support lead: /insights, /audit
  api/deps.py                  who may call (customer token, technician or admin key), rate limits
  api/schemas.py               request and response bodies
  api/errors.py                which error answers which status; the documented error bodies
  api/middleware.py            request logs, CORS, the body-size limit
  pages.py                     the web chat and desk pages
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import RateLimits
from api.errors import add_error_handlers
from api.middleware import add_middleware
from api.routes import admin, conversations, desk, inbound, incidents, lead, ops
from app.auth import ApiKeys, CustomerTokens
from app.runtime import Runtime, desk_target, open_runtime
from core.settings import Settings
from pages import mount_pages


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the runtime unless one was given, finish what a stopped process left, run the notifier."""
    opened_here = app.state.runtime is None
    if opened_here:
        app.state.runtime = open_runtime(app.state.settings)
    runtime: Runtime = app.state.runtime
    app.state.metrics = runtime.metrics
    runtime.resolver.recover()
    # A process stopped between a turn's last checkpoint and its log write left lines unmirrored.
    for conversation_id in runtime.resolver.conversations.ids():
        runtime.desk.catch_up(conversation_id, runtime.resolver.view(conversation_id))
    if runtime.incidents is not None:
        runtime.incidents.deliver()  # an incident broadcast cut short resumes: only those not reached yet
    notifier = runtime.notifier  # handoff delivery to the helpdesk webhook, if one is set
    if notifier is not None:
        notifier.start()
    # Replicas on PostgreSQL: mail replies a dead replica left leased are sent by a live one.
    email = runtime.email if runtime.settings.database_url is not None else None
    if email is not None:
        email.start_taking_over(runtime.settings.mail_send_lease_s / 2)
    yield
    if email is not None:
        email.stop_taking_over()
    if notifier is not None:
        notifier.stop()
    if opened_here:  # a runtime given to create_app belongs to its caller
        app.state.runtime = None
        runtime.close()


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the app; the runtime (pack, index, stores) opens at start-up unless one is given."""
    app = FastAPI(
        title="Tierone",
        version="0.1.0",
        lifespan=lifespan,
        description="Tier-1 support resolver: customers' conversations, the L2 desk, health and metrics.",
    )
    # What the routes' dependencies read (api/deps.py); metrics come with the runtime at start-up.
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = None
    app.state.keys = ApiKeys(desk_target(settings))
    app.state.tokens = CustomerTokens(desk_target(settings))
    app.state.limits = RateLimits.from_settings(settings)
    add_middleware(app, settings)
    add_error_handlers(app)
    for module in (ops, conversations, desk, admin, inbound, lead, incidents):
        app.include_router(module.router)
    mount_pages(app)  # /, /chat, /desk and /static (web/)
    return app
