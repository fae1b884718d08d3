"""Every L2 fix teaches L1, through the HTTP API: the lesson on resolve, its refusals, and the suggestions."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.erasure import Eraser
from app.runtime import Runtime, desk_target, open_runtime
from core.db import open_database
from tests.api.test_api_desk import handed_off
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)

PROBLEM = "let me talk to a human: the wifi on floor 3 drops every few minutes, mail me at jane@example.com"


def claimed(client: TestClient, keys: dict[str, dict[str, str]], text: str = PROBLEM) -> str:
    _, _, packet_id = handed_off(client, text)
    assert client.post(f"/handoffs/{packet_id}/claim", headers=keys["Alex"]).status_code == 200
    return packet_id


def test_bot_could_have_becomes_a_redacted_example_with_a_regression_case(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    packet_id = claimed(client, keys)
    body = {"note": "walked them through forgetting the network", "bot_could_have": {"runbook_id": "wifi-connection"}}
    resolved = client.post(f"/handoffs/{packet_id}/resolve", json=body, headers=keys["Alex"])
    assert resolved.status_code == 200, resolved.text
    suggestion_id = resolved.json()["suggestion_id"]
    assert resolved.json()["status"] == "resolved" and suggestion_id.startswith("SUG-")

    [listed] = client.get("/suggestions", headers=keys["Sam"]).json()
    assert listed["id"] == suggestion_id
    assert (listed["kind"], listed["runbook_id"], listed["state"]) == ("example", "wifi-connection", "open")
    assert "jane@example.com" not in listed["text"] and "[email]" in listed["text"]
    assert "wifi on floor 3" in listed["text"]
    assert listed["case"]["expect"] == {"handoff": False, "runbook": "wifi-connection"}
    assert listed["case"]["turns"] == [listed["text"]]
    assert listed["packet_id"] == packet_id and listed["technician"] == "Alex"
    # Kept in the desk database: a restarted process reads the same suggestion.
    again = open_runtime(runtime.settings, index=runtime.index)
    assert [s.as_dict() for s in again.suggestions.list()] == [listed]


def test_an_unknown_runbook_is_refused_and_the_ticket_stays_open(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    packet_id = claimed(client, keys)
    body = {"note": "fixed", "bot_could_have": {"runbook_id": "wifi-conection"}}
    refused = client.post(f"/handoffs/{packet_id}/resolve", json=body, headers=keys["Alex"])
    assert refused.status_code == 422
    assert "'wifi-conection'" in refused.json()["detail"] and "not resolved" in refused.json()["detail"]
    ticket = client.get(f"/handoffs/{packet_id}", headers=keys["Alex"]).json()
    assert ticket["status"] == "claimed" and [e["action"] for e in ticket["events"]][-1] == "claimed"
    assert runtime.desk.status(ticket["packet"]["conversation_id"]).status == "claimed"
    assert client.get("/suggestions?state=all", headers=keys["Alex"]).json() == []
    # Corrected, the same resolution goes through.
    body["bot_could_have"] = {"runbook_id": "wifi-connection"}
    assert client.post(f"/handoffs/{packet_id}/resolve", json=body, headers=keys["Alex"]).status_code == 200


def test_malformed_lessons_are_refused_without_resolving(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    packet_id = claimed(client, keys)
    bad = [
        {"bot_could_have": {"runbook_id": "wifi-connection"}, "new_runbook": {"title": "Floor 3", "steps": ["a"]}},
        {"new_runbook": {"title": "Wifi on floor 3", "steps": []}},
        {"new_runbook": {"title": "Wifi on floor 3", "steps": ["  "]}},
        {"new_runbook": {"title": "Fix office or guest Wi-Fi that won't connect or has no internet", "steps": ["x"]}},
        {"new_runbook": {"title": "Wifi on floor 3", "steps": ["x"], "category": "plumbing"}},
    ]
    for body in bad:
        answer = client.post(f"/handoffs/{packet_id}/resolve", json=body, headers=keys["Alex"])
        assert answer.status_code == 422, (body, answer.text)
    assert client.get(f"/handoffs/{packet_id}", headers=keys["Alex"]).json()["status"] == "claimed"


def test_new_runbook_becomes_a_draft_suggestion(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    packet_id = claimed(client, keys)
    lesson = {"title": "Wi-Fi drops on one floor", "steps": ["Forget the network", "Join it again"]}
    resolved = client.post(
        f"/handoffs/{packet_id}/resolve", json={"new_runbook": lesson | {"category": "network"}}, headers=keys["Alex"]
    )
    assert resolved.status_code == 200, resolved.text
    [listed] = client.get("/suggestions", headers=keys["Alex"]).json()
    assert (listed["kind"], listed["runbook_id"]) == ("new_runbook", "wi-fi-drops-on-one-floor")
    assert listed["draft"] == lesson | {"category": "network"}
    assert listed["case"]["expect"] == {"handoff": False, "runbook": "wi-fi-drops-on-one-floor"}


def test_the_resolve_form_lists_the_pack(client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime) -> None:
    listed = client.get("/runbooks", headers=keys["Alex"]).json()
    assert {r["id"] for r in listed} == set(runtime.pack.runbooks)
    wifi = next(r for r in listed if r["id"] == "wifi-connection")
    assert wifi["title"].startswith("Fix office or guest Wi-Fi") and wifi["tier"] == 1
    assert client.get("/runbooks").status_code == 401


def test_forgetting_the_conversation_erases_its_suggestions_and_gap_vectors(
    client: TestClient, keys: dict[str, dict[str, str]], runtime: Runtime
) -> None:
    kept_packet = claimed(client, keys, "let me talk to a human: my monitor flickers when docked")
    gone_packet = claimed(client, keys)
    for packet_id in (kept_packet, gone_packet):
        body = {"bot_could_have": {"runbook_id": "wifi-connection"}}
        assert client.post(f"/handoffs/{packet_id}/resolve", json=body, headers=keys["Alex"]).status_code == 200
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        for packet_id in (kept_packet, gone_packet):
            conn.execute("INSERT INTO gap_vectors VALUES (?, 'hashing', 'text', ?)", (packet_id, b"\x00"))
    gone = runtime.desk.ticket(gone_packet).packet.conversation_id
    Eraser(runtime.erasure).forget(conversation_id=gone)
    assert [s.packet_id for s in runtime.suggestions.list("all")] == [kept_packet]
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        assert [tuple(r) for r in conn.execute("SELECT packet_id FROM gap_vectors")] == [(kept_packet,)]
