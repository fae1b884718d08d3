"""The boundary: one deterministic function decides what the bot does next, and why.

An LLM brain may propose an understanding; this module disposes. Every decision carries reason
codes, and every handoff names the boundary it crossed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal

from agent.stages import BETWEEN_PROBLEMS
from agent.state import Decision, ReasonCode, Scored, Stage, Understanding
from core.pack import Condition, Policy, SlotValue


@dataclass(frozen=True)
class StepFacts:
    """What the policy needs to know of one step of a runbook that branches."""

    id: str
    # outcome name -> (then, the author's handoff reason)
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    condition: Condition | None = None
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunbookFacts:
    """What the policy needs to know of a runbook."""

    id: str
    tier: int  # effective tier: the runbook's, raised by its category
    verify: bool
    step_tools: tuple[str | None, ...]
    escalate_if: tuple[str, ...] = ()
    # One entry per step (ids, outcomes, conditions, slots); empty: every step is a plain yes/no.
    steps: tuple[StepFacts, ...] = ()

    def step(self, index: int) -> StepFacts | None:
        """The step's facts, if the runbook declares them."""
        return self.steps[index] if 0 <= index < len(self.steps) else None

    # How the customer proves who they are: a code by mail to the address on file, or by text to the
    # line, or facts (the line's number and a date of birth) matched against the record on file.
    verify_by: Literal["email", "sms", "knowledge"] = "email"


@dataclass(frozen=True)
class EarlierEpisode:
    """An earlier problem of the same conversation, mail thread or verified customer, as the policy sees it."""

    runbook_id: str | None
    outcome: str
    steps_tried: tuple[int, ...] = ()
    age_hours: float = 0.0


@dataclass(frozen=True)
class Facts:
    """The conversation as the policy sees it when deciding."""

    stage: Stage
    understanding: Understanding
    runbooks: dict[str, RunbookFacts]
    runbook_id: str | None = None
    consumed: bool = False  # the message was already acted on this turn
    verified: bool = False
    code_pending: bool = False
    step: int = 0
    step_tool_done: bool = False
    last_tool_ok: bool = True
    counters: dict[str, int] = field(default_factory=dict)
    elapsed_minutes: float = 0.0
    customer_turns: int = 1
    # Earlier episodes of this conversation or this verified customer (the current one left out).
    earlier: tuple[EarlierEpisode, ...] = ()
    # The current problem's first message said the customer had written about it before.
    repeat_said: bool = False
    # The first problem was solved this turn: the understanding is the queued problem's, to begin now.
    resumed: bool = False
    # The current problem's slot values, the slot just asked for, and the latest tool result's data.
    slots: dict[str, SlotValue] = field(default_factory=dict)
    pending_slot: str | None = None
    last_result: dict[str, object] = field(default_factory=dict)
    # The open incident this message belongs to (same category as its best runbook; the one the
    # conversation is attached to), if any.
    incident_id: str | None = None
    # Other conversations routed to the message's best runbook within the policy's spike window.
    spike_peers: int = 0
    # Other conversations no runbook fit whose words are close to this one's, within the window.
    cluster_peers: int = 0
    # Whether this deployment keeps incidents (else wide impact hands off).
    incidents: bool = True

    def count(self, name: str) -> int:
        """A counter's value (0 when never counted)."""
        return self.counters.get(name, 0)


def _handoff(reason: ReasonCode, facts: Facts, runbook_id: str | None = None) -> Decision:
    top = facts.understanding.top
    return Decision(
        action="handoff",
        reasons=[reason],
        runbook_id=runbook_id if runbook_id is not None else facts.runbook_id,
        confidence=top.score if top else 0.0,
    )


def _incident(reason: ReasonCode, facts: Facts, policy: Policy) -> Decision:
    """Open or join an incident: the customer is told it is known, not walked through single-user steps."""
    if not facts.incidents:
        # No incident store in this deployment: a person takes the outage, never a single-user runbook.
        return _handoff(reason, facts)
    top = facts.understanding.top
    if top is not None and top.score < policy.routing.clarify_floor:
        top = None
    reasons: list[ReasonCode] = [reason]
    if facts.incident_id and reason != "incident_known":
        reasons.append("incident_known")
    return Decision(
        action="incident",
        reasons=reasons,
        runbook_id=top.runbook_id if top and top.runbook_id in facts.runbooks else None,
        confidence=top.score if top else 0.0,
        incident_id=facts.incident_id,
    )


