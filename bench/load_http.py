"""HTTP load test: many conversations at once against the real server on loopback, then a loss/duplicate check.

    python bench/load_http.py                          # 20 conversations at once, 3 each, think time 0
    python bench/load_http.py --concurrent 20 --per-worker 5 --think 1.0 --max-seconds 120

Starts ``tierone serve`` (python -m cli serve: uvicorn, the offline brain, the bundled pack) on a free
127.0.0.1 port with a fresh data folder and the per-client rate limits off (every client here shares
one address). ``--concurrent`` workers each open a conversation over the JSON API, play a scripted
multi-turn conversation through it with httpx (a password reset with the one-time code read from the
outbox, a lockout, a VPN walk-through, a status question, a handoff followed by more messages, ...),
then the next, ``--per-worker`` times. Between a reply and the next message a worker waits ``--think``
seconds give or take half (uniformly drawn), and the workers start spread over one think time, as
customers do not type in step; ``--think 0`` sends the next message at once (20 requests always in
flight: latency is then mostly queueing). One warm-up conversation per script runs first, untimed.

Then every conversation is read back through the API (GET /conversations/{id} with its token) and
checked: each message sent is in the transcript exactly once, in order, with its PII redacted as the
server redacts it, each followed by at least one bot line, sequence numbers 1..n without gaps; and
every POST got a 200 with at least one reply. Prints turns/s and per-turn latency (p50, p95, p99,
max) as the client saw it, and exits 1 when a check fails or a request errored. Bounded: at most
``--max-seconds`` for the timed part (workers stop starting turns after it).

Backends and replicas side by side, in one run:

    python bench/load_http.py --setups sqlite:1,postgresql:1,postgresql:2 --concurrent 20,50,100 \
        --think 1 --per-worker 2 --rounds 3

``--setups`` names each setup as BACKEND:REPLICAS. The SQLite server and the PostgreSQL topology of
bench/replicas.py (PostgreSQL, a Chroma server, ``tierone migrate``, as many ``tierone serve`` as the
largest PostgreSQL setup asks) are started once and stay up together; ``postgresql:1`` sends to the
first replica only, ``postgresql:2`` round-robins every request (opening, each message, the read-back)
across two, as a proxy would, so one conversation's messages alternate between replicas. Each round
runs every concurrency level against every setup in turn, interleaved, and the table reports each
cell's median over the rounds, with the load average at the start and end.

``--baseline-tree DIR`` adds the setup ``before:1``: the server of another source tree (an earlier
commit, e.g. ``git archive COMMIT | tar -x -C DIR``) on SQLite, against the same client, to see
that the SQLite default keeps its speed: ``--setups before:1,sqlite:1 --baseline-tree DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from replicas import topology

from core.redact import redact

OTP = "{otp}"
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("I forgot my password", "jane.doe@example.com", OTP, "yes, I'm in, thanks"),
    ("my account is locked after too many tries", "bob.smith@example.com", OTP, "no", "no", "yes"),
    ("the vpn disconnects every few minutes", "no", "no, still the same", "no"),
    ("is email down right now?", "yes", "thanks"),
    ("hello", "outlook stopped syncing on my phone", "yes it works now", "thanks"),
    ("I clicked a link in a strange email and typed my password", "hello?", "are you there"),
    ("printer on floor 3 shows offline", "still no", "let me talk to a human", "ok"),
    ("can you book me a flight to Lisbon", "never mind then"),
)


@dataclass
class Played:
    """One conversation as the client played it."""

    conversation_id: str
    token: str
    sent: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def latest_code(outbox: Path, conversation_id: str) -> str:
    """The one-time code last mailed in a conversation (the demo outbox is a local file)."""
    code = "000000"
    for line in outbox.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["conversation_id"] == conversation_id:
            found = re.search(r"\b(\d{6})\b", record["body"])
            code = found.group(1) if found else code
    return code


class RoundRobin:
    """The replicas' clients, each request to the next one (one replica: always the same)."""

    def __init__(self, clients: list[httpx.AsyncClient]) -> None:
        self.clients = clients
        self._turn: Iterator[int] = itertools.cycle(range(len(clients)))

    def next(self) -> httpx.AsyncClient:
        """The client of the replica whose turn it is."""
        return self.clients[next(self._turn)]


