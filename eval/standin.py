"""A deterministic local stand-in for a chat model: a scripted responder, not a language model.

It answers the LLM brain's three kinds of chat-completions request in the API's wire format, so
that recordings for the bundled suite can be made, and the LLM path benchmarked, with no network:

- the message reading (a forced ``MessageReading`` tool call): it scores the listed candidate
  runbooks with the same embedding index the offline brain uses and picks the best one, sure when
  the score clears the pack's ``min_score``, unsure between ``clarify_floor`` and ``min_score``,
  and "none" below; it flags a handful of obvious injection phrases; it guesses the language with
  a word list and cannot translate (``english`` stays empty);
- the reply rewording: it sends the draft back unchanged, tagged with the runbook id (streamed in
  three-word pieces when asked to stream);
- the handoff note (a forced ``HandoffNote`` tool call): a hypothesis from the runbook's title
  and L2 notes, and the customer's words as the summary.

Token counts in its ``usage`` are a quarter of the characters, not a real tokenizer's count.
Serve it over HTTP with ``python -m eval.standin --port 8011 [--delay-ms 50]``.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from agent.brains.language import guess_language
from agent.brains.offline import routing_query
from core.pack import Pack
from vectorstore.index import RunbookIndex

_PLACEHOLDER = re.compile(r"\[(?:email|phone|card|iban|ip|national_id|address|secret|code)\]")
_INJECTION = re.compile(
    r"ignore (?:all |any )?(?:previous|prior|above) instructions|system prompt|developer mode|you are now\b",
    re.IGNORECASE,
)
_CREATED = 1767225600


def _usage(request: str, answer: str) -> dict[str, int]:
    prompt, done = max(1, len(request) // 4), max(1, len(answer) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _completion(model: str, message: dict[str, Any], finish: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


class StandinModel:
    """Answers chat-completions requests like a model would, from a script and the routing index.

    Args:
        index: The routing index of the pack whose candidates the requests list.
        pack: The pack (its policy's routing thresholds, titles, L2 notes); default: the index's.
    """

    def __init__(self, index: RunbookIndex, pack: Pack | None = None) -> None:
        self._index = index
        self._pack = pack or index.pack

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """An httpx handler (``httpx.MockTransport(standin)``)."""
        status, content_type, content = self.answer(request.content)
        return httpx.Response(status, headers={"content-type": content_type}, content=content)

    def answer(self, raw: bytes) -> tuple[int, str, bytes]:
        """Status, content type and body for one request body."""
        try:
            payload = json.loads(raw)
            messages = payload["messages"]
            user = next(m["content"] for m in messages if m["role"] == "user")
        except (ValueError, KeyError, StopIteration, TypeError):
            error = {"error": {"message": "the stand-in reads chat-completions requests only", "type": "bad_request"}}
            return 400, "application/json", json.dumps(error).encode()
        model = str(payload.get("model", "standin"))
        tools = payload.get("tools") or []
        name = tools[0]["function"]["name"] if tools else ""
        if name == "MessageReading":
            return self._tool(model, name, self._read(json.loads(user)), raw)
        if name == "HandoffNote":
            return self._tool(model, name, self._note(json.loads(user)), raw)
        draft = json.loads(user)
        text = draft["draft"] + (f" [{draft['runbook_id']}]" if draft.get("runbook_id") else "")
        if payload.get("stream"):
            return 200, "text/event-stream", self._sse(model, text, raw)
        message = {"role": "assistant", "content": text, "refusal": None}
        return (
            200,
            "application/json",
            json.dumps(_completion(model, message, "stop", _usage(raw.decode(), text))).encode(),
        )

    def _tool(self, model: str, name: str, arguments: dict[str, Any], raw: bytes) -> tuple[int, str, bytes]:
        args = json.dumps(arguments, ensure_ascii=False)
        call = {"id": "call_standin", "type": "function", "function": {"name": name, "arguments": args}}
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
        body = _completion(model, message, "tool_calls", _usage(raw.decode(), args))
        return 200, "application/json", json.dumps(body).encode()

    def _read(self, data: dict[str, Any]) -> dict[str, Any]:
        message = str(data.get("customer_message", ""))
        earlier = str(data.get("earlier_messages", ""))
        listed = [c["id"] for c in data.get("candidate_runbooks", [])]
        query = routing_query(_PLACEHOLDER.sub(" ", f"{earlier} {message}")).strip()
        routing = self._pack.policy.routing
        pick, confidence = "none", 0.8
        if query and re.search(r"[^\W\d_]", query) and listed:
            scores = {c.runbook_id: c.score for c in self._index.query(query, len(self._pack.runbooks))}
            best = max(listed, key=lambda rid: scores.get(rid, -1.0))
            score = scores.get(best, 0.0)
            if score >= routing.min_score:
                pick, confidence = best, 0.9
            elif score >= routing.clarify_floor:
                pick, confidence = best, 0.5
        return {
            "runbook_id": pick,
            "confidence": confidence,
            "wants_human": False,
            "sentiment": 0.0,
            "affirm": False,
            "deny": False,
            "manipulation": bool(_INJECTION.search(message)),
            "language": guess_language(message),
            "english": "",
        }

    def _note(self, data: dict[str, Any]) -> dict[str, Any]:
        runbook = data.get("runbook") or {}
        problem = " ".join(str(data.get("problem", "")).split())[:200]
        if runbook:
            notes = str(runbook.get("notes_for_l2") or "").split(". ")[0].strip().rstrip(".")
            hypothesis = f"Most likely {str(runbook.get('title', '')).lower()} ({runbook.get('id')})."
            if notes:
                hypothesis += f" Check first: {notes}."
        else:
            hypothesis = "No runbook matched; read the customer's own words first."
        return {"hypothesis": hypothesis, "summary": f"The customer wrote: {problem}"}

    def _sse(self, model: str, text: str, raw: bytes) -> bytes:
        base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": _CREATED, "model": model}
        words = text.split(" ")
        pieces = [" ".join(words[i : i + 3]) + (" " if i + 3 < len(words) else "") for i in range(0, len(words), 3)]
        chunks: list[dict[str, Any]] = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        ]
        chunks += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({**base, "choices": [], "usage": _usage(raw.decode(), text)})
        return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


def serve(standin: StandinModel, port: int, delay_ms: float = 0.0) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 answering ``POST .../chat/completions`` after ``delay_ms``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if delay_ms:
                time.sleep(delay_ms / 1000)
            if not self.path.endswith("/chat/completions"):
                status, content_type, body = 404, "application/json", b'{"error": {"message": "not found"}}'
            else:
                status, content_type, body = standin.answer(raw)
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    """Serve the stand-in for a runbook pack until interrupted."""
    from core.pack import load_pack
    from core.settings import BUNDLED_RUNBOOKS
    from vectorstore.embeddings import MiniLMEmbedder
    from vectorstore.index import open_client

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--runbooks", type=Path, default=BUNDLED_RUNBOOKS)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait this long before each answer")
    args = parser.parse_args()
    index = RunbookIndex(open_client(None), load_pack(args.runbooks), MiniLMEmbedder())
    index.sync()
    server = serve(StandinModel(index), args.port, args.delay_ms)
    print(f"stand-in model on http://127.0.0.1:{args.port}/v1 (not a language model)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
