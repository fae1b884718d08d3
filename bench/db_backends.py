"""The stores' write and read costs on SQLite and on PostgreSQL, side by side in one run.

Times, per operation and in rounds that alternate between the backends (so a slower moment of the
machine falls on both): a message-log line written (its own transaction, number taken under the
conversation's lock), a conversation's lines read back, and a tool run recorded before and after
(two transactions). PostgreSQL is a server this script starts on loopback (the Debian package's
binaries, as the tests do, but with fsync on) unless ``--url`` names one; SQLite runs as the stores
open it (WAL, synchronous=NORMAL). Prints the median and p95 per operation.

    .venv/bin/python bench/db_backends.py [--rounds 5] [--ops 200] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.messages import MessageLog  # noqa: E402
from core.clock import utc_now  # noqa: E402
from core.db import DatabaseTarget, DatabaseUrl  # noqa: E402
from tools.ledger import Ledger  # noqa: E402


def _time(op: Callable[[int], object], n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        op(i)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _round(target: DatabaseTarget, ops: int) -> dict[str, list[float]]:
    log, ledger = MessageLog(target, utc_now), Ledger(target, utc_now)
    cid = "c_" + uuid.uuid4().hex[:8]
    try:
        return {
            "message line written": _time(lambda i: log.append(cid, "customer", f"message {i}", "chat"), ops),
            "conversation read (<= 200 lines)": _time(lambda i: log.lines(cid), ops),
            "tool run recorded (start + finish)": _time(
                lambda i: (
                    ledger.start(f"{cid}:{i}", cid, "unlock", "acc-1"),
                    ledger.finish(f"{cid}:{i}", cid, "unlock", "acc-1", {"ok": True}, ok=True),
                ),
                ops,
            ),
        }
    finally:
        log.close()


def main() -> None:
    """Run the rounds and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=200)
    parser.add_argument("--url", help="a PostgreSQL server's database URL (default: start one here)")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        from tests.pg import PgServer

        server = PgServer(fsync=True)  # durable commits, as in production
        with psycopg.connect(f"{server.url}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench TEMPLATE template0")
        url = f"{server.url}/bench"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            targets: dict[str, DatabaseTarget] = {
                "sqlite": Path(tmp) / "desk.sqlite",
                "postgresql": DatabaseUrl(url),
            }
            found: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for backend, target in targets.items():
                    for op, times in _round(target, args.ops).items():
                        found.setdefault((op, backend), []).extend(times)
        print(f"{args.rounds} rounds x {args.ops} operations, alternating backends; milliseconds")
        print(f"{'operation':<38}{'backend':<12}{'p50':>8}{'p95':>8}")
        for (op, backend), times in sorted(found.items()):
            p95 = statistics.quantiles(times, n=20)[18]
            print(f"{op:<38}{backend:<12}{statistics.median(times):>8.2f}{p95:>8.2f}")
    finally:
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
