"""The HTML report slices the main metrics by case tag."""

from __future__ import annotations

from typing import Any

from eval.html import by_tag


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
