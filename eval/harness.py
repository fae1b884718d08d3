"""Play eval cases in-process through the same graph that serves customers."""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.errors import MessageRejected
from agent.service import Runtime, open_runtime
from agent.settings import Settings
from eval.cases import OTP, Case
from eval.scoring import Outcome, failures, summarize
from vectorstore.embeddings import Embedder

_CODE = re.compile(r"\b(\d{6})\b")


def _latest_code(runtime: Runtime, conversation_id: str) -> str | None:
    for message in reversed(runtime.outbox.messages(conversation_id)):
        match = _CODE.search(message["body"])
        if match:
            return match.group(1)
    return None


def play(runtime: Runtime, case: Case) -> Outcome:
    """Play one case in a new conversation; stop at a handoff (later turns would go to L2)."""
    resolver = runtime.resolver
    conversation_id = resolver.start("api")
    latencies: list[float] = []
    replies: list[str] = []
    for turn in case.turns:
        # "{otp}" stands for the code the bot sent; with no code sent, a code that cannot match.
        text = (_latest_code(runtime, conversation_id) or "000000") if turn == OTP else turn
        started = time.perf_counter()
        try:
            result = resolver.send(conversation_id, text)
        except MessageRejected as exc:
            replies.append(f"[rejected: {exc}]")
            latencies.append((time.perf_counter() - started) * 1000)
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        replies.extend(result.replies)
        if result.stage == "handed_off":
            break
    state = resolver.view(conversation_id)
    handoff = state.get("handoff")
    trace = state.get("trace", [])
    reasons = list(handoff["reasons"]) if handoff else (trace[-1]["reasons"] if trace else [])
    return Outcome(
        handoff=state.get("stage") == "handed_off",
        runbook=state.get("runbook_id"),
        confidence=float(state.get("confidence", 0.0)),
        reasons=reasons,
        tools_called=[a["tool"] for a in state.get("attempts", []) if a.get("kind") == "tool"],
        replies=replies,
        turn_latencies_ms=latencies,
        transcript=state.get("transcript", []),
        decisions=trace,
    )


def run_eval(
    runbooks: Path,
    cases: list[Case],
    *,
    embedder: Embedder | None = None,
    on_case: Callable[[Case, Outcome], None] | None = None,
) -> dict[str, Any]:
    """Build a fresh index of the pack, play every case, and return the report."""
    with tempfile.TemporaryDirectory(prefix="tierone-eval-") as tmp:
        runtime = open_runtime(Settings(data_dir=Path(tmp), runbooks=runbooks), embedder=embedder)
        outcomes: list[Outcome] = []
        for case in cases:
            outcome = play(runtime, case)
            outcomes.append(outcome)
            if on_case:
                on_case(case, outcome)
    rows = []
    for case, outcome in zip(cases, outcomes, strict=True):
        failed = failures(case, outcome)
        rows.append(
            {
                "id": case.id,
                "passed": not failed,
                "handoff": outcome.handoff,
                "runbook": outcome.runbook,
                "confidence": round(outcome.confidence, 4),
                "latency_ms": round(sum(outcome.turn_latencies_ms), 2),
                "turn_latency_ms": [round(ms, 2) for ms in outcome.turn_latencies_ms],
                "expect": case.expect.model_dump(exclude_defaults=True),
                "failures": failed,
                "reasons": outcome.reasons,
                "tools_called": outcome.tools_called,
                "turns": case.turns,
                "replies": outcome.replies,
                "decisions": outcome.decisions,
                "tags": case.tags,
            }
        )
    return {
        "summary": summarize(cases, outcomes),
        "cases": rows,
        "runbooks": str(runbooks),
        "brain": runtime.resolver.deps.brain.name,
        "created_at": datetime.now(UTC).isoformat(),
    }