def _wide(facts: Facts) -> bool:
    """The message reports many people affected (a "yes, it works for everyone" answer is not a report)."""
    u = facts.understanding
    return u.wide_impact and not (facts.stage not in BETWEEN_PROBLEMS and facts.stage != "incident" and u.affirm)


def _contains_phrase(text: str, phrases: list[str] | tuple[str, ...]) -> bool:
    lowered = text.lower()
    return any(re.search(rf"\b{re.escape(p.lower())}\b", lowered) for p in phrases)


def _boundaries(facts: Facts, policy: Policy) -> Decision | None:
    """Limits that apply to every new message, whatever the stage."""
    u = facts.understanding
    if u.wants_human:
        return _handoff("customer_requested_human", facts)
    if u.manipulation:
        return _handoff("manipulation_suspected", facts)
    if u.sentiment <= policy.handoff_sentiment:
        return _handoff("negative_sentiment", facts)
    if policy.escalates(u.text):
        return _handoff("escalation_keyword", facts)
    # Wide impact is a boundary: never single-user troubleshooting for an outage.
    if _wide(facts):
        return _incident("wide_impact", facts, policy)
    if facts.stage == "incident":
        return _incident("incident_known", facts, policy)
    if facts.stage not in BETWEEN_PROBLEMS:
        if facts.elapsed_minutes > policy.limits.max_conversation_minutes:
            return _handoff("time_limit", facts)
    if facts.customer_turns > policy.limits.max_customer_turns:
        return _handoff("turn_limit", facts)
    return None


def _triage(facts: Facts, policy: Policy) -> Decision:
    u = facts.understanding
    limits = policy.limits
    if u.greeting_only:
        return Decision(action="greet", reasons=["greeting"])
    if facts.stage == "resolved" and (u.thanks_only or u.affirm) and not u.deny:
        return Decision(action="acknowledge", reasons=["closed_thanks"])
    # Each part of a two-problem message is judged on its own: the message as a whole can fit
    # neither runbook well (a trained head splits its chances between the two).
    split = _two_problems(facts, policy)
    if split is not None:
        first, second = split
        decision = _start(first.runbook_id, first.score, facts, policy, "runbook_matched")
        return decision.model_copy(
            update={"reasons": [*decision.reasons, "two_problems"], "queued": [second.runbook_id]}
        )
    top = u.top
    clarified = facts.count("clarifications")
    if (top is None or top.score < policy.routing.min_score) and facts.cluster_peers:
        # Many customers with one problem no runbook knows, in close words: one incident, not a ticket each.
        if facts.incident_id:
            return _incident("incident_known", facts, policy)
        if facts.cluster_peers + 1 >= policy.incidents.spike_count:
            return _incident("incident_spike", facts, policy)
    if top is None or top.score < policy.routing.clarify_floor:
        return _handoff("no_runbook_fits", facts, runbook_id="")
    if top.score < policy.routing.min_score:
        short = len(u.text.split()) <= policy.routing.clarify_max_words
        if short and clarified < limits.max_clarifications:
            return Decision(action="clarify", reasons=["low_confidence"], confidence=top.score)
        return _handoff("no_runbook_fits", facts, runbook_id="")
    if u.margin < policy.routing.min_margin:
        second = u.candidates[1]
        if clarified < limits.max_clarifications:
            return Decision(
                action="choose",
                reasons=["ambiguous_runbooks"],
                confidence=top.score,
                options=[top.runbook_id, second.runbook_id],
            )
        # Asked once already; a wrong guess costs more than a person reading the transcript.
        return _handoff("ambiguous_after_clarifying", facts, runbook_id=top.runbook_id)
    if facts.incident_id:
        return _incident("incident_known", facts, policy)
    if facts.spike_peers + 1 >= policy.incidents.spike_count:
        return _incident("incident_spike", facts, policy)
    return _start(top.runbook_id, top.score, facts, policy, "runbook_matched")


