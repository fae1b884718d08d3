"""Play eval cases in-process through the same graph that serves customers."""

from __future__ import annotations

import dataclasses
import re
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from pydantic import SecretStr

from agent.brains.offline import routing_query
from agent.episodes import EpisodeStore
from agent.incidents import IncidentStore
from app.incidents import IncidentStatusPage
from app.runtime import Runtime, desk_target, holds_conversations, migrate_databases, open_runtime
from core.clock import utc_now
from core.errors import MessageRejected
from core.pack import Pack, load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings
from eval.cases import OTP, Case
from eval.scoring import Outcome, TurnOutcome, failures, problem_scores, routing_note, summarize
from eval.tool_standin import load_backend, standin_client, standin_values
from vectorstore.embeddings import Embedder, MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client

_CODE = re.compile(r"\b(\d{6})\b")


def _latest_code(runtime: Runtime, conversation_id: str) -> str | None:
    for message in reversed(runtime.outbox.messages(conversation_id)):
        match = _CODE.search(message["body"])
        if match:
            return match.group(1)
    return None


def _calls(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"tool": a["tool"], "args": a.get("args", {}), "ok": a.get("ok")} for a in attempts if a["kind"] == "tool"]


def _where(runtime: Runtime, state: dict[str, Any]) -> str:
    """Where a turn left the conversation: "runbook#step" within a runbook, else its stage."""
    stage = str(state.get("stage") or "")
    runbook = runtime.pack.runbooks.get(state.get("runbook_id") or "")
    step = int(state.get("step") or 0)
    if runbook is None or stage not in ("steps", "slot", "confirm") or step >= len(runbook.steps):
        return stage
    return f"{runbook.id}#{runbook.steps[step].id}"


def play(runtime: Runtime, case: Case, texted: dict[str, str] | None = None) -> Outcome:
    """Play one case in a new conversation; stop at a handoff (later turns would go to L2).

    ``texted`` holds the codes the stand-in API was asked to text, by conversation (verify: otp_sms).
    """
    resolver = runtime.resolver
    conversation_id = resolver.start("api")
    turns: list[TurnOutcome] = []
    seen_attempts = seen_trace = 0
    for text in case.texts:
        # "{otp}" stands for the code the bot sent; with no code sent, a code that cannot match.
        code = (texted or {}).get(conversation_id) or _latest_code(runtime, conversation_id)
        message = (code or "000000") if text == OTP else text
        started = time.perf_counter()
        try:
            result = resolver.send(conversation_id, message)
        except MessageRejected as exc:
            ms = (time.perf_counter() - started) * 1000
            turns.append(TurnOutcome([f"[rejected: {exc}]"], [], [], "rejected", ms, at="rejected"))
            continue
        ms = (time.perf_counter() - started) * 1000
        state = resolver.view(conversation_id)
        attempts, trace = state.get("attempts", []), state.get("trace", [])
        reasons = [r for d in trace[seen_trace:] for r in d["reasons"]]
        answers = [a["outcome"] for a in attempts[seen_attempts:] if a["kind"] == "answer"]
        turns.append(
            TurnOutcome(
                result.replies,
                reasons,
                _calls(attempts[seen_attempts:]),
                result.stage,
                ms,
                outcome=answers[-1] if answers else None,
                slots=dict(state.get("slots") or {}),
                at=_where(runtime, state),
            )
        )
        seen_attempts, seen_trace = len(attempts), len(trace)
        if result.stage == "handed_off":
            break
    state = resolver.view(conversation_id)
    handoff = state.get("handoff")
    trace = state.get("trace", [])
    packet = None
    if handoff:
        packet = runtime.resolver.deps.handoffs.get(handoff["packet_id"]).model_dump(mode="json")
    return Outcome(
        handoff=state.get("stage") == "handed_off",
        runbook=state.get("runbook_id"),
        confidence=float(state.get("confidence", 0.0)),
        reasons=list(handoff["reasons"]) if handoff else (trace[-1]["reasons"] if trace else []),
        calls=_calls(state.get("attempts", [])),
        turns=turns,
        packet=packet,
        usage=dict(state.get("usage") or {}),
        transcript=state.get("transcript", []),
        decisions=trace,
        problems=_problems(runtime, conversation_id),
        candidates=[dict(c) for c in (state.get("candidates") or [])],
        incident_id=state.get("incident_id"),
    )


def _problems(runtime: Runtime, conversation_id: str) -> list[dict[str, Any]]:
    store = runtime.resolver.deps.episodes
    episodes = store.for_conversation(conversation_id) if store else []
    return [{"runbook": e.runbook_id, "handoff": e.outcome == "handed_off", "outcome": e.outcome} for e in episodes]


