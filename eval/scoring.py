"""Scoring: whether a case passed, and the report's summary metrics (DESIGN.md's contract)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eval.cases import Case, Gate, ToolCall, TurnExpect


@dataclass
class TurnOutcome:
    """What the bot did in answer to one customer message."""

    replies: list[str]
    reasons: list[str]
    calls: list[dict[str, Any]]
    stage: str
    latency_ms: float
    # A runbook that branches: the outcome the answer matched, the slots after the turn, and where it
    # left the conversation ("runbook#step", or the stage once it left the runbook).
    outcome: str | None = None
    slots: dict[str, Any] = field(default_factory=dict)
    at: str = ""


@dataclass
class Outcome:
    """What the bot did in one case."""

    handoff: bool
    runbook: str | None
    confidence: float
    reasons: list[str]
    calls: list[dict[str, Any]]
    turns: list[TurnOutcome]
    packet: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    # The conversation's episodes, oldest first: {"runbook", "handoff", "outcome"} each.
    problems: list[dict[str, Any]] = field(default_factory=list)
    # The routing candidates of the conversation's problem (runbook_id and score), best first.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    # The incident the case opened or joined (INC-…), if any.
    incident_id: str | None = None

    @property
    def path(self) -> list[str]:
        """The way through the runbooks' graphs: where each turn left it, and the outcome between."""
        path: list[str] = []
        for turn in self.turns:
            if turn.outcome:
                path.append(f"[{turn.outcome}]")
            if turn.at and (not path or path[-1] != turn.at):
                path.append(turn.at)
        return path

    @property
    def tools_called(self) -> list[str]:
        """Names of the tools called, in order."""
        return [c["tool"] for c in self.calls]

    @property
    def replies(self) -> list[str]:
        """Every reply of the bot, in order."""
        return [r for t in self.turns for r in t.replies]

    @property
    def turn_latencies_ms(self) -> list[float]:
        """Latency of each turn played."""
        return [t.latency_ms for t in self.turns]


def routing_note(candidates: list[dict[str, Any]], min_score: float, min_margin: float) -> str:
    """Where routing stood against the thresholds, e.g. "a 0.565 < min_score 0.59; 2nd b 0.20, gap 0.365".

    Args:
        candidates: The routing candidates (``runbook_id``, ``score``), best first.
        min_score: The threshold the best score had to reach.
        min_margin: The lead over the runner-up it had to have.

    Returns:
        One line for the author: the best runbook's score against ``min_score``, the runner-up and
        the gap against ``min_margin``.
    """
    if not candidates:
        return "no candidate (nothing in the message to route by)"
    top = candidates[0]
    score = float(top["score"])
    note = f"{top['runbook_id']} {score:.3f} {'>=' if score >= min_score else '<'} min_score {min_score:g}"
    if len(candidates) > 1:
        second = candidates[1]
        gap = score - float(second["score"])
        note += (
            f"; 2nd {second['runbook_id']} {float(second['score']):.3f}, gap {gap:.3f} "
            f"{'>=' if gap >= min_margin else '<'} min_margin {min_margin:g}"
        )
    return note


def _called(expected: str | ToolCall, calls: list[dict[str, Any]]) -> bool:
    want = expected if isinstance(expected, ToolCall) else ToolCall(tool=expected)
    return any(
        c["tool"] == want.tool and all(c.get("args", {}).get(k) == v for k, v in want.args.items()) for c in calls
    )


def _describe(expected: str | ToolCall) -> str:
    if isinstance(expected, str) or not expected.args:
        return repr(expected if isinstance(expected, str) else expected.tool)
    return f"{expected.tool!r} with {expected.args}"


