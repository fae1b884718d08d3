"""A runtime on either backend, for store tests that run through the whole service.

Import ``runtime_on_backend`` (the fixture ``runtime``) into a test module to run its tests once on
SQLite files and once on a fresh PostgreSQL database (``TIERONE_DATABASE_URL`` set, the schema
applied as ``tierone migrate`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.runtime import Runtime, migrate_databases, open_runtime
from core.settings import BUNDLED_RUNBOOKS, Settings
from tests.conftest import Clock
from vectorstore.index import RunbookIndex


@pytest.fixture(name="runtime")
def runtime_on_backend(
    db_backend: str,
    make_runtime: Callable[..., Runtime],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    bundled_index: RunbookIndex,
    clock: Clock,
) -> Runtime:
    """The service's runtime on this test's backend, sharing the session's routing index."""
    if db_backend == "sqlite":
        return make_runtime()
    url = request.getfixturevalue("pg_url")
    settings = Settings(data_dir=tmp_path / "data", runbooks=BUNDLED_RUNBOOKS, database_url=url)
    migrate_databases(settings)
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    request.addfinalizer(runtime.close)
    return runtime
