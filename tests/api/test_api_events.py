"""The SSE stream against a real uvicorn on 127.0.0.1: history then live lines, status changes, tabs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.runtime import Runtime
from server import create_app


class LiveServer:
    """The app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, runtime: Runtime, **settings: Any) -> None:
        app = create_app(runtime.settings.model_copy(update=settings), runtime=runtime)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        # Waits for a condition (the server says it started), bounded; not a sleep standing in for one.
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


def sse(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """Parse a text/event-stream into (event, data) pairs; comments come as ("comment", text)."""
    event, data, event_id = "message", [], None
    for raw in response.iter_lines():
        if raw == "":
            if data:
                yield event, {"id": event_id, **json.loads("\n".join(data))}
            event, data, event_id = "message", [], None
        elif raw.startswith(":"):
            yield "comment", raw[1:].strip()
        elif raw.startswith("event:"):
            event = raw[6:].strip()
        elif raw.startswith("data:"):
            data.append(raw[5:].strip())
        elif raw.startswith("id:"):
            event_id = raw[3:].strip()


def until(stream: Iterator[tuple[str, Any]], done: Any) -> list[tuple[str, Any]]:
    """Read events until ``done(event, data)`` holds (the client's read timeout bounds the wait)."""
    seen = []
    for event, data in stream:
        seen.append((event, data))
        if done(event, data):
            return seen
    raise AssertionError(f"the stream ended first: {seen}")


@pytest.fixture
def live(runtime: Runtime) -> Iterator[LiveServer]:
    with LiveServer(runtime, sse_ping_seconds=30) as server:
        yield server


def open_handed_off(http: httpx.Client) -> tuple[str, str, str]:
    created = http.post("/conversations", json={"channel": "chat"}).json()
    cid, token = created["conversation_id"], created["token"]
    turn = http.post(
        f"/conversations/{cid}/messages",
        json={"text": "let me talk to a human"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    return cid, token, turn["handoff"]["packet_id"]


def test_history_then_live_technician_reply_in_every_tab(live: LiveServer, runtime: Runtime) -> None:
    key = {"Authorization": f"Bearer {ApiKeys(runtime.settings.desk_db).create('Alex', 'l2')}"}
    timeout = httpx.Timeout(15.0)
    with httpx.Client(base_url=live.url, timeout=timeout) as http:
        cid, token, packet_id = open_handed_off(http)
        url = f"/conversations/{cid}/events"
        with (
            http.stream("GET", url, params={"token": token}) as tab1,
            http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as tab2,
        ):
            assert tab1.status_code == 200 and tab1.headers["content-type"].startswith("text/event-stream")
            streams = [sse(tab1), sse(tab2)]
            for stream in streams:
                history = until(stream, lambda e, d: e == "status")
                lines = [d for e, d in history if e == "line"]
                assert [(d["seq"], d["role"]) for d in lines] == [(1, "customer"), (2, "bot")]
                assert lines[0]["text"] == "let me talk to a human" and lines[0]["id"] == "1"
                status = history[-1][1]
                assert status["status"] == "queued" and status["technician"] is None
                assert status["handoff"]["packet_id"] == packet_id and status["handoff"]["first_response_due"]
            # Both tabs are subscribed (they have sent their history); now the technician acts.
            assert http.post(f"/handoffs/{packet_id}/claim", headers=key).status_code == 200
            reply = http.post(f"/handoffs/{packet_id}/reply", json={"text": "Hello, Alex here."}, headers=key)
            assert reply.status_code == 200
            for stream in streams:
                live_events = until(stream, lambda e, d: e == "line" and d["role"] == "technician")
                statuses = [d for e, d in live_events if e == "status"]
                assert [(s["status"], s["technician"]) for s in statuses] == [("claimed", "Alex")]
                lines = [d for e, d in live_events if e == "line"]
                assert [(d["seq"], d["role"]) for d in lines] == [(3, "system"), (4, "technician")]
                assert lines[-1]["text"] == "Hello, Alex here." and lines[-1]["author"] == "Alex"
            # The customer writes: the bot is silent, and the line streams to every tab.
            said = http.post(
                f"/conversations/{cid}/messages",
                json={"text": "thanks, it says error 5"},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            assert said["replies"] == [] and said["status"] == "claimed"
            for stream in streams:
                more = until(stream, lambda e, d: e == "line" and d["role"] == "customer")
                assert [(d["seq"], d["text"]) for e, d in more if e == "line"] == [(5, "thanks, it says error 5")]


def test_after_and_last_event_id_skip_what_the_client_has(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=httpx.Timeout(15.0)) as http:
        cid, token, _ = open_handed_off(http)
        url = f"/conversations/{cid}/events"
        with http.stream("GET", url, params={"token": token, "after": 1}) as resumed:
            events = until(sse(resumed), lambda e, d: e == "status")
            assert [d["seq"] for e, d in events if e == "line"] == [2]
        with http.stream("GET", url, params={"token": token}, headers={"Last-Event-ID": "2"}) as reconnected:
            events = until(sse(reconnected), lambda e, d: e == "status")
            assert [e for e, _ in events] == ["status"]


def test_a_quiet_stream_sends_pings(runtime: Runtime) -> None:
    with (
        LiveServer(runtime, sse_ping_seconds=0.05) as server,
        httpx.Client(base_url=server.url, timeout=httpx.Timeout(15.0)) as http,
    ):
        created = http.post("/conversations", json={"channel": "chat"}).json()
        url = f"/conversations/{created['conversation_id']}/events"
        with http.stream("GET", url, params={"token": created["token"]}) as stream:
            events = until(sse(stream), lambda e, d: e == "comment" and d == "ping")
            assert events[0] == ("status", {"id": None, "status": "bot", "handoff": None, "technician": None})


def test_the_stream_refuses_strangers(runtime: Runtime) -> None:
    with TestClient(create_app(runtime.settings, runtime=runtime)) as client:
        mine = client.post("/conversations").json()
        other = client.post("/conversations").json()
        url = f"/conversations/{mine['conversation_id']}/events"
        assert client.get(url).status_code == 401
        wrong = client.get(url, params={"token": other["token"]})
        assert wrong.status_code == 404
        unknown = client.get("/conversations/c_nope/events", params={"token": mine["token"]})
        assert unknown.status_code == 404 and wrong.json()["detail"].replace(mine["conversation_id"], "X") == (
            unknown.json()["detail"].replace("c_nope", "X")
        )
        assert client.get(url, params={"token": mine["token"], "after": -1}).status_code == 422
        assert client.get(url, params={"token": mine["token"], "after": 10**30}).status_code == 422


def test_replies_stream_as_deltas_to_open_streams(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=httpx.Timeout(15.0)) as http:
        created = http.post("/conversations", json={"channel": "chat"}).json()
        cid, token = created["conversation_id"], created["token"]
        with http.stream("GET", f"/conversations/{cid}/events", params={"token": token}) as response:
            stream = sse(response)
            until(stream, lambda e, d: e == "status")
            turn = http.post(
                f"/conversations/{cid}/messages",
                json={"text": "I forgot my password"},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            events = until(stream, lambda e, d: e == "line" and d["role"] == "bot")
            deltas = [d for e, d in events if e == "delta"]
            assert deltas and "".join(d["text"] for d in deltas) == turn["replies"][0]
            assert [e for e, _ in events].index("delta") < [e for e, _ in events].index("line")
