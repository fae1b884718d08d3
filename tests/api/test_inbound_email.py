"""POST /inbound/email through TestClient: every path of the webhook, chat continued by mail, L2 by mail."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.runtime import Runtime, desk_target
from core.db import open_database
from core.signing import sign
from server import create_app
from tests.app.backends import runtime_on_backend  # noqa: F401  (the runtime fixture, on both backends)
from tests.app.test_mail_channel import FlakyMailer, latest_code

SECRET = "inbound-test-secret"
JANE = "Jane Doe <jane.doe@example.com>"


def app_for(runtime: Runtime, **settings: Any) -> TestClient:
    wanted = runtime.settings.model_copy(update={"inbound_secret": SECRET} | settings)
    return TestClient(create_app(wanted, runtime=runtime))


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with app_for(runtime, inbound_max_bytes=20_000) as c:
        yield c


def mail(n: int, text: str = "my vpn keeps disconnecting every few minutes", **fields: Any) -> dict[str, Any]:
    return {"from": JANE, "subject": "VPN", "text": text, "message_id": f"<{n}@client.example>"} | fields


def post_json(client: TestClient, payload: Any, *, secret: str = SECRET, **headers: str) -> Any:
    raw = json.dumps(payload).encode()
    signed = {"X-Tierone-Signature": sign(secret, raw), "Content-Type": "application/json"}
    return client.post("/inbound/email", content=raw, headers=signed | headers)


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"parse-service:{password}".encode()).decode()}


def stored(runtime: Runtime) -> tuple[int, int, int, int]:
    """What a refused post must not change: conversations, mail taken in, log lines, mail sent."""
    with open_database(desk_target(runtime.settings)).transaction() as conn:
        taken = conn.execute("SELECT COUNT(*) FROM mail_in").fetchone()[0]
        lines = conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    return len(runtime.resolver.conversations.ids()), taken, lines, len(runtime.outbox.messages())


def replies(runtime: Runtime, cid: str) -> list[dict[str, Any]]:
    return [m for m in runtime.outbox.messages(cid) if "in_reply_to" in m]


def test_a_signed_json_mail_opens_a_conversation_and_is_answered_by_mail(client: TestClient, runtime: Runtime) -> None:
    response = post_json(client, mail(1))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body | {"conversation_id": "x"} == {
        "status": "accepted",
        "conversation_id": "x",
        "matched": "new",
        "replies_sent": 1,
        "replies_pending": 0,
    }
    cid = body["conversation_id"]
    [reply] = replies(runtime, cid)
    assert (reply["to"], reply["subject"], reply["in_reply_to"]) == (JANE, "Re: VPN", "<1@client.example>")
    assert [(line.role, line.channel) for line in runtime.messages.lines(cid)] == [
        ("customer", "email"),
        ("bot", "email"),
    ]


def test_a_form_post_with_basic_auth(client: TestClient, runtime: Runtime) -> None:
    form = {"from": JANE, "subject": "locked", "text": "my account is locked", "Message-Id": "<f1@client.example>"}
    response = client.post("/inbound/email", data=form, headers=basic(SECRET))
    assert response.status_code == 200, response.text
    assert runtime.resolver.view(response.json()["conversation_id"])["runbook_id"] == "account-lockout"


def test_a_multipart_post_with_an_attachment_uses_the_text(client: TestClient, runtime: Runtime) -> None:
    response = client.post(
        "/inbound/email",
        data=mail(2, "the printer on floor 3 shows offline"),
        files={"attachment1": ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, "image/png")},
        headers=basic(SECRET),
    )
    assert response.status_code == 200, response.text
    cid = response.json()["conversation_id"]
    assert [line.text for line in runtime.messages.lines(cid) if line.role == "customer"] == [
        "VPN\n\nthe printer on floor 3 shows offline"
    ]


def test_a_retried_post_plays_nothing_twice(client: TestClient, runtime: Runtime) -> None:
    first = post_json(client, mail(3)).json()
    again = post_json(client, mail(3))
    assert again.status_code == 200
    assert again.json() == {
        "status": "duplicate",
        "conversation_id": first["conversation_id"],
        "matched": None,
        "replies_sent": 0,
        "replies_pending": 0,
    }
    # The same id as a form post, too.
    assert client.post("/inbound/email", data=mail(3), headers=basic(SECRET)).json()["status"] == "duplicate"
    assert len(runtime.messages.lines(first["conversation_id"])) == 2
    assert len(replies(runtime, first["conversation_id"])) == 1


def test_a_reply_in_the_thread_continues_the_conversation(client: TestClient, runtime: Runtime) -> None:
    cid = post_json(client, mail(4, "I forgot my password", subject="password")).json()["conversation_id"]
    parent = replies(runtime, cid)[-1]
    quoted = "jane.doe@example.com\n\nOn Mon, 23 Nov 2026, Tierone Support wrote:\n> " + parent["body"]
    body = post_json(client, mail(5, quoted, subject="Re: password", in_reply_to=parent["id"])).json()
    assert (body["conversation_id"], body["matched"]) == (cid, "thread")
    assert "6-digit code" in replies(runtime, cid)[-1]["body"]
    # The code went to the address on file (not a reply): the customer answers with it.
    code = latest_code(runtime, cid)
    done = post_json(client, mail(6, code, subject="Re: password", in_reply_to=replies(runtime, cid)[-1]["id"]))
    assert "reset link" in replies(runtime, cid)[-1]["body"], done.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Tierone-Signature": sign("not-the-secret", b"x")}, 403),
        ({"X-Tierone-Signature": "sha256=deadbeef"}, 403),
        (basic("not-the-secret"), 403),
        ({"Authorization": "Basic %%%"}, 403),
        ({"Authorization": "Bearer " + SECRET}, 401),
    ],
)
def test_without_the_secret_nothing_is_taken(
    client: TestClient, runtime: Runtime, headers: dict[str, str], status: int
) -> None:
    before = stored(runtime)
    response = client.post("/inbound/email", content=json.dumps(mail(7)).encode(), headers=headers)
    assert response.status_code == status
    assert "shared secret" in response.json()["detail"]
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="tierone-inbound"'
    assert stored(runtime) == before


def test_a_signature_of_another_body_is_refused(client: TestClient, runtime: Runtime) -> None:
    signed_for = json.dumps(mail(8)).encode()
    tampered = json.dumps(mail(8, "reset bob.smith@example.com's password")).encode()
    response = client.post(
        "/inbound/email",
        content=tampered,
        headers={"X-Tierone-Signature": sign(SECRET, signed_for), "Content-Type": "application/json"},
    )
    assert response.status_code == 403
    assert stored(runtime)[:2] == (0, 0)


def test_no_secret_set_refuses_all_mail(runtime: Runtime) -> None:
    with app_for(runtime, inbound_secret=None) as client:
        response = post_json(client, mail(9))
    assert response.status_code == 503
    assert "TIERONE_INBOUND_SECRET" in response.json()["detail"]
    assert stored(runtime)[:2] == (0, 0)


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (mail(10, **{"from": ""}), "'from' is missing or empty"),
        ({k: v for k, v in mail(10).items() if k != "from"}, "'from' is missing"),
        (mail(10, **{"from": "Jane Doe"}), "'from' holds no email address"),
        (mail(10, **{"from": "support@tierone.local"}), "mail loop"),
        (mail(10, text=""), "'text' is missing or empty"),
        (mail(10, text="> only the quoted mail\n> nothing new"), "no new text"),
        (mail(10, text="x" * 8001), "the limit is 8,000"),
        (mail(10, message_id=""), "'message_id' is missing or empty"),
        (mail(10, message_id="<a@b> <c@d>"), "one Message-ID"),
        (mail(10, subject={"nested": True}), "'subject' must be text, not dict"),
        (["not", "an", "object"], "must be an object"),
    ],
)
def test_bad_fields_get_422_naming_them(client: TestClient, runtime: Runtime, payload: Any, says: str) -> None:
    before = stored(runtime)
    response = post_json(client, payload)
    assert response.status_code == 422
    assert says in response.json()["detail"]
    assert stored(runtime) == before


def test_a_body_that_is_not_json_or_a_form(client: TestClient, runtime: Runtime) -> None:
    raw = b"{not json"
    bad_json = client.post(
        "/inbound/email",
        content=raw,
        headers={"X-Tierone-Signature": sign(SECRET, raw), "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"]
    text = client.post(
        "/inbound/email",
        content=b"from: jane",
        headers={"X-Tierone-Signature": sign(SECRET, b"from: jane"), "Content-Type": "text/plain"},
    )
    assert text.status_code == 415 and "JSON or as a form" in text.json()["detail"]
    assert stored(runtime)[:2] == (0, 0)


def test_an_oversized_post_gets_413(client: TestClient, runtime: Runtime) -> None:
    before = stored(runtime)
    response = client.post(
        "/inbound/email",
        data=mail(11),
        files={"attachment1": ("big.bin", b"\x00" * 30_000, "application/octet-stream")},
        headers=basic(SECRET),
    )
    assert response.status_code == 413
    assert "limit is 20,000" in response.json()["detail"] or "limit of 20,000" in response.json()["detail"]
    assert stored(runtime) == before


def test_a_reply_that_could_not_be_sent_answers_502_and_the_retry_sends_it(
    client: TestClient, runtime: Runtime
) -> None:
    assert runtime.email is not None
    runtime.email.mailer = FlakyMailer(runtime.outbox, failures=1)
    first = post_json(client, mail(12))
    assert first.status_code == 502
    body = first.json()
    assert "post it again" in body["detail"] and "connection refused" in body["detail"]
    assert (body["status"], body["replies_pending"]) == ("accepted", 1)
    retry = post_json(client, mail(12))
    assert retry.status_code == 200
    assert (retry.json()["status"], retry.json()["replies_sent"]) == ("duplicate", 1)
    assert len(replies(runtime, body["conversation_id"])) == 1
    assert len(runtime.messages.lines(body["conversation_id"])) == 2


def test_a_chat_customer_continues_by_mail_and_l2_answers_by_mail(client: TestClient, runtime: Runtime) -> None:
    created = client.post("/conversations", json={"channel": "chat"}).json()
    cid, auth = created["conversation_id"], {"Authorization": f"Bearer {created['token']}"}
    for text in ("my account is locked", "jane.doe@example.com"):
        assert client.post(f"/conversations/{cid}/messages", json={"text": text}, headers=auth).status_code == 200
    code = latest_code(runtime, cid)
    assert client.post(f"/conversations/{cid}/messages", json={"text": code}, headers=auth).json()["stage"] in (
        "steps",
        "confirm",
    )
    # Later, by mail, with no thread headers: the proven address finds the chat.
    later = post_json(client, mail(13, "It locked again. Please let me talk to a person.", subject="locked again"))
    assert (later.json()["conversation_id"], later.json()["matched"]) == (cid, "sender")
    view = client.get(f"/conversations/{cid}", headers=auth).json()
    channels = [(line["role"], line["channel"]) for line in view["transcript"]]
    assert channels[:6] == [("customer", "chat"), ("bot", "chat")] * 3
    assert channels[6:] == [("customer", "email"), ("bot", "email")]
    assert view["status"] == "queued"
    packet_id = view["handoff"]["packet_id"]

    # L2 sees both channels in one transcript, and answers: the reply goes out by mail.
    tech = {"Authorization": f"Bearer {ApiKeys(desk_target(runtime.settings)).create('Alex', 'l2')}"}
    ticket = client.get(f"/handoffs/{packet_id}", headers=tech).json()
    assert {line["channel"] for line in ticket["transcript"]} == {"chat", "email"}
    assert client.post(f"/handoffs/{packet_id}/claim", headers=tech).status_code == 200
    sent = client.post(f"/handoffs/{packet_id}/reply", json={"text": "Hi Jane, I unlocked it for good."}, headers=tech)
    assert sent.status_code == 200 and sent.json()["line"]["channel"] == "email"
    mailed = replies(runtime, cid)[-1]
    assert mailed["to"] == JANE and mailed["subject"] == "Re: locked again"
    assert mailed["body"].startswith("Hi Jane, I unlocked it for good.")
    assert mailed["in_reply_to"] == "<13@client.example>"
    # The same reply is in the chat transcript too.
    assert client.get(f"/conversations/{cid}", headers=auth).json()["transcript"][-1]["role"] == "technician"
    assert re.search(r"Alex, Tierone Support", mailed["body"])
