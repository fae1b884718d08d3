"""Draft eval cases for one runbook from its examples, never repeating an example verbatim.

Drafts are a starting point for a runbook author: each rewrites an example the way customers
vary a message (a greeting in front, no capitals or punctuation, a typo, some context after), so
the case tests the routing around the example rather than the example itself. Read them, fix
them, and write some of your own.
"""

from __future__ import annotations

import re
from typing import Any

from core.pack import Pack, Runbook

_PREFIXES = ["hi, ", "hello team - ", "hey, quick one: ", "good morning, "]
_SUFFIXES = [" since this morning", ", any idea?", " and I have a meeting soon", " (on my work laptop)"]


def _typo(text: str) -> str:
    words = text.split()
    for i, word in enumerate(words):
        if len(word) >= 6 and word.isalpha():
            j = len(word) // 2
            words[i] = word[: j - 1] + word[j] + word[j - 1] + word[j + 1 :]
            return " ".join(words)
    return text + "??"


def _variant(text: str, n: int) -> str:
    kind = n % 4
    if kind == 0:
        return _PREFIXES[n // 4 % len(_PREFIXES)] + text[0].lower() + text[1:]
    if kind == 1:
        return re.sub(r"[^\w\s']", "", text).lower().strip()
    if kind == 2:
        return _typo(text)
    return text.rstrip(".!?") + _SUFFIXES[n // 4 % len(_SUFFIXES)]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def draft_cases(pack: Pack, runbook: Runbook, *, count: int = 6) -> list[dict[str, Any]]:
    """Single-turn drafts from the examples, plus a whole-flow case; none repeats an example."""
    examples = {_norm(e) for rb in pack.runbooks.values() for e in rb.meta.examples}
    tier = pack.effective_tier(runbook)
    expect: dict[str, Any] = {"handoff": tier >= 2, "runbook": runbook.id}
    if tier >= 2:
        expect["reason"] = "tier2_runbook"
    drafts: list[dict[str, Any]] = []

    def fresh(example: str, n: int) -> str | None:
        # The first rewrite of the example that is not itself an example of the pack.
        return next((t for k in range(4) if _norm(t := _variant(example, n + k)) not in examples), None)

    for n, example in enumerate(runbook.meta.examples):
        if len(drafts) >= count:
            break
        text = fresh(example, n)
        if text is None:
            continue
        drafts.append(
            {
                "id": f"{runbook.id}-draft-{len(drafts) + 1:02d}",
                "turns": [text],
                "expect": expect,
                "tags": ["draft", "single-turn"],
            }
        )
    opening = fresh(runbook.meta.examples[0], 1) if runbook.meta.examples else None
    if tier == 1 and opening:
        turns = [opening]
        if runbook.meta.verify in ("otp", "otp_email"):
            turns += ["jane.doe@example.com", "{otp}"]
        elif runbook.meta.verify == "otp_sms":
            # A number the pack's eval/backend.yaml must answer with a line (packs/mobile's first).
            turns += ["07700 900101", "{otp}"]
        tools = [s.tool for s in runbook.steps if s.tool]
        drafts.append(
            {
                "id": f"{runbook.id}-draft-flow-yes",
                "turns": [*turns, "yes, that fixed it"],
                "expect": {**expect, "tools_called": tools},
                "tags": ["draft", "multi-turn"],
            }
        )
        drafts.append(
            {
                "id": f"{runbook.id}-draft-flow-no",
                "turns": [*turns, *(["no, still the same"] * len(runbook.steps))],
                "expect": {"handoff": True, "runbook": runbook.id, "reason": "steps_exhausted"},
                "tags": ["draft", "multi-turn"],
            }
        )
    return drafts
