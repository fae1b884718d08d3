"""Fixtures of the HTTP tests: a client of the app on the test's runtime, and desk keys."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.auth import ApiKeys
from app.runtime import Runtime, desk_target
from server import create_app


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime=runtime)) as c:
        yield c


@pytest.fixture
def keys(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Bearer headers of two L2 technicians (Alex, Sam) and an admin (Root)."""
    store = ApiKeys(desk_target(runtime.settings))
    return {
        name: {"Authorization": f"Bearer {store.create(name, role)}"}
        for name, role in (("Alex", "l2"), ("Sam", "l2"), ("Root", "admin"))
    }