def _lookup(packet: dict[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = packet
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def _common(where: str, replies: list[str], calls: list[dict[str, Any]], expect: TurnExpect | Any) -> list[str]:
    found = []
    for tool in expect.tools_called:
        if not _called(tool, calls):
            found.append(f"{where}expected tool {_describe(tool)} to be called")
    for tool in expect.tools_not_called:
        if any(c["tool"] == tool for c in calls):
            found.append(f"{where}tool {tool!r} must not be called")
    said = "\n".join(replies).lower()
    for needle in expect.reply_contains:
        if needle.lower() not in said:
            found.append(f"{where}no reply contains {needle!r}")
    for needle in expect.reply_not_contains:
        if needle.lower() in said:
            found.append(f"{where}a reply contains {needle!r}")
    return found


def _turn_failures(case: Case, outcome: Outcome) -> list[str]:
    found: list[str] = []
    for i, turn in enumerate(case.steps):
        if turn.expect is None:
            continue
        where = f"turn {i + 1}: "
        if i >= len(outcome.turns):
            found.append(f"{where}not reached (the conversation was handed off at turn {len(outcome.turns)})")
            continue
        played = outcome.turns[i]
        expect = turn.expect
        found.extend(_common(where, played.replies, played.calls, expect))
        for reason in expect.reasons:
            if reason not in played.reasons:
                found.append(f"{where}expected reason {reason!r}, got {played.reasons}")
        if expect.stage is not None and played.stage != expect.stage:
            found.append(f"{where}expected stage {expect.stage!r}, got {played.stage!r}")
        if expect.handoff is not None and (played.stage == "handed_off") != expect.handoff:
            found.append(f"{where}expected {'a' if expect.handoff else 'no'} handoff")
        if expect.outcome is not None and played.outcome != expect.outcome:
            found.append(f"{where}expected outcome {expect.outcome!r}, got {played.outcome!r}")
        for name, want in expect.slots.items():
            if played.slots.get(name) != want:
                found.append(f"{where}expected slot {name!r} = {want!r}, got {played.slots.get(name)!r}")
    return found


def problem_scores(case: Case, outcome: Outcome) -> list[dict[str, Any]]:
    """Each expected problem beside the episode the bot made of it, and whether the two agree."""
    scores = []
    for i, want in enumerate(case.expect.problems):
        got = outcome.problems[i] if i < len(outcome.problems) else None
        scores.append(
            {
                "runbook": want.runbook,
                "handoff": want.handoff,
                "got_runbook": got["runbook"] if got else None,
                "got_handoff": got["handoff"] if got else None,
                "outcome": got["outcome"] if got else None,
                "passed": got is not None and got["runbook"] == want.runbook and got["handoff"] == want.handoff,
            }
        )
    return scores


def _problem_failures(case: Case, outcome: Outcome) -> list[str]:
    found = []
    for i, score in enumerate(problem_scores(case, outcome)):
        where = f"problem {i + 1}: "
        if score["outcome"] is None:
            found.append(f"{where}never taken up (expected runbook {score['runbook']!r})")
            continue
        if score["got_runbook"] != score["runbook"]:
            found.append(f"{where}expected runbook {score['runbook']!r}, got {score['got_runbook']!r}")
        if score["got_handoff"] != score["handoff"]:
            found.append(f"{where}expected {'a' if score['handoff'] else 'no'} handoff, got {score['outcome']!r}")
    return found


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
    found.extend(_common("", outcome.replies, outcome.calls, expect))
    for path, want in expect.packet.items():
        present, value = _lookup(outcome.packet or {}, path)
        if not present or (want == "*" and value in (None, "", [], {})):
            found.append(f"the handoff packet has no {path!r}")
        elif want != "*" and value != want:
            found.append(f"packet {path!r} is {value!r}, expected {want!r}")
    if expect.incident is not None and (outcome.incident_id is not None) != expect.incident:
        got = f"got {outcome.incident_id}" if outcome.incident_id else "got none"
        found.append(f"expected {'an' if expect.incident else 'no'} incident, {got}")
    found.extend(_turn_failures(case, outcome))
    found.extend(_problem_failures(case, outcome))
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
    problems = [score["passed"] for c, o in pairs for score in problem_scores(c, o)]
    incident_cases = [(c, o) for c, o in pairs if c.expect.incident]
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
        # Of the problems cases expect one by one (conversations that carry several): share the bot got right.
        "problems": len(problems),
        "problem_accuracy": _share(sum(problems), len(problems)),
        # Cases that opened or joined an incident, counted apart (containment keeps its meaning), and of the
        # cases that expect one, the share that got one.
        "incidents": sum(1 for o in outcomes if o.incident_id),
        "incident_recall": _share(sum(1 for c, o in incident_cases if o.incident_id), len(incident_cases)),
    }


def check_gates(summary: dict[str, Any], gates: list[Gate]) -> list[str]:
    """The gates that fail, in words (a gate on an unknown metric fails too)."""
    failed = []
    for gate in gates:
        if gate.metric not in summary:
            failed.append(f"{gate}: no metric named {gate.metric!r} in the summary")
        elif not gate.holds(summary[gate.metric]):
            failed.append(f"{gate}: got {summary[gate.metric]}")
    return failed


def compare(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Metric deltas and cases that newly pass or fail against an earlier report."""
    before = {row["id"]: row["passed"] for row in baseline.get("cases", [])}
    deltas = {}
    for key, value in report["summary"].items():
        old = baseline.get("summary", {}).get(key)
        if isinstance(value, int | float) and isinstance(old, int | float):
            deltas[key] = {"before": old, "after": value, "delta": round(value - old, 4)}
    rows = report["cases"]
    return {
        "metrics": deltas,
        "newly_failing": [r["id"] for r in rows if before.get(r["id"]) is True and not r["passed"]],
        "newly_passing": [r["id"] for r in rows if before.get(r["id"]) is False and r["passed"]],
        "new_cases": [r["id"] for r in rows if r["id"] not in before],
        "removed_cases": sorted(set(before) - {r["id"] for r in rows}),
    }
