"""Problems beyond the current one: a second problem in the message, and earlier episodes.

The policy (agent/policy.py) decides; these helpers gather its facts (earlier episodes of the
conversation or verified customer) and carry out the bookkeeping: the queue of problems waiting,
and the episodes store that records each problem's outcome.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from agent import policy as boundary
from agent.deps import Deps
from agent.episodes import Episode, handoff_reason
from agent.handoff import EarlierEpisode, QueuedProblem
from agent.state import ConversationState, Decision, Understanding
from core.redact import redact

Update = dict[str, Any]

# Outcomes a repeat contact shows were not the end of the problem.
_REOPENED_BY_RECONTACT = frozenset({"confirmed", "in_progress"})


def _earlier(state: ConversationState, deps: Deps) -> list[Episode]:
    """Episodes of this conversation or its verified customer within the recontact window, the current one left out."""
    if deps.episodes is None:
        return []
    since = deps.clock() - timedelta(hours=deps.pack.policy.recontact.window_hours)
    subject = (state.get("customer") or {}).get("subject")
    current = state.get("episode_id")
    found = deps.episodes.earlier(state["conversation_id"], subject, since)
    # The episode on record is the current problem while it is open, and when L2 gave the conversation
    # back unresolved (the only way back to triage with one on record); once it ended otherwise, it is earlier.
    taken_up = state.get("stage") == "triage"
    return [e for e in found if not (e.episode_id == current and (taken_up or e.outcome == "in_progress"))]


def earlier_facts(state: ConversationState, deps: Deps) -> tuple[boundary.EarlierEpisode, ...]:
    """The earlier episodes as the policy sees them."""
    now = deps.clock()
    return tuple(
        boundary.EarlierEpisode(
            runbook_id=e.runbook_id,
            outcome=e.outcome,
            steps_tried=tuple(e.steps_tried),
            age_hours=(now - e.opened_at).total_seconds() / 3600,
        )
        for e in _earlier(state, deps)
    )


def for_packet(state: ConversationState, deps: Deps) -> list[EarlierEpisode]:
    """The earlier episodes as L2 reads them in the packet."""
    return [EarlierEpisode.model_validate(e.model_dump()) for e in _earlier(state, deps)]


def queued_for_packet(state: ConversationState) -> list[QueuedProblem]:
    """The problems still waiting, as L2 reads them in the packet."""
    return [
        QueuedProblem(summary=q["text"][:280], runbook_id=q.get("runbook_id"), score=q.get("score", 0.0))
        for q in state.get("queued_problems") or []
    ]


def _queue(understanding: dict[str, Any], decision: Decision) -> list[dict[str, Any]]:
    """The problems the decision left for later, with the words and routing of each."""
    clauses = Understanding.model_validate(understanding).clauses[1:]
    queued = []
    for runbook_id, clause in zip(decision.queued, clauses, strict=False):
        top = clause.top
        queued.append(
            {
                "text": redact(clause.text),
                "runbook_id": runbook_id,
                "score": top.score if top else 0.0,
                "candidates": [c.model_dump() for c in clause.candidates],
            }
        )
    return queued


def after_decision(state: ConversationState, deps: Deps, decision: Decision, fresh: bool, update: Update) -> Update:
    """The decide node's bookkeeping of queued problems, episodes and repeat contacts.

    ``fresh``: the message is a new problem's first (not an answer within a runbook). ``update`` is
    what the decide node changes already; the result adds to it.
    """
    more: Update = {}
    if state.get("take_queued"):
        more["take_queued"] = False
    understanding = state["understanding"]
    if fresh and decision.queued:
        more["queued_problems"] = [*_queue(understanding, decision), *(state.get("queued_problems") or [])]
        first = (understanding.get("clauses") or [{}])[0].get("text")
        if first:
            more["problem_text"] = redact(first)
    if decision.from_step is not None:
        counters = update.get("counters", state.get("counters") or {})
        more |= {"step": decision.from_step, "step_tool_done": False, "counters": {**counters, "recontact": 1}}
    more |= _episodes(state, deps, decision, fresh)
    return more


def _episodes(state: ConversationState, deps: Deps, decision: Decision, fresh: bool) -> Update:
    """Open an episode for a new problem, follow a topic change and a verification, mark reopened ones."""
    store = deps.episodes
    if store is None:
        return {}
    cid = state["conversation_id"]
    current = state.get("episode_id")
    subject = (state.get("customer") or {}).get("subject")
    more: Update = {}
    if current and {"step_did_not_work", "steps_exhausted"} & set(decision.reasons):
        store.did_not_work(current, state.get("step", 0))
    if "repeat_contact" in decision.reasons:
        for e in _earlier(state, deps):
            if e.runbook_id == decision.runbook_id and e.outcome in _REOPENED_BY_RECONTACT:
                store.close(e.episode_id, "reopened")
    if fresh and (decision.runbook_id or decision.action in ("handoff", "incident")):
        number = state.get("episodes", 0)
        # Named by the conversation and its count: a replayed turn finds the episode it opened.
        current = f"{cid}:e{number}"
        store.open(
            Episode(
                episode_id=current,
                conversation_id=cid,
                runbook_id=decision.runbook_id or None,
                subject=subject,
                opened_at=deps.clock(),
            )
        )
        more |= {"episode_id": current, "episodes": number + 1}
    elif current and decision.runbook_id and decision.runbook_id != state.get("runbook_id"):
        store.retarget(current, decision.runbook_id)
    if current and subject:
        store.verified(current, subject)
    if current:
        store.touch(current)
    return more


def hand_off_episodes(state: ConversationState, deps: Deps, reasons: list[str], packet_id: str) -> Update:
    """The current episode ends with a person, and so do the problems still waiting (the packet names them)."""
    store = deps.episodes
    if store is None:
        return {}
    cid = state["conversation_id"]
    number = state.get("episodes", 0)
    reason = handoff_reason(reasons)
    if state.get("episode_id"):
        store.close(str(state["episode_id"]), "handed_off", reason=reason, packet_id=packet_id)
    for queued in state.get("queued_problems") or []:
        episode_id = f"{cid}:e{number}"
        store.open(
            Episode(
                episode_id=episode_id,
                conversation_id=cid,
                runbook_id=queued.get("runbook_id"),
                opened_at=deps.clock(),
                outcome="handed_off",
                closed_at=deps.clock(),
                reason=reason,
                packet_id=packet_id,
            )
        )
        number += 1
    return {"episodes": number}


def take_next(state: ConversationState) -> Update:
    """After the current problem was solved: the first queued one becomes the message to decide on."""
    queued = list(state.get("queued_problems") or [])
    if not queued:
        return {}
    first, rest = queued[0], queued[1:]
    understanding = Understanding(text=first["text"], candidates=first["candidates"])
    return {
        "take_queued": True,
        "queued_problems": rest,
        "understanding": understanding.model_dump(),
        "consumed": False,
        "problem_text": first["text"],
        "candidates": first["candidates"],
    }


def preface(state: ConversationState, decision: Decision) -> str:
    """What the reply says before its own text when it puts off, or takes up, another problem.

    Read from the whole turn's decisions: a step whose tool ran first was decided twice, and the
    second decision no longer carries the first one's reasons. The customer's own words name each
    problem; they know them better than a runbook's title.
    """
    turn = state.get("turn", 0)
    reasons = {r for d in state.get("trace", []) if d.get("turn") == turn for r in d.get("reasons", [])}
    reasons |= set(decision.reasons)
    if "two_problems" in reasons:
        clauses = (state.get("understanding") or {}).get("clauses") or []
        first, second = (f'"{c["text"]}"' for c in clauses[:2]) if len(clauses) >= 2 else ("the first", "another")
        return (
            f"You mentioned two problems: {first} and {second}. Let's take them one at a time, starting with "
            "the first; once it's sorted I'll come back to the second, so you won't need to repeat it."
        )
    if "repeat_contact" in reasons:
        step = state.get("step", 0) + 1
        return f"Welcome back. You've tried the earlier steps already, so let's pick up at step {step}."
    if "next_problem" in reasons:
        return f'Now the other problem you mentioned: "{state.get("problem_text", "")}".'
    return ""


def handoff_note(state: ConversationState, titles: dict[str, str]) -> str:
    """What a handoff reply adds when other problems were waiting: the technician gets them too."""
    waiting = [titles.get(q.get("runbook_id") or "", "").lower() for q in state.get("queued_problems") or []]
    if not waiting:
        return ""
    return f"The technician will also see the other problem you mentioned ({'; '.join(w for w in waiting if w)})."
