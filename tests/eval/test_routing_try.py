"""`tierone try` and failing eval cases show where routing stood against the thresholds."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import _as_routed, app
from eval.scoring import routing_note


@pytest.mark.parametrize(
    ("candidates", "note"),
    [
        ([], "no candidate (nothing in the message to route by)"),
        ([{"runbook_id": "a", "score": 0.565}], "a 0.565 < min_score 0.59"),
        (
            [{"runbook_id": "a", "score": 0.7}, {"runbook_id": "b", "score": 0.65}],
            "a 0.700 >= min_score 0.59; 2nd b 0.650, gap 0.050 < min_margin 0.08",
        ),
        (
            [{"runbook_id": "a", "score": 0.9}, {"runbook_id": "b", "score": 0.1}],
            "a 0.900 >= min_score 0.59; 2nd b 0.100, gap 0.800 >= min_margin 0.08",
        ),
    ],
)
def test_routing_note(candidates: list[dict[str, object]], note: str) -> None:
    assert routing_note(candidates, 0.59, 0.08) == note


def test_try_routes_what_the_service_routes() -> None:
    # Addresses and codes stay (the service holds them in its vault); other personal data is masked.
    routed = _as_routed("reset for jane@example.com, card 4111 1111 1111 1111, code 123456")
    assert "jane@example.com" in routed and "123456" in routed and "4111" not in routed


@pytest.mark.model  # runs the command, which embeds the pack with the real model
def test_try_shows_the_thresholds_and_writes_nothing_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERONE_DATA_DIR", raising=False)
    result = CliRunner().invoke(app, ["try", "I forgot my password"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "routing: password-reset" in result.output and ">= min_score" in result.output
    assert list(tmp_path.iterdir()) == []
