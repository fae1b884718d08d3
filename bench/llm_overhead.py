"""Per-turn overhead of the LLM brain around the model, against a mock endpoint on 127.0.0.1.

A tiny OpenAI-compatible server in this process answers every chat-completions request after a
fixed delay (default 50 ms): the message reading with the first listed candidate, rewordings with
the draft, each sentence opening with "So, ": the meaning check passes them but finds no sentence
of the draft repeated word for word, so it embeds every sentence, as it would a real rewording.
Rewordings are streamed (the brain asks for every rewording as a stream) one word an event, every
``--word-ms`` (default 10 ms: 100 words a second); ``--word-ms 0`` sends them all at once, the
worst case for the checks, which then cannot run while the model writes. It notes when it took
each request and when it finished answering, on the same clock as the turns. Per turn:

    overhead = turn time - time the server spent on that turn's requests (its delay included)

so the overhead holds everything Tierone adds: embedding and Chroma routing, the graph and its
SQLite checkpoints, langchain-openai and the openai client, the loopback HTTP, parsing, checks.
On a shared machine wall time swells with other processes' load; the CPU time per turn is
printed as well, which load changes far less.
The streaming run reports the time to the first delta, and that time less the moment the server
sent its first content chunk. ``--meaning both`` plays every conversation with the meaning check
on and off in turn (the order alternating by round), for a before/after under the same load.

    .venv/bin/python bench/llm_overhead.py [--rounds 10] [--delay-ms 50] [--word-ms 10] [--meaning on|off|both]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import tempfile
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from agent.brains.llm import LLMBrain
from agent.brains.streaming import Delta
from app.runtime import Runtime, open_runtime
from core.clock import utc_now
from core.settings import BUNDLED_RUNBOOKS, Settings
from vectorstore.embeddings import MiniLMEmbedder

SCRIPTS = [
    ["I forgot my password", "jane.doe@example.com", "{otp}", "yes"],
    ["my account is locked after too many tries", "bob.smith@example.com", "{otp}", "no", "no", "yes"],
    ["the vpn disconnects every few minutes", "no", "no", "no"],
    ["I clicked a link in a strange email and typed my password"],
    ["can you book me a flight to Lisbon"],
    ["hello", "outlook stopped syncing on my phone", "yes", "thanks"],
    ["is email down?", "yes"],
    ["printer on floor 3 shows offline", "still no", "let me talk to a human", "hello?"],
]


# The start of every sentence of a draft (where the meaning check cuts it, too).
_REWORD = re.compile(r"(?:^|(?<=[.!?] )|(?<=[.!?]\) )|(?<=\n))(?=\S)")


class MockModel:
    """Canned chat-completions answers after a fixed delay; logs (start, first chunk, end) per request."""

    def __init__(self, delay_s: float, word_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.word_s = word_s
        self.log: list[tuple[float, float, float]] = []
        self.streamed: list[bool] = []
        self.inflight = 0
        self._lock = threading.Lock()

    def settled(self) -> None:
        """Wait until every request taken so far is logged (a request ends in the server's thread)."""
        while self.inflight:
            time.sleep(0.001)

    def answer(self, raw: bytes) -> tuple[str, list[bytes]]:
        """Content type and body parts for one request body."""
        payload = json.loads(raw)
        user = json.loads(payload["messages"][-1]["content"])
        base = {"id": "chatcmpl-bench", "created": 1767225600, "model": payload["model"]}
        usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": 40, "total_tokens": len(raw) // 4 + 40}
        if payload.get("tools"):
            name = payload["tools"][0]["function"]["name"]
            if name == "MessageReading":
                listed = [c["id"] for c in user.get("candidate_runbooks", [])]
                args: dict[str, Any] = {
                    "runbook_id": listed[0] if listed else "none",
                    "confidence": 0.5,
                    "wants_human": False,
                    "sentiment": 0.0,
                    "affirm": False,
                    "deny": False,
                    "manipulation": False,
                    "language": "en",
                    "english": "",
                }
            else:
                args = {"hypothesis": "Check the account first.", "summary": "The customer needs help."}
            call = {"id": "call_b", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            body = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return "application/json", [json.dumps(body).encode()]
        text = _REWORD.sub("So, ", user["draft"])
        if not payload.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            body = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return "application/json", [json.dumps(body).encode()]
        chunk = {**base, "object": "chat.completion.chunk"}
        words = re.findall(r"\S+\s*", text)
        events = [{**chunk, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        events.append({**chunk, "choices": [], "usage": usage})
        return "text/event-stream", [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]

    def serve(self) -> ThreadingHTTPServer:
        """Start serving on a free port of 127.0.0.1, in a daemon thread."""
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Without it, Nagle's algorithm and delayed ACKs stall small loopback writes by ~40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                start = time.perf_counter()
                with model._lock:
                    model.inflight += 1
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(model.delay_s)
                content_type, parts = model.answer(raw)
                body = b"".join(parts)
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                first = time.perf_counter()
                try:
                    if content_type == "text/event-stream" and model.word_s:
                        for i, part in enumerate(parts):  # one word per event, at the model's pace
                            if i:
                                time.sleep(model.word_s)
                            self.wfile.write(part)
                            self.wfile.flush()
                    else:
                        self.wfile.write(body)
                        self.wfile.flush()
                except OSError:  # the client stopped reading (a refused reply): the model's time ends here
                    pass
                with model._lock:
                    model.log.append((start, first, time.perf_counter()))
                    model.streamed.append(content_type == "text/event-stream")
                    model.inflight -= 1

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class Days:
    """The runtime's clock, four days later at each conversation: every one is a first contact.

    Played again and again within minutes, the scripts would otherwise stop measuring LLM turns:
    the same verified address back about the same runbook is a repeat contact, handed off at once
    (policy.yaml ``recontact``), five conversations routed to one runbook open an incident, and
    per-account limits hold one-time codes back.
    """

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        """Now, moved on."""
        return utc_now() + self.offset

    def next_conversation(self) -> None:
        """Move the clock past every window of the policy."""
        self.offset += timedelta(days=4)


def play(runtime: Runtime, model: MockModel, script: list[str], stream: bool) -> list[dict[str, float]]:
    """One conversation; per turn: wall time, model time, first-delta time (ms)."""
    clock = runtime.resolver.deps.clock
    if isinstance(clock, Days):
        clock.next_conversation()
    cid = runtime.resolver.start("api")
    out = []
    for turn in script:
        text = turn
        if turn == "{otp}":
            # Per-account send limits may have held the code back: a wrong code is a turn all the same.
            mail = runtime.outbox.messages(cid)
            found = re.search(r"\d{6}", mail[-1]["body"]) if mail else None
            text = found.group(0) if found else "000000"
        first: list[float] = []

        def on_delta(delta: Delta, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter())

        seen = len(model.log)
        cpu = time.process_time()
        started = time.perf_counter()
        runtime.resolver.send(cid, text, on_delta=on_delta if stream else None)
        ended = time.perf_counter()
        cpu = time.process_time() - cpu
        model.settled()
        calls = model.log[seen:]
        streamed = [f for (_, f, _), was in zip(calls, model.streamed[seen:], strict=True) if was]
        row = {
            "turn": (ended - started) * 1000,
            "model": sum(e - s for s, _, e in calls) * 1000,
            "calls": len(calls),
            "cpu": cpu * 1000,
        }
        if stream and first:
            row["first_delta"] = (first[0] - started) * 1000
            if streamed:  # a reworded reply: from the server's first bytes to the client's first delta
                row["after_first_chunk"] = (first[0] - streamed[0]) * 1000
        out.append(row)
    return out


def pct(values: list[float]) -> str:
    """p50 and p95 of a list of milliseconds."""
    a = np.array(values)
    return f"p50 {np.percentile(a, 50):.1f} ms, p95 {np.percentile(a, 95):.1f} ms (n={len(a)})"


class Refusals(logging.Handler):
    """Counts the LLM brain's meaning-check refusals (the mock's rewordings should have none)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count one record when it is a meaning-check refusal."""
        self.count += "meaning" in record.getMessage()


def report(label: str, rows: list[dict[str, float]], stream: bool, delay_ms: float) -> None:
    """Print one mode's figures."""
    with_model = [r for r in rows if r["calls"]]
    print(f"{label}: {len(rows)} turns, {sum(r['calls'] for r in rows)} model calls of {delay_ms:.0f} ms")
    print(f"  turn time:           {pct([r['turn'] for r in rows])}")
    print(f"  overhead (turn-model): {pct([r['turn'] - r['model'] for r in rows])}")
    print(f"  overhead, turns that called the model: {pct([r['turn'] - r['model'] for r in with_model])}")
    print(f"  CPU time of this process per turn (mock server's included): {pct([r['cpu'] for r in rows])}")
    if stream:
        timed = [r for r in rows if "first_delta" in r]
        print(f"  time to first delta: {pct([r['first_delta'] for r in timed])}")
        reworded = [r["after_first_chunk"] for r in timed if "after_first_chunk" in r]
        print(f"  first delta after the reply's first bytes: {pct(reworded)}")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="times each script is played, per mode")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the mock model's delay per request")
    parser.add_argument("--word-ms", type=float, default=10.0, help="the mock's time per word of a rewording")
    parser.add_argument("--meaning", choices=["on", "off", "both"], default="on", help="the meaning check")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    model = MockModel(args.delay_ms / 1000, args.word_ms / 1000)
    server = model.serve()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    refusals = Refusals()
    logging.getLogger("agent.brains.llm").addHandler(refusals)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), runbooks=BUNDLED_RUNBOOKS, brain="llm", llm_base_url=base_url, llm_api_key="bench"
        )
        runtime = open_runtime(settings, embedder=MiniLMEmbedder(cache_size=0), clock=Days())
        brain = runtime.resolver.deps.brain
        assert isinstance(brain, LLMBrain)
        check = brain.meaning
        modes = {"on": [True], "off": [False], "both": [True, False]}[args.meaning]
        for script in SCRIPTS:  # warm-up: first-call costs (ONNX Runtime, SQLite pages, HTTP client)
            play(runtime, model, script, stream=False)
            play(runtime, model, script, stream=True)
        for stream in (False, True):
            rows: dict[bool, list[dict[str, float]]] = {on: [] for on in modes}
            for round_ in range(args.rounds):
                for script in SCRIPTS:
                    # Interleaved, the order alternating by round: both modes see the same load.
                    for on in modes if round_ % 2 == 0 else modes[::-1]:
                        brain.meaning = check if on else None
                        rows[on] += play(runtime, model, script, stream)
            for on in modes:
                label = ("streamed" if stream else "plain") + (", meaning check " + ("on" if on else "off"))
                report(label, rows[on], stream, args.delay_ms)
    print(f"meaning-check refusals: {refusals.count}")
    server.shutdown()


if __name__ == "__main__":
    main()