def _two_problems(facts: Facts, policy: Policy) -> tuple[Scored, Scored] | None:
    """The best runbook of each part of a message that carries two problems, else None.

    Two problems only when both parts route strongly (min_score) to different runbooks: a joining
    word between two sentences about one problem ("it won't print, plus it jams") splits nothing.
    """
    clauses = facts.understanding.clauses
    if len(clauses) != 2:
        return None
    first, second = clauses[0].top, clauses[1].top
    if first is None or second is None or first.runbook_id == second.runbook_id:
        return None
    if min(first.score, second.score) < policy.routing.min_score:
        return None
    if first.runbook_id not in facts.runbooks or second.runbook_id not in facts.runbooks:
        return None
    return first, second


def _start(runbook_id: str, score: float, facts: Facts, policy: Policy, reason: ReasonCode) -> Decision:
    runbook = facts.runbooks[runbook_id]
    if _contains_phrase(facts.understanding.text, runbook.escalate_if):
        return _handoff("escalation_keyword", facts, runbook_id=runbook_id)
    if runbook.tier >= 2:
        return _handoff("tier2_runbook", facts, runbook_id=runbook_id)
    # Decided as from the runbook's first step, where the decide node moves it unless it hands off.
    fresh = Facts(
        stage="steps",
        understanding=facts.understanding,
        runbooks=facts.runbooks,
        runbook_id=runbook_id,
        consumed=facts.consumed,
        verified=facts.verified,
        # A new episode: whether it is a repeat contact is judged afresh.
        counters={k: v for k, v in facts.counters.items() if k != "recontact"},
        elapsed_minutes=facts.elapsed_minutes,
        customer_turns=facts.customer_turns,
        earlier=facts.earlier,
        repeat_said=facts.repeat_said or facts.understanding.says_repeat,
        slots=facts.slots,
    )
    decision = _in_runbook(fresh, policy)
    return decision.model_copy(
        update={"runbook_id": runbook_id, "confidence": score, "reasons": [reason, *decision.reasons]}
    )


def _switch_target(facts: Facts, policy: Policy) -> Scored | None:
    """Another runbook the message clearly fits, within a runbook; None when it is an answer to this one."""
    u = facts.understanding
    top = u.top
    if (
        top is None
        or top.runbook_id not in facts.runbooks
        or u.outcome is not None
        or u.slot_value is not None
        or u.affirm
        or u.deny
        or u.email
        or u.code
        or u.phone
        or u.dob
        or top.runbook_id == facts.runbook_id
        or top.score < policy.routing.min_score
        or u.margin < policy.routing.min_margin
    ):
        return None
    return top


def _topic_change(facts: Facts, policy: Policy) -> Decision | None:
    """A message that clearly fits another runbook starts that one (e.g. "actually it's my VPN").

    When that runbook hands off at once (tier 2, its escalation phrases), the handoff says the
    runbook switched, and carries the new runbook: its L2 notes explain the handoff.
    """
    top = _switch_target(facts, policy)
    if top is None:
        return None
    decision = _start(top.runbook_id, top.score, facts, policy, "topic_changed")
    if decision.action == "handoff":
        return decision.model_copy(update={"reasons": [*decision.reasons, "runbook_switched"]})
    return decision


def _switched_boundary(boundary: Decision, facts: Facts, policy: Policy) -> Decision:
    """A boundary crossed by a message that reveals another problem hands off that runbook."""
    if facts.stage in BETWEEN_PROBLEMS or boundary.reasons[0] == "customer_requested_human":
        return boundary
    top = _switch_target(facts, policy)
    if top is None:
        return boundary
    return boundary.model_copy(
        update={"runbook_id": top.runbook_id, "reasons": [*boundary.reasons, "runbook_switched"]}
    )


def _outcome(facts: Facts, policy: Policy, step: StepFacts) -> Decision:
    """Where the answer after a step with outcomes leads; one rephrased question when it matched none."""
    name, note = _judge_outcome(facts, policy, step)
    decision = _outcome_move(facts, policy, step, name)
    if note:
        decision = decision.model_copy(update={"reasons": [*decision.reasons, note]})
    return decision


