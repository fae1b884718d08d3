"""Two real `tierone serve` processes on one PostgreSQL database and one Chroma server.

``Replica`` is one server process on a free loopback port; ``replica_pair`` starts two of them after
``tierone migrate``, with the directory and the helpdesk webhook pointed at stubs in this process
(``DirectoryStub``, ``WebhookStub``) that a test can make block until it lets them go: the way a turn
or a delivery is held in flight deterministically, without sleeping.

Every wait here is on a condition with a generous deadline; none is an assertion by itself.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.chroma_server import ChromaServer, free_port

ROOT = Path(__file__).resolve().parents[1]  # the checkout whose code the replicas run
START_LIMIT_S = 180.0  # a replica loads the embedding model; generous for a loaded 2-core machine
WAIT_LIMIT_S = 60.0
CONVERSATION_BURST = 6


def wait_for(condition: Callable[[], Any], what: str, limit_s: float = WAIT_LIMIT_S) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what}")
        time.sleep(0.05)


class Replica:
    """One `tierone serve` process; ``start`` returns once its /readyz answers 200."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"replica-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"replica {self.name} exited during start-up: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica {self.name} was not ready in {START_LIMIT_S:g} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)


@dataclass
class Customer:
    """A conversation opened through some replica, and its token."""

    conversation_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def open_conversation(replica: Replica) -> Customer:
    response = httpx.post(f"{replica.url}/conversations", json={"channel": "chat"}, timeout=60)
    assert response.status_code == 201, response.text
    body = response.json()
    return Customer(body["conversation_id"], body["token"])


def say(replica: Replica, customer: Customer, text: str, client_message_id: str | None = None) -> httpx.Response:
    payload: dict[str, Any] = {"text": text}
    if client_message_id is not None:
        payload["client_message_id"] = client_message_id
    return httpx.post(
        f"{replica.url}/conversations/{customer.conversation_id}/messages",
        json=payload,
        headers=customer.auth,
        timeout=120,
    )


def transcript(replica: Replica, customer: Customer) -> list[dict[str, Any]]:
    response = httpx.get(f"{replica.url}/conversations/{customer.conversation_id}", headers=customer.auth, timeout=60)
    assert response.status_code == 200, response.text
    lines: list[dict[str, Any]] = response.json()["transcript"]
    return lines


# -- stubs the replicas call ---------------------------------------------------------------------------


@dataclass
class DirectoryStub:
    """A REST directory (tools/http_backend.py's contract) that performs each idempotency key once.

    ``hold()`` makes the next account actions wait in the server until ``release()``: a turn that
    reaches its tool call stays in flight for as long as the test wants.
    """

    accounts: dict[str, dict[str, Any]]
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (key, account, action), each done once
    requests: list[tuple[str, str]] = field(default_factory=list)  # (key, path) of every POST received
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    gate: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def handle(self, method: str, path: str, query: dict[str, list[str]], key: str) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if method == "GET" and parts == ["accounts"]:
            email = query.get("email", [""])[0].strip().lower()
            return 200, {"accounts": [a for a in self.accounts.values() if a["email"] == email]}
        if method == "GET" and len(parts) == 2 and parts[0] == "accounts":
            found = self.accounts.get(parts[1])
            return (200, found) if found else (404, {"detail": "no such account"})
        if method == "POST" and parts[:1] == ["accounts"] and len(parts) >= 3:
            with self.guard:
                self.requests.append((key, path))
            self.gate.wait(timeout=WAIT_LIMIT_S * 3)
            account, action = parts[1], "/".join(parts[2:])
            with self.guard:
                if key not in self.results:
                    before = self.accounts[account]["status"]
                    self.accounts[account]["status"] = "active"
                    self.actions.append((key, account, action))
                    self.results[key] = {"status_before": before, "status_after": "active"}
                return 200, self.results[key]
        if method == "POST" and parts == ["tickets"]:
            return 201, {"ticket": f"REQ-{len(self.requests):06d}"}
        return 404, {"detail": f"no route {method} {path}"}


@dataclass
class WebhookStub:
    """A helpdesk webhook that records every packet it answered.

    After ``hold_first()``, the next request is held and then dropped unanswered once ``drop`` is set:
    a delivery in flight whose sender is killed meanwhile.
    """

    answered: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (Idempotency-Key, packet)
    received: list[str] = field(default_factory=list)
    drop: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)
    _holding: bool = False

    def hold_first(self) -> None:
        self._holding = True

    def handle(self, key: str, body: dict[str, Any]) -> tuple[int | None, Any]:
        with self.guard:
            self.received.append(key)
            held, self._holding = self._holding, False
        if held:
            self.drop.wait(timeout=WAIT_LIMIT_S * 3)
            return None, None
        with self.guard:
            self.answered.append((key, body))
        return 200, {"ok": True}


