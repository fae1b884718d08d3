"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from api.deps import AppMetrics, AppSettings
from api.errors import error_doc
from app.metrics import CONTENT_TYPE
from app.runtime import Runtime
from core.db import DatabaseUrl, database_target
from core.errors import TieroneError
from vectorstore.index import server_heartbeat

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz(request: Request) -> dict[str, str]:
    """200 once the pack, index and stores are open."""
    if getattr(request.app.state, "runtime", None) is None:
        raise HTTPException(503, "starting")
    return {"status": "ok"}


def _chroma_answers(url: str) -> str:
    try:
        server_heartbeat(url, timeout_s=2.0)
        return "ok"
    except TieroneError as exc:
        return f"unreachable: {exc}"


def _answers(path: Path) -> str:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
        return "ok"
    except sqlite3.Error as exc:
        return f"unreachable: {exc}"


def _pg_answers(url: DatabaseUrl) -> str:
    # A connection of its own, bounded in time: a probe must answer even when the pool is stuck waiting.
    try:
        with psycopg.connect(url.url, connect_timeout=2) as conn:
            conn.execute("SELECT 1").fetchone()
        return "ok"
    except psycopg.Error as exc:
        return f"unreachable: {url.safe} ({type(exc).__name__})"  # never the URL: it may hold the password


@router.get("/readyz", responses={503: error_doc("Not ready; the body says which check failed")})
def readyz(request: Request, settings: AppSettings) -> JSONResponse:
    """200 when the routing index holds the pack and the databases (both SQLite files, or PostgreSQL) answer."""
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    checks: dict[str, str] = {}
    if runtime is None:
        checks["runtime"] = "starting"
    else:
        if settings.chroma_url:  # a short heartbeat first: a server that hangs must not hang the probe
            checks["chroma_server"] = _chroma_answers(settings.chroma_url)
        try:
            if checks.get("chroma_server", "ok") != "ok":
                raise ConnectionError("not asked: turns route on the vectors loaded at start")
            vectors = runtime.index.count()
            checks["index"] = "ok" if vectors > 0 else "the routing index is empty; run `tierone index`"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready, and says so
            checks["index"] = f"unreachable: {type(exc).__name__}"
        target = database_target(settings.desk_db, settings.database_url)
        if isinstance(target, DatabaseUrl):
            checks["database"] = _pg_answers(target)
        else:
            checks["desk_db"] = _answers(settings.desk_db)
            checks["conversations_db"] = _answers(settings.conversations_db)
    ready = bool(checks) and all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)


@router.get("/metrics", response_class=Response)
def metrics_endpoint(metrics: AppMetrics) -> Response:
    """Prometheus metrics: turns, handoffs by reason, containment, latency, SLA standing."""
    if metrics is None:
        raise HTTPException(503, "starting")
    return Response(metrics.render(), media_type=CONTENT_TYPE)