def _judge_outcome(facts: Facts, policy: Policy, step: StepFacts) -> tuple[str | None, ReasonCode | None]:
    """The outcome the answer matched, or an LLM's proposal when it names one of the step's and is sure.

    A proposal that would resolve a denied answer is refused, as a meaning match would be.
    """
    u = facts.understanding
    if u.outcome is not None or u.proposed_outcome is None:
        return u.outcome, None
    then = step.outcomes.get(u.proposed_outcome, ("", None))[0]
    if not then or (u.deny and then == "resolved"):
        return None, "llm_proposal_refused"
    if u.outcome_confidence < policy.routing.llm_min_confidence:
        return None, None
    return u.proposed_outcome, "llm_proposal_accepted"


def _outcome_move(facts: Facts, policy: Policy, step: StepFacts, name: str | None) -> Decision:
    """Where the outcome ``name`` leads (None: nothing matched)."""
    rid = facts.runbook_id
    if name is None or name not in step.outcomes:
        # One rephrased question, listing what the bot understands; then a person.
        if facts.count("unclear") >= 1:
            return _handoff("unclear_response", facts)
        return Decision(action="reask_confirmation", reasons=["unclear_answer"], runbook_id=rid)
    then, note = step.outcomes[name]
    last = facts.step + 1 >= len(facts.runbooks[rid or ""].step_tools)
    if then == "resolved":
        return Decision(
            action="close_resolved", reasons=["outcome_matched", "customer_confirmed"], runbook_id=rid, outcome=name
        )
    if then == "handoff":
        return _handoff("outcome_handoff", facts).model_copy(update={"outcome": name, "note": note})
    if then == "next":
        if last:
            return _handoff("steps_exhausted", facts).model_copy(update={"outcome": name})
        return Decision(
            action="advance_step", reasons=["outcome_matched", "step_did_not_work"], runbook_id=rid, outcome=name
        )
    target = next(i for i, s in enumerate(facts.runbooks[rid or ""].steps) if s.id == then)
    return Decision(action="goto_step", reasons=["outcome_matched"], runbook_id=rid, outcome=name, to_step=target)


def _slot_answer(facts: Facts, policy: Policy) -> Decision:
    """The answer to a slot question: a valid value fills it; an invalid one is asked again, then a person."""
    rid, slot = facts.runbook_id, facts.pending_slot
    if facts.understanding.slot_value is not None:
        return Decision(action="fill_slot", reasons=["slot_filled"], runbook_id=rid, slot=slot)
    if facts.count("slot_invalid") >= policy.limits.max_unclear_answers:
        return _handoff("slot_invalid", facts)
    return Decision(
        action="ask_slot",
        reasons=["slot_invalid_answer"],
        runbook_id=rid,
        slot=slot,
        note=facts.understanding.slot_problem,
    )


def _before_step(facts: Facts, runbook: RunbookFacts) -> Decision | None:
    """A step whose condition does not hold is skipped; one that needs a missing slot asks for it."""
    step = runbook.step(facts.step)
    if step is None or facts.step_tool_done:
        return None
    rid = facts.runbook_id
    if step.condition is not None and not step.condition.holds(facts.slots, facts.last_result):
        if facts.step + 1 < len(runbook.step_tools):
            return Decision(action="skip_step", reasons=["step_skipped"], runbook_id=rid)
        return _handoff("steps_exhausted", facts)
    missing = [need for need in step.needs if facts.slots.get(need) is None]
    if missing:
        return Decision(action="ask_slot", reasons=["slot_required"], runbook_id=rid, slot=missing[0])
    return None


def _by_knowledge(facts: Facts, policy: Policy) -> Decision:
    """Identity by facts: ask for the line's number and date of birth, check them, ask again or hand off.

    A wrong answer and an unknown number read the same (reason ``code_mismatch``); past
    ``limits.max_code_attempts`` wrong answers the conversation hands off (``verification_failed``).
    """
    u = facts.understanding
    rid = facts.runbook_id
    limits = policy.limits
    if facts.count("tool_failed"):
        # The pack's lookup tool failed: a person takes over.
        return _handoff("tool_failed", facts)
    if u.phone and u.dob and not facts.consumed:
        return Decision(action="check_code", reasons=["identity_provided"], runbook_id=rid)
    wrong = facts.count("code_attempts")
    if wrong >= limits.max_code_attempts:
        return _handoff("verification_failed", facts)
    # Asks after a wrong answer do not count against the asks for facts never given.
    if facts.count("identity_asks") - wrong >= limits.max_identity_asks:
        return _handoff("identity_not_provided", facts)
    reason: ReasonCode = "code_mismatch" if facts.consumed and wrong else "identity_required"
    return Decision(action="ask_identity", reasons=[reason], runbook_id=rid)