async def play(
    replicas: RoundRobin,
    script: tuple[str, ...],
    outbox: Path,
    think: float,
    deadline: float,
    rng: random.Random | None = None,
) -> Played:
    """Open a conversation and play one script through it; time each message.

    The pause after each reply is ``think`` seconds give or take half (drawn from ``rng``), as
    people do not all answer in step.
    """
    try:
        created = await replicas.next().post("/conversations", json={"channel": "api"})
        created.raise_for_status()
    except httpx.HTTPError as exc:  # counted as a failed conversation, not a crash of the whole run
        return Played("?", "", errors=[f"POST /conversations: {type(exc).__name__}: {exc}"])
    body = created.json()
    played = Played(body["conversation_id"], body["token"])
    auth = {"Authorization": f"Bearer {played.token}"}
    for turn in script:
        if time.monotonic() > deadline:
            break
        text = latest_code(outbox, played.conversation_id) if turn == OTP else turn
        started = time.perf_counter()
        try:
            response = await replicas.next().post(
                f"/conversations/{played.conversation_id}/messages", json={"text": text}, headers=auth
            )
        except httpx.HTTPError as exc:
            played.errors.append(f"{played.conversation_id}: {text!r}: {type(exc).__name__}: {exc}")
            break
        played.latencies_ms.append((time.perf_counter() - started) * 1000)
        played.sent.append(text)
        if response.status_code != 200:
            played.errors.append(f"{played.conversation_id}: {text!r}: HTTP {response.status_code} {response.text}")
            break
        if not response.json()["replies"]:
            played.errors.append(f"{played.conversation_id}: {text!r}: no reply")
        if think:
            await asyncio.sleep(think * (0.5 + rng.random()) if rng else think)
    return played


async def verify(replicas: RoundRobin, played: Played) -> list[str]:
    """Problems with one conversation's transcript as the API returns it (none: an empty list)."""
    if played.conversation_id == "?":
        return []
    try:
        response = await replicas.next().get(
            f"/conversations/{played.conversation_id}", headers={"Authorization": f"Bearer {played.token}"}
        )
    except httpx.HTTPError as exc:
        return [f"{played.conversation_id}: GET failed: {type(exc).__name__}: {exc}"]
    if response.status_code != 200:
        return [f"{played.conversation_id}: GET answered {response.status_code}"]
    lines = response.json()["transcript"]
    problems = []
    seqs = [line["seq"] for line in lines]
    if seqs != list(range(1, len(lines) + 1)):
        problems.append(f"{played.conversation_id}: sequence numbers {seqs} are not 1..{len(lines)}")
    customer = [line["text"] for line in lines if line["role"] == "customer"]
    expected = [redact(text) for text in played.sent]
    if customer != expected:
        problems.append(f"{played.conversation_id}: customer lines {customer} != sent {expected}")
    for i, line in enumerate(lines):
        if line["role"] == "customer" and (i + 1 >= len(lines) or lines[i + 1]["role"] != "bot"):
            problems.append(f"{played.conversation_id}: message {line['seq']} has no bot answer after it")
    return problems


async def run(urls: list[str], outbox: Path, args: argparse.Namespace, concurrent: int) -> tuple[list[Played], float]:
    """Warm up, then play the timed conversations; return them and the timed wall time."""
    limits = httpx.Limits(max_connections=concurrent + 5, max_keepalive_connections=concurrent + 5)
    async with ReplicaClients(urls, limits) as replicas:
        forever = time.monotonic() + 3600
        warm = await asyncio.gather(*(play(replicas, s, outbox, 0, forever) for s in SCRIPTS))
        if any(p.errors for p in warm):
            sys.exit("warm-up failed: " + "; ".join(e for p in warm for e in p.errors))
        rng = random.Random(args.seed)
        plans = [[rng.choice(SCRIPTS) for _ in range(args.per_worker)] for _ in range(concurrent)]
        deadline = time.monotonic() + args.max_seconds

        async def worker(plan: list[tuple[str, ...]], seed: int) -> list[Played]:
            own = random.Random(seed)
            # Customers arrive spread over one think time, not all in the same millisecond.
            await asyncio.sleep(own.random() * args.think)
            done = []
            for script in plan:
                if time.monotonic() > deadline:
                    break
                done.append(await play(replicas, script, outbox, args.think, deadline, own))
            return done

        started = time.perf_counter()
        results = await asyncio.gather(*(worker(plan, args.seed * 1000 + i) for i, plan in enumerate(plans)))
        wall = time.perf_counter() - started
        played = [p for done in results for p in done]
        problems = await asyncio.gather(*(verify(replicas, p) for p in played))
    for p, found in zip(played, problems, strict=True):
        p.errors.extend(found)
    return played, wall


class ReplicaClients:
    """One httpx client per replica, as a RoundRobin, closed together."""

    def __init__(self, urls: list[str], limits: httpx.Limits) -> None:
        self._clients = [httpx.AsyncClient(base_url=url, timeout=60, limits=limits) for url in urls]

    async def __aenter__(self) -> RoundRobin:
        return RoundRobin(self._clients)

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients:
            await client.aclose()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Cell:
    """One setup at one concurrency level, in one round."""

    turns: int
    turns_per_s: float
    p50_ms: float
    p95_ms: float
    errors: list[str]


