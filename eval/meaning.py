"""Measure the meaning check of reworded replies: false refusals against catches, over its floors.

Three sets of (draft, rewording) pairs:

- ``recorded``: every rewording in an LLM recordings file (``eval/recordings/bundled.jsonl``). The
  stand-in that made them echoes the draft, so its draft is the rewording without its runbook tag;
  these prove that the check leaves the recorded eval alone, not that it tolerates paraphrase.
- ``faithful``: paraphrases written for this measurement (``eval/faithful.jsonl``).
- ``offscript``: rewordings gone off script (``eval/offscript.jsonl``): claims of actions not
  taken, other runbooks' steps, insults, "access granted", the system prompt, dropped results.

The drafts of the written sets are the offline brain's own text for the row's action, runbook,
step and tool result. ``choose`` picks the floors the product uses (``agent/brains/meaning.py``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from agent.brains.base import ReplyContext
from agent.brains.llm import grounded
from agent.brains.meaning import Floors, MeaningCheck, Measures
from agent.brains.offline import OfflineBrain
from agent.state import Decision
from core.pack import Pack
from vectorstore.index import RunbookIndex

EVAL = Path(__file__).resolve().parent
RECORDINGS = EVAL / "recordings" / "bundled.jsonl"
FAITHFUL = EVAL / "faithful.jsonl"
OFFSCRIPT = EVAL / "offscript.jsonl"
# Compare each sentence with the draft's nearest sentence, or with the draft as a whole.
Mode = Literal["nearest", "whole"]

# A floor must sit this far below every faithful rewording's score: the same floor must come out
# of the sweep where the embedding runtime rounds a little differently.
MARGIN = 0.02
SENTENCE_GRID = [round(0.20 + 0.05 * i, 2) for i in range(11)]
COVER_GRID = [round(0.30 + 0.05 * i, 2) for i in range(11)]
WHOLE_GRID = [round(0.40 + 0.05 * i, 2) for i in range(11)]


@dataclass(frozen=True)
class Pair:
    """One draft and a rewording of it, with what the rewording must keep."""

    id: str
    kind: str
    draft: str
    rewording: str
    tool_result: str = ""
    sources: str = ""
    ctx: ReplyContext | None = None


def _content(entry: dict[str, Any]) -> str | None:
    """The text a recorded answer carries: a whole completion's, or a streamed one's deltas joined."""
    if not entry.get("content_type", "").startswith("text/event-stream"):
        body = json.loads(entry["body"])
        content = (body.get("choices") or [{}])[0].get("message", {}).get("content")
        return content if isinstance(content, str) else None
    pieces = []
    for event in entry["body"].split("\n\n"):
        data = event.removeprefix("data: ").strip()
        if not data or data == "[DONE]":
            continue
        for choice in json.loads(data).get("choices") or []:
            pieces.append(choice.get("delta", {}).get("content") or "")
    return "".join(pieces) or None


def recorded_pairs(path: Path = RECORDINGS) -> list[Pair]:
    """The recorded rewordings of a recordings file, each with the draft it echoes."""
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        content = _content(json.loads(line))
        if not content:
            continue
        draft = content.rsplit(" [", 1)[0] if content.endswith("]") else content
        pairs.append(Pair(id=f"rec-{n}", kind="recorded", draft=draft, rewording=content, sources=content))
    return pairs


def written_pairs(path: Path, offline: OfflineBrain, pack: Pack) -> list[Pair]:
    """The rows of a written set, with the offline brain's draft for each."""
    titles = {rid: rb.meta.title for rid, rb in pack.runbooks.items()}
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row: dict[str, Any] = json.loads(line)
        rb = pack.runbooks[row["runbook"]] if row.get("runbook") else None
        decision = Decision(
            action=row["action"],
            reasons=["step_presented"],
            runbook_id=row.get("runbook"),
            options=["password-reset", "account-lockout"],
        )
        ctx = ReplyContext(
            decision=decision, runbook=rb, step=row["step"], tool_message=row["tool_message"], titles=titles
        )
        draft = offline.text_for(ctx)
        rewording = row["rewording"] + (f" [{rb.id}]" if rb is not None else "")
        steps = [s.text for s in rb.steps] if rb is not None else []
        sources = "\n".join([draft, *steps, rb.check if rb else "", rb.id if rb else ""])
        pairs.append(Pair(row["id"], row["kind"], draft, rewording, row["tool_message"], sources, ctx))
    return pairs


def measure(check: MeaningCheck, pairs: Iterable[Pair]) -> list[tuple[Pair, Measures]]:
    """The check's measures of each pair (the floors are applied later, by ``refused``)."""
    out = []
    for pair in pairs:
        meaning = check.draft(pair.draft, pair.tool_result)
        meaning.add(pair.rewording)
        out.append((pair, meaning.finish()))
    return out


def refused(measures: Measures, floors: Floors, mode: Mode) -> bool:
    """Whether the check refuses at ``floors``, comparing sentences as ``mode`` says."""
    if mode == "whole":
        measures = replace(measures, nearest=measures.to_whole)
    return measures.refusal(floors) is not None


def rate(measured: Sequence[tuple[Pair, Measures]], floors: Floors, mode: Mode) -> float:
    """Share of the pairs refused."""
    return sum(refused(m, floors, mode) for _, m in measured) / max(len(measured), 1)


def choose(
    faithful: Sequence[tuple[Pair, Measures]], offscript: Sequence[tuple[Pair, Measures]], mode: Mode = "nearest"
) -> tuple[Floors, float]:
    """The floors that catch most off-script rewordings while refusing no faithful one (recorded or written).

    Ties go to the lowest floors: they leave the most room for paraphrases not in the sets.
    """
    best: tuple[float, float, Floors] | None = None
    for sentence, cover, whole in itertools.product(SENTENCE_GRID, COVER_GRID, WHOLE_GRID):
        floors = Floors(sentence=sentence, cover=cover, whole=whole)
        if rate(faithful, Floors(sentence + MARGIN, cover + MARGIN, whole + MARGIN), mode) > 0:
            continue
        caught = rate(offscript, floors, mode)
        key = (caught, -(sentence + cover + whole))
        if best is None or key > best[:2]:
            best = (*key, floors)
    if best is None:
        raise ValueError("every floor on the grid refuses a faithful rewording")
    return best[2], best[0]


def grounding_catches(pairs: Iterable[Pair]) -> list[str]:
    """Ids of the pairs the grounding check alone already refuses."""
    return [p.id for p in pairs if not grounded(p.rewording, p.draft, p.sources)]


def measure_all(index: RunbookIndex) -> dict[str, list[tuple[Pair, Measures]]]:
    """The three sets, measured with the index's embedding model."""
    check = MeaningCheck(index.embedder)
    offline = OfflineBrain(index)
    return {
        "recorded": measure(check, recorded_pairs()),
        "faithful": measure(check, written_pairs(FAITHFUL, offline, index.pack)),
        "offscript": measure(check, written_pairs(OFFSCRIPT, offline, index.pack)),
    }
