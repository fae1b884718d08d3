"""The L2 desk through the HTTP API: keys, queue, claim, reply, resolve, return, and every refusal."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)
from tests.conftest import Clock


def handed_off(client: TestClient, text: str = "let me talk to a human") -> tuple[str, dict[str, str], str]:
    created = client.post("/conversations", json={"channel": "chat"}).json()
    auth = {"Authorization": f"Bearer {created['token']}"}
    cid = created["conversation_id"]
    turn = client.post(f"/conversations/{cid}/messages", json={"text": text}, headers=auth).json()
    assert turn["status"] == "queued", turn
    return cid, auth, turn["handoff"]["packet_id"]


def say(client: TestClient, cid: str, auth: dict[str, str], text: str) -> dict[str, object]:
    response = client.post(f"/conversations/{cid}/messages", json={"text": text}, headers=auth)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_me_names_the_key_holder(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    assert client.get("/me", headers=keys["Alex"]).json() == {"name": "Alex", "role": "l2"}
    assert client.get("/me", headers=keys["Root"]).json() == {"name": "Root", "role": "admin"}


def test_desk_endpoints_refuse_without_a_technician_key(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _, customer_auth, packet_id = handed_off(client)
    endpoints = [
        ("GET", "/me"),
        ("GET", "/handoffs"),
        ("GET", f"/handoffs/{packet_id}"),
        ("POST", f"/handoffs/{packet_id}/claim"),
        ("POST", f"/handoffs/{packet_id}/reply"),
        ("POST", f"/handoffs/{packet_id}/resolve"),
        ("POST", f"/handoffs/{packet_id}/return"),
        ("GET", "/admin/keys"),
    ]
    for method, path in endpoints:
        none = client.request(method, path, json={"text": "hi"})
        assert none.status_code == 401, (path, none.text)
        assert none.headers["www-authenticate"] == "Bearer"
        unknown = client.request(method, path, json={"text": "hi"}, headers={"Authorization": "Bearer t1_nope"})
        assert unknown.status_code == 401 and "unknown or revoked" in unknown.json()["detail"], path
        as_customer = client.request(method, path, json={"text": "hi"}, headers=customer_auth)
        assert as_customer.status_code == 403 and "conversation token" in as_customer.json()["detail"], path
    # Nothing above changed the ticket.
    assert client.get(f"/handoffs/{packet_id}", headers=keys["Alex"]).json()["status"] == "queued"


def test_admin_endpoints_refuse_an_l2_key(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    for method, path in (("GET", "/admin/keys"), ("POST", "/admin/keys"), ("DELETE", "/admin/keys/Sam")):
        response = client.request(method, path, json={"name": "Eve", "role": "admin"}, headers=keys["Alex"])
        assert response.status_code == 403 and "needs an admin" in response.json()["detail"]
    assert client.get("/me", headers=keys["Sam"]).status_code == 200


def test_admin_manages_keys(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    made = client.post("/admin/keys", json={"name": "Kim", "role": "l2"}, headers=keys["Root"])
    assert made.status_code == 201
    key = made.json()["key"]
    assert client.get("/me", headers={"Authorization": f"Bearer {key}"}).json()["name"] == "Kim"
    listed = client.get("/admin/keys", headers=keys["Root"]).json()
    assert {k["name"] for k in listed} == {"Alex", "Sam", "Root", "Kim"}
    assert all(k["key"] is None for k in listed)
    assert client.delete("/admin/keys/Kim", headers=keys["Root"]).json() == {"revoked": 1}
    assert client.get("/me", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    again = client.delete("/admin/keys/Kim", headers=keys["Root"])
    assert again.status_code == 422 and "no live API key" in again.json()["detail"]
    bad = client.post("/admin/keys", json={"name": "Kim", "role": "root"}, headers=keys["Root"])
    assert bad.status_code == 422


def test_queue_lists_open_tickets_by_due_time_with_filters(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _, _, human = handed_off(client)
    _, _, outage = handed_off(client, "I spilled coffee on my laptop and it won't turn on")
    queue = client.get("/handoffs", headers=keys["Alex"]).json()
    assert {t["packet_id"] for t in queue} == {human, outage}
    dues = [t["first_response_due"] for t in queue]
    assert dues == sorted(dues)
    ticket = next(t for t in queue if t["packet_id"] == human)
    assert ticket["status"] == "queued" and ticket["claimed_by"] is None and ticket["channel"] == "chat"
    assert "customer_requested_human" in ticket["reason_codes"]
    assert ticket["at_risk"] is False and ticket["breached"] is False
    priority = ticket["priority"]
    filtered = client.get(f"/handoffs?priority={priority}", headers=keys["Alex"]).json()
    assert human in {t["packet_id"] for t in filtered}
    assert all(t["priority"] == priority for t in filtered)
    assert client.get("/handoffs?status=resolved", headers=keys["Alex"]).json() == []
    assert client.get("/handoffs?category=no-such-category", headers=keys["Alex"]).json() == []
    assert client.get("/handoffs?status=lost", headers=keys["Alex"]).status_code == 422
    assert client.get("/handoffs?priority=P9", headers=keys["Alex"]).status_code == 422


def test_at_risk_and_breached_follow_the_clock(
    client: TestClient, keys: dict[str, dict[str, str]], clock: Clock
) -> None:
    _, _, packet_id = handed_off(client)
    ticket = client.get("/handoffs", headers=keys["Alex"]).json()[0]
    due = datetime.fromisoformat(ticket["first_response_due"])
    clock.now = due - timedelta(minutes=5)
    at_risk = client.get("/handoffs", headers=keys["Alex"]).json()[0]
    assert at_risk["at_risk"] is True and at_risk["breached"] is False
    clock.now = due + timedelta(minutes=1)
    late = client.get("/handoffs", headers=keys["Alex"]).json()[0]
    assert late["at_risk"] is False and late["breached"] is True
    assert late["packet_id"] == packet_id


def test_claim_reply_resolve_lifecycle(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    cid, auth, packet_id = handed_off(client)
    # Before the claim the bot still tells the customer a person is coming.
    waiting = say(client, cid, auth, "are you there?")
    assert waiting["status"] == "queued" and waiting["replies"]
    not_claimed = client.post(f"/handoffs/{packet_id}/reply", json={"text": "hello"}, headers=keys["Alex"])
    assert not_claimed.status_code == 409 and "claim it" in not_claimed.json()["detail"]

    claimed = client.post(f"/handoffs/{packet_id}/claim", headers=keys["Alex"])
    assert claimed.status_code == 200 and claimed.json() == {"status": "claimed", "claimed_by": "Alex"}
    assert client.post(f"/handoffs/{packet_id}/claim", headers=keys["Alex"]).status_code == 200
    taken = client.post(f"/handoffs/{packet_id}/claim", headers=keys["Sam"])
    assert taken.status_code == 409 and "claimed by Alex" in taken.json()["detail"]
    assert client.post(f"/handoffs/{packet_id}/reply", json={"text": "hi"}, headers=keys["Sam"]).status_code == 409

    # While claimed the bot is silent, and the customer's message reaches the technician.
    silent = say(client, cid, auth, "my laptop shows error 0x80070005 since this morning")
    assert silent["replies"] == [] and silent["status"] == "claimed"
    replied = client.post(
        f"/handoffs/{packet_id}/reply",
        json={"text": "Hi, Alex here. Write to me at alex@corp.example"},
        headers=keys["Alex"],
    )
    assert replied.status_code == 200
    line = replied.json()["line"]
    assert line["role"] == "technician" and line["author"] == "Alex" and line["channel"] == "chat"
    assert line["text"] == "Hi, Alex here. Write to me at [email]"
    assert client.post(f"/handoffs/{packet_id}/reply", json={"text": "  "}, headers=keys["Alex"]).status_code == 422

    detail = client.get(f"/handoffs/{packet_id}", headers=keys["Alex"]).json()
    assert detail["status"] == "claimed" and detail["claimed_by"] == "Alex"
    assert detail["packet"]["packet_id"] == packet_id
    roles = [(entry["role"], entry["text"]) for entry in detail["transcript"]]
    assert ("customer", "my laptop shows error 0x80070005 since this morning") in roles
    assert roles[-1] == ("technician", "Hi, Alex here. Write to me at [email]")

    resolved = client.post(f"/handoffs/{packet_id}/resolve", json={"note": "reset the profile"}, headers=keys["Alex"])
    assert resolved.status_code == 200 and resolved.json()["status"] == "resolved"
    assert client.post(f"/handoffs/{packet_id}/resolve", headers=keys["Alex"]).status_code == 409
    assert client.post(f"/handoffs/{packet_id}/return", headers=keys["Alex"]).status_code == 409
    assert client.post(f"/handoffs/{packet_id}/claim", headers=keys["Sam"]).status_code == 409
    events = client.get(f"/handoffs/{packet_id}", headers=keys["Sam"]).json()["events"]
    assert [(e["actor"], e["action"]) for e in events] == [
        ("bot", "queued"),
        ("Alex", "claimed"),
        ("Alex", "replied"),
        ("Alex", "resolved"),
    ]
    assert events[-1]["note"] == "reset the profile"
    assert all(e["at"] for e in events)

    view = client.get(f"/conversations/{cid}", headers=auth).json()
    assert view["status"] == "resolved"
    assert [entry["role"] for entry in view["transcript"]][-1] == "system"
    assert [entry["seq"] for entry in view["transcript"]] == list(range(1, len(view["transcript"]) + 1))
    # The customer writes again: the bot answers, as a new problem.
    again = say(client, cid, auth, "I forgot my password")
    assert again["status"] == "bot" and again["replies"] and again["runbook_id"] == "password-reset"
    assert client.get("/handoffs", headers=keys["Alex"]).json() == []
    assert [t["packet_id"] for t in client.get("/handoffs?status=resolved", headers=keys["Alex"]).json()] == [packet_id]


def test_return_to_bot_lets_the_bot_answer_again(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    cid, auth, packet_id = handed_off(client)
    client.post(f"/handoffs/{packet_id}/claim", headers=keys["Sam"])
    assert say(client, cid, auth, "hello?")["replies"] == []
    back = client.post(f"/handoffs/{packet_id}/return", json={"note": "just a password"}, headers=keys["Sam"])
    assert back.status_code == 200 and back.json() == {"packet_id": packet_id, "status": "returned"}
    assert client.get(f"/conversations/{cid}", headers=auth).json()["status"] == "bot"
    turn = say(client, cid, auth, "I forgot my password")
    assert turn["status"] == "bot" and turn["stage"] != "handed_off" and turn["replies"]
    assert turn["runbook_id"] == "password-reset" and turn["handoff"] is None
    # Asking for a person again makes a new ticket.
    second = say(client, cid, auth, "let me talk to a human")
    assert second["status"] == "queued" and second["handoff"]["packet_id"] != packet_id
    tickets = client.get("/handoffs?status=all", headers=keys["Sam"]).json()
    assert {(t["packet_id"], t["status"]) for t in tickets} == {
        (packet_id, "returned"),
        (second["handoff"]["packet_id"], "queued"),
    }


def test_admin_may_close_a_ticket_someone_else_holds(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _, _, packet_id = handed_off(client)
    client.post(f"/handoffs/{packet_id}/claim", headers=keys["Alex"])
    assert client.post(f"/handoffs/{packet_id}/resolve", headers=keys["Sam"]).status_code == 409
    # Replies stay with the holder: an admin does not speak in someone else's name.
    assert client.post(f"/handoffs/{packet_id}/reply", json={"text": "hi"}, headers=keys["Root"]).status_code == 409
    assert client.post(f"/handoffs/{packet_id}/resolve", json={"note": "dup"}, headers=keys["Root"]).status_code == 200


def test_unknown_packet_is_404(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    for method, path in (
        ("GET", "/handoffs/HO-MISSING"),
        ("POST", "/handoffs/HO-MISSING/claim"),
        ("POST", "/handoffs/HO-MISSING/reply"),
        ("POST", "/handoffs/HO-MISSING/resolve"),
        ("POST", "/handoffs/HO-MISSING/return"),
    ):
        response = client.request(method, path, json={"text": "hi"}, headers=keys["Alex"])
        assert response.status_code == 404 and "HO-MISSING" in response.json()["detail"], path


def test_reply_body_is_checked(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    _, _, packet_id = handed_off(client)
    client.post(f"/handoffs/{packet_id}/claim", headers=keys["Alex"])
    assert client.post(f"/handoffs/{packet_id}/reply", json={}, headers=keys["Alex"]).status_code == 422
    long = client.post(f"/handoffs/{packet_id}/reply", json={"text": "x" * 9000}, headers=keys["Alex"])
    assert long.status_code == 422 and "9,000 characters" in long.json()["detail"]
    note = client.post(f"/handoffs/{packet_id}/resolve", json={"note": "n" * 5000}, headers=keys["Alex"])
    assert note.status_code == 422
    assert client.get(f"/handoffs/{packet_id}", headers=keys["Alex"]).json()["status"] == "claimed"
