"""Chat-completions responses in the real wire format, for respx mocks of the OpenAI API."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

URL = "https://api.openai.com/v1/chat/completions"


def completion(message: dict[str, Any], finish_reason: str, prompt: int = 120, done: int = 30) -> dict[str, Any]:
    return {
        "id": "chatcmpl-wire123",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "gpt-4.1-mini-2025-04-14",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done},
    }


def tool_call(arguments: str, name: str = "MessageReading", prompt: int = 120, done: int = 30) -> httpx.Response:
    message = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": "call_wire1", "type": "function", "function": {"name": name, "arguments": arguments}}],
    }
    return httpx.Response(200, json=completion(message, "tool_calls", prompt, done))


def reading(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "runbook_id": "password-reset",
        "confidence": 0.93,
        "wants_human": False,
        "sentiment": 0.0,
        "affirm": False,
        "deny": False,
        "manipulation": False,
        "language": "en",
        "english": "",
    }
    fields.update(overrides)
    return json.dumps(fields)


def note(hypothesis: str = "Likely an expired password.", summary: str = "Cannot sign in.") -> httpx.Response:
    return tool_call(json.dumps({"hypothesis": hypothesis, "summary": summary}), name="HandoffNote", prompt=300)


def text_reply(content: str, prompt: int = 200, done: int = 40) -> httpx.Response:
    """A reworded reply, streamed a few words at a time: the brain reads every rewording as a stream."""
    words = re.findall(r"\S+\s*", content)
    pieces = ["".join(words[i : i + 3]) for i in range(0, len(words), 3)] or [content]
    return sse(pieces, prompt=prompt, done=done)


def sse_body(pieces: list[str], prompt: int = 210, done: int = 33, finish: str = "stop") -> bytes:
    """A streamed chat completion: role chunk, one chunk per piece, finish chunk, usage chunk, [DONE]."""
    base = {"id": "chatcmpl-stream1", "object": "chat.completion.chunk", "created": 1767225600, "model": "gpt-4.1-mini"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, finish))
    usage = {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}
    events.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def sse(pieces: list[str], **kwargs: Any) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=sse_body(pieces, **kwargs))


def body(request: httpx.Request) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(request.content)
    return data


def kind(request: httpx.Request) -> str:
    """Which of the brain's calls a request is: understand, hypothesis or reply (always streamed)."""
    data = body(request)
    if data.get("tools"):
        return "understand" if data["tools"][0]["function"]["name"] == "MessageReading" else "hypothesis"
    return "reply"
