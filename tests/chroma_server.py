"""A real Chroma server on loopback (``chroma run`` from the chromadb package), for the tests that need one.

``chroma_server`` is one server for the whole session; a test that stops a server starts its own
with ``ChromaServer``. Each test works in a database of its own (``fresh_database``), so that
collections keyed by pack content never carry over from one test to the next.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import chromadb
import httpx
import pytest
from chromadb.config import Settings as ChromaSettings

from tests.net import free_port

CHROMA = Path(sys.executable).parent / "chroma"
STARTUP_LIMIT_S = 60.0  # seen here: up in under a second; generous for a loaded machine


class ChromaServer:
    """One ``chroma run`` process on 127.0.0.1, its data in ``path``; stop and start it again at will."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers its heartbeat."""
        data = str(self.path / "data")
        command = [str(CHROMA), "run", "--path", data, "--host", "127.0.0.1", "--port", f"{self.port}"]
        with (self.path / "server.log").open("ab") as log:  # the server keeps its own copy of the handle
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chroma run exited with {self._process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"chroma run did not answer within {STARTUP_LIMIT_S:g} s: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def stop(self) -> None:
        """Stop the server (its data stays in ``path``)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log_tail(self) -> str:
        return (self.path / "server.log").read_text(errors="replace")[-2000:]

    def fresh_database(self) -> str:
        """A new, empty database on the server; returns its name."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        settings = ChromaSettings(
            anonymized_telemetry=False,
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host="127.0.0.1",
            chroma_server_http_port=self.port,
        )
        chromadb.AdminClient(settings).create_database(name)
        return name


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """The session's Chroma server."""
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server
    server.stop()
