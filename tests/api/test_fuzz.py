"""Schemathesis fuzzes every operation of the OpenAPI schema in-process (ASGI): no answer may be a 5xx.

Requests carry real credentials and ids, so that the fuzzed bodies and queries reach the handlers
behind authentication: a customer token and the conversation's id on the customer paths, an admin
key and a real packet id on the desk paths. Examples are derandomized (the same on every run) and
bounded per operation. The SSE stream is left out: it answers for as long as the client listens.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from app.auth import ApiKeys
from app.runtime import Runtime
from server import create_app

EXAMPLES = 15
INBOUND_SECRET = "fuzz-inbound-secret"


@pytest.fixture
def fuzzed(make_runtime: Callable[..., Runtime]) -> tuple[FastAPI, dict[str, Any]]:
    runtime = make_runtime()
    settings_ = runtime.settings.model_copy(
        update={"rate_conversation_per_minute": 0.0, "rate_ip_per_minute": 0.0, "inbound_secret": INBOUND_SECRET}
    )
    app = create_app(settings_, runtime)
    cid = runtime.resolver.start()
    token = app.state.tokens.issue(cid)
    runtime.resolver.send(cid, "I want to talk to a human please")
    other = runtime.resolver.start()
    packet = runtime.resolver.send(other, "someone stole my laptop")
    assert packet.handoff is not None
    key = ApiKeys(runtime.settings.desk_db).create("fuzzer", "admin")
    return app, {"conversation_id": cid, "token": token, "packet_id": packet.handoff["packet_id"], "key": key}


def test_no_operation_answers_5xx(fuzzed: tuple[FastAPI, dict[str, Any]]) -> None:
    app, known = fuzzed
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    tried: list[str] = []
    answered: dict[str, set[int]] = {}
    for found in api.get_all_operations():
        operation = found.ok()
        if operation.path.endswith("/events"):
            continue
        if operation.path.startswith("/conversations/"):
            authorization = f"Bearer {known['token']}"
        elif operation.path.startswith("/inbound/"):
            authorization = "Basic " + base64.b64encode(f"mailer:{INBOUND_SECRET}".encode()).decode()
        else:
            authorization = f"Bearer {known['key']}"
        names = {p.name for p in operation.path_parameters}
        path_parameters = {name: known[name] for name in ("conversation_id", "packet_id") if name in names}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(
                mode, path_parameters=path_parameters or None, headers={"Authorization": authorization}
            )
            tried.append(f"{operation.method.upper()} {operation.path} ({mode.value})")

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Any) -> None:
                response = case.call()
                answered.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300}"
                    f" -> {response.status_code} {response.text[:300]}"
                )

            try:
                fuzz()
            except Unsatisfiable:
                continue  # nothing in this operation can be made invalid (no body, no free parameters)
            except Exception as exc:  # every operation is tried; all failures are reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:1500])
    assert len(tried) >= 20, tried
    # The credentials and ids let fuzzed requests through to the handlers, not only to 401/404.
    for label in (
        "POST /conversations/{conversation_id}/messages",
        "GET /conversations/{conversation_id}",
        "GET /handoffs/{packet_id}",
        "GET /handoffs",
        "GET /me",
    ):
        assert 200 in answered.get(label, set()), (label, answered.get(label))
    assert failures == [], "\n\n".join(failures)
