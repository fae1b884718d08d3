"""Operations and limits over HTTP: readiness, metrics, logs, CORS, body size, rate limits, isolation."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app.runtime import Runtime
from server import create_app
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)


def client_for(runtime: Runtime, **settings: Any) -> TestClient:
    return TestClient(create_app(runtime.settings.model_copy(update=settings), runtime=runtime))


def conversation(client: TestClient) -> tuple[str, dict[str, str]]:
    body = client.post("/conversations", json={"channel": "chat"}).json()
    return body["conversation_id"], {"Authorization": f"Bearer {body['token']}"}


@pytest.mark.parametrize("db_backend", ["sqlite"])  # the SQLite files' checks; PostgreSQL's below
def test_readyz_checks_the_index_and_the_databases(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"index": "ok", "desk_db": "ok", "conversations_db": "ok"},
    }


@pytest.mark.parametrize("db_backend", ["sqlite"])  # the SQLite files' checks; PostgreSQL's below
def test_readyz_says_what_is_not_ready(runtime: Runtime, tmp_path: Path) -> None:
    class EmptyIndex:
        def count(self) -> int:
            return 0

    broken = dataclasses.replace(runtime, index=EmptyIndex())  # type: ignore[arg-type]
    with TestClient(create_app(runtime.settings, runtime=broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "not ready"
    assert response.json()["checks"]["index"].startswith("the routing index is empty")
    # Settings naming a data folder without the conversations database: that check fails.
    elsewhere = runtime.settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    with TestClient(create_app(elsewhere, runtime=runtime)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["conversations_db"].startswith("unreachable")


@pytest.mark.parametrize("db_backend", ["sqlite"])  # its own settings name the database
@pytest.mark.postgres
def test_readyz_checks_postgresql_when_the_url_is_set_and_never_shows_the_password(
    runtime: Runtime, pg_url: str
) -> None:
    with client_for(runtime, database_url=SecretStr(pg_url)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"index": "ok", "database": "ok"}
    # A server that does not answer (a port nothing listens on), reached with a password.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = f"postgresql://tierone:hunter2secret@127.0.0.1:{port}/tierone"
    # A server that went away after start (one that is down at start does not start: serve refuses it).
    app = create_app(runtime.settings.model_copy(update={"database_url": SecretStr(pg_url)}), runtime=runtime)
    app.state.settings = runtime.settings.model_copy(update={"database_url": SecretStr(down)})
    with TestClient(app) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == f"unreachable: 127.0.0.1:{port}/tierone (OperationalError)"
    assert "hunter2secret" not in response.text


def test_metrics_count_turns_handoffs_and_latency(client: TestClient) -> None:
    cid, auth = conversation(client)
    client.post(f"/conversations/{cid}/messages", json={"text": "I forgot my password"}, headers=auth)
    other, other_auth = conversation(client)
    client.post(f"/conversations/{other}/messages", json={"text": "let me talk to a human"}, headers=other_auth)
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tierone_turns_total{channel="chat",outcome="handoff"} 1.0' in text
    assert 'tierone_turns_total{channel="chat",outcome="answered"} 1.0' in text
    assert 'tierone_handoffs_total{reason="customer_requested_human"} 1.0' in text
    assert 'tierone_turn_seconds_count{channel="chat"} 2.0' in text
    # Honest counting: a handoff is not resolved, and a customer still at the identity question is in progress.
    assert 'tierone_episodes{outcome="handed_off"} 1.0' in text
    assert 'tierone_episodes{outcome="in_progress"} 1.0' in text
    assert "tierone_containment_ratio 0.0" in text
    assert 'tierone_conversations{state="handed_off"} 1.0' in text
    assert "tierone_open_tickets{priority=" in text and 'sla="ok"' in text
    assert cid not in text and other not in text  # no per-conversation series


def test_logs_carry_ids_and_never_the_customers_words(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tierone")
    cid, auth = conversation(client)
    secret_words = "my password is Hunter22 and my email is jane.doe@example.com"
    client.post(f"/conversations/{cid}/messages", json={"text": secret_words}, headers=auth)
    client.get(f"/conversations/{cid}/events", params={"token": "not-the-token"})
    records = [r for r in caplog.records if r.name == "tierone"]
    dumped = [json.dumps({"msg": r.getMessage(), **getattr(r, "fields", {})}, default=str) for r in records]
    assert any('"turn"' in d and cid in d for d in dumped)
    assert any('"route": "/conversations/{conversation_id}/messages"' in d and '"status": 200' in d for d in dumped)
    for entry in dumped:
        assert "Hunter22" not in entry and "jane.doe" not in entry and "not-the-token" not in entry


def test_cors_is_closed_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/conversations",
        headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.post("/conversations", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in plain.headers


def test_cors_allows_only_the_listed_origins(runtime: Runtime) -> None:
    with client_for(runtime, cors_origins=["https://shop.example"]) as client:
        ok = client.options(
            "/conversations",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example"
        refused = client.options(
            "/conversations", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_oversized_bodies_are_refused_before_parsing(client: TestClient) -> None:
    cid, auth = conversation(client)
    declared = client.post(
        f"/conversations/{cid}/messages",
        content=json.dumps({"text": "x" * 70_000}),
        headers={"content-type": "application/json", **auth},
    )
    assert declared.status_code == 413 and "the limit is 65,536" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(80):
            yield b"y" * 1000
        yield b'"}'

    streamed = client.post(
        f"/conversations/{cid}/messages", content=chunks(), headers={"content-type": "application/json", **auth}
    )
    assert streamed.status_code == 413
    assert client.get(f"/conversations/{cid}", headers=auth).json()["transcript"] == []


def test_message_rate_per_conversation(runtime: Runtime) -> None:
    with client_for(runtime, rate_conversation_per_minute=1, rate_conversation_burst=2) as client:
        cid, auth = conversation(client)
        other, other_auth = conversation(client)
        for text in ("hello", "I forgot my password"):
            assert client.post(f"/conversations/{cid}/messages", json={"text": text}, headers=auth).status_code == 200
        refused = client.post(f"/conversations/{cid}/messages", json={"text": "again"}, headers=auth)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "too many requests from this conversation" in refused.json()["detail"]
        assert len(client.get(f"/conversations/{cid}", headers=auth).json()["transcript"]) == 4
        ok = client.post(f"/conversations/{other}/messages", json={"text": "hello"}, headers=other_auth)
        assert ok.status_code == 200
        assert 'tierone_rate_limited_total{limit="conversation"} 1.0' in client.get("/metrics").text


def test_malformed_requests_are_refused_before_the_token_and_the_limits(runtime: Runtime) -> None:
    with client_for(runtime, rate_conversation_per_minute=1, rate_conversation_burst=1) as client:
        cid, auth = conversation(client)
        wrong = {"Authorization": "Bearer not-the-token"}
        for headers in ({}, wrong, auth, auth):
            refused = client.post(f"/conversations/{cid}/messages", json={"text": 5}, headers=headers)
            assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "text"]
            after = client.get(f"/conversations/{cid}/events", params={"after": -1}, headers=headers)
            assert after.status_code == 422 and after.json()["detail"][0]["loc"] == ["query", "after"]
        # None of the malformed messages took the conversation's one message.
        assert client.post(f"/conversations/{cid}/messages", json={"text": "hello"}, headers=auth).status_code == 200
        assert client.post(f"/conversations/{cid}/messages", json={"text": "hello"}, headers=auth).status_code == 429


def test_rate_per_client_address(runtime: Runtime) -> None:
    with client_for(runtime, rate_ip_per_minute=1, rate_ip_burst=3) as client:
        cid, auth = conversation(client)
        assert client.post(f"/conversations/{cid}/messages", json={"text": "hi"}, headers=auth).status_code == 200
        assert client.post("/conversations").status_code == 201
        refused = client.post("/conversations")
        assert refused.status_code == 429 and "client address" in refused.json()["detail"]
        assert "retry-after" in refused.headers
        assert client.post(f"/conversations/{cid}/messages", json={"text": "hi"}, headers=auth).status_code == 429


def test_customers_reach_only_their_own_conversation(client: TestClient) -> None:
    mine, my_auth = conversation(client)
    theirs, their_auth = conversation(client)
    client.post(f"/conversations/{theirs}/messages", json={"text": "I forgot my password"}, headers=their_auth)
    assert client.get(f"/conversations/{theirs}").status_code == 401
    assert client.get(f"/conversations/{theirs}", headers={"Authorization": "Bearer guess"}).status_code == 404
    peek = client.get(f"/conversations/{theirs}", headers=my_auth)
    write = client.post(f"/conversations/{theirs}/messages", json={"text": "hi"}, headers=my_auth)
    unknown = client.get("/conversations/c_unknown", headers=my_auth)
    assert peek.status_code == write.status_code == unknown.status_code == 404
    assert peek.json()["detail"] == f"no conversation has the id {theirs!r}; start a new one instead"
    assert len(client.get(f"/conversations/{theirs}", headers=their_auth).json()["transcript"]) == 2
    no_token = client.post(f"/conversations/{mine}/messages", json={"text": "hi"})
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"


def test_openapi_describes_the_contract(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in (
        "/conversations",
        "/conversations/{conversation_id}",
        "/conversations/{conversation_id}/messages",
        "/conversations/{conversation_id}/events",
        "/me",
        "/handoffs",
        "/handoffs/{packet_id}",
        "/handoffs/{packet_id}/claim",
        "/handoffs/{packet_id}/reply",
        "/handoffs/{packet_id}/resolve",
        "/handoffs/{packet_id}/return",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    turn = schema["components"]["schemas"]["TurnOut"]["properties"]
    assert set(turn) == {"conversation_id", "replies", "stage", "status", "runbook_id", "handoff", "reasons"}
    assert "401" in paths["/handoffs"]["get"]["responses"] and "403" in paths["/handoffs"]["get"]["responses"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
