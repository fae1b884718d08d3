"""The incidents API: list, update, resolve, detach; each update once per customer in chat and by mail."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.runtime import Runtime
from tests.api.test_inbound_email import app_for, mail, post_json, replies
from tools.base import ServiceStatus

OUTAGE = "everyone in the office lost internet 10 minutes ago"


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with app_for(runtime) as c:
        yield c


def technician_lines(runtime: Runtime, cid: str) -> list[tuple[str, str]]:
    return [(line.text, line.channel) for line in runtime.messages.lines(cid) if line.role == "technician"]


def sent(runtime: Runtime) -> tuple[int, int]:
    """Transcript lines and mail, all conversations: what a refused request must not change."""
    with sqlite3.connect(runtime.settings.desk_db) as conn:
        lines = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        mails = conn.execute("SELECT COUNT(*) FROM mail_out").fetchone()[0]
    return lines, mails


def outage(runtime: Runtime, client: TestClient) -> tuple[str, str, str]:
    """A chat customer and a mail customer report one outage: (incident id, chat id, mail id)."""
    chat = runtime.resolver.start()
    assert runtime.resolver.send(chat, OUTAGE).stage == "incident"
    response = post_json(client, mail(1, text="nobody can get online on the 3rd floor, the whole office is down"))
    by_mail = response.json()["conversation_id"]
    [incident] = runtime.incidents.find()  # type: ignore[union-attr]
    assert incident.id in replies(runtime, by_mail)[0]["body"]
    return incident.id, chat, by_mail


def test_list_and_get_show_the_contract_keys(client: TestClient, runtime: Runtime, keys: Any) -> None:
    incident_id, chat, by_mail = outage(runtime, client)
    [listed] = client.get("/incidents", headers=keys["Alex"]).json()
    assert {"id", "status", "title", "category", "affected", "opened_at", "updates"} <= set(listed)
    assert (listed["id"], listed["status"], listed["affected"]) == (incident_id, "open", 2)
    assert {c["conversation_id"] for c in listed["conversations"]} == {chat, by_mail}
    assert client.get("/incidents?status=resolved", headers=keys["Alex"]).json() == []
    assert client.get(f"/incidents/{incident_id}", headers=keys["Sam"]).json()["affected"] == 2
    assert client.get("/incidents/INC-NOPE", headers=keys["Alex"]).status_code == 404
    assert client.get("/incidents").status_code == 401
    # The embedded status page shows it, so the status tool and customers see it.
    names = [s.name for s in runtime.resolver.deps.toolbox.status_page.services()]
    assert any(name.startswith(incident_id) for name in names)


def test_an_update_reaches_each_customer_once_in_their_channel(client: TestClient, runtime: Runtime, keys: Any) -> None:
    incident_id, chat, by_mail = outage(runtime, client)
    mails_before = len(replies(runtime, by_mail))
    response = client.post(
        f"/incidents/{incident_id}/update", json={"text": "The ISP is on site."}, headers=keys["Alex"]
    )
    assert response.status_code == 200, response.text
    assert [u["kind"] for u in response.json()["incident"]["updates"]] == ["opened", "update"]
    [(text, channel)] = technician_lines(runtime, chat)
    assert incident_id in text and "The ISP is on site." in text and channel == "chat"
    [(_, mail_channel)] = technician_lines(runtime, by_mail)
    assert mail_channel == "email"
    mailed = replies(runtime, by_mail)[mails_before:]
    assert len(mailed) == 1 and "The ISP is on site." in mailed[0]["body"]
    # Delivering again finds nothing left to send.
    assert runtime.incidents.deliver() == 0  # type: ignore[union-attr]
    assert len(technician_lines(runtime, chat)) == 1 and len(replies(runtime, by_mail)) == mails_before + 1


def test_resolve_tells_everyone_and_closes_their_episodes(client: TestClient, runtime: Runtime, keys: Any) -> None:
    incident_id, chat, by_mail = outage(runtime, client)
    response = client.post(f"/incidents/{incident_id}/resolve", json={"text": "Power is back."}, headers=keys["Sam"])
    assert response.status_code == 200 and response.json()["incident"]["status"] == "resolved"
    for cid in (chat, by_mail):
        [(text, _)] = technician_lines(runtime, cid)
        assert "resolved" in text and "Power is back." in text
        assert runtime.resolver.view(cid)["stage"] == "resolved"
        assert [e.outcome for e in runtime.resolver.deps.episodes.for_conversation(cid)] == [  # type: ignore[union-attr]
            "resolved_by_incident"
        ]
    [ticket] = runtime.desk.tickets("resolved")
    assert ticket.packet.packet_id == f"HO-{incident_id}"
    # A later message is a new problem for the bot.
    assert runtime.resolver.send(chat, "my password expired").stage == "identity"


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/incidents/{id}/update", {"text": ""}, 422, "empty"),
        ("/incidents/{id}/update", {"text": "   "}, 422, "empty"),
        ("/incidents/{id}/update", {}, 422, "text"),
        ("/incidents/INC-NOPE/update", {"text": "hello"}, 404, "INC-NOPE"),
        ("/incidents/INC-NOPE/resolve", {"text": "hello"}, 404, "INC-NOPE"),
        ("/incidents/{id}/detach", {"conversation_id": "c_unknown"}, 409, "not attached"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_sent(
    client: TestClient, runtime: Runtime, keys: Any, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    incident_id, _, _ = outage(runtime, client)
    before = sent(runtime)
    response = client.post(path.format(id=incident_id), json=body, headers=keys["Alex"])
    assert response.status_code == status and says in response.text
    assert sent(runtime) == before


def test_a_resolved_incident_takes_no_more_updates(client: TestClient, runtime: Runtime, keys: Any) -> None:
    incident_id, _, _ = outage(runtime, client)
    assert client.post(f"/incidents/{incident_id}/resolve", json={"text": "Fixed."}, headers=keys["Alex"]).is_success
    before = sent(runtime)
    for verb in ("update", "resolve"):
        response = client.post(f"/incidents/{incident_id}/{verb}", json={"text": "again"}, headers=keys["Alex"])
        assert response.status_code == 409 and "already resolved" in response.text
    assert sent(runtime) == before


def test_detach_takes_a_conversation_off(client: TestClient, runtime: Runtime, keys: Any) -> None:
    incident_id, chat, by_mail = outage(runtime, client)
    response = client.post(f"/incidents/{incident_id}/detach", json={"conversation_id": chat}, headers=keys["Alex"])
    assert response.status_code == 200 and response.json()["affected"] == 1
    assert runtime.resolver.view(chat)["stage"] == "triage"
    client.post(f"/incidents/{incident_id}/update", json={"text": "Still on it."}, headers=keys["Alex"])
    assert technician_lines(runtime, chat) == [] and len(technician_lines(runtime, by_mail)) == 1
    again = client.post(f"/incidents/{incident_id}/detach", json={"conversation_id": chat}, headers=keys["Alex"])
    assert again.status_code == 409


def test_declare_and_claim_by_hand(client: TestClient, runtime: Runtime, keys: Any) -> None:
    response = client.post(
        "/incidents", json={"title": "VPN concentrator down", "category": "network"}, headers=keys["Alex"]
    )
    assert response.status_code == 201
    incident_id = response.json()["id"]
    cid = runtime.resolver.start()
    turn = runtime.resolver.send(cid, "my vpn keeps disconnecting every few minutes")
    assert turn.stage == "incident" and incident_id in turn.replies[0]
    assert client.post(f"/incidents/{incident_id}/claim", headers=keys["Alex"]).json()["claimed_by"] == "Alex"
    assert client.post(f"/incidents/{incident_id}/claim", headers=keys["Sam"]).status_code == 409
    assert client.post("/incidents", json={"title": ""}, headers=keys["Alex"]).status_code == 422


class KilledAfter:
    """A message log whose process dies after ``n`` deliveries (the transaction of the next is rolled back)."""

    def __init__(self, log: Any, n: int) -> None:
        self._log, self._left = log, n
        self.feed = log.feed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append_on(self, *args: Any, **kwargs: Any) -> Any:
        if self._left == 0:
            raise KeyboardInterrupt("killed")
        self._left -= 1
        return self._log.append_on(*args, **kwargs)


def test_a_broadcast_killed_halfway_resumes_without_a_second_copy(
    make_runtime: Callable[..., Runtime], tmp_path: Path, keys: Any
) -> None:
    data = tmp_path / "data"
    runtime = make_runtime(data)
    cids = [runtime.resolver.start() for _ in range(4)]
    for cid in cids:
        runtime.resolver.send(cid, OUTAGE)
    [incident] = runtime.incidents.find()  # type: ignore[union-attr]
    runtime.incidents.messages = KilledAfter(runtime.messages, 2)  # type: ignore[union-attr]
    with pytest.raises(KeyboardInterrupt):
        runtime.incidents.update(incident.id, "Engineers are on site.", "Alex")  # type: ignore[union-attr]
    assert sorted(len(technician_lines(runtime, cid)) for cid in cids) == [0, 0, 1, 1]
    restarted = make_runtime(data)
    with app_for(restarted):  # start-up resumes the broadcast
        pass
    assert [len(technician_lines(restarted, cid)) for cid in cids] == [1, 1, 1, 1]
    assert restarted.incidents.deliver() == 0  # type: ignore[union-attr]


def test_two_alike_declarations_in_one_instant_are_two_incidents(client: TestClient, keys: Any) -> None:
    body = {"title": "VPN concentrator down", "category": "network"}
    first = client.post("/incidents", json=body, headers=keys["Alex"])
    second = client.post("/incidents", json=body, headers=keys["Alex"])  # the test clock has not moved
    assert (first.status_code, second.status_code) == (201, 201) and first.json()["id"] != second.json()["id"]


def test_a_service_in_outage_on_the_status_page_opens_one_incident(
    client: TestClient, runtime: Runtime, keys: Any
) -> None:
    assert runtime.incidents is not None
    assert runtime.incidents.watch_status() == []  # nothing is in outage on the seeded page
    runtime.directory.set_service(ServiceStatus(name="vpn", state="outage", note="The concentrator is down."))
    [opened] = runtime.incidents.watch_status()
    assert (opened.title, opened.cause, opened.affected) == ("Vpn outage", "status:vpn outage", 0)
    assert runtime.incidents.watch_status() == []  # never a second one for the same cause
    # A customer who names the service joins it, and hears what the status page says.
    turn = runtime.resolver.send(runtime.resolver.start(), "is the vpn down?")
    assert turn.stage == "incident" and opened.id in turn.replies[0] and "concentrator" in turn.replies[0]
    [listed] = client.get("/incidents", headers=keys["Alex"]).json()
    assert (listed["id"], listed["affected"]) == (opened.id, 1)
