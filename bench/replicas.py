"""deploy/compose.yaml's topology started from processes on this machine, for the benchmarks (no Docker here).

    python bench/replicas.py                                  # PostgreSQL, Chroma, migrate, 2 replicas; a check
    python bench/replicas.py --replicas 3 --conversations 20  # more of each

With ``--backend postgresql`` (the default) it starts what the compose file describes, in the same
order: a PostgreSQL server from the Debian package's binaries (initdb into a temporary folder, pg_ctl
on a free loopback port, as the ``postgres`` user when run as root), a Chroma server (``chroma run``
from the chromadb package), ``tierone migrate`` once, then ``--replicas`` processes of ``tierone
serve`` on their own ports, all with the same ``TIERONE_DATABASE_URL``, ``TIERONE_CHROMA_URL`` and
``TIERONE_VAULT_KEY``. ``--backend sqlite`` starts one ``tierone serve`` on SQLite files and a Chroma
folder, the embedded default (SQLite has one writer process: one replica only).

In place of the reverse proxy, the client sends its requests round-robin across the replicas. The
smoke check opens ``--conversations`` conversations, sends each message of each to the next replica
in turn (so every conversation alternates between them), reads every transcript back from another
replica and checks it is complete and in order, and asks each replica's /readyz. Exit 1 on a failure.

bench/load_http.py uses ``topology()`` for its ``--setups`` runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("sqlite", "postgresql")
START_LIMIT_S = 240.0  # the embedding model loads in 10-40 s on a busy 2-core machine; replicas load it at once


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the package's user.
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A PostgreSQL server with one database ``tierone``, data in ``root/pg``; yields its URL."""
    found = sorted(d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{d}/initdb", os.X_OK))
    if not found:
        sys.exit("PostgreSQL's binaries are missing (/usr/lib/postgresql/*/bin/initdb): run `make postgres`")
    binaries = Path(found[-1])
    data = root / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        root.chmod(0o755)
        shutil.chown(data, "postgres")
    port = free_port()
    ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-t", "60"]
    # fsync stays on: the figures are for a real server. 300 connections: each replica's pool, and more.
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=300"
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(_as_owner(initdb), check=True, capture_output=True)
    subprocess.run(_as_owner([*ctl, "-o", options, "start"]), check=True, capture_output=True)
    try:
        subprocess.run(
            _as_owner([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "tierone"]),
            check=True,
            capture_output=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/tierone"
    finally:
        subprocess.run(_as_owner([*ctl, "-m", "fast", "stop"]), capture_output=True)


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with {process.returncode}; see {log}:\n{log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not answer {url} within {START_LIMIT_S:g} s; see {log}")


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path, tree: Path = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def chroma(root: Path) -> Iterator[str]:
    """A Chroma server (``chroma run``), data in ``root/chroma-server``; yields its URL."""
    port = free_port()
    argv = [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(root / "chroma-server")]
    log = root / "chroma.log"
    with _process([*argv, "--host", "127.0.0.1", "--port", str(port)], dict(os.environ), log) as process:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/api/v2/heartbeat", process, log, "chroma run")
        yield url


def _environment(root: Path, database_url: str | None, chroma_url: str | None) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = {
        **os.environ,
        # One data folder for all replicas on this one machine: the file outbox the clients read
        # one-time codes from. In deploy/compose.yaml each replica has its own and mail goes by SMTP.
        "TIERONE_DATA_DIR": str(root / "data"),
        "TIERONE_VAULT_KEY": Fernet.generate_key().decode(),  # every replica must read what another sealed
        "TIERONE_RATE_IP_PER_MINUTE": "0",  # every client here is one address
        "TIERONE_RATE_CONVERSATION_PER_MINUTE": "0",
        "TIERONE_LOG_LEVEL": "WARNING",
    }
    for name, value in (("TIERONE_DATABASE_URL", database_url), ("TIERONE_CHROMA_URL", chroma_url)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


@contextmanager
def topology(root: Path, backend: str, replicas: int, tree: Path = ROOT) -> Iterator[list[str]]:
    """Start the topology in ``root`` and yield the replicas' base URLs once each /readyz answers 200.

    ``tree``: the source tree whose ``cli`` serves (``python -m cli`` run there comes first on the
    path), for comparing with an earlier version; one without ``tierone migrate`` is not migrated
    (SQLite stores migrate themselves as they open).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if backend == "sqlite" and replicas != 1:
        raise ValueError("SQLite has one writer process: --replicas 1 with --backend sqlite")
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres(root)) if backend == "postgresql" else None
        chroma_url = stack.enter_context(chroma(root)) if backend == "postgresql" else None
        env = _environment(root, database_url, chroma_url)
        cli = [sys.executable, "-m", "cli"]
        has_migrate = "def migrate(" in (tree / "cli.py").read_text(encoding="utf-8")
        migrated = subprocess.run(
            [*cli, "migrate"] if has_migrate else ["true"], cwd=tree, env=env, capture_output=True, text=True
        )
        if migrated.returncode != 0:
            sys.exit(f"tierone migrate failed:\n{migrated.stdout}{migrated.stderr}")
        urls, processes = [], []
        for i in range(replicas):
            port = free_port()
            log = root / f"replica-{i + 1}.log"
            argv = [*cli, "serve", "--port", str(port)]
            processes.append((stack.enter_context(_process(argv, env, log, tree)), log))
            urls.append(f"http://127.0.0.1:{port}")
        for url, (process, log) in zip(urls, processes, strict=True):
            _wait(f"{url}/readyz", process, log, f"tierone serve on {url}")
        yield urls


def smoke(urls: list[str], conversations: int) -> list[str]:
    """Alternate every conversation's messages across the replicas; problems with what was read back."""
    clients = [httpx.Client(base_url=url, timeout=120) for url in urls]
    problems: list[str] = []
    turn = 0
    try:
        for client in clients:
            ready = client.get("/readyz")
            if ready.status_code != 200:
                problems.append(f"{client.base_url}/readyz answered {ready.status_code}: {ready.text}")
        for n in range(conversations):
            opened = clients[n % len(clients)].post("/conversations", json={"channel": "api"}).json()
            auth = {"Authorization": f"Bearer {opened['token']}"}
            path = f"/conversations/{opened['conversation_id']}"
            sent = ["the vpn disconnects every few minutes", "no", "no, still the same", "no"]
            for text in sent:
                turn += 1
                answer = clients[turn % len(clients)].post(f"{path}/messages", json={"text": text}, headers=auth)
                if answer.status_code != 200:
                    problems.append(f"{path}: {text!r} answered {answer.status_code}: {answer.text[:200]}")
            # Read back from a replica other than the one that took the last message.
            lines = clients[(turn + 1) % len(clients)].get(path, headers=auth).json()["transcript"]
            customer = [line["text"] for line in lines if line["role"] == "customer"]
            if customer != sent:
                problems.append(f"{path}: customer lines {customer} != sent {sent}")
            if [line["seq"] for line in lines] != list(range(1, len(lines) + 1)):
                problems.append(f"{path}: sequence numbers are not 1..{len(lines)}")
    finally:
        for client in clients:
            client.close()
    return problems


def main() -> None:
    """Start the topology, run the smoke check, print what ran and what was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="postgresql")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=10)
    args = parser.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tierone-replicas-") as tmp:
        with topology(Path(tmp), args.backend, args.replicas) as urls:
            print(f"up in {time.monotonic() - began:.1f} s: {args.backend}, replicas {' '.join(urls)}")
            problems = smoke(urls, args.conversations)
    print(f"{args.conversations} conversations alternated across {len(urls)} replicas; problems {len(problems)}")
    for problem in problems[:20]:
        print("  " + problem)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
