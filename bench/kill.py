"""Kill the real server with SIGKILL at random points of scripted conversations, restart it, replay the clients.

    python bench/kill.py --kills 30 --seed 7            # prints what it did and every check; exit 1 on a failure
    python bench/kill.py --kills 6 --seed 1 --json OUT  # also writes the figures as JSON (tests/e2e/test_kill.py)
    python bench/kill.py --kills 30 --replicas 2 --backend postgresql   # two replicas, kills alternating

Client threads play scripted conversations (password reset, unlock, MFA reset, licence ticket, a
request for a person, a status question) against ``tierone serve``'s app on 127.0.0.1. A killer thread
SIGKILLs the server at points drawn from a seeded random generator:

``anywhere``       after a random pause, wherever the server is (labelled by the requests in flight)
``mid-turn``       a few milliseconds after a client's message reached the server
``lookup``         while the server waits for the identity provider to look an account up
``action-before``  while an account change is on its way to the identity provider, before it acts
``action-after``   after the identity provider acted, before the server read its answer
``webhook``        after the helpdesk took a handoff packet, before the server read its answer

then starts the server again. A client that got no answer sends the same message again with the same
``client_message_id``. The identity provider and the helpdesk are fakes on loopback speaking the real
wire formats (tools/http_backend.py, app/notify.py); they keep the first result per Idempotency-Key.

At the end, with the server up: every conversation the client opened is there with every message
once and in order; every conversation reached its script's final stage and has no turn left
half-done; every packet the client saw is stored once and reached the helpdesk; every account change
happened once (one idempotency key per account and action) and has its audit record; no tool run is
left "started".

With ``--backend postgresql`` the stores are in a PostgreSQL server and the routing index in a Chroma
server, both started for the run as bench/replicas.py starts them (then ``tierone migrate``), and
``--replicas N`` servers run at once on their own ports. The clients send each request to the next
replica that is up, and a message that got no answer goes again, with the same id, to the next one;
the kills alternate between the replicas, each restarted while the others serve. Each replica calls
the fakes under a path of its own, so a trap kills the replica whose request reached it.

Start-up: loading the embedding model takes 10-40 s on a busy 2-core machine, too slow for 30
restarts. A "zygote" process loads it once and forks a fresh server process for every start; each
server is the real app (``create_app(settings, open_runtime(settings, embedder=...))`` under uvicorn),
opening its stores, recovering half-done turns and serving exactly as ``tierone serve`` does.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("anywhere", "mid-turn", "lookup", "action-before", "action-after", "webhook")
TRAPS = ("lookup", "action-before", "action-after", "webhook")
ACTIONS = ("password-reset", "unlock", "mfa/reset")


# -- the server: a zygote process that forks fresh servers -------------------------------------------


def zygote(port: int) -> None:
    """Load the model once, then fork a server on every 'start' line read from stdin."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import uvicorn

    from app.runtime import open_runtime
    from core.settings import Settings
    from server import create_app
    from vectorstore.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "start":
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Die with the zygote (PR_SET_PDEATHSIG): a crashed bench leaves no server behind.
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            settings = Settings()
            app = create_app(settings, open_runtime(settings, embedder=embedder))
            uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
            os._exit(0)
        print(f"pid {pid}", flush=True)


