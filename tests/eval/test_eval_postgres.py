"""The bundled eval played on PostgreSQL gives the same outcomes, case by case, as on SQLite."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from core.settings import BUNDLED_RUNBOOKS, Settings
from eval.cases import load_cases
from eval.harness import Evaluator
from vectorstore.embeddings import MiniLMEmbedder

BUNDLED = Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl"


def _outcomes(report: dict[str, object]) -> list[tuple[object, ...]]:
    rows = report["cases"]
    assert isinstance(rows, list)
    return [(r["id"], r["passed"], r["handoff"], r["runbook"], tuple(r["failures"])) for r in rows]


@pytest.mark.postgres
@pytest.mark.slow
def test_bundled_cases_play_alike_on_sqlite_and_postgresql(embedder: MiniLMEmbedder, pg_url: str) -> None:
    cases = load_cases(BUNDLED)
    on_sqlite = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder).run(cases)
    evaluator = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder, database_url=pg_url)
    on_postgresql = evaluator.run(cases)
    assert _outcomes(on_postgresql) == _outcomes(on_sqlite)
    assert on_postgresql["summary"]["passed"] == on_sqlite["summary"]["passed"] > 0.9 * len(cases)
    # A second run on the same database would meet the first run's customers: refused, saying why.
    with pytest.raises(ValueError, match="needs an empty database"):
        evaluator.run(cases[:1])


@pytest.mark.postgres
def test_an_eval_never_plays_on_the_deployments_own_database(embedder: MiniLMEmbedder, pg_url: str) -> None:
    # TIERONE_DATABASE_URL in the settings is a live deployment's: the eval plays in a throwaway folder.
    settings = Settings(database_url=SecretStr(pg_url))
    cases = load_cases(BUNDLED)[:3]
    report = Evaluator(BUNDLED_RUNBOOKS, embedder=embedder, settings=settings).run(cases)
    assert report["summary"]["cases"] == 3
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
    assert tables == (0,)
