"""Erasure over HTTP: a customer erases their conversation, an admin erases a customer by address."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from fastapi.testclient import TestClient

from app.runtime import Runtime
from tests.api.test_api_events import LiveServer, sse, until
from tests.conftest import Clock, latest_code
from tests.core.test_vault import _files, _rows

JANE, BOB = "jane.doe@example.com", "bob.smith@example.com"
# A phrase no runbook or template holds, so finding it in a file can only mean a customer line survived.
MARKER = "my parrot Bartholomew ate the sticky note"


class Customer:
    """One conversation opened over HTTP, with its token."""

    def __init__(self, client: TestClient, runtime: Runtime) -> None:
        body = client.post("/conversations", json={"channel": "chat"}).json()
        self.client, self.runtime = client, runtime
        self.cid: str = body["conversation_id"]
        self.auth = {"Authorization": f"Bearer {body['token']}"}
        self.token: str = body["token"]

    def say(self, *turns: str) -> Customer:
        for turn in turns:
            text = latest_code(self.runtime, self.cid) if turn == "{otp}" else turn
            response = self.client.post(f"/conversations/{self.cid}/messages", json={"text": text}, headers=self.auth)
            assert response.status_code == 200, response.text
        return self

    def get(self) -> httpx.Response:
        return self.client.get(f"/conversations/{self.cid}", headers=self.auth)


def janes_and_bobs(client: TestClient, runtime: Runtime) -> tuple[Customer, Customer, Customer]:
    """Jane: a verified conversation handed to L2, and one that only gave her address. Bob: one, verified."""
    verified = Customer(client, runtime).say("I forgot my password", MARKER, JANE, "{otp}", "no, get me a human")
    gave_address = Customer(client, runtime).say("my account is locked", f"it's {JANE}")
    bobs = Customer(client, runtime).say("my account is locked", BOB, "{otp}")
    return verified, gave_address, bobs


def test_a_verified_customer_erases_their_conversations_and_the_token_stops_working(
    client: TestClient, runtime: Runtime, keys: dict[str, dict[str, str]]
) -> None:
    verified, gave_address, bobs = janes_and_bobs(client, runtime)
    code = latest_code(runtime, verified.cid)
    response = client.delete(f"/conversations/{verified.cid}", headers=verified.auth)
    assert response.status_code == 200, response.text
    report = response.json()
    # The code proved Jane's address within the verification window: both of her conversations go.
    assert report["conversations"] == sorted([verified.cid, gave_address.cid])
    assert report["actor"] == "customer" and report["requested_by"] == "conversation"
    assert report["deleted"]["checkpoints"] > 0 and report["deleted"]["handoffs"] == 1
    assert report["deleted"]["conversation_tokens"] == 2 and report["kept_audit_records"] >= 3
    assert "@" not in response.text and code not in response.text  # counts and ids, no personal data
    assert verified.get().status_code == 404 and gave_address.get().status_code == 404
    again = client.delete(f"/conversations/{verified.cid}", headers=verified.auth)
    assert again.status_code == 404
    assert bobs.get().status_code == 200 and bobs.get().json()["transcript"]
    # The erasure is audited with who asked.
    history = client.get("/admin/erasures", headers=keys["Root"]).json()
    assert [(h["erasure_id"], h["actor"], h["conversations"]) for h in history] == [
        (report["erasure_id"], "customer", report["conversations"])
    ]


def test_without_a_live_verification_only_the_conversation_itself_goes(
    client: TestClient, runtime: Runtime, clock: Clock
) -> None:
    verified, gave_address, _ = janes_and_bobs(client, runtime)
    # Merely typing an address proves nothing: the other conversation of that address stays.
    response = client.delete(f"/conversations/{gave_address.cid}", headers=gave_address.auth)
    assert response.status_code == 200 and response.json()["conversations"] == [gave_address.cid]
    assert verified.get().status_code == 200
    # A verification past its time limit proves nothing now either.
    clock.advance(minutes=runtime.settings.verification_ttl_minutes + 1)
    other = Customer(client, runtime).say("my account is locked", f"it's {JANE}")
    response = client.delete(f"/conversations/{verified.cid}", headers=verified.auth)
    assert response.status_code == 200 and response.json()["conversations"] == [verified.cid]
    assert other.get().status_code == 200


def test_customer_erasure_refusals(client: TestClient, runtime: Runtime, keys: dict[str, dict[str, str]]) -> None:
    jane, _, bob = janes_and_bobs(client, runtime)
    path = f"/conversations/{jane.cid}"
    missing = client.delete(path)
    assert missing.status_code == 401 and "token" in missing.json()["detail"]
    # Bob's token, an admin's key and a made-up token all look like an unknown conversation.
    for headers in (bob.auth, keys["Root"], {"Authorization": "Bearer not-a-token"}):
        refused = client.delete(path, headers=headers)
        assert refused.status_code == 404, headers
    assert client.delete("/conversations/C-NOPE", headers=jane.auth).status_code == 404
    assert jane.get().status_code == 200 and bob.get().status_code == 200  # nothing went
    assert client.get("/admin/erasures", headers=keys["Root"]).json() == []


def test_admin_erases_a_customer_by_address(
    client: TestClient, runtime: Runtime, keys: dict[str, dict[str, str]]
) -> None:
    verified, gave_address, bobs = janes_and_bobs(client, runtime)
    response = client.post("/admin/erasures", json={"email": f"  {JANE.upper()} "}, headers=keys["Root"])
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["conversations"] == sorted([verified.cid, gave_address.cid])
    assert report["actor"] == "admin:Root" and report["requested_by"] == "email"
    assert "@" not in response.text
    assert verified.get().status_code == 404 and gave_address.get().status_code == 404
    assert bobs.get().status_code == 200
    # By conversation id: Bob's one conversation.
    by_id = client.post("/admin/erasures", json={"conversation_id": bobs.cid}, headers=keys["Root"])
    assert by_id.status_code == 200 and by_id.json()["conversations"] == [bobs.cid]
    assert bobs.get().status_code == 404
    # An address with no conversations: recorded, nothing deleted.
    nobody = client.post("/admin/erasures", json={"email": "nobody@example.com"}, headers=keys["Root"])
    assert nobody.status_code == 200 and nobody.json()["conversations"] == [] and nobody.json()["deleted"] == {}
    history = client.get("/admin/erasures", headers=keys["Root"]).json()
    assert [h["actor"] for h in history] == ["admin:Root"] * 3
    assert all("@" not in str(h) for h in history)


def test_admin_erasure_refusals(client: TestClient, runtime: Runtime, keys: dict[str, dict[str, str]]) -> None:
    jane = Customer(client, runtime).say("my account is locked", f"it's {JANE}")
    body = {"email": JANE}
    assert client.post("/admin/erasures", json=body).status_code == 401
    assert client.post("/admin/erasures", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    as_customer = client.post("/admin/erasures", json=body, headers=jane.auth)
    assert as_customer.status_code == 403 and "conversation token" in as_customer.json()["detail"]
    as_l2 = client.post("/admin/erasures", json=body, headers=keys["Alex"])
    assert as_l2.status_code == 403 and "admin" in as_l2.json()["detail"]
    assert client.get("/admin/erasures", headers=keys["Alex"]).status_code == 403
    bad: list[dict[str, Any]] = [{}, {"email": JANE, "conversation_id": jane.cid}, {"email": "x" * 400}]
    for payload in bad:
        assert client.post("/admin/erasures", json=payload, headers=keys["Root"]).status_code == 422, payload
    not_an_address = client.post("/admin/erasures", json={"email": "jane"}, headers=keys["Root"])
    assert not_an_address.status_code == 422 and "'jane' is not an email address" in not_an_address.json()["detail"]
    unknown = client.post("/admin/erasures", json={"conversation_id": "C-NOPE"}, headers=keys["Root"])
    assert unknown.status_code == 404
    assert jane.get().status_code == 200  # every refusal left the conversation alone
    assert client.get("/admin/erasures", headers=keys["Root"]).json() == []


def test_nothing_of_the_erased_customer_is_left_in_the_sqlite_files(
    client: TestClient, runtime: Runtime, keys: dict[str, dict[str, str]]
) -> None:
    verified, gave_address, bobs = janes_and_bobs(client, runtime)
    codes = [latest_code(runtime, verified.cid)]
    data = runtime.settings.data_dir
    names = ("conversations.sqlite", "tierone.sqlite", "vault.sqlite")
    # Before: the marker is stored (redaction leaves it), so the scan below can find it.
    assert any(MARKER.encode() in _files(data, name) for name in names)
    assert client.delete(f"/conversations/{verified.cid}", headers=verified.auth).status_code == 200
    for name in names:
        raw = _files(data, name)
        assert raw, name
        for value in (MARKER, *codes, JANE):
            if value == JANE and name == "tierone.sqlite":
                continue  # the embedded directory's own accounts table holds the address: checked by rows below
            assert value.encode() not in raw, f"{value!r} in {name}"
        for cid in (verified.cid, gave_address.cid):
            if name != "tierone.sqlite":  # the kept tool audit log names conversations by id
                assert cid.encode() not in raw, f"{cid} in {name}"
    assert JANE not in _rows(data / "tierone.sqlite", skip=("accounts",))
    assert BOB.encode() not in _files(data, "conversations.sqlite")
    assert bobs.get().status_code == 200  # Bob's conversation is still whole


def test_open_event_streams_of_an_erased_conversation_end(runtime: Runtime) -> None:
    with LiveServer(runtime, sse_ping_seconds=30) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        body = http.post("/conversations", json={"channel": "chat"}).json()
        cid, auth = body["conversation_id"], {"Authorization": f"Bearer {body['token']}"}
        http.post(f"/conversations/{cid}/messages", json={"text": "my account is locked"}, headers=auth)
        with http.stream("GET", f"/conversations/{cid}/events", headers=auth) as response:
            events = sse(response)
            until(events, lambda event, _: event == "status")  # history and status are in
            answers: list[httpx.Response] = []
            eraser = threading.Thread(
                target=lambda: answers.append(http.delete(f"/conversations/{cid}", headers=auth)), daemon=True
            )
            eraser.start()
            seen = until(events, lambda event, _: event == "erased")
            assert seen[-1][1]["erasure_id"].startswith("ER-")
            assert list(events) == []  # the server ended the stream after the erased event
            eraser.join(timeout=30)
        assert answers and answers[0].status_code == 200
        assert http.get(f"/conversations/{cid}", headers=auth).status_code == 404
        assert http.get(f"/conversations/{cid}/events", headers=auth).status_code == 404
