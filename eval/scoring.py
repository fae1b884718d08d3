"""Scoring: whether a case passed, and the report's summary metrics (DESIGN.md's contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.cases import Case


@dataclass
class Outcome:
    """What the bot did in one case."""

    handoff: bool
    runbook: str | None
    confidence: float
    reasons: list[str]
    tools_called: list[str]
    replies: list[str]
    turn_latencies_ms: list[float]
    transcript: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)


def failures(case: Case, outcome: Outcome) -> list[str]:
    """Every expectation of the case that did not hold, in words; empty when it passed."""
    expect = case.expect
    found: list[str] = []
    if outcome.handoff != expect.handoff:
        found.append(
            f"expected {'a' if expect.handoff else 'no'} handoff, got {'a handoff' if outcome.handoff else 'none'}"
        )
    if expect.checks_runbook and outcome.runbook != expect.runbook:
        found.append(f"expected runbook {expect.runbook!r}, got {outcome.runbook!r}")
    if expect.reason and expect.reason not in outcome.reasons:
        found.append(f"expected reason {expect.reason!r}, got {outcome.reasons}")
    for tool in expect.tools_called:
        if tool not in outcome.tools_called:
            found.append(f"expected tool {tool!r} to be called")
    for tool in expect.tools_not_called:
        if tool in outcome.tools_called:
            found.append(f"tool {tool!r} must not be called")
    said = "\n".join(outcome.replies).lower()
    for needle in expect.reply_contains:
        if needle.lower() not in said:
            found.append(f"no reply contains {needle!r}")
    return found


def _share(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def summarize(cases: list[Case], outcomes: list[Outcome]) -> dict[str, Any]:
    """The summary object of the report, with the keys and meanings DESIGN.md fixes."""
    pairs = list(zip(cases, outcomes, strict=True))
    routed = [(c, o) for c, o in pairs if c.expect.checks_runbook and c.expect.runbook and not c.expect.handoff]
    expected_handoff = [(c, o) for c, o in pairs if c.expect.handoff]
    handed_off = [(c, o) for c, o in pairs if o.handoff]
    contained = [(c, o) for c, o in pairs if not o.handoff]
    wrong = [
        (c, o) for c, o in contained if c.expect.handoff or (c.expect.checks_runbook and o.runbook != c.expect.runbook)
    ]
    latencies = [ms for o in outcomes for ms in o.turn_latencies_ms]
    return {
        "cases": len(pairs),
        "passed": sum(1 for c, o in pairs if not failures(c, o)),
        "routing_accuracy": _share(
            sum(1 for c, o in routed if o.runbook == c.expect.runbook and not o.handoff), len(routed)
        ),
        "handoff_recall": _share(sum(1 for _, o in expected_handoff if o.handoff), len(expected_handoff)),
        "handoff_precision": _share(sum(1 for c, _ in handed_off if c.expect.handoff), len(handed_off)),
        "containment_rate": _share(len(contained), len(pairs)),
        "wrong_resolution_rate": _share(len(wrong), len(contained)),
        "latency_ms_p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
        "latency_ms_p95": round(float(np.percentile(latencies, 95)), 2) if latencies else None,
        "turns": len(latencies),
    }
