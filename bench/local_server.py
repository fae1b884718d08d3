"""The real server (`tierone serve`) on a free loopback port, for the HTTP benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve with data in ``tmp/data`` and the per-client rate limits off (every client here is one address).

    Yields the base URL once /healthz answers 200 and the server process; its log is ``tmp/server.log``.
    """
    port = free_port()
    env = {
        **os.environ,
        "TIERONE_DATA_DIR": str(tmp / "data"),
        "TIERONE_RATE_IP_PER_MINUTE": "0",
        "TIERONE_RATE_CONVERSATION_PER_MINUTE": "0",
        "TIERONE_LOG_LEVEL": "WARNING",
    }
    log = (tmp / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = time.monotonic() + 180
        while True:
            if server.poll() is not None or time.monotonic() > ready:
                sys.exit(f"the server did not start; see {tmp}/server.log")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
