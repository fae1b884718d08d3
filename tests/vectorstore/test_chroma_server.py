"""The routing index on a real Chroma server: replicas indexing at once, a server that is down or hangs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from typer.testing import CliRunner

from app.runtime import open_runtime
from cli import app as cli_app
from core.errors import TieroneError
from core.pack import Pack, load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings
from server import create_app
from tests.chroma_server import ChromaServer, free_port
from tests.conftest import Clock
from tests.fakes import HashingEmbedder
from vectorstore.index import RunbookIndex, collection_name, open_client

pytestmark = pytest.mark.chroma_server
ROOT = Path(__file__).resolve().parents[2]
MESSAGES = ["I forgot my password", "the printer jams", "my VPN drops", "what is the meaning of life"]

# One replica: opens the index on the server, waits for the go file, syncs, prints its answers.
REPLICA = """
import json, sys, time
from pathlib import Path
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.fakes import HashingEmbedder
from vectorstore.index import RunbookIndex, open_client
url, database, work, name = sys.argv[1:5]
work = Path(work)
client = open_client(url=url)
client.set_database(database)
pack = load_pack(BUNDLED_RUNBOOKS)
(work / f"ready-{name}").touch()
deadline = time.monotonic() + 60
while not (work / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.005)
index = RunbookIndex(client, pack, HashingEmbedder(), head_cache=work / f"heads-{name}")
report = index.sync()
answers = [[(c.runbook_id, c.score, c.matched) for c in index.query(m, 3)] for m in json.loads(sys.argv[5])]
print(json.dumps({"added": report.added, "updated": report.updated, "answers": answers}))
"""


def expected_ids(pack: Pack) -> set[str]:
    return {f"{rid}::{i}" for rid, rb in pack.runbooks.items() for i in range(1 + len(rb.meta.examples))}


def test_two_replicas_indexing_one_pack_at_once_store_each_vector_once(
    chroma_server: ChromaServer, tmp_path: Path
) -> None:
    database = chroma_server.fresh_database()
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, chroma_server.url, database, str(tmp_path), name, json.dumps(MESSAGES)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    try:
        # Both are ready before either starts, so that their syncs overlap.
        while not all((tmp_path / f"ready-{n}").exists() for n in "ab"):
            assert all(r.poll() is None for r in replicas), [r.communicate() for r in replicas]
            time.sleep(0.01)
        (tmp_path / "go").touch()
        outputs = [r.communicate(timeout=120) for r in replicas]
    finally:
        for r in replicas:
            if r.poll() is None:
                r.kill()
                r.wait()
    assert [r.returncode for r in replicas] == [0, 0], outputs
    a, b = (json.loads(out) for out, _ in outputs)

    pack = load_pack(BUNDLED_RUNBOOKS)
    client = open_client(url=chroma_server.url)
    client.set_database(database)
    collection = client.get_collection(collection_name(pack, HashingEmbedder(), shared=True))
    stored = collection.get(include=[])["ids"]
    assert len(stored) == len(expected_ids(pack)) and set(stored) == expected_ids(pack)
    assert [c.name for c in client.list_collections()] == [collection.name]
    # Between them they wrote every runbook, and both route every message alike.
    assert set(a["added"] + a["updated"] + b["added"] + b["updated"]) >= set(pack.runbooks)
    assert a["answers"] == b["answers"] and len(a["answers"]) == len(MESSAGES)


def test_a_replica_on_a_newer_pack_leaves_the_older_ones_collection_alone(
    chroma_server: ChromaServer, tmp_path: Path
) -> None:
    # A deploy under way: the old replica still routes on the old pack while the new one indexes its own.
    database = chroma_server.fresh_database()

    def client():  # type: ignore[no-untyped-def]
        opened = open_client(url=chroma_server.url)
        opened.set_database(database)
        return opened

    pack_dir = tmp_path / "pack"
    shutil.copytree(BUNDLED_RUNBOOKS, pack_dir)
    old = RunbookIndex(client(), load_pack(pack_dir), HashingEmbedder(), head_cache=tmp_path / "heads")
    old.sync()
    printer = pack_dir / "devices" / "printer-problem.md"
    printer.write_text(printer.read_text().replace("examples:\n", "examples:\n  - the plotter jams\n", 1))
    (pack_dir / "devices" / "disk-full.md").unlink()
    new = RunbookIndex(client(), load_pack(pack_dir), HashingEmbedder(), head_cache=tmp_path / "heads")
    report = new.sync()
    assert len(report.added) == 24 and report.removed == []
    assert new.query("the plotter jams", 1)[0].runbook_id == "printer-problem"

    # A third replica of the old pack finds its collection whole, disk-full included.
    again = RunbookIndex(client(), load_pack(BUNDLED_RUNBOOKS), HashingEmbedder(), head_cache=tmp_path / "heads")
    assert again.sync().unchanged == 25 and again.count() == old.count() == len(expected_ids(old.pack))
    assert "disk-full" in {c.runbook_id for c in again.query("my C drive is full", 5)}


def test_a_server_that_refuses_fails_the_start_naming_the_setting_and_host() -> None:
    port = free_port()
    with pytest.raises(TieroneError, match=rf"127\.0\.0\.1:{port} \(TIERONE_CHROMA_URL\).*Connection refused"):
        open_client(url=f"http://127.0.0.1:{port}")


def test_a_server_that_never_answers_fails_the_start_instead_of_hanging() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(TieroneError, match=r"TIERONE_CHROMA_URL.*within 0\.5 s \(ReadTimeout"):
            open_client(url=url, timeout_s=0.5)


@pytest.mark.parametrize(
    "url", ["chroma:8000", "http://chroma:port", "ftp://chroma:8000", "http://user:secret@chroma:8000", "http://h/x"]
)
def test_a_malformed_url_names_the_setting_and_never_echoes_a_password(
    url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match="TIERONE_CHROMA_URL must be a Chroma server's http://host:port"):
        Settings(chroma_url=url)
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TIERONE_CHROMA_URL", url)
    result = CliRunner().invoke(cli_app, ["index"])
    assert result.exit_code == 2 and "chroma_url" in result.output and "TIERONE_CHROMA_URL" in result.output
    assert "secret" not in result.output and "Traceback" not in result.output


def test_settings_keep_a_well_formed_url_and_fill_in_the_port() -> None:
    assert Settings(chroma_url="http://chroma.internal:9000/").chroma_url == "http://chroma.internal:9000"
    assert Settings(chroma_url="http://chroma").chroma_url == "http://chroma:8000"
    assert Settings(chroma_url="").chroma_url is None and Settings().chroma_url is None


def wait_until_stopped(pid: int) -> None:
    """Return once every thread of the process is stopped (a signal is delivered after kill returns)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = [
            (task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in Path(f"/proc/{pid}/task").iterdir()
        ]
        if all(state in ("T", "t") for state in states):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not stop")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A server of this test's own, to stop and start."""
    (tmp_path / "own").mkdir()
    server = ChromaServer(tmp_path / "own")
    server.start()
    yield server
    server.stop()


def test_a_server_that_goes_down_fails_readiness_not_the_turns(own_server: ChromaServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, chroma_url=own_server.url)
    runtime = open_runtime(settings, embedder=HashingEmbedder(), clock=Clock())
    with TestClient(create_app(settings, runtime=runtime)) as http:
        assert http.get("/readyz").json()["checks"]["chroma_server"] == "ok"
        own_server.stop()

        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["chroma_server"].startswith(f"unreachable: the Chroma server at {own_server.url}")
        assert ready.json()["checks"]["index"] == "unreachable: ConnectionError"
        # The turn routes on the vectors the replica loaded at start.
        body = http.post("/conversations", json={"channel": "chat"}).json()
        auth = {"Authorization": f"Bearer {body['token']}"}
        text = "I forgot my password"
        turn = http.post(f"/conversations/{body['conversation_id']}/messages", json={"text": text}, headers=auth)
        assert turn.status_code == 200, turn.text
        assert turn.json()["runbook_id"] == "password-reset" and turn.json()["stage"] == "identity"

        own_server.start()
        assert http.get("/readyz").status_code == 200
    # A replica that starts while the server is down stops at once, and says why.
    own_server.stop()
    with pytest.raises(TieroneError, match="TIERONE_CHROMA_URL"):
        open_runtime(settings, embedder=HashingEmbedder(), clock=Clock())


def test_a_server_that_hangs_fails_calls_and_readiness_within_the_bound(
    own_server: ChromaServer, tmp_path: Path
) -> None:
    client = open_client(url=own_server.url, timeout_s=1.0)
    index = RunbookIndex(client, load_pack(BUNDLED_RUNBOOKS), HashingEmbedder(), head_cache=tmp_path / "heads")
    index.sync()
    before = index.query("the printer jams", 3)
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, chroma_url=own_server.url)
    runtime = open_runtime(settings, clock=Clock(), index=index)
    pid = own_server.pid
    with TestClient(create_app(settings, runtime=runtime)) as http:
        os.kill(pid, signal.SIGSTOP)  # the process keeps its port and answers nothing
        try:
            wait_until_stopped(pid)
            with pytest.raises(httpx.TimeoutException):
                index.count()
            assert index.query("the printer jams", 3) == before
            ready = http.get("/readyz")
            assert ready.status_code == 503 and "within 2 s (ReadTimeout" in ready.json()["checks"]["chroma_server"]
        finally:
            os.kill(pid, signal.SIGCONT)
        assert http.get("/readyz").status_code == 200


def test_tierone_index_names_an_unreachable_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_CHROMA_URL", f"http://127.0.0.1:{free_port()}")
    result = CliRunner().invoke(cli_app, ["index"])
    assert result.exit_code == 2 and "TIERONE_CHROMA_URL" in " ".join(result.output.split())
    assert not (tmp_path / "data" / "chroma").exists()


@pytest.mark.model
def test_tierone_index_builds_the_servers_collection_and_no_folder(
    chroma_server: ChromaServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_CHROMA_URL", chroma_server.url)
    first = CliRunner().invoke(cli_app, ["index"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli_app, ["index"])
    said = " ".join(again.output.split())  # the console wraps long lines
    assert again.exit_code == 0 and "0 added, 0 updated, 0 removed, 25 unchanged" in said, again.output
    assert not (tmp_path / "data" / "chroma").exists()