def _in_runbook(facts: Facts, policy: Policy) -> Decision:
    """Identity first when the runbook needs it, then the steps."""
    assert facts.runbook_id is not None
    runbook = facts.runbooks[facts.runbook_id]
    u = facts.understanding
    limits = policy.limits
    rid = facts.runbook_id
    # What identifies the account: the address (a code by mail) or the line's number (a code by text).
    given = u.phone if runbook.verify_by == "sms" else u.email
    if runbook.verify and not facts.verified and runbook.verify_by == "knowledge":
        return _by_knowledge(facts, policy)
    if runbook.verify and not facts.verified:
        if facts.count("tool_failed"):
            # The pack's lookup or SMS tool failed while sending the code: a person takes over.
            return _handoff("tool_failed", facts)
        if facts.stage == "code" or facts.code_pending:
            if facts.consumed:
                if facts.count("code_attempts") >= limits.max_code_attempts:
                    return _handoff("verification_failed", facts)
                reason: ReasonCode = "code_sent" if facts.count("code_attempts") == 0 else "code_mismatch"
                return Decision(action="ask_code", reasons=[reason], runbook_id=rid)
            if u.code:
                return Decision(action="check_code", reasons=["code_entered"], runbook_id=rid)
            if given:
                return Decision(action="send_code", reasons=["identity_provided"], runbook_id=rid)
            if facts.count("code_attempts") >= limits.max_code_attempts:
                return _handoff("verification_failed", facts)
            return Decision(action="ask_code", reasons=["code_sent"], runbook_id=rid)
        if given and not facts.consumed:
            return Decision(action="send_code", reasons=["identity_provided"], runbook_id=rid)
        if facts.count("identity_asks") >= limits.max_identity_asks:
            return _handoff("identity_not_provided", facts)
        return Decision(action="ask_identity", reasons=["identity_required"], runbook_id=rid)

    if facts.stage == "slot" and not facts.consumed:
        return _slot_answer(facts, policy)

    if facts.stage != "confirm":
        again = _recontact(facts, policy)
        if again is not None:
            return again

    current = runbook.step(facts.step)
    if facts.stage == "confirm" and not facts.consumed and current is not None and current.outcomes:
        return _outcome(facts, policy, current)

    if facts.stage == "confirm" and not facts.consumed:
        if u.deny:
            if facts.step + 1 < len(runbook.step_tools):
                return Decision(action="advance_step", reasons=["step_did_not_work"], runbook_id=rid)
            return _handoff("steps_exhausted", facts)
        if u.affirm:
            return Decision(action="close_resolved", reasons=["customer_confirmed"], runbook_id=rid)
        if facts.count("unclear") >= limits.max_unclear_answers:
            return _handoff("unclear_response", facts)
        return Decision(action="reask_confirmation", reasons=["unclear_answer"], runbook_id=rid)

    if facts.stage != "confirm":
        before = _before_step(facts, runbook)
        if before is not None:
            return before
    tool = runbook.step_tools[facts.step] if facts.step < len(runbook.step_tools) else None
    if tool and not facts.step_tool_done:
        if facts.count("tool_failed"):
            return _handoff("tool_failed", facts)
        if facts.count("step_failures") >= limits.max_step_failures:
            return _handoff("step_failed", facts)
        return Decision(action="run_tool", reasons=["step_tool"], runbook_id=rid)
    return Decision(action="present_step", reasons=["step_presented"], runbook_id=rid)


