"""Two messages for one conversation at once: processed one after the other, both answered, neither lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from agent.resolver import Conversations
from app.runtime import Runtime
from core.redact import redact
from server import create_app
from tests.net import free_port


class Gate(Conversations):
    """The conversation register, with a barrier every armed request must reach before any goes on.

    ``Resolver.send`` reads the register before it takes the conversation's lock, so once the
    barrier breaks, every request is inside the server's send at the same time.
    """

    def __init__(self, inner: Conversations) -> None:
        super().__init__(inner.target)
        self.barrier: threading.Barrier | None = None

    def get(self, conversation_id: str) -> dict[str, Any]:
        record = super().get(conversation_id)
        barrier = self.barrier
        if barrier is not None:
            barrier.wait(timeout=30)
        return record


class Watch:
    """Wraps the compiled graph: the order turns ran in, how many ran at once, and an optional barrier."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.order: list[str] = []
        self.running = 0
        self.most = 0
        self.barrier: threading.Barrier | None = None
        self._guard = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def invoke(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        with self._guard:
            self.running += 1
            self.most = max(self.most, self.running)
            if inputs is not None:
                self.order.append(inputs["inbox"]["text"])
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=30)
            return self.inner.invoke(inputs, *args, **kwargs)
        finally:
            with self._guard:
                self.running -= 1


@pytest.fixture
def served(runtime: Runtime) -> Iterator[tuple[str, Gate, Watch]]:
    gate = Gate(runtime.resolver.conversations)
    runtime.resolver.conversations = gate
    watch = Watch(runtime.resolver.graph)
    runtime.resolver.graph = watch
    settings = runtime.settings.model_copy(update={"rate_conversation_per_minute": 0.0, "rate_ip_per_minute": 0.0})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # uvicorn sets `started` once it listens; polled so that a failed start-up ends the test instead of hanging it.
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}", gate, watch
    server.should_exit = True
    thread.join(timeout=30)


def open_conversation(url: str) -> tuple[str, dict[str, str]]:
    body = httpx.post(f"{url}/conversations", json={"channel": "chat"}).json()
    return body["conversation_id"], {"Authorization": f"Bearer {body['token']}"}


def post_together(url: str, cid: str, headers: dict[str, str], texts: list[str], gate: Gate) -> list[httpx.Response]:
    """Post every text at once from its own thread; the gate holds them until all are inside the server."""
    start = threading.Barrier(len(texts))
    gate.barrier = threading.Barrier(len(texts))
    responses: list[httpx.Response | None] = [None] * len(texts)

    def post(i: int) -> None:
        start.wait(timeout=30)
        responses[i] = httpx.post(
            f"{url}/conversations/{cid}/messages", json={"text": texts[i]}, headers=headers, timeout=60
        )

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    gate.barrier = None
    assert all(r is not None for r in responses), "a request did not come back"
    return [r for r in responses if r is not None]


def check_pairs(transcript: list[dict[str, Any]], texts: list[str], responses: list[httpx.Response]) -> None:
    """Each message is in the transcript once, followed by exactly the replies its own request returned."""
    assert transcript and transcript[0]["role"] == "customer"
    turns: list[tuple[str, list[str]]] = []
    for line in transcript:
        if line["role"] == "customer":
            turns.append((line["text"], []))
        else:
            turns[-1][1].append(line["text"])
    assert sorted(text for text, _ in turns) == sorted(texts)
    answered = dict(turns)
    for text, response in zip(texts, responses, strict=True):
        assert response.status_code == 200, response.text
        replies = response.json()["replies"]
        assert replies, f"{text!r} got no reply"
        # The transcript keeps replies as stored, PII-redacted (a reply may quote an example address).
        assert answered[text] == [redact(r) for r in replies], f"{text!r} was answered with another turn's replies"


def test_two_messages_at_once_are_played_in_turn_and_both_answered(served: tuple[str, Gate, Watch]) -> None:
    url, gate, watch = served
    cid, headers = open_conversation(url)
    texts = ["my account is locked", "also, is email down right now?"]
    responses = post_together(url, cid, headers, texts, gate)

    assert watch.most == 1  # never two turns of one conversation at once
    transcript = httpx.get(f"{url}/conversations/{cid}", headers=headers).json()["transcript"]
    check_pairs(transcript, texts, responses)
    # In order: the transcript holds them in the order the turns ran, numbered without gaps.
    assert [line["text"] for line in transcript if line["role"] == "customer"] == watch.order
    assert [line["seq"] for line in transcript] == list(range(1, len(transcript) + 1))


def test_many_messages_at_once_in_one_conversation_lose_nothing(served: tuple[str, Gate, Watch]) -> None:
    url, gate, watch = served
    cid, headers = open_conversation(url)
    texts = [
        "is email down?",
        "my vpn keeps dropping",
        "I forgot my password",
        "printer offline",
        "hello",
        "teams crashes",
    ]
    responses = post_together(url, cid, headers, texts, gate)
    assert watch.most == 1
    transcript = httpx.get(f"{url}/conversations/{cid}", headers=headers).json()["transcript"]
    check_pairs(transcript, texts, responses)
    assert [line["text"] for line in transcript if line["role"] == "customer"] == watch.order


def test_messages_to_different_conversations_run_side_by_side(served: tuple[str, Gate, Watch]) -> None:
    url, gate, watch = served
    (a, ha), (b, hb) = open_conversation(url), open_conversation(url)
    # Both turns must be inside the graph at once to pass this barrier: one lock for all would time it out.
    watch.barrier = threading.Barrier(2)
    results: dict[str, httpx.Response] = {}

    def post(cid: str, headers: dict[str, str], text: str) -> None:
        results[cid] = httpx.post(
            f"{url}/conversations/{cid}/messages", json={"text": text}, headers=headers, timeout=60
        )

    threads = [
        threading.Thread(target=post, args=(a, ha, "I forgot my password")),
        threading.Thread(target=post, args=(b, hb, "my account is locked")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    watch.barrier = None
    assert watch.most == 2
    assert results[a].json()["runbook_id"] == "password-reset"
    assert results[b].json()["runbook_id"] == "account-lockout"


def test_the_lock_map_holds_only_conversations_in_use(runtime: Runtime) -> None:
    # One lock per conversation ever seen would grow without bound in a long-running server.
    cids = [runtime.resolver.start() for _ in range(3)]
    errors: list[BaseException] = []

    def talk(cid: str) -> None:
        try:
            runtime.resolver.send(cid, "is email down right now?")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=talk, args=(cid,)) for cid in cids for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert errors == []
    assert runtime.resolver._locks == {}
    assert all(len(runtime.resolver.view(cid)["transcript"]) >= 6 for cid in cids)
