"""Soak: thousands of conversations against the real server on loopback; are memory and open files flat?

    python bench/soak.py                                  # 5,000 conversations or 240 s, whichever comes first
    python bench/soak.py --conversations 500 --max-seconds 60 --clients 2

Starts ``tierone serve`` (python -m cli serve) on a free 127.0.0.1 port with a fresh data folder and the
per-client rate limits off, then plays short conversations from client threads: a status question, a
VPN problem walked through, a request for a person (a handoff), a password reset up to the one-time
code, each followed by a read of the transcript; every tenth also opens the conversation's
server-sent event stream, reads the first event and drops it. A sampler reads the server process's
resident memory (VmRSS in /proc/PID/status) and its open file descriptors (/proc/PID/fd) every
second. After a warm-up (the first 20% of the conversations), it compares the second half of the
samples with the first half: memory is called flat when the median grew by less than 5% and less than
20 MiB, open files when the medians differ by at most 2. It also prints the growth per 1,000
conversations from a least-squares line through the samples after warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from local_server import local_server

SCRIPTS = (
    ("is email down right now?",),
    ("my vpn keeps dropping every few minutes", "no, it still drops"),
    ("I want to talk to a human please", "thanks"),
    ("I forgot my password", "jane.doe@example.com"),
)


@dataclass
class Sample:
    """One reading of the server process."""

    at: float
    done: int  # conversations finished so far
    rss_kib: int
    fds: int


def read_proc(pid: int) -> tuple[int, int]:
    """Resident memory (KiB) and the number of open file descriptors of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    """Client threads playing conversations, a sampler thread reading /proc."""

    def __init__(self, url: str, pid: int, target: int, deadline: float, clients: int, seed: int) -> None:
        self.url = url
        self.pid = pid
        self.target = target
        self.deadline = deadline
        self.clients = clients
        self.seed = seed
        self.started = 0
        self.done = 0
        self.turns = 0
        self.errors: list[str] = []
        self.samples: list[Sample] = []
        self._guard = threading.Lock()
        self._stop = threading.Event()

    def _claim(self) -> bool:
        with self._guard:
            if self.started >= self.target or time.monotonic() > self.deadline:
                return False
            self.started += 1
            return True

    def _client(self, n: int) -> None:
        rng = random.Random(self.seed * 100 + n)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            while self._claim():
                try:
                    self._conversation(http, rng)
                except (httpx.HTTPError, AssertionError) as exc:
                    with self._guard:
                        self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                with self._guard:
                    self.done += 1

    def _conversation(self, http: httpx.Client, rng: random.Random) -> None:
        opened = http.post("/conversations", json={"channel": "chat"})
        assert opened.status_code == 201, opened.text
        cid, token = opened.json()["conversation_id"], opened.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        for text in rng.choice(SCRIPTS):
            answer = http.post(f"/conversations/{cid}/messages", json={"text": text}, headers=headers)
            assert answer.status_code == 200, f"{answer.status_code} {answer.text[:200]}"
            with self._guard:
                self.turns += 1
        view = http.get(f"/conversations/{cid}", headers=headers)
        assert view.status_code == 200 and view.json()["transcript"], view.text[:200]
        if rng.random() < 0.1:
            with http.stream("GET", f"/conversations/{cid}/events", params={"token": token}) as events:
                assert events.status_code == 200
                for line in events.iter_lines():
                    if line.startswith("data:"):
                        break

    def _sampler(self) -> None:
        while not self._stop.is_set():
            rss, fds = read_proc(self.pid)
            with self._guard:
                done = self.done
            self.samples.append(Sample(time.monotonic(), done, rss, fds))
            self._stop.wait(1.0)

    def run(self) -> None:
        """Play until the target count or the deadline, sampling all along."""
        sampler = threading.Thread(target=self._sampler, daemon=True)
        sampler.start()
        threads = [threading.Thread(target=self._client, args=(i,)) for i in range(self.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._stop.set()
        sampler.join()
        rss, fds = read_proc(self.pid)
        self.samples.append(Sample(time.monotonic(), self.done, rss, fds))


def slope_per_thousand(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x, scaled to 1,000 units of x."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return 1000 * sum((x - mx) * (y - my) for x, y in points) / var


def report(soak: Soak, elapsed: float) -> bool:
    """Print the figures; return whether memory and open files were flat."""
    warm = [s for s in soak.samples if s.done >= soak.done * 0.2]
    half = len(warm) // 2
    first, second = warm[:half], warm[half:]
    if not first or not second:
        print("too few samples after warm-up to judge; run longer")
        return False
    rss1 = statistics.median(s.rss_kib for s in first) / 1024
    rss2 = statistics.median(s.rss_kib for s in second) / 1024
    fd1 = statistics.median(s.fds for s in first)
    fd2 = statistics.median(s.fds for s in second)
    growth = (rss2 - rss1) / rss1 * 100
    rss_flat = growth < 5 and rss2 - rss1 < 20
    fds_flat = abs(fd2 - fd1) <= 2
    mib_per_k = slope_per_thousand([(s.done, s.rss_kib / 1024) for s in warm])
    fds_per_k = slope_per_thousand([(s.done, s.fds) for s in warm])
    print(f"conversations     {soak.done} ({soak.turns} turns) in {elapsed:.0f} s, {soak.done / elapsed:.1f}/s")
    print(f"errors            {len(soak.errors)}")
    for line in soak.errors[:5]:
        print(f"                  {line}")
    print(f"samples           {len(soak.samples)} ({len(warm)} after warm-up at {int(soak.done * 0.2)} conversations)")
    print(
        f"memory (RSS)      start {soak.samples[0].rss_kib / 1024:.0f} MiB, peak "
        f"{max(s.rss_kib for s in soak.samples) / 1024:.0f} MiB, end {soak.samples[-1].rss_kib / 1024:.0f} MiB"
    )
    print(
        f"  after warm-up   first half median {rss1:.1f} MiB, second half {rss2:.1f} MiB ({growth:+.1f}%),"
        f" slope {mib_per_k:+.2f} MiB per 1,000 conversations: {'flat' if rss_flat else 'NOT flat'}"
    )
    print(
        f"open files        start {soak.samples[0].fds}, max {max(s.fds for s in soak.samples)}, end "
        f"{soak.samples[-1].fds}; after warm-up medians {fd1:g} -> {fd2:g}, slope {fds_per_k:+.2f} per 1,000:"
        f" {'flat' if fds_flat else 'NOT flat'}"
    )
    return rss_flat and fds_flat and not soak.errors


def main() -> None:
    """Start the server, soak it, report, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--max-seconds", type=float, default=240)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tierone-soak-") as tmp:
        with local_server(Path(tmp)) as (url, server):
            print(f"server pid {server.pid} on {url}; {args.conversations} conversations or {args.max_seconds:.0f} s")
            started = time.monotonic()
            soak = Soak(url, server.pid, args.conversations, started + args.max_seconds, args.clients, args.seed)
            soak.run()
            flat = report(soak, time.monotonic() - started)
    print("result            " + ("flat" if flat else "NOT flat (or errors)"))
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
