"""GET /insights for leads and admins; a lead's key reads figures and never acts on tickets."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.runtime import Runtime


def bearer(runtime: Runtime, name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiKeys(runtime.settings.desk_db).create(name, role)}"}


def test_a_lead_reads_insights_and_cannot_act_on_tickets(client: TestClient, runtime: Runtime) -> None:
    lead, tech, admin = bearer(runtime, "Lee", "lead"), bearer(runtime, "Alex", "l2"), bearer(runtime, "Root", "admin")
    start = client.post("/conversations", json={"channel": "chat"}).json()
    auth = {"Authorization": f"Bearer {start['token']}"}
    client.post(f"/conversations/{start['conversation_id']}/messages", json={"text": "I want a human"}, headers=auth)
    packet_id = runtime.resolver.deps.handoffs.for_conversation(start["conversation_id"])[-1].packet_id

    got = client.get("/insights", headers=lead)
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["episodes"], body["handed_off"], body["containment_rate"], body["gaps"]) == (1, 1, 0.0, [])
    assert body["categories"][0]["reasons"] == {"customer_requested_human": 1}
    assert client.get("/insights", headers=admin).json() == body

    refused = client.get("/insights", headers=tech)
    assert refused.status_code == 403 and "lead's or an admin's key" in refused.json()["detail"]
    assert client.get("/insights").status_code == 401
    for method, path in (("get", "/handoffs"), ("post", f"/handoffs/{packet_id}/claim")):
        answer = client.request(method.upper(), path, headers=lead)
        assert answer.status_code == 403 and "lead's key" in answer.json()["detail"], (path, answer.text)
    assert runtime.desk.ticket(packet_id).packet.status == "queued"  # the lead changed nothing
    assert client.get("/admin/keys", headers=lead).status_code == 403


def test_insights_period_errors_are_422_naming_the_problem(client: TestClient, runtime: Runtime) -> None:
    lead = bearer(runtime, "Lee", "lead")
    backwards = client.get("/insights", params={"since": "2026-11-10", "as_of": "2026-11-01"}, headers=lead)
    assert backwards.status_code == 422 and "is before since" in backwards.json()["detail"]
    garbled = client.get("/insights", params={"since": "last tuesday"}, headers=lead)
    assert garbled.status_code == 422 and "'last tuesday' is not an ISO date" in garbled.json()["detail"]
