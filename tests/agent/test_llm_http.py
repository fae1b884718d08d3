"""The LLM brain's HTTP client keeps its connection after a streamed reply (agent/brains/http.py).

Connection reuse is a property of real sockets, so these tests talk to a chat-completions stub on
127.0.0.1 that counts the TCP connections it accepts.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Generator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from agent.brains.http import KeepAliveClient
from tests.llm_wire import completion, sse_body


class ChatStub:
    """Answers every request: a stream (chunked, as hosted models send it) or a whole completion."""

    def __init__(self) -> None:
        self.connections = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                stub.connections += 1
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                payload = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if payload.get("stream"):
                    body = sse_body(["Restart the ", "VPN client. ", "Does it connect?"])
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for event in body.split(b"\n\n")[:-1]:
                        part = event + b"\n\n"
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    return
                body = json.dumps(completion({"role": "assistant", "content": "Hello."}, "stop")).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[ChatStub]:
    server = ChatStub()
    yield server
    server.server.shutdown()
    server.server.server_close()


def chat(stub: ChatStub, client: httpx.Client) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4.1-mini",
        base_url=stub.url,
        api_key=SecretStr("test"),
        max_retries=0,
        use_responses_api=False,
        stream_usage=True,
        http_client=client,
    )


def converse(model: ChatOpenAI) -> str:
    """A streamed reply, a whole answer, a streamed reply: the calls of two turns."""
    said = "".join(str(chunk.content) for chunk in model.stream([HumanMessage("hi")]))
    assert model.invoke([HumanMessage("hi")]).content == "Hello."
    return said + "".join(str(chunk.content) for chunk in model.stream([HumanMessage("hi")]))


def test_a_streamed_reply_leaves_its_connection_for_the_next_call(stub: ChatStub) -> None:
    with KeepAliveClient() as client:
        assert converse(chat(stub, client)) == "Restart the VPN client. Does it connect?" * 2
    assert stub.connections == 1


def test_the_openai_default_client_opens_a_connection_after_a_stream(stub: ChatStub) -> None:
    # What KeepAliveClient mends: the same calls, and the one after the first stream reconnects.
    with httpx.Client() as client:
        converse(chat(stub, client))
    assert stub.connections == 2


def test_a_stream_left_before_its_end_is_closed_at_once(stub: ChatStub) -> None:
    with KeepAliveClient() as client:
        model = chat(stub, client)
        stream = model.stream([HumanMessage("hi")])
        assert next(stream).content is not None
        assert isinstance(stream, Generator)
        stream.close()  # a reply refused while the model still writes: not read on
        assert model.invoke([HumanMessage("hi")]).content == "Hello."
    assert stub.connections == 2