def _cost(usage: dict[str, int], prices: tuple[float, float]) -> float:
    return (usage.get("prompt_tokens", 0) * prices[0] + usage.get("completion_tokens", 0) * prices[1]) / 1e6


def _row(
    case: Case, outcomes: list[Outcome], prices: tuple[float, float], thresholds: tuple[float, float]
) -> dict[str, Any]:
    outcome = outcomes[0]
    failed = failures(case, outcome)
    runs_passed = sum(1 for o in outcomes if not failures(case, o))
    return {
        "id": case.id,
        "passed": runs_passed == len(outcomes),
        "handoff": outcome.handoff,
        "runbook": outcome.runbook,
        "confidence": round(outcome.confidence, 4),
        "candidates": outcome.candidates[:2],
        "routing_note": routing_note(outcome.candidates, *thresholds),
        "latency_ms": round(sum(outcome.turn_latencies_ms), 2),
        "turn_latency_ms": [round(ms, 2) for ms in outcome.turn_latencies_ms],
        "runs": len(outcomes),
        "tokens": outcome.usage,
        "cost": round(_cost(outcome.usage, prices), 6),
        "runs_passed": runs_passed,
        "expect": case.expect.model_dump(exclude_defaults=True),
        "failures": failed or [f for o in outcomes for f in failures(case, o)][:5],
        "reasons": outcome.reasons,
        "tools_called": outcome.tools_called,
        "turns": case.texts,
        "replies": outcome.replies,
        "transcript": outcome.transcript,
        "decisions": outcome.decisions,
        "packet_id": (outcome.packet or {}).get("packet_id"),
        "incident": outcome.incident_id,
        "tags": case.tags,
        "problems": problem_scores(case, outcome),
        # Runbooks that branch: the outcome each answer matched (None where none did), and the path taken.
        "outcomes": [t.outcome for t in outcome.turns],
        "path": outcome.path,
    }


# An eval plays through the embedded stand-ins only: a case file must never reset a real account,
# mail a real customer or post a packet to the real helpdesk, whatever the environment configures.
# Never the deployment's own services or database: a run plays on stores of its own.
SANDBOX: dict[str, None] = {
    "directory_url": None,
    "status_url": None,
    "handoff_webhook_url": None,
    "smtp_host": None,
    "database_url": None,
}


def pack_name(runbooks: Path) -> str:
    """The pack as its author named it: the path as given, or "runbooks (bundled)" for the bundled one."""
    if runbooks.is_absolute() and runbooks.resolve() == BUNDLED_RUNBOOKS.resolve():
        return "runbooks (bundled)"
    return str(runbooks)


