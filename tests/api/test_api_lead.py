"""GET /insights for leads and admins; a lead's key reads figures and never acts on tickets."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.runtime import Runtime, desk_target
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)


def bearer(runtime: Runtime, name: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiKeys(desk_target(runtime.settings)).create(name, role)}"}


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


def test_the_audit_in_json_markdown_and_html_for_a_lead_only(client: TestClient, runtime: Runtime) -> None:
    lead, tech = bearer(runtime, "Lee", "lead"), bearer(runtime, "Alex", "l2")
    month = runtime.resolver.deps.clock().strftime("%Y-%m")
    start = client.post("/conversations", json={"channel": "chat"}).json()
    auth = {"Authorization": f"Bearer {start['token']}"}
    client.post(f"/conversations/{start['conversation_id']}/messages", json={"text": "I want a human"}, headers=auth)
    got = client.get("/audit", params={"month": month}, headers=lead)
    assert got.status_code == 200, got.text
    assert got.json()["month"] == month and got.json()["totals"]["handed_off"] == 1
    page = client.get("/audit", params={"month": month, "format": "html"}, headers=lead)
    assert page.headers["content-type"].startswith("text/html") and "<table>" in page.text
    text = client.get("/audit", params={"month": month, "format": "md"}, headers=lead)
    assert text.text.startswith(f"# Tier-boundary audit, {month}")
    assert client.get("/audit", params={"month": month}, headers=tech).status_code == 403
    bad = client.get("/audit", params={"month": "2026-13"}, headers=lead)
    assert bad.status_code == 422 and "YYYY-MM" in bad.json()["detail"]


def test_a_browser_navigating_to_insights_gets_the_page_and_programs_the_json(client: TestClient) -> None:
    page = client.get("/insights", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Sign in to insights" in page.text and "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/insights", headers={"Accept": "application/json"}).status_code == 401
    assert client.get("/insights").status_code == 401


def test_insights_list_the_periods_knowledge_gaps(client: TestClient, runtime: Runtime) -> None:
    lead = bearer(runtime, "Lee", "lead")
    start = client.post("/conversations", json={"channel": "chat"}).json()
    auth = {"Authorization": f"Bearer {start['token']}"}
    asked = "which dishes does the staff canteen serve on fridays"
    client.post(f"/conversations/{start['conversation_id']}/messages", json={"text": asked}, headers=auth)
    packet = runtime.resolver.deps.handoffs.for_conversation(start["conversation_id"])[-1]
    assert "no_runbook_fits" in packet.reason_codes
    gaps = client.get("/insights", headers=lead).json()["gaps"]
    assert [(g["size"], g["examples"]) for g in gaps] == [(1, [asked])]
    assert gaps[0]["nearest_runbook"] in runtime.pack.runbooks