class SmtpStub:
    """A plain SMTP relay on loopback that keeps every message it accepted.

    After ``hold_first()``, the next message's DATA is held and the connection then dropped without
    an answer once ``drop`` is set: a send in flight whose sender is killed meanwhile.
    """

    def __init__(self) -> None:
        self.accepted: list[email.message.EmailMessage] = []
        self.held: list[email.message.EmailMessage] = []
        self.drop = threading.Event()
        self._holding = False
        self._guard = threading.Lock()
        stub = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 stub ESMTP\r\n")
                while line := self.rfile.readline():
                    verb = line[:4].upper()
                    if verb == b"DATA":
                        self.wfile.write(b"354 go on\r\n")
                        raw = b"".join(iter(self.rfile.readline, b".\r\n"))
                        message = email.message_from_bytes(raw, policy=email.policy.default)
                        assert isinstance(message, email.message.EmailMessage)
                        if not stub.keep(message):
                            return  # dropped: no answer, the connection closes
                        self.wfile.write(b"250 queued\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold_first(self) -> None:
        self._holding = True

    def keep(self, message: email.message.EmailMessage) -> bool:
        with self._guard:
            held, self._holding = self._holding, False
        if held:
            self.held.append(message)
            self.drop.wait(timeout=WAIT_LIMIT_S * 3)
            return False
        with self._guard:
            self.accepted.append(message)
        return True

    def close(self) -> None:
        self.drop.set()
        self.server.shutdown()
        self.server.server_close()


class StubServer:
    """One threaded HTTP server on loopback serving the directory under /dir and the webhook under /hook."""

    def __init__(self, directory: DirectoryStub, webhook: WebhookStub) -> None:
        stubs = (directory, webhook)

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                key = self.headers.get("Idempotency-Key", "")
                if parsed.path.startswith("/hook"):
                    status, body = stubs[1].handle(key, json.loads(raw or b"{}"))
                else:
                    status, body = stubs[0].handle(
                        method, parsed.path.removeprefix("/dir"), parse_qs(parsed.query), key
                    )
                if status is None:  # dropped: the connection closes with no answer
                    return
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the replica that asked was killed meanwhile
                    pass

            def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
                self._answer("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def directory_accounts() -> dict[str, dict[str, Any]]:
    return {
        "acc-2001": {"account_id": "acc-2001", "email": "ada.locked@example.com", "name": "Ada", "status": "locked"},
        "acc-2002": {"account_id": "acc-2002", "email": "bo.locked@example.com", "name": "Bo", "status": "locked"},
    }


@dataclass
class Pair:
    """Two replicas on one database and one Chroma server, and the stubs they call."""

    a: Replica
    b: Replica
    env: dict[str, str]
    database_url: str
    directory: DirectoryStub
    webhook: WebhookStub
    smtp: SmtpStub
    data_dir: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300
        )

    def technician_key(self, name: str) -> str:
        made = self.cli("keys", "create", name)
        assert made.returncode == 0, made.stderr
        return made.stdout.strip().splitlines()[-1]

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database_url) as conn:
            return [tuple(row) for row in conn.execute(sql, params)]


@pytest.fixture(scope="module")
def replica_pair(
    postgres_server: str,
    chroma_server: ChromaServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Pair]:
    """Two replicas for the module, after `tierone migrate` on a fresh database.

    A module's ``REPLICA_ENV`` (a dict) adds to or overrides their settings.
    """
    tmp = tmp_path_factory.mktemp("replicas")
    name = f"r_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    url = f"{postgres_server}/{name}"
    directory, webhook = DirectoryStub(directory_accounts()), WebhookStub()
    stubs = StubServer(directory, webhook)
    smtp = SmtpStub()
    env = {
        **os.environ,
        "TIERONE_DATABASE_URL": url,
        "TIERONE_CHROMA_URL": chroma_server.url,
        "TIERONE_DATA_DIR": str(tmp / "data"),
        "TIERONE_VAULT_KEY": Fernet.generate_key().decode(),  # replicas must read each other's vault
        "TIERONE_DIRECTORY_URL": f"{stubs.url}/dir",
        "TIERONE_HANDOFF_WEBHOOK_URL": f"{stubs.url}/hook",
        # A delivery's lease is the webhook timeout + 5 s: short, so that a replica takes over a killed
        # one's delivery within the test, yet far longer than the test takes to kill it once it has sent.
        "TIERONE_HANDOFF_WEBHOOK_TIMEOUT_S": "10",
        "TIERONE_HANDOFF_RETRY_BASE_S": "0.2",
        "TIERONE_HANDOFF_RETRY_MAX_S": "1",
        "TIERONE_LOG_LEVEL": "WARNING",
        # A conversation may send 6 messages, then practically none (one per 100 minutes): the shared
        # bucket's count is then exact, whatever the time the turns take.
        "TIERONE_RATE_CONVERSATION_BURST": str(CONVERSATION_BURST),
        "TIERONE_RATE_CONVERSATION_PER_MINUTE": "0.01",
        **getattr(request.module, "REPLICA_ENV", {}),
    }
    env = {k: v.replace("{smtp_port}", str(smtp.port)) for k, v in env.items()}
    pair = Pair(Replica("a", env, tmp), Replica("b", env, tmp), env, url, directory, webhook, smtp, tmp / "data")
    migrated = pair.cli("migrate")
    assert migrated.returncode == 0, migrated.stderr
    try:
        # Started one after the other: both would otherwise index the pack into the server at once,
        # which the Chroma tests cover; here the point is what they do once up.
        pair.a.start()
        pair.b.start()
        yield pair
    finally:
        pair.a.stop()
        pair.b.stop()
        stubs.close()
        smtp.close()
        with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