class Evaluator:
    """A pack indexed once, against which case sets are played (with other thresholds, too)."""

    def __init__(
        self,
        runbooks: Path,
        *,
        embedder: Embedder | None = None,
        settings: Settings | None = None,
        progress: Callable[[int], Callable[[int, int], None] | None] | None = None,
        tool_client: httpx.Client | None = None,
        database_url: str | None = None,
    ) -> None:
        # database_url: play on this empty PostgreSQL database instead of a throwaway folder (the
        # backends' parity check); never the TIERONE_DATABASE_URL of the settings, a live deployment's.
        self.database_url = SecretStr(database_url) if database_url else None
        # tool_client carries the pack's declared tools (a test's respx); by default the stand-in API
        # (eval/tool_standin.py) answers them as the pack's eval/backend.yaml scripts.
        # The brain, its endpoint and prices come from settings; stores and the pack are the run's own.
        self.settings = settings or Settings()
        self.prices = (self.settings.llm_price_input_per_mtok, self.settings.llm_price_output_per_mtok)
        self.runbooks = runbooks
        self.pack = load_pack(runbooks)
        # A fresh, in-memory index of the pack: nothing from an earlier run can leak in.
        self.index = RunbookIndex(open_client(None), self.pack, embedder or MiniLMEmbedder(), progress=progress)
        self.index.sync()
        # Declared tools are played against a stand-in unless a client is given: never a real API.
        self.tool_client, self.tool_values = tool_client, dict(self.settings.tool_values)
        self.texted: dict[str, str] = {}
        if self.pack.tools is not None and tool_client is None:
            sms = self.pack.policy.verification.otp_sms
            backend = load_backend(runbooks, self.pack.tools)
            self.tool_client = standin_client(
                self.pack.tools, backend, sms_tool=sms.send if sms else None, texts=self.texted
            )
            self.tool_values = {k: SecretStr(v) for k, v in standin_values(self.pack.tools).items()}

    def _pack_with(self, routing: dict[str, float] | None) -> Pack:
        if not routing:
            return self.pack
        policy = self.pack.policy.model_copy(update={"routing": self.pack.policy.routing.model_copy(update=routing)})
        return dataclasses.replace(self.pack, policy=policy)

    def run(
        self,
        cases: list[Case],
        *,
        routing: dict[str, float] | None = None,
        repeat: int = 1,
        workers: int = 1,
        batch_embeddings: bool = False,
        on_case: Callable[[Case], None] | None = None,
    ) -> dict[str, Any]:
        """Play every case ``repeat`` times on fresh stores and return the report.

        ``batch_embeddings`` embeds every customer message ahead in large batches, which makes
        big case sets several times faster; the latencies reported then leave out the embedding.
        """
        embedder = self.index.embedder
        if batch_embeddings and isinstance(embedder, MiniLMEmbedder):
            embedder.warm([routing_query(t) for c in cases for t in c.texts if t != OTP])
        with tempfile.TemporaryDirectory(prefix="tierone-eval-") as tmp:
            # The run's customer values live and die in this folder: a throwaway key seals them, so the
            # eval never warns about a missing TIERONE_VAULT_KEY (that warning is for serving).
            key = self.settings.vault_key or SecretStr(Fernet.generate_key().decode())
            settings = self.settings.model_copy(
                update={
                    "data_dir": Path(tmp),
                    "runbooks": self.runbooks,
                    "vault_key": key,
                    "tool_values": self.tool_values,
                    **SANDBOX,
                    "database_url": self.database_url,
                }
            )
            if settings.database_url is not None:
                # On PostgreSQL the run's stores are that database's: it must start empty, as a
                # folder does, or earlier runs' customers would become this run's repeat contacts.
                if repeat > 1:
                    raise ValueError("an eval on PostgreSQL plays each case once")
                migrate_databases(settings)
                if holds_conversations(settings):
                    raise ValueError("an eval on PostgreSQL needs an empty database: this one holds conversations")
            runtime = open_runtime(settings, index=self.index, tool_client=self.tool_client)
            runtime.resolver.deps.pack = self._pack_with(routing)
            # Cases share the directory's customers but are strangers: one case's verified address must not
            # make a later case a repeat contact.
            desk = desk_target(settings)
            runtime.resolver.deps.episodes = EpisodeStore(desk, utc_now, across_conversations=False)
            runtime.resolver.deps.incidents = IncidentStore(desk, utc_now, across_conversations=False)
            # Nor do they see each other's incidents on the status page.
            page = runtime.resolver.deps.toolbox.status_page
            if isinstance(page, IncidentStatusPage):
                runtime.resolver.deps.toolbox.status_page = page.page

            def one(case: Case) -> list[Outcome]:
                outcomes = [play(runtime, case, self.texted) for _ in range(repeat)]
                if on_case:
                    on_case(case)
                return outcomes

            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                results = list(pool.map(one, cases))
        policy = self._pack_with(routing).policy.routing
        thresholds = (policy.min_score, policy.min_margin)
        summary = summarize(
            [c for c, runs in zip(cases, results, strict=True) for _ in runs], [o for runs in results for o in runs]
        )
        summary["passed"] = sum(
            1 for c, runs in zip(cases, results, strict=True) if all(not failures(c, o) for o in runs)
        )
        summary["cases"] = len(cases)
        usages = [o.usage for runs in results for o in runs]
        tokens = [u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) for u in usages]
        summary["tokens_per_conversation"] = round(sum(tokens) / len(tokens), 1) if tokens else 0.0
        summary["cost_per_conversation"] = (
            round(sum(_cost(u, self.prices) for u in usages) / len(usages), 6) if usages else 0.0
        )
        if repeat > 1:
            summary["repeat"] = repeat
            summary["pass_hat_k"] = round(summary["passed"] / len(cases), 4)
        return {
            "summary": summary,
            "cases": [_row(c, runs, self.prices, thresholds) for c, runs in zip(cases, results, strict=True)],
            "runbooks": pack_name(self.runbooks),
            "brain": runtime.resolver.deps.brain.name,
            "routing": self._pack_with(routing).policy.routing.model_dump(),
            "latency_includes_embedding": not batch_embeddings,
            "created_at": datetime.now(UTC).isoformat(),
        }


def run_eval(runbooks: Path, cases: list[Case], *, embedder: Embedder | None = None, **options: Any) -> dict[str, Any]:
    """Build a fresh index of the pack, play every case, and return the report."""
    return Evaluator(runbooks, embedder=embedder).run(cases, **options)