def _recontact(facts: Facts, policy: Policy) -> Decision | None:
    """A customer back about the same runbook is not walked through it from step 1 again.

    Judged once per episode, before its first step (after verification, when the runbook needs it,
    so a verified customer's earlier episodes are known).
    """
    if facts.count("recontact") or facts.step or facts.step_tool_done:
        return None
    assert facts.runbook_id is not None
    window = policy.recontact.window_hours
    before = [e for e in facts.earlier if e.runbook_id == facts.runbook_id and e.age_hours <= window]
    if not before and not facts.repeat_said:
        return None
    if policy.recontact.action == "continue":
        tried = {step for e in before for step in e.steps_tried}
        untried = [i for i in range(len(facts.runbooks[facts.runbook_id].step_tools)) if i not in tried]
        # Nothing known of the earlier contact means step 1 again, which is what a person avoids.
        if before and untried:
            counters = {**facts.counters, "recontact": 1}
            resumed = _in_runbook(replace(facts, step=untried[0], counters=counters), policy)
            return resumed.model_copy(update={"reasons": ["repeat_contact", *resumed.reasons], "from_step": untried[0]})
    return _handoff("repeat_contact", facts)


def _next_problem(facts: Facts, policy: Policy) -> Decision:
    """The queued problem begins; it was judged a strong fit when the customer raised it."""
    top = facts.understanding.top
    if top is None or top.runbook_id not in facts.runbooks:
        return _handoff("no_runbook_fits", facts, runbook_id="")
    return _start(top.runbook_id, top.score, facts, policy, "next_problem")


def _judge_proposal(facts: Facts, policy: Policy) -> tuple[Understanding, ReasonCode | None]:
    """Take an LLM's runbook pick into the ranking only when the checks allow it."""
    u = facts.understanding
    pick, sure = u.proposed_runbook, u.proposal_confidence >= policy.routing.llm_min_confidence
    if pick == "":
        # "Nothing fits" errs on the safe side: a person looks at it.
        return (u.model_copy(update={"candidates": []}), "llm_proposal_accepted") if sure else (u, None)
    scores = {c.runbook_id: c.score for c in u.candidates}
    if pick not in facts.runbooks or pick not in scores:
        return u, "llm_proposal_refused"
    if not sure or scores[pick] < policy.routing.clarify_floor:
        return u, None
    chosen = Scored(runbook_id=pick, score=max(scores[pick], policy.routing.min_score))
    return u.model_copy(update={"candidates": [chosen]}), "llm_proposal_accepted"


def decide(facts: Facts, policy: Policy) -> Decision:
    """Decide the next action for a conversation: answer, ask, verify, act or hand off.

    An LLM brain's proposal (a runbook, "manipulation") is judged here like any other input, and
    the verdict is recorded among the decision's reasons.
    """
    notes: list[ReasonCode] = ["llm_unavailable"] if facts.understanding.degraded else []
    if facts.understanding.proposed_runbook is not None and not facts.consumed:
        judged, note = _judge_proposal(facts, policy)
        facts = replace(facts, understanding=judged)
        if note:
            notes.append(note)
    decision = _decide(facts, policy)
    if _offline_unsafe(facts, decision):
        return _handoff("llm_unavailable", facts)
    if notes:
        decision = decision.model_copy(update={"reasons": [*decision.reasons, *notes]})
    return decision


def _offline_unsafe(facts: Facts, decision: Decision) -> bool:
    """Whether the offline reading that stood in for an unavailable LLM may not carry this turn.

    The offline brain reads and writes English only: a customer writing in another language would
    be routed on words it cannot read and answered in a language they did not use. A person
    takes over instead.
    """
    u = facts.understanding
    return (
        u.degraded
        and u.language != "en"
        and not facts.consumed
        and facts.stage != "handed_off"
        and decision.action not in ("handoff", "relay")
    )


def _decide(facts: Facts, policy: Policy) -> Decision:
    if facts.stage == "handed_off":
        return Decision(action="relay", reasons=["relayed_to_l2"], runbook_id=facts.runbook_id)
    if facts.resumed:
        return _next_problem(facts, policy)
    if not facts.consumed:
        boundary = _boundaries(facts, policy)
        if boundary is not None:
            return _switched_boundary(boundary, facts, policy)
        current = facts.runbooks.get(facts.runbook_id or "")
        if current and facts.stage not in BETWEEN_PROBLEMS:
            if _contains_phrase(facts.understanding.text, current.escalate_if):
                return _handoff("escalation_keyword", facts)
    if facts.stage in BETWEEN_PROBLEMS or facts.runbook_id is None:
        return _triage(facts, policy)
    if not facts.consumed and facts.stage in ("identity", "confirm", "slot"):
        switched = _topic_change(facts, policy)
        if switched is not None:
            return switched
    return _in_runbook(facts, policy)
