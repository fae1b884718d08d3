"""PostgreSQL stops under load: requests answer 503 with Retry-After, never hang, and recover by themselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.runtime import migrate_databases, open_runtime
from core import db as core_db
from core.settings import BUNDLED_RUNBOOKS, Settings
from server import create_app
from tests.conftest import Clock
from tests.net import free_port
from tests.pg import _as_owner, bin_dir
from vectorstore.index import RunbookIndex

pytestmark = pytest.mark.postgres

# A bound on any one request, outage or not (a checkout gives up after CHECKOUT_TIMEOUT_S): past it,
# with a wide margin for a slow machine, the service is hanging.
BOUND_S = core_db.CHECKOUT_TIMEOUT_S + 20


class OwnPostgres:
    """A PostgreSQL server of this test's own, to stop and start (the session's server is left alone)."""

    def __init__(self) -> None:
        binaries = bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="tierone-pg-away-"))
        self.root.chmod(0o755)
        data = self.root / "data"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(data, "postgres")
        port = free_port()
        self.ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-t", "60"]
        self.options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off"
        initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(_as_owner(initdb), check=True, capture_output=True)
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def start(self) -> None:
        subprocess.run(_as_owner([*self.ctl, "-o", self.options, "start"]), check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(_as_owner([*self.ctl, "-m", mode, "stop"]), check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run(_as_owner([*self.ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        yield server
    finally:
        for key in [k for k in core_db._pools if k[0] == server.url]:
            pool, _ = core_db._pools.pop(key)
            pool.close(timeout=5)
        server.remove()


def until(what: Callable[[], bool], seconds: float = 90.0) -> None:
    """Wait for a condition that the test itself brought about; fail, never hang, past the deadline."""
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.1)


class Load:
    """A thread reading one conversation over and over, recording each answer and how long it took."""

    def __init__(self, client: TestClient, path: str, headers: dict[str, str]) -> None:
        self.answers: list[tuple[int, str | None, float]] = []
        self._stop = threading.Event()
        self._args = (client, path, headers)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, path, headers = self._args
        while not self._stop.is_set():
            began = time.monotonic()
            response = client.get(path, headers=headers)
            self.answers.append((response.status_code, response.headers.get("retry-after"), time.monotonic() - began))

    def seen(self, status: int, after: int = 0) -> bool:
        return any(code == status for code, _, _ in self.answers[after:])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BOUND_S * 2)
        assert not self._thread.is_alive(), "a request hung"


def test_a_database_that_goes_away_answers_503_and_the_service_recovers_by_itself(
    own_postgres: OwnPostgres, tmp_path: Path, clock: Clock, bundled_index: RunbookIndex
) -> None:
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, database_url=own_postgres.url)  # type: ignore[arg-type]
    migrate_databases(settings)
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    with TestClient(create_app(settings, runtime=runtime)) as client:
        created = client.post("/conversations", json={"channel": "chat"}).json()
        cid, auth = created["conversation_id"], {"Authorization": f"Bearer {created['token']}"}
        said = client.post(f"/conversations/{cid}/messages", json={"text": "my VPN keeps dropping"}, headers=auth)
        assert said.status_code == 200, said.text
        load = Load(client, f"/conversations/{cid}", auth)
        try:
            until(lambda: load.seen(200))
            own_postgres.stop("fast")
            outage = len(load.answers)
            until(lambda: load.seen(503, outage))
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable")
            began = time.monotonic()
            turn = client.post(f"/conversations/{cid}/messages", json={"text": "still there?"}, headers=auth)
            assert turn.status_code == 503 and turn.headers["retry-after"].isdigit(), turn.text
            assert time.monotonic() - began < BOUND_S
            assert "unavailable" in turn.json()["detail"]

            own_postgres.start()
            back = len(load.answers)
            until(lambda: load.seen(200, back))
        finally:
            load.stop()
        # The same process, never restarted, serves again: a turn, the readiness probe, the transcript.
        again = client.post(f"/conversations/{cid}/messages", json={"text": "still there?"}, headers=auth)
        assert again.status_code == 200, again.text
        assert client.get("/readyz").status_code == 200
        texts = [line["text"] for line in client.get(f"/conversations/{cid}", headers=auth).json()["transcript"]]
        assert "my VPN keeps dropping" in texts and texts.count("still there?") == 1
    codes = {code for code, _, _ in load.answers}
    assert codes == {200, 503}, codes
    assert all(retry is not None and retry.isdigit() for code, retry, _ in load.answers if code == 503)
    assert max(took for _, _, took in load.answers) < BOUND_S