def measure(urls: list[str], outbox: Path, args: argparse.Namespace, concurrent: int) -> Cell:
    """One timed run; print its figures as the single-setup bench always has."""
    played, wall = asyncio.run(run(urls, outbox, args, concurrent))
    latencies = [ms for p in played for ms in p.latencies_ms]
    errors = [e for p in played for e in p.errors]
    turns = len(latencies)
    print(
        f"{len(played)} conversations, {turns} turns, {concurrent} at once, think {args.think:g} s, "
        f"in {wall:.1f} s = {turns / wall:.1f} turns/s"
    )
    if latencies:
        print(
            f"per turn (client-side, HTTP on loopback): p50 {percentile(latencies, 50):.1f} ms, "
            f"p95 {percentile(latencies, 95):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
            f"max {max(latencies):.1f} ms, mean {statistics.fmean(latencies):.1f} ms"
        )
    sent = sum(len(p.sent) for p in played)
    print(f"transcripts checked: {len(played)}; messages sent {sent}; problems {len(errors)}")
    for error in errors[:20]:
        print("  " + error)
    if not latencies:
        errors.append("no turn was timed")
        return Cell(0, 0.0, 0.0, 0.0, errors)
    return Cell(turns, turns / wall, percentile(latencies, 50), percentile(latencies, 95), errors)


def parse_setups(text: str) -> list[tuple[str, int]]:
    """'sqlite:1,postgresql:2' -> [('sqlite', 1), ('postgresql', 2)], with a clear error for anything else."""
    setups = []
    for part in text.split(","):
        backend, _, count = part.strip().partition(":")
        if backend not in ("sqlite", "postgresql", "before") or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--setups: {part!r} is not BACKEND:REPLICAS (sqlite:1, postgresql:2, before:1)")
        if backend != "postgresql" and int(count) != 1:
            raise SystemExit(f"--setups: SQLite has one writer process; use {backend}:1")
        setups.append((backend, int(count)))
    return setups


def load() -> str:
    """The load average over 1, 5 and 15 minutes."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    """Start the servers, load them, check every transcript, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrent", default="20", help="conversations in flight at once; a list: 20,50,100")
    parser.add_argument("--per-worker", type=int, default=3, help="conversations each worker plays in turn")
    parser.add_argument("--think", type=float, default=0.0, help="seconds between a reply and the next message")
    parser.add_argument("--max-seconds", type=float, default=120, help="stop starting turns after this")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--setups", default="sqlite:1", help="BACKEND:REPLICAS, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every cell; the table shows medians")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="the source tree of setup before:1")
    args = parser.parse_args()
    setups = parse_setups(args.setups)
    if any(backend == "before" for backend, _ in setups) and not (args.baseline_tree and args.baseline_tree.is_dir()):
        raise SystemExit("--setups before:1 needs --baseline-tree DIR, the earlier source tree")
    levels = [int(n) for n in args.concurrent.split(",")]
    print(f"load average at start {load()} on {os.cpu_count()} CPUs")
    cells: dict[tuple[str, int, int], list[Cell]] = {}
    with ExitStack() as stack:
        places: dict[str, tuple[list[str], Path]] = {}
        for backend in dict.fromkeys(backend for backend, _ in setups):
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tierone-load-{backend}-")))
            most = max(count for b, count in setups if b == backend)
            began = time.monotonic()
            if backend == "before":
                urls = stack.enter_context(topology(root, "sqlite", 1, args.baseline_tree.resolve()))
            else:
                urls = stack.enter_context(topology(root, backend, most))
            print(f"{backend}: {most} replica(s) up in {time.monotonic() - began:.1f} s")
            places[backend] = (urls, root / "data" / "outbox" / "mail.jsonl")
        for round_number in range(1, args.rounds + 1):
            for concurrent in levels:
                for backend, count in setups:
                    urls, outbox = places[backend]
                    print(f"-- round {round_number}, {backend}:{count}, {concurrent} at once (load {load()})")
                    cell = measure(urls[:count], outbox, args, concurrent)
                    cells.setdefault((backend, count, concurrent), []).append(cell)
    errors = [e for runs in cells.values() for cell in runs for e in cell.errors]
    if len(cells) > 1 or args.rounds > 1:
        print(f"\nmedians of {args.rounds} round(s); think {args.think:g} s; load average at end {load()}")
        print(f"{'setup':<14} {'at once':>7} {'turns/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'turns':>6}")
        for (backend, count, concurrent), runs in sorted(cells.items(), key=lambda kv: (kv[0][2], kv[0][:2])):
            print(
                f"{backend + ':' + str(count):<14} {concurrent:>7} "
                f"{statistics.median(c.turns_per_s for c in runs):>8.1f} "
                f"{statistics.median(c.p50_ms for c in runs):>8.1f} "
                f"{statistics.median(c.p95_ms for c in runs):>8.1f} {sum(c.turns for c in runs):>6}"
            )
    print(f"problems in all: {len(errors)}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