class Supervisor:
    """Starts, kills and restarts the server; clients wait on ``up`` while it is down."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.up = threading.Event()
        self.pid: int | None = None
        self._lock = threading.Lock()
        self.starts: list[float] = []
        self._log = log.open("ab")
        self.zygote = subprocess.Popen(
            [sys.executable, __file__, "zygote", "--port", str(port)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
        )
        assert self.zygote.stdout is not None
        line = self.zygote.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the zygote did not start (said {line!r}); see {log}")

    def start(self) -> None:
        """Fork a server and wait until /healthz answers."""
        assert self.zygote.stdin is not None and self.zygote.stdout is not None
        began = time.monotonic()
        self.zygote.stdin.write("start\n")
        self.zygote.stdin.flush()
        self.pid = int(self.zygote.stdout.readline().split()[1])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                raise RuntimeError("the server died during start-up")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    self.starts.append(time.monotonic() - began)
                    self.up.set()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the server did not become ready in 120 s")

    def kill(self) -> None:
        """SIGKILL the server and wait until it is gone."""
        with self._lock:
            self.up.clear()
            if self.pid is None:
                return
            os.kill(self.pid, signal.SIGKILL)
            while _alive(self.pid):
                time.sleep(0.005)
            self.pid = None

    def close(self) -> None:
        """Stop the server and the zygote."""
        self.kill()
        if self.zygote.stdin is not None:
            self.zygote.stdin.close()
        self.zygote.wait(timeout=30)
        self._log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the identity provider and the helpdesk: fakes on loopback in the real wire formats --------------


@dataclass
class Trap:
    """A kill waiting for a matching request from one replica to reach the fakes."""

    kind: str
    replica: int = 0
    fired: threading.Event = field(default_factory=threading.Event)


class Backend:
    """The identity provider (tools/http_backend.py's contract) and the helpdesk webhook (app/notify.py)."""

    def __init__(self, supervisor_ref: list[Supervisor]) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.by_email: dict[str, str] = {}
        self.results: dict[str, tuple[str, str, dict[str, Any]]] = {}  # key -> (account, action, result)
        self.action_requests: list[tuple[str, str, str]] = []  # (account, action, key), every request
        self.packets: dict[str, dict[str, Any]] = {}  # Idempotency-Key -> first packet
        self.webhook_posts = 0
        self.trap: Trap | None = None
        self.lock = threading.Lock()
        self._supervisor = supervisor_ref

    def add_account(self, email: str, status: str) -> str:
        """Create an account at the identity provider; return its id."""
        with self.lock:
            account_id = f"acc-{len(self.accounts) + 1:05d}"
            self.accounts[account_id] = {
                "account_id": account_id,
                "email": email,
                "name": f"Customer {account_id}",
                "status": status,
                "mfa_method": "authenticator app",
                "plan": "Business",
                "next_invoice": None,
                "failed_sign_ins": 3 if status == "locked" else 0,
            }
            self.by_email[email] = account_id
            return account_id

    def arm(self, kind: str, replica: int = 0) -> Trap:
        """Kill the replica at its next request of this kind."""
        trap = Trap(kind, replica)
        with self.lock:
            self.trap = trap
        return trap

    def disarm(self) -> None:
        """Forget an armed trap."""
        with self.lock:
            self.trap = None

    def spring(self, kind: str, replica: int) -> bool:
        """Kill the replica that asked if a trap of this kind is armed for it (one kill per trap)."""
        with self.lock:
            trap = self.trap
            if trap is None or trap.kind != kind or trap.replica != replica:
                return False
            self.trap = None
        self._supervisor[replica].kill()
        trap.fired.set()
        return True

    def handle(self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes) -> tuple[int, Any]:
        """Answer one request as the identity provider or the helpdesk would; return status and JSON body."""
        key = headers.get("Idempotency-Key")
        parts = [p for p in path.split("/") if p]
        # Each replica's URLs start with /r<index> (see run()): which one is asking.
        replica = int(parts.pop(0)[1:]) if parts and re.fullmatch(r"r\d+", parts[0]) else 0
        if method == "GET" and parts == ["accounts"]:
            self.spring("lookup", replica)
            email = (query.get("email") or [""])[0].strip().lower()
            found = self.accounts.get(self.by_email.get(email, ""))
            return 200, {"accounts": [found] if found else []}
        if method == "GET" and len(parts) == 2 and parts[0] == "accounts":
            self.spring("lookup", replica)
            found = self.accounts.get(parts[1])
            return (200, found) if found else (404, {"detail": "no such account"})
        if method == "POST" and len(parts) >= 3 and parts[0] == "accounts":
            action = "/".join(parts[2:])
            if action not in ACTIONS or parts[1] not in self.accounts or not key:
                return 422, {"detail": f"bad request {path}"}
            with self.lock:
                self.action_requests.append((parts[1], action, key))
            if self.spring("action-before", replica):
                return 503, {"detail": "the caller is gone"}
            with self.lock:
                if key not in self.results:
                    self.results[key] = (parts[1], action, self._act(parts[1], action))
                result = self.results[key][2]
            self.spring("action-after", replica)
            return 200, result
        if method == "POST" and parts == ["tickets"]:
            with self.lock:
                if key and key not in self.results:
                    account = json.loads(body or b"{}").get("account_id", "")
                    self.action_requests.append((account, "ticket", key))
                    self.results[key] = (account, "ticket", {"ticket": f"REQ-{len(self.results) + 1:06d}"})
                return 201, self.results[key][2] if key else {"ticket": "REQ-000000"}
        if method == "POST" and parts == ["helpdesk"]:
            with self.lock:
                self.webhook_posts += 1
                self.packets.setdefault(str(key), json.loads(body))
            self.spring("webhook", replica)
            return 201, {"ok": True}
        return 404, {"detail": f"no route {method} {path}"}

    def _act(self, account_id: str, action: str) -> dict[str, Any]:
        account = self.accounts[account_id]
        if action == "unlock":
            before, account["status"] = account["status"], "active"
            return {"status_before": before, "status_after": "active"}
        if action == "password-reset":
            return {"link_id": uuid.uuid4().hex[:8], "sent_to": account["email"], "expires_minutes": 30}
        return {"removed": "authenticator app", "enrolment": "required at next sign-in"}


def serve_backend(backend: Backend) -> ThreadingHTTPServer:
    """Serve the fakes on a free loopback port from a background thread."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, method: str) -> None:
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = backend.handle(method, url.path, parse_qs(url.query), self.headers, body)
            data = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the server that asked was killed

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._reply("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._reply("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


# -- the clients: scripted conversations that re-send what got no answer ----------------------------


@dataclass(frozen=True)
class Script:
    """One scripted conversation and how it must end."""

    name: str
    turns: tuple[str, ...]
    stage: str  # where the conversation must end
    status: str = "active"  # the account's state at the identity provider
    action: str | None = None  # the account change it must cause, once
    handoff: bool = False
    # Where else it may end: five or more "is email down?" in ten minutes are an incident (a spike
    # of the service-status runbook), and the customer is then attached to it instead.
    also: tuple[str, ...] = ()


SCRIPTS = (
    Script(
        "password-reset",
        ("I forgot my password", "{email}", "{code}", "yes, I can sign in now"),
        "resolved",
        action="password-reset",
    ),
    Script(
        "account-lockout",
        ("my account is locked", "{email}", "{code}", "yes it works now, thanks"),
        "resolved",
        status="locked",
        action="unlock",
    ),
    Script(
        "mfa-device-change",
        ("I got a new phone and my authenticator app is empty", "{email}", "{code}", "yes that worked"),
        "resolved",
        action="mfa/reset",
    ),
    Script("licence-request", ("I need a Visio licence", "{email}", "{code}"), "confirm", action="ticket"),
    Script(
        "ask-for-a-person", ("I want to talk to a human please", "are you still there?"), "handed_off", handoff=True
    ),
    Script("status", ("is email down right now?",), "confirm", also=("incident",)),
)


@dataclass
class Played:
    """What a client sent and saw in one conversation."""

    script: str
    conversation_id: str
    token: str
    email: str
    account_id: str
    sent: list[str] = field(default_factory=list)
    replies: list[list[str]] = field(default_factory=list)
    stage: str = ""
    packets: set[str] = field(default_factory=set)
    resends: int = 0
    error: str | None = None
    trace: list[str] = field(default_factory=list)


class Clients:
    """Client threads; each re-sends a message with the same id until it gets an answer."""

    def __init__(self, supervisors: list[Supervisor], backend: Backend, data_dir: Path, seed: int, count: int) -> None:
        self.supervisors = supervisors
        self._next = 0
        self.backend = backend
        self.outbox = data_dir / "outbox" / "mail.jsonl"
        self.played: list[Played] = []
        self.in_flight: Counter[str] = Counter()  # requests on their way, by replica URL
        self.sent_event = threading.Event()
        self.stop = threading.Event()
        self._guard = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(seed * 1000 + i),), daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        """Start the client threads."""
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        """Let each client finish its conversation, then stop."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(deadline - time.monotonic(), 0.1))

    def _run(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            script = rng.choice(SCRIPTS)
            try:
                self._play(script, rng)
            except Exception as exc:  # a failed script is a finding, reported at the end
                with self._guard:
                    self.played.append(Played(script.name, "?", "", "", "", error=f"{type(exc).__name__}: {exc}"[:300]))

    def _replica(self) -> Supervisor:
        """The next replica that is up, round-robin; waits while none is."""
        while True:
            with self._guard:
                start = self._next
                self._next += 1
            for i in range(len(self.supervisors)):
                candidate = self.supervisors[(start + i) % len(self.supervisors)]
                if candidate.up.is_set():
                    return candidate
            self.supervisors[start % len(self.supervisors)].up.wait(0.05)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        resends = 0
        while True:
            replica = self._replica()
            with self._guard:
                self.in_flight[replica.url] += 1
            self.sent_event.set()
            try:
                response = httpx.request(method, f"{replica.url}{path}", timeout=60, **kwargs)
            except httpx.TransportError:
                resends += 1
                time.sleep(0.05)
                continue
            finally:
                with self._guard:
                    self.in_flight[replica.url] -= 1
            response.extensions["resends"] = resends
            return response

    def _play(self, script: Script, rng: random.Random) -> None:
        email = f"cust-{uuid.uuid4().hex[:10]}@example.test"
        account_id = self.backend.add_account(email, script.status)
        opened = self._request("POST", "/conversations", json={"channel": "chat"})
        assert opened.status_code == 201, opened.text
        body = opened.json()
        played = Played(script.name, body["conversation_id"], body["token"], email, account_id)
        with self._guard:
            self.played.append(played)
        headers = {"Authorization": f"Bearer {played.token}"}
        for turn in script.turns:
            try:
                text = email if turn == "{email}" else self._code(played.conversation_id) if turn == "{code}" else turn
            except LookupError as exc:
                played.error = str(exc)
                return
            message = {"text": text, "client_message_id": uuid.uuid4().hex}
            path = f"/conversations/{played.conversation_id}/messages"
            response = self._request("POST", path, json=message, headers=headers)
            played.resends += int(response.extensions["resends"])
            if response.status_code != 200:
                played.error = f"{turn!r}: HTTP {response.status_code} {response.text[:200]}"
                return
            answer = response.json()
            played.sent.append(text)
            played.replies.append(answer["replies"])
            played.trace.append(f"{turn} -> {answer['stage']} (resends {response.extensions['resends']})")
            played.stage = answer["stage"]
            if answer.get("handoff"):
                played.packets.add(answer["handoff"]["packet_id"])
            time.sleep(rng.uniform(0.0, 0.08))  # the customer reads and types

    def _code(self, conversation_id: str) -> str:
        # The latest code mailed in this conversation (a replayed step may have mailed a newer one).
        for line in reversed(self.outbox.read_text(encoding="utf-8").splitlines()):
            mail = json.loads(line)
            if mail["conversation_id"] == conversation_id:
                return str(mail["body"].split("code is ")[1][:6])
        raise LookupError(f"no code was mailed in {conversation_id}")


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class Kill:
    """One kill: what was aimed at, where it landed, how long the restart took."""

    kind: str
    landed: str  # where it hit: "between turns", "mid-turn (n in flight)", or the trap's point
    restart_s: float


def run(
    kills: int, seed: int, clients: int, data_dir: Path, log: Path, backend_name: str = "sqlite", replicas: int = 1
) -> dict[str, Any]:
    """Play conversations while killing the replicas ``kills`` times in turn; return the figures and failures."""
    rng = random.Random(seed)
    ref: list[Supervisor] = []
    backend = Backend(ref)
    httpd = serve_backend(backend)
    fakes = f"http://127.0.0.1:{httpd.server_address[1]}"
    env = {
        **os.environ,
        "TIERONE_DATA_DIR": str(data_dir),
        "TIERONE_HANDOFF_RETRY_BASE_S": "0.2",
        "TIERONE_HANDOFF_RETRY_MAX_S": "2",
        "TIERONE_RATE_CONVERSATION_PER_MINUTE": "0",
        "TIERONE_RATE_IP_PER_MINUTE": "0",
        "TIERONE_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    done: list[Kill] = []
    skipped: Counter[str] = Counter()
    with ExitStack() as stack:
        stack.callback(httpd.shutdown)
        if backend_name == "postgresql":
            from cryptography.fernet import Fernet
            from replicas import chroma, postgres

            root = log.parent
            env["TIERONE_DATABASE_URL"] = stack.enter_context(postgres(root))
            env["TIERONE_CHROMA_URL"] = stack.enter_context(chroma(root))
            env["TIERONE_VAULT_KEY"] = Fernet.generate_key().decode()
            migrated = subprocess.run(
                [sys.executable, "-m", "cli", "migrate"], cwd=ROOT, env=env, capture_output=True, text=True
            )
            if migrated.returncode != 0:
                raise RuntimeError(f"tierone migrate failed: {migrated.stdout}{migrated.stderr}")
        began = time.monotonic()
        for i in range(replicas):
            own = env | {
                "TIERONE_DIRECTORY_URL": f"{fakes}/r{i}",
                "TIERONE_HANDOFF_WEBHOOK_URL": f"{fakes}/r{i}/helpdesk",
            }
            ref.append(Supervisor(_free_port(), own, log))
            stack.callback(ref[-1].close)
        zygote_s = time.monotonic() - began
        for supervisor in ref:
            supervisor.start()
        players = Clients(ref, backend, data_dir, seed, clients)
        players.start()
        killing = time.monotonic()
        by_replica: Counter[int] = Counter()
        while len(done) < kills:
            target = len(done) % replicas  # the kills alternate between the replicas
            kind = rng.choice(KINDS)
            landed = _kill(kind, rng, ref[target], target, backend, players)
            if landed is None:
                skipped[kind] += 1
                continue
            restart = time.monotonic()
            ref[target].start()
            by_replica[target + 1] += 1
            done.append(Kill(kind, landed, time.monotonic() - restart))
            time.sleep(rng.uniform(0.05, 0.4))
        kill_s = time.monotonic() - killing
        players.join(timeout=120)
        figures = {
            "seed": seed,
            "backend": backend_name,
            "replicas": replicas,
            "kills": len(done),
            "kills_by_replica": dict(sorted(by_replica.items())),
            "by_kind": dict(Counter(k.kind for k in done)),
            "landed": dict(Counter(k.landed.split(" (")[0] for k in done)),
            "kill_log": [f"{k.kind}: {k.landed}" for k in done],
            "traps_not_sprung": dict(skipped),
            "zygote_start_s": round(zygote_s, 1),
            "restart_s_median": round(sorted(k.restart_s for k in done)[len(done) // 2], 2) if done else None,
            "kill_phase_s": round(kill_s, 1),
        }
        figures |= check(players.played, backend, data_dir, ref, env.get("TIERONE_DATABASE_URL"))
    return figures


def _kill(
    kind: str, rng: random.Random, supervisor: Supervisor, replica: int, backend: Backend, players: Clients
) -> str | None:
    """Kill one replica as ``kind`` says; return where it landed, or None when no such moment came."""
    if kind == "anywhere":
        time.sleep(rng.uniform(0.0, 0.5))
        busy = players.in_flight[supervisor.url]
        supervisor.kill()
        return f"mid-turn ({busy} in flight)" if busy else "between turns"
    if kind == "mid-turn":
        players.sent_event.clear()
        if not players.sent_event.wait(10):
            return None
        time.sleep(rng.uniform(0.0, 0.04))
        busy = players.in_flight[supervisor.url]
        supervisor.kill()
        return f"mid-turn ({busy} in flight)" if busy else "between turns"
    trap = backend.arm(kind, replica)
    if trap.fired.wait(15):
        return {
            "lookup": "during an identity lookup",
            "action-before": "during a tool call, before the account change",
            "action-after": "during a tool call, after the account change",
            "webhook": "during a helpdesk delivery, after the helpdesk took it",
        }[kind]
    backend.disarm()
    if trap.fired.is_set():  # sprung just as it was disarmed
        return kind
    return None


def _check_conversation(
    p: Played, body: dict[str, Any], expected: list[str], graph: Any, db: Any, backend: Backend
) -> list[str]:
    """One played conversation against its transcript, checkpoint, packets and account changes."""
    failures: list[str] = []
    customer = [line["text"] for line in body["transcript"] if line["role"] == "customer"]
    if customer != expected:
        failures.append(
            f"{p.script} {p.conversation_id}: customer lines {customer} != sent {expected}; turns: {p.trace}"
        )
    script = _script(p.script)
    complete = len(p.sent) == len(script.turns)
    if complete and body["stage"] != script.stage and body["stage"] not in script.also:
        failures.append(
            f"{p.script} {p.conversation_id}: ended at {body['stage']!r}, not {script.stage!r}; turns: {p.trace}"
        )
    config = {"configurable": {"thread_id": p.conversation_id}}
    if graph.get_state(config).next:
        failures.append(f"{p.script} {p.conversation_id}: a turn is left half-done")
    rows = db("SELECT packet_id FROM handoffs WHERE conversation_id = ?", (p.conversation_id,))
    # An incident's one ticket (HO-INC-…) is filed under the conversation that opened it, which is
    # attached to the incident, not handed off: it is not this conversation's handoff.
    stored = {r[0] for r in rows if not str(r[0]).startswith("HO-INC-")}
    if stored != p.packets:
        failures.append(f"{p.script} {p.conversation_id}: packets stored {stored} != seen {p.packets}")
    for packet_id in p.packets:
        if packet_id not in backend.packets:
            failures.append(f"{p.script} {p.conversation_id}: packet {packet_id} never reached the helpdesk")
    keys = {key for account, action, key in backend.action_requests if account == p.account_id}
    if len(keys) > 1:
        failures.append(f"{p.script} {p.conversation_id}: {len(keys)} idempotency keys for one change")
    acted = [r for r in backend.results.values() if r[0] == p.account_id]
    if complete and script.action and len(acted) != 1:
        failures.append(f"{p.script} {p.conversation_id}: the account change happened {len(acted)} times")
    for key in keys & set(backend.results):
        rows = db("SELECT outcome FROM audit WHERE key = ? AND outcome = 'ok'", (key,))
        if len(rows) != 1:
            failures.append(f"{p.script} {p.conversation_id}: {len(rows)} audit records for the change {key}")
    return failures


def _code_mails(data_dir: Path) -> tuple[Counter[str], list[str]]:
    """Code mails per conversation from the outbox, and a failure for each conversation mailed two codes."""
    # Each script asks for one code. A send cut off between its mail and the ledger's record is
    # replayed with the same code (Vault.code_for): the mail may go twice, never with two codes.
    mails: Counter[str] = Counter()
    codes: dict[str, set[str]] = {}
    for line in (data_dir / "outbox" / "mail.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            mail = json.loads(line)
            mails[mail["conversation_id"]] += 1
            codes.setdefault(mail["conversation_id"], set()).update(re.findall(r"\b\d{6}\b", mail["body"]))
    return mails, [f"{cid}: {len(found)} different codes mailed" for cid, found in codes.items() if len(found) > 1]


def check(
    played: list[Played], backend: Backend, data_dir: Path, supervisors: list[Supervisor], database_url: str | None
) -> dict[str, Any]:
    """Every promise the durability section makes, checked against the stores and the fakes."""
    sys.path.insert(0, str(ROOT))
    from pydantic import SecretStr

    from agent.graph import build_graph
    from app.runtime import desk_target, open_checkpointer
    from core.db import open_database
    from core.redact import redact
    from core.settings import Settings

    failures: list[str] = []
    finished = [p for p in played if p.conversation_id != "?"]
    failures += [f"{p.script} {p.conversation_id}: {p.error}; turns: {p.trace}" for p in played if p.error]
    settings = Settings(data_dir=data_dir, database_url=SecretStr(database_url) if database_url else None)
    desk = open_database(desk_target(settings))

    def db(sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with desk.transaction() as conn:
            return [tuple(row) for row in conn.execute(sql, parameters).fetchall()]

    graph = build_graph(open_checkpointer(settings))
    url = supervisors[0].url
    # Deliveries retry with a short backoff; give the restarted worker time to send what is left.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pending = db("SELECT COUNT(*) FROM handoff_deliveries WHERE status != 'delivered'")[0][0]
        if pending == 0:
            break
        time.sleep(0.2)
    messages = 0
    for p in finished:
        view = httpx.get(f"{url}/conversations/{p.conversation_id}", headers={"Authorization": f"Bearer {p.token}"})
        if view.status_code != 200:
            failures.append(f"{p.script} {p.conversation_id}: lost (GET answered {view.status_code})")
            continue
        messages += len(p.sent)
        failures += _check_conversation(p, view.json(), [redact(text) for text in p.sent], graph, db, backend)
    left = db("SELECT key, tool FROM tool_runs WHERE status = 'started'")
    failures += [f"tool run {key} ({tool}) left started" for key, tool in left]
    mails, wrong_codes = _code_mails(data_dir)
    failures += wrong_codes
    undelivered = db("SELECT COUNT(*) FROM handoff_deliveries WHERE status != 'delivered'")[0][0]
    if undelivered:
        failures.append(f"{undelivered} handoff deliveries not delivered")
    return {
        "conversations": len(finished),
        "complete": sum(1 for p in finished if len(p.sent) == len(_script(p.script).turns)),
        "messages": messages,
        "client_resends": sum(p.resends for p in finished),
        "account_changes": len([r for r in backend.results.values() if r[1] in ACTIONS]),
        "packets": sum(len(p.packets) for p in finished),
        "webhook_posts": backend.webhook_posts,
        "code_mails_repeated_after_a_kill": sum(n - 1 for n in mails.values() if n > 1),
        "failures": failures,
    }


def _script(name: str) -> Script:
    return next(s for s in SCRIPTS if s.name == name)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    """Run the bench (or, as ``zygote``, the server-forking process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    z = sub.add_parser("zygote")
    z.add_argument("--port", type=int, required=True)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: a fresh temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--replicas", type=int, default=1, help="servers at once (PostgreSQL only, past 1)")
    args = parser.parse_args()
    if args.command != "zygote" and args.backend == "sqlite" and args.replicas != 1:
        parser.error("--replicas past 1 needs --backend postgresql (SQLite has one writer process)")
    if args.command == "zygote":
        zygote(args.port)
        return
    import tempfile

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10_000)
    again = f"--kills {args.kills} --seed {seed} --clients {args.clients}"
    if args.backend != "sqlite":
        again += f" --replicas {args.replicas} --backend {args.backend}"
    print(f"seed {seed} (python bench/kill.py {again} to repeat)")
    with tempfile.TemporaryDirectory(prefix="tierone-kill-") as tmp:
        data = args.data or Path(tmp) / "data"
        started = time.monotonic()
        server_log = Path(tmp) / "server.log"
        figures = run(args.kills, seed, args.clients, data, server_log, args.backend, args.replicas)
        figures["total_s"] = round(time.monotonic() - started, 1)
        if figures["failures"]:
            log = (Path(tmp) / "server.log").read_text(errors="replace")[-4000:]
            figures["server_log_tail"] = log
    for key, value in figures.items():
        if key not in ("kill_log", "failures", "server_log_tail"):
            print(f"{key:>28}: {value}")
    print("kills:")
    for line in figures["kill_log"]:
        print(f"  {line}")
    print(f"failures: {len(figures['failures'])}")
    for line in figures["failures"]:
        print(f"  {line}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(1 if figures["failures"] else 0)


if __name__ == "__main__":
    main()
