"""The HTML report slices the main metrics by case tag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.pack import load_pack
from eval.html import by_tag, render_html
from tests.routing_pack import write_pack


def row(tags: list[str], handoff: bool, runbook: str | None, expect: dict[str, Any], passed: bool) -> dict[str, Any]:
    return {"tags": tags, "handoff": handoff, "runbook": runbook, "expect": expect, "passed": passed}


def test_metrics_by_tag() -> None:
    cases = [
        row(["known"], False, "a", {"handoff": False, "runbook": "a"}, True),
        row(["known"], False, "b", {"handoff": False, "runbook": "a"}, False),  # wrong runbook kept
        row(["known", "typo"], True, None, {"handoff": False, "runbook": "a"}, False),  # handed off
        row(["held-out"], True, None, {"handoff": True, "runbook": None}, True),
        row(["held-out"], False, "a", {"handoff": True, "runbook": None}, False),  # kept, should not be
    ]
    table = {r["tag"]: r for r in by_tag(cases)}
    assert list(table) == ["held-out", "known", "typo"]
    assert table["known"] == {
        "tag": "known",
        "cases": 3,
        "passed": 1,
        "routing": "33.3%",
        "handoff_recall": "\u2014",
        "wrong_resolution": "50%",
    }
    assert table["held-out"]["handoff_recall"] == "50%" and table["held-out"]["wrong_resolution"] == "100%"
    assert table["typo"]["wrong_resolution"] == "\u2014"  # nothing kept


def test_failing_cases_with_the_same_text_and_outcome_share_one_entry(tmp_path: Path) -> None:
    pack = load_pack(write_pack(tmp_path / "pack"))
    same = {"turns": ["help me"], "expect": {"handoff": False, "runbook": "vpn-connection"}}
    cases = [
        {"id": "a-1", "passed": False, "handoff": True, "runbook": None, **same},
        {"id": "a-2", "passed": False, "handoff": True, "runbook": None, **same},
        {"id": "b-1", "passed": False, "handoff": False, "runbook": "printer-problem", **same},
    ]
    report = {"summary": {"cases": 3, "passed": 0}, "cases": cases, "routing": {"min_score": 0.5}}
    html = render_html(report, pack)
    assert html.count('<article class="case"') == 2
    assert "and 1 more with the same text and outcome: a-2" in html
    assert 'id="case-a-2"' in html  # links to the grouped case still land
