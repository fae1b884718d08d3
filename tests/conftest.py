from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.runtime import Runtime, open_runtime
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 23, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


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
def make_runtime(tmp_path: Path, bundled_index: RunbookIndex, clock: Clock) -> Callable[..., Runtime]:
    """Open a runtime on fresh stores in tmp_path, sharing the session's routing index."""

    def make(data_dir: Path | None = None) -> Runtime:
        settings = Settings(data_dir=data_dir or tmp_path / "data", runbooks=BUNDLED_RUNBOOKS)
        return open_runtime(settings, clock=clock, index=bundled_index)

    return make


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


def latest_code(runtime: Runtime, conversation_id: str) -> str:
    body = runtime.outbox.messages(conversation_id)[-1]["body"]
    match = re.search(r"\b(\d{6})\b", body)
    assert match, body
    return match.group(1)
