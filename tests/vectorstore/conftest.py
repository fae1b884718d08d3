"""The routing index's two homes, for contract tests that must hold in both: a folder and a Chroma server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from chromadb.api import ClientAPI

from tests.chroma_server import ChromaServer
from vectorstore.index import open_client

OpenClient = Callable[[], ClientAPI]


@pytest.fixture(params=["folder", pytest.param("server", marks=pytest.mark.chroma_server)])
def open_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenClient:
    """Opens a new client on this test's index, as a new process would: in a folder, or on the server."""
    if request.param == "folder":
        return lambda: open_client(tmp_path / "chroma")
    server: ChromaServer = request.getfixturevalue("chroma_server")
    database = server.fresh_database()

    def on_server() -> ClientAPI:
        client = open_client(url=server.url)
        client.set_database(database)
        return client

    return on_server
