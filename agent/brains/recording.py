"""Recorded chat-completions exchanges: replay them without a network, or record them from one.

An httpx transport under the OpenAI client, so everything above it (langchain-openai, the openai
SDK, retries, parsing) runs exactly as against a live endpoint. Each exchange is keyed by a hash
of the request body; a file holds one JSON object per line::

    {"key": "<sha256>", "status": 200, "content_type": "application/json", "body": "<response text>"}

In replay mode a request with no recording is answered 404 in the API's error format (the brain
then falls back to the offline brain) and counted in ``misses``, so a test can insist on none.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import httpx

from core.errors import TieroneError

log = logging.getLogger(__name__)


class RecordingError(TieroneError):
    """A recordings file cannot be read; the message names the line."""


def request_key(body: bytes) -> str:
    """The key of a request: a hash of its JSON body with keys sorted (formatting does not count)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, UnicodeDecodeError):
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def load_recordings(path: Path) -> dict[str, dict[str, Any]]:
    """Read a recordings file; RecordingError names the first bad line."""
    found: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return found
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key, status, body = entry["key"], int(entry["status"]), entry["body"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordingError(
                f"{path}:{number}: not a recording ({type(exc).__name__}: {exc}); "
                "each line needs key, status and body — record the file again with --record"
            ) from exc
        if not isinstance(key, str) or not isinstance(body, str):
            raise RecordingError(f"{path}:{number}: key and body must be strings")
        found[key] = {"status": status, "content_type": entry.get("content_type", "application/json"), "body": body}
    return found


class RecordingTransport(httpx.BaseTransport):
    """Replays recorded responses by request hash; with ``record=True`` fills gaps from ``inner``.

    Args:
        path: The recordings file (JSON Lines); created when recording.
        record: Call the real endpoint for requests without a recording, and store the answer.
        inner: The transport that reaches the real endpoint (default: plain HTTP).
    """

    def __init__(self, path: Path, *, record: bool = False, inner: httpx.BaseTransport | None = None) -> None:
        self.path = path
        self.record = record
        self._inner = inner if inner is not None else (httpx.HTTPTransport() if record else None)
        self._recordings = load_recordings(path)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.recorded = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer from the recordings, from the endpoint (recording), or with a 404 error."""
        body = request.read()
        key = request_key(body)
        with self._lock:
            found = self._recordings.get(key)
            if found is not None:
                self.hits += 1
        if found is not None:
            return _response(found, request)
        if not self.record or self._inner is None:
            with self._lock:
                self.misses += 1
            log.warning("no recorded LLM response for request %s in %s; record it with --record", key[:12], self.path)
            error = {
                "error": {
                    "message": f"no recorded response for this request (key {key[:12]}); record it with --record",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "recording_missing",
                }
            }
            return httpx.Response(404, json=error, request=request)
        response = self._inner.handle_request(request)
        text = response.read().decode("utf-8")
        entry = {"status": response.status_code, "content_type": response.headers.get("content-type", ""), "body": text}
        # Only answers worth replaying are kept: a 429 or 5xx is the endpoint's bad moment.
        if response.status_code < 400:
            with self._lock:
                if key not in self._recordings:
                    self._recordings[key] = entry
                    self.recorded += 1
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    with self.path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps({"key": key, **entry}, ensure_ascii=False) + "\n")
        return _response(entry, request)

    def close(self) -> None:
        """Close the inner transport, if any."""
        if self._inner is not None:
            self._inner.close()


def _response(entry: dict[str, Any], request: httpx.Request) -> httpx.Response:
    headers = {"content-type": entry["content_type"] or "application/json"}
    return httpx.Response(entry["status"], headers=headers, content=entry["body"].encode("utf-8"), request=request)


def recording_client(path: Path, *, record: bool = False, timeout: float = 20.0) -> httpx.Client:
    """An httpx client whose requests go through a RecordingTransport on ``path``."""
    if not record and not path.exists():
        raise RecordingError(f"no recordings file at {path}; record one with --record against a live endpoint")
    return httpx.Client(transport=RecordingTransport(path, record=record), timeout=timeout)
