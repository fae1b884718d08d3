"""Kill the real server mid-conversation (SIGKILL), start it again: the conversation goes on."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.net import free_port

# Marked model: the server processes it restarts load the embedding model.
pytestmark = pytest.mark.model


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "TIERONE_DATA_DIR": str(self.data_dir)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, "the server exited during start-up"
            time.sleep(0.2)
        raise AssertionError("the server did not become ready in 120 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def open(self) -> str:
        created = httpx.post(f"{self.url}/conversations", json={"channel": "chat"}).json()
        self.tokens[created["conversation_id"]] = created["token"]
        return str(created["conversation_id"])

    def auth(self, cid: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[cid]}"}

    def say(self, cid: str, text: str) -> dict[str, object]:
        response = httpx.post(
            f"{self.url}/conversations/{cid}/messages", json={"text": text}, headers=self.auth(cid), timeout=30
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "data")
    yield s
    if s.proc and s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait(timeout=10)


@pytest.mark.slow
def test_sigkill_between_turns_loses_nothing(server: Server) -> None:
    server.start()
    cid = server.open()
    server.say(cid, "my account is locked")
    server.say(cid, "bob.smith@example.com")
    mail = [json.loads(line) for line in (server.data_dir / "outbox" / "mail.jsonl").read_text().splitlines()]
    code = mail[-1]["body"].split("code is ")[1][:6]
    step = server.say(cid, code)
    assert step["stage"] == "confirm"
    server.kill()

    server.start()
    view = httpx.get(f"{server.url}/conversations/{cid}", headers=server.auth(cid)).json()
    assert view["stage"] == "confirm" and view["runbook_id"] == "account-lockout"
    assert len(view["transcript"]) == 6
    done = server.say(cid, "yes it works now")
    assert done["stage"] == "resolved"
    with sqlite3.connect(server.data_dir / "tierone.sqlite") as conn:
        actions = conn.execute("SELECT account_id, action FROM directory_actions").fetchall()
    assert actions == [("acc-1002", "unlock")]
