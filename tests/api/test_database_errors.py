"""A database that cannot be reached answers 503 with Retry-After, and the body names nothing of it."""

from __future__ import annotations

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout

from api.errors import add_error_handlers
from core.errors import DatabaseUnavailable, PacketNotFound


@pytest.mark.parametrize(
    "error",
    [
        DatabaseUnavailable("db.internal:5432/tierone", "connection refused"),
        PoolTimeout("couldn't get a connection after 5.00 sec"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
    ],
)
def test_an_unreachable_database_is_a_503_to_try_again(error: Exception) -> None:
    app = FastAPI()
    add_error_handlers(app)

    @app.get("/work")
    def work() -> None:
        raise error

    @app.get("/missing")
    def missing() -> None:
        raise PacketNotFound("HO-1")

    with TestClient(app) as client:
        answer = client.get("/work")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert "try again" in answer.json()["detail"] and "db.internal" not in answer.text
        assert client.get("/missing").status_code == 404  # other errors keep their status
