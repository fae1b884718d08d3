"""The LLM brain's HTTP client: the OpenAI client's default one, keeping its connection after a stream.

The openai package stops reading a streamed answer at the server's ``data: [DONE]`` and closes the
response there, with the end of the body (its last framing bytes) still unread. httpcore then
cannot tell the connection is clean and drops it, so the next call (every turn's reading of the
customer's message follows a streamed reply) opened a new connection: on loopback a millisecond
or two, with a real endpoint a TCP and TLS handshake. Here, once ``[DONE]`` has come by, closing
the response first reads what is left of the body (a few bytes, at most ``_DRAIN_LIMIT``), and
the connection goes back to the pool. A stream closed before ``[DONE]`` (a reply the checks
refused while the model was still writing) is closed at once, as before: reading on would wait
for the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai

# What is read at most after [DONE] before giving up on the connection.
_DRAIN_LIMIT = 64 * 1024
_DONE = b"data: [DONE]"


class _DrainAfterDone(httpx.SyncByteStream):
    """A streamed body that, closed after its ``[DONE]`` event, reads its end before closing."""

    def __init__(self, stream: httpx.SyncByteStream) -> None:
        self._stream = stream
        self._tail = b""
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if not self.done:
                # Kept short: the marker may be cut across two chunks.
                self._tail = (self._tail + chunk)[-(len(chunk) + len(_DONE)) :]
                self.done = _DONE in self._tail
            yield chunk

    def close(self) -> None:
        if self.done:
            read = 0
            try:
                for chunk in self._stream:
                    read += len(chunk)
                    if read > _DRAIN_LIMIT:
                        break
            except Exception:  # whatever stopped the reading, there is no connection to keep
                pass
        self._stream.close()


class KeepAliveClient(openai.DefaultHttpxClient):
    """``openai.DefaultHttpxClient`` (its timeouts, limits, proxies from the environment) for the LLM brain."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        """Send as httpx does; a streamed event-stream answer gets a body that keeps its connection."""
        response = super().send(request, **kwargs)
        streamed = kwargs.get("stream") and response.headers.get("content-type", "").startswith("text/event-stream")
        if streamed and isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _DrainAfterDone(response.stream)
        return response
