"""The HTTP API, through FastAPI's TestClient on a real runtime."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.runtime import Runtime
from tests.conftest import latest_code


def open_conversation(client: TestClient, channel: str = "chat") -> tuple[str, dict[str, str]]:
    created = client.post("/conversations", json={"channel": channel})
    assert created.status_code == 201, created.text
    body = created.json()
    return body["conversation_id"], {"Authorization": f"Bearer {body['token']}"}


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_conversation_over_http(client: TestClient, runtime: Runtime) -> None:
    cid, auth = open_conversation(client)
    first = client.post(f"/conversations/{cid}/messages", json={"text": "my account got locked"}, headers=auth)
    assert first.status_code == 200
    assert first.json()["runbook_id"] == "account-lockout" and first.json()["stage"] == "identity"
    assert first.json()["status"] == "bot"
    client.post(f"/conversations/{cid}/messages", json={"text": "bob.smith@example.com"}, headers=auth)
    code = latest_code(runtime, cid)
    step = client.post(f"/conversations/{cid}/messages", json={"text": code}, headers=auth).json()
    assert step["stage"] == "confirm"
    view = client.get(f"/conversations/{cid}", headers=auth).json()
    assert [line["role"] for line in view["transcript"]] == ["customer", "bot"] * 3
    assert [line["seq"] for line in view["transcript"]] == [1, 2, 3, 4, 5, 6]
    assert view["transcript"][2]["text"] == "[email]"
    assert view["transcript"][4]["text"] == "[code]"
    assert {line["channel"] for line in view["transcript"]} == {"chat"}


def test_handoff_over_http(client: TestClient) -> None:
    cid, auth = open_conversation(client)
    body = client.post(f"/conversations/{cid}/messages", json={"text": "let me talk to a human"}, headers=auth).json()
    assert body["stage"] == "handed_off" and body["status"] == "queued"
    assert body["handoff"]["packet_id"].startswith("HO-")


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"text": ""}, 422, "the message is empty"),
        ({"text": "a\u0000b"}, 422, "control character"),
        ({"text": "x" * 9000}, 422, "9,000 characters long"),
        ({}, 422, "text"),
    ],
)
def test_bad_messages(client: TestClient, payload: dict[str, str], status: int, words: str) -> None:
    cid, auth = open_conversation(client)
    response = client.post(f"/conversations/{cid}/messages", json=payload, headers=auth)
    assert response.status_code == status
    assert words in response.text


def test_invalid_utf8_body_is_refused(client: TestClient) -> None:
    cid, auth = open_conversation(client)
    response = client.post(
        f"/conversations/{cid}/messages",
        content=b'{"text": "\xff\xfe"}',
        headers={"content-type": "application/json", **auth},
    )
    assert response.status_code == 400
    assert "error parsing the body" in response.json()["detail"]
    assert client.get(f"/conversations/{cid}", headers=auth).json()["transcript"] == []


def test_unknown_conversation_is_404(client: TestClient) -> None:
    _, auth = open_conversation(client)
    response = client.post("/conversations/c_missing/messages", json={"text": "hi"}, headers=auth)
    assert response.status_code == 404
    assert "no conversation has the id 'c_missing'" in response.json()["detail"]
    assert client.get("/conversations/c_missing", headers=auth).status_code == 404


def test_unknown_channel_is_refused(client: TestClient) -> None:
    response = client.post("/conversations", json={"channel": "fax"})
    assert response.status_code == 422
    assert "unknown channel" in response.json()["detail"]


def test_packet_schema_is_served(client: TestClient) -> None:
    schema = client.get("/handoffs/schema").json()
    assert schema["title"] == "HandoffPacket"
    assert {"packet_id", "conversation_id", "sla", "transcript", "reason_codes"} <= set(schema["properties"])
