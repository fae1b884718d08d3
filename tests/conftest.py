"""Fixtures every test may use: a hand-moved clock, the embedding model, the routing index, runtimes.

A test that needs the embedding model (it asks for the ``embedder`` fixture, directly or through
``bundled_index``, ``make_runtime`` or ``runtime``) is marked ``model``; ``make test-unit`` runs the
others (``-m "not model and not browser"``) without loading it, and fails if one of them does.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.runtime import Runtime, open_runtime
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.pg import db_backend, db_target, db_target_of, pg_url, postgres_server  # noqa: F401  (fixtures)
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client

# The session's Chroma server (``chroma_server``), started only for the tests that ask for it.
pytest_plugins = ["tests.chroma_server"]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


# Where this process's open files are listed (Linux, then macOS).
_FD_DIRS = [Path("/proc/self/fd"), Path("/dev/fd")]
# Past this many open files a test's leftovers are collected: half the soft limit (1,024 by default on Linux).
_FILE_BUDGET = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2


def _open_files() -> int:
    listed = next((d for d in _FD_DIRS if d.is_dir()), None)
    return len(os.listdir(listed)) if listed is not None else 0


@pytest.fixture(autouse=True)
def _release_open_files() -> Iterator[None]:
    """Collect what finished tests left once many files are open.

    A runtime a test opened itself (``open_runtime``, not the fixtures, which close theirs) holds a
    dozen SQLite connections in reference cycles: only the cycle collector frees them, and it may
    not run before a few dozen tests' worth pass a default limit of 1,024 open files.
    """
    yield
    if _open_files() > _FILE_BUDGET:
        gc.collect()


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def bundled_index(embedder: MiniLMEmbedder, tmp_path_factory: pytest.TempPathFactory) -> RunbookIndex:
    index = RunbookIndex(open_client(tmp_path_factory.mktemp("chroma")), load_pack(BUNDLED_RUNBOOKS), embedder)
    index.sync()
    return index


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_runtime(tmp_path: Path, bundled_index: RunbookIndex, clock: Clock) -> Iterator[Callable[..., Runtime]]:
    """Open a runtime on fresh stores in tmp_path, sharing the session's routing index; closed after the test."""
    opened: list[Runtime] = []

    def make(data_dir: Path | None = None) -> Runtime:
        settings = Settings(data_dir=data_dir or tmp_path / "data", runbooks=BUNDLED_RUNBOOKS)
        opened.append(open_runtime(settings, clock=clock, index=bundled_index))
        return opened[-1]

    yield make
    # Each runtime holds a dozen SQLite connections: left to the garbage collector, a few dozen
    # tests' worth exhaust a default limit of 1,024 open files.
    for runtime in opened:
        runtime.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


def latest_code(runtime: Runtime, conversation_id: str) -> str:
    body = runtime.outbox.messages(conversation_id)[-1]["body"]
    match = re.search(r"\b(\d{6})\b", body)
    assert match, body
    return match.group(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "embedder" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)


_MODEL_MODULES = frozenset({"onnxruntime", "torch"})
_loaded_by: list[str] = []


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # Remembers the first test, not marked model, after which the model's runtime was imported.
    if not _loaded_by and item.get_closest_marker("model") is None and _MODEL_MODULES & set(sys.modules):
        _loaded_by.append(item.nodeid)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # A run that leaves out the model's tests must not have loaded the model (ONNX Runtime or torch).
    if "not model" in (session.config.option.markexpr or "") and _loaded_by:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"{_loaded_by[0]} loaded the embedding model but is not marked 'model'", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
