"""SIGTERM on the real server: open streams are ended, the process exits cleanly, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.agent.test_restart import Server

# Marked model: the server process it stops loads the embedding model.
pytestmark = pytest.mark.model


class LoggedServer(Server):
    """The restart test's server, with its stderr (the JSON logs) kept in a file."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        super().__init__(data_dir)
        self.log = log

    def start(self) -> None:
        env = {**os.environ, "TIERONE_DATA_DIR": str(self.data_dir)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
                env=env,
                cwd=Path(__file__).resolve().parents[2],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in 120 s")


@pytest.mark.slow
def test_sigterm_stops_the_server_gracefully(tmp_path: Path) -> None:
    server = LoggedServer(tmp_path / "data", tmp_path / "server.log")
    server.start()
    assert server.proc is not None
    try:
        with httpx.Client(base_url=server.url, timeout=httpx.Timeout(30.0)) as http:
            created = http.post("/conversations", json={"channel": "chat"}).json()
            cid, token = created["conversation_id"], created["token"]
            auth = {"Authorization": f"Bearer {token}"}
            said = http.post(f"/conversations/{cid}/messages", json={"text": "I forgot my password"}, headers=auth)
            assert said.status_code == 200
            with http.stream("GET", f"/conversations/{cid}/events", params={"token": token}) as stream:
                lines = stream.iter_lines()
                assert next(line for line in lines if line.startswith("event: status"))
                server.proc.send_signal(signal.SIGTERM)
                # The server ends the open stream within its grace period instead of waiting on it forever.
                try:
                    rest = list(lines)
                except httpx.RemoteProtocolError:  # cut mid-chunk when the grace period ran out
                    rest = []
                assert all("event: line" not in line for line in rest)
        # uvicorn re-raises the signal once it has shut down, so the exit status is SIGTERM's.
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        events = [json.loads(line)["event"] for line in server.log.read_text().splitlines() if line.startswith("{")]
        assert "Shutting down" in events and any(e.startswith("Finished server process") for e in events)
        assert "request" in events  # the service's own request log, in JSON
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)
    # Everything acknowledged is there after a restart.
    server.start()
    try:
        view = httpx.get(f"{server.url}/conversations/{cid}", headers=auth, timeout=30).json()
        assert [line["role"] for line in view["transcript"]] == ["customer", "bot"]
    finally:
        server.proc.kill()
        server.proc.wait(timeout=10)
