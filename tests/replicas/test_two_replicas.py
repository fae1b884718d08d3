"""Two replicas serving the same conversations: alternating, at once, SSE across them, the desk across them."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.servers import CONVERSATION_BURST, Pair, open_conversation, say, transcript

pytestmark = [
    pytest.mark.replicas,
    pytest.mark.model,
    pytest.mark.postgres,
    pytest.mark.chroma_server,
    pytest.mark.slow,
]


def customer_texts(lines: list[dict[str, Any]]) -> list[str]:
    return [line["text"] for line in lines if line["role"] == "customer"]


def assert_ordered(lines: list[dict[str, Any]]) -> None:
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


def test_a_conversation_alternating_between_replicas_keeps_its_whole_transcript_in_order(
    replica_pair: Pair,
) -> None:
    customer = open_conversation(replica_pair.a)
    sent = [
        "hello, my laptop wifi keeps dropping",
        "it happens every few minutes",
        "I already restarted the laptop",
        "it is a Windows laptop",
        "thanks for the help",
    ]
    replies = 0
    for i, text in enumerate(sent):
        replica = (replica_pair.a, replica_pair.b)[i % 2]
        answer = say(replica, customer, text)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replies"], answer.text
        replies += len(answer.json()["replies"])
    for replica in (replica_pair.a, replica_pair.b):
        lines = transcript(replica, customer)
        assert customer_texts(lines) == sent
        assert_ordered(lines)
        # Every customer line is followed by the bot's replies to it, before the next customer line.
        assert lines[0]["role"] == "customer"
        assert sum(1 for line in lines if line["role"] == "bot") >= len(sent)


def test_two_messages_sent_to_both_replicas_at_once_are_serialised(replica_pair: Pair) -> None:
    customer = open_conversation(replica_pair.b)
    assert say(replica_pair.b, customer, "my account is locked").status_code == 200
    texts = ("the vpn will not connect either", "and outlook asks for my password")
    answers: dict[int, httpx.Response] = {}
    start = threading.Barrier(2)

    def send(i: int) -> None:
        start.wait()
        answers[i] = say((replica_pair.a, replica_pair.b)[i], customer, texts[i], client_message_id=f"race-{i}")

    threads = [threading.Thread(target=send, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(answers) == [0, 1]
    for answer in answers.values():
        assert answer.status_code == 200, answer.text
        assert answer.json()["replies"]
    for replica in (replica_pair.a, replica_pair.b):
        lines = transcript(replica, customer)
        assert_ordered(lines)
        said = customer_texts(lines)
        # Each message exactly once, one after the other (whichever came first), none lost or doubled.
        assert said[0] == "my account is locked"
        assert sorted(said[1:]) == sorted(texts), said
        # Serialised: the bot answered the first message before the second one was read.
        first, second = (lines.index(next(x for x in lines if x["text"] == t)) for t in said[1:])
        assert any(x["role"] == "bot" for x in lines[first + 1 : second]), lines
    # The register keeps one answer per client message id.
    rows = replica_pair.query(
        "SELECT count(*) FROM client_messages WHERE conversation_id = %s", customer.conversation_id
    )
    assert rows == [(2,)]


def read_sse(
    url: str, headers: dict[str, str], opened: threading.Event, found: threading.Event, want: str, seen: list[Any]
) -> None:
    with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(120, read=120)) as response:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
                if event == "status":  # sent once the stream has subscribed and read the history
                    opened.set()
            elif line.startswith("data: ") and event == "line":
                seen.append(json.loads(line[6:]))
                if seen[-1]["text"] == want:
                    found.set()
                    return


def test_an_sse_client_on_one_replica_sees_lines_posted_through_the_other(replica_pair: Pair) -> None:
    customer = open_conversation(replica_pair.a)
    assert say(replica_pair.a, customer, "hi there").status_code == 200
    history = transcript(replica_pair.a, customer)
    opened, found = threading.Event(), threading.Event()
    seen: list[dict[str, Any]] = []
    want = "my printer on floor 3 is offline"
    url = f"{replica_pair.a.url}/conversations/{customer.conversation_id}/events?after={history[-1]['seq']}"
    reader = threading.Thread(target=read_sse, args=(url, customer.auth, opened, found, want, seen), daemon=True)
    reader.start()
    # The stream is open (it sent its status) before the line is posted on the other replica: the
    # line reaches it live, woken by PostgreSQL's NOTIFY, not in the history it read at the start.
    assert opened.wait(timeout=60), "replica A's stream did not open"
    answer = say(replica_pair.b, customer, want)
    assert answer.status_code == 200, answer.text
    assert found.wait(timeout=60), f"replica A's stream never showed the line posted on B: {seen}"
    assert [line["text"] for line in seen] == [want]


def test_a_technician_claims_on_one_replica_and_replies_on_the_other(replica_pair: Pair) -> None:
    key = {"Authorization": f"Bearer {replica_pair.technician_key('Rita Replica')}"}
    customer = open_conversation(replica_pair.b)
    answer = say(replica_pair.b, customer, "I want to talk to a human please")
    assert answer.status_code == 200, answer.text
    packet_id = answer.json()["handoff"]["packet_id"]
    queue = httpx.get(f"{replica_pair.a.url}/handoffs", headers=key, timeout=60)
    assert packet_id in [t["packet_id"] for t in queue.json()], queue.text

    claimed = httpx.post(f"{replica_pair.a.url}/handoffs/{packet_id}/claim", headers=key, timeout=60)
    assert claimed.status_code == 200, claimed.text
    # Replica B sees the claim: the conversation is the technician's there too.
    ticket = httpx.get(f"{replica_pair.b.url}/handoffs/{packet_id}", headers=key, timeout=60)
    assert ticket.status_code == 200 and ticket.json()["status"] == "claimed", ticket.text
    text = "Hi, I am Rita from IT. I can help with that."
    replied = httpx.post(
        f"{replica_pair.b.url}/handoffs/{packet_id}/reply", json={"text": text}, headers=key, timeout=60
    )
    assert replied.status_code == 200, replied.text
    for replica in (replica_pair.a, replica_pair.b):
        lines = transcript(replica, customer)
        assert [(x["role"], x["text"]) for x in lines if x["role"] == "technician"] == [("technician", text)]
    # The customer, now talking to the technician through A, reaches the desk, not the bot.
    after = say(replica_pair.a, customer, "thanks Rita")
    assert after.status_code == 200 and after.json()["status"] == "claimed", after.text


def test_two_replicas_together_allow_one_burst_of_a_conversations_messages(replica_pair: Pair) -> None:
    customer = open_conversation(replica_pair.a)
    statuses = []
    for i in range(CONVERSATION_BURST + 2):
        replica = (replica_pair.a, replica_pair.b)[i % 2]
        statuses.append(say(replica, customer, f"still no wifi, try {i}").status_code)
    # One bucket for the conversation on PostgreSQL: the burst once, not once per replica.
    assert statuses == [200] * CONVERSATION_BURST + [429, 429], statuses
