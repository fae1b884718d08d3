"""The brain interface shared by the offline brain and the LLM brain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.state import Decision, Reply, Understanding
from core.pack import Runbook


@dataclass(frozen=True)
class ReplyContext:
    """What a reply may be written from: the decision, the runbook, tool results, SLA."""

    decision: Decision
    runbook: Runbook | None
    step: int = 0
    tool_message: str = ""
    titles: dict[str, str] = field(default_factory=dict)
    code_attempts_left: int = 0
    handoff: dict[str, Any] | None = None
    # The question was asked before and this message did not answer it (identity or code asked again).
    repeat: bool = False
    # The customer's language (ISO 639-1), for a brain that can answer in it.
    language: str = "en"
    # LLM tokens the conversation has used so far (a brain's per-conversation budget).
    spent_tokens: int = 0
    # The current problem's slot values, for a step's `{slot}` placeholders.
    slots: dict[str, Any] = field(default_factory=dict)
    # The step was reached by an outcome that names it, not because the one before did not work.
    jumped: bool = False


class Brain(Protocol):
    """Understands a customer message and words the bot's reply."""

    name: str

    def understand(self, text: str, *, routing_text: str, spent_tokens: int = 0) -> Understanding:
        """Read one message; ``routing_text`` is what routing should match (may add context).

        ``spent_tokens`` is what the conversation has used of an LLM brain's budget so far.
        """
        ...

    def reply(self, ctx: ReplyContext) -> Reply:
        """Word the reply for a decision, from the runbook and tool results only."""
        ...

    def hypothesis(self, runbook: Runbook | None, reasons: list[str], tried: list[str], problem: str) -> Reply:
        """The working hypothesis handed to L2."""
        ...
