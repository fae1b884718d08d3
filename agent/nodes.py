"""The graph's nodes: intake, understand, decide, act, reply, handoff."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from langgraph.runtime import Runtime

from agent import policy as boundary
from agent import problems
from agent.brains.base import ReplyContext
from agent.brains.streaming import Delta, emit_delta, stream_reply
from agent.deps import Deps
from agent.handoff import (
    Attempt,
    CandidateScore,
    CustomerState,
    HandoffPacket,
    PacketUsage,
    Sentiment,
    Sla,
    TranscriptLine,
    sentiment_label,
)
from agent.incidents import Incident, content_words
from agent.outcomes import OutcomeMatch, by_yes_no
from agent.slots import mask_phone, read_slot
from agent.stages import BETWEEN_PROBLEMS, INITIAL, Event, advance
from agent.state import ConversationState, Decision, Stage, Understanding, Usage
from core.errors import ToolError
from core.pack import Impact, Pack, Urgency
from core.redact import mask_email, redact
from core.vault import REVEALED_KINDS, Vault, reveal
from tools.base import Account, VerifiedAccount

Update = dict[str, Any]


def _line(role: str, text: str, at: datetime, channel: str) -> dict[str, Any]:
    return {"role": role, "text": redact(text), "at": at.isoformat(), "channel": channel}


def _add_usage(state: ConversationState, *used: Usage) -> dict[str, int]:
    total = Usage.model_validate(state.get("usage") or {})
    for usage in used:
        total = total + usage
    return total.model_dump()


def _spent(state: ConversationState) -> int:
    used = state.get("usage") or {}
    return int(used.get("prompt_tokens", 0)) + int(used.get("completion_tokens", 0))


def _counters(state: ConversationState, **changes: int) -> dict[str, int]:
    counters = dict(state.get("counters") or {})
    for name, delta in changes.items():
        counters[name] = counters.get(name, 0) + delta
    return counters


def _moved(state: ConversationState, event: Event) -> Stage:
    """Where ``event`` takes the conversation from its current stage (declared in agent/stages.py)."""
    return advance(state["stage"], event)


def intake(state: ConversationState) -> Update:
    """Take the customer's message into the conversation (the first part of ``understand``)."""
    inbox = state["inbox"]
    at = datetime.fromisoformat(inbox["at"])
    update: Update = {
        "turn": state.get("turn", 0) + 1,
        "outgoing": [],
        "consumed": False,
        "transcript": [_line("customer", inbox["text"], at, state.get("channel", "chat"))],
    }
    if not state.get("stage"):
        update |= {"stage": INITIAL, "step": 0, "counters": {}, "customer": {}, "context_text": ""}
    return update


def _vault(deps: Deps) -> Vault:
    assert deps.toolbox.vault is not None  # the Toolbox makes one when none is given
    return deps.toolbox.vault


def _keep(state: ConversationState, vault: Vault, kind: str, value: str | None) -> str | None:
    """A vault reference for a value the brain read (the one the service held, or a new entry)."""
    if not value:
        return None
    for entry in state["inbox"].get("held", []):
        if entry["kind"] == kind and vault.get(entry["ref"]) == value:
            return str(entry["ref"])
    cid = state["conversation_id"]
    return vault.put(cid, kind, value, ref=f"{cid}:t{state.get('turn', 0)}:{kind}")


def _account_state(found: Account | None) -> dict[str, Any] | None:
    # Stored with the conversation and the packet: the address masked, the rest as the tools saw it.
    return {**found.model_dump(), "email": mask_email(found.email)} if found else None


def understand(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Take the customer's message in (``intake``) and let the brain read it.

    One node for both: taking the message in needs no checkpoint of its own (run again after a
    crash, it gives the same update from the same checkpointed inbox), and each step of the graph
    costs a checkpoint on every turn.
    """
    taken = intake(state)
    # What the brain reads sees the message taken in (the turn's number, a new conversation's stage).
    seen = cast(ConversationState, {**state, **{k: v for k, v in taken.items() if k != "transcript"}})
    return {**taken, **_read(seen, runtime)}


def _read(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Let the brain read the message (routing with earlier triage context, slots, sentiment).

    The inbox holds the redacted message; the brain reads it with the held values (addresses,
    codes) put back from the vault, and the state keeps vault references in their place.
    """
    inbox = state["inbox"]
    if state.get("stage") == "handed_off":
        return {"understanding": Understanding(text=inbox["text"]).model_dump()}
    vault = _vault(runtime.context)
    held = inbox.get("held", [])
    # Addresses and codes are put back for the brain (an LLM); a held phone number or date of birth
    # stays a placeholder for it, read by the slot or the identity check alone.
    text = reveal(vault, inbox["text"], [h for h in held if h["kind"] in REVEALED_KINDS])
    context = state.get("context_text", "") if state.get("stage") in BETWEEN_PROBLEMS else ""
    routing_text = f"{context} {text}".strip() if context else text
    understanding = runtime.context.brain.understand(text, routing_text=routing_text, spent_tokens=_spent(state))
    # A date of birth is read by the identity check alone (knowledge), never by outcome or slot matching.
    answer = reveal(vault, inbox["text"], [h for h in held if h["kind"] != "dob"])
    understanding = _read_answer(state, runtime.context, understanding, answer)
    kept = understanding.model_copy(
        update={
            "text": redact(inbox["text"]),
            "email": _keep(state, vault, "email", understanding.email),
            "code": _keep(state, vault, "code", understanding.code),
            # The first phone number the message held: its vault reference, for a code texted to the line.
            "phone": next((str(h["ref"]) for h in held if h["kind"] == "phone"), None),
            # The first date of birth it held, for identity by facts (verify: knowledge).
            "dob": next((str(h["ref"]) for h in held if h["kind"] == "dob"), None),
            "clauses": [c.model_copy(update={"text": redact(c.text)}) for c in understanding.clauses],
        }
    )
    return {
        "understanding": kept.model_dump(),
        "sentiment": understanding.sentiment,
        "usage": _add_usage(state, understanding.usage),
    }


def _read_answer(state: ConversationState, deps: Deps, understanding: Understanding, text: str) -> Understanding:
    """Within a runbook that branches: the outcome an answer matched, or the slot value it gave."""
    runbook = deps.pack.runbooks.get(state.get("runbook_id") or "")
    stage = state.get("stage")
    if runbook is None or stage not in ("confirm", "slot"):
        return understanding
    if stage == "slot":
        slot = runbook.slots.get(state.get("pending_slot") or "")
        if slot is None:
            return understanding
        read = read_slot(slot, text)
        if slot.type == "phone" and read.value is not None:
            ref = _keep(state, _vault(deps), "phone", str(read.value))
            return understanding.model_copy(update={"slot_value": mask_phone(str(read.value)), "slot_ref": ref})
        return understanding.model_copy(update={"slot_value": read.value, "slot_problem": read.problem})
    step = state.get("step", 0)
    if not 0 <= step < len(runbook.steps) or not runbook.steps[step].outcomes:
        return understanding
    if deps.outcomes is not None:
        match = deps.outcomes.match(runbook.steps[step], text, affirm=understanding.affirm, deny=understanding.deny)
    else:
        found = by_yes_no(runbook.steps[step].outcomes, affirm=understanding.affirm, deny=understanding.deny)
        match = OutcomeMatch(name=found.name, by="yes_no", score=1.0) if found else None
    if match is None:
        return _proposed_outcome(state, deps, understanding, text)
    return understanding.model_copy(
        update={"outcome": match.name, "outcome_by": match.by, "outcome_score": match.score}
    )


def _proposed_outcome(state: ConversationState, deps: Deps, understanding: Understanding, text: str) -> Understanding:
    """An LLM brain's reading of an answer nothing matched (the offline brain proposes nothing)."""
    propose = getattr(deps.brain, "propose_outcome", None)
    runbook = deps.pack.runbooks[state.get("runbook_id") or ""]
    step = state.get("step", 0)
    if propose is None:
        return understanding
    outcomes = {o.name: list(o.when) for o in runbook.steps[step].outcomes}
    name, confidence, usage = propose(text, runbook.question(step), outcomes, spent_tokens=_spent(state))
    return understanding.model_copy(
        update={"proposed_outcome": name, "outcome_confidence": confidence, "usage": understanding.usage + usage}
    )


_VERIFY_BY: dict[str, Literal["email", "sms", "knowledge"]] = {"otp_sms": "sms", "knowledge": "knowledge"}


def runbook_facts(pack: Pack) -> dict[str, boundary.RunbookFacts]:
    """What the policy needs of each runbook of the pack."""
    return {
        rid: boundary.RunbookFacts(
            id=rid,
            tier=pack.effective_tier(rb),
            verify=rb.meta.verify != "none",
            verify_by=_VERIFY_BY.get(rb.meta.verify, "email"),
            step_tools=tuple(step.tool for step in rb.steps),
            escalate_if=tuple(rb.meta.escalate_if),
            steps=tuple(
                boundary.StepFacts(
                    id=step.id,
                    outcomes={o.name: (o.then, o.reason) for o in step.outcomes},
                    condition=step.condition,
                    needs=step.needs,
                )
                for step in rb.steps
            ),
        )
        for rid, rb in pack.runbooks.items()
    }


def _verified(state: ConversationState, deps: Deps) -> VerifiedAccount | None:
    """The conversation's verified account, while its verification has not expired."""
    customer = state.get("customer") or {}
    verified_at = customer.get("verified_at")
    if not verified_at:
        return None
    return deps.toolbox.verified(
        customer["account_id"],
        customer.get("email") or "",
        datetime.fromisoformat(verified_at),
        state["conversation_id"],
    )


def facts_of(state: ConversationState, deps: Deps) -> boundary.Facts:
    """The policy's view of the conversation."""
    started_at = state.get("started_at")
    started = datetime.fromisoformat(started_at) if started_at else deps.clock()
    last_tool = state.get("last_tool") or {}
    return boundary.Facts(
        stage=state.get("stage", INITIAL),
        understanding=Understanding.model_validate(state["understanding"]),
        runbooks=runbook_facts(deps.pack),
        runbook_id=state.get("runbook_id"),
        consumed=state.get("consumed", False),
        verified=_verified(state, deps) is not None,
        code_pending=state.get("stage") == "code",
        step=state.get("step", 0),
        step_tool_done=state.get("step_tool_done", False),
        last_tool_ok=bool(last_tool.get("ok", True)),
        counters=dict(state.get("counters") or {}),
        elapsed_minutes=(deps.clock() - started).total_seconds() / 60,
        # Counted, like the time limit, from the last time the bot took the conversation back from L2.
        customer_turns=state.get("turn", 1) - state.get("turns_before", 0),
        earlier=problems.earlier_facts(state, deps),
        repeat_said=state.get("repeat_said", False),
        resumed=bool(state.get("take_queued")),
        slots=dict(state.get("slots") or {}),
        pending_slot=state.get("pending_slot"),
        last_result=dict(state.get("last_result") or {}),
        **_incident_facts(state, deps),
    )


def related_categories(state: ConversationState, deps: Deps) -> tuple[str, ...]:
    """The categories a wide-impact report may join an open incident of: close in meaning.

    Those of the runbooks the message came near (clarify_floor), and the outage categories; any
    category ("*") when the message itself reads as an outage (policy.yaml incidents.outage_categories).
    """
    floor = deps.pack.policy.routing.clarify_floor
    outage = deps.pack.policy.incidents.outage_categories
    found: list[str] = []
    for candidate in (state["understanding"].get("candidates") or [])[:3]:
        runbook = deps.pack.runbooks.get(candidate["runbook_id"])
        if runbook is not None and candidate["score"] >= floor and runbook.meta.category not in found:
            found.append(runbook.meta.category)
    if set(found) & set(outage):
        return ("*",)  # "a service is down for all of us": whatever the open incident's category
    return (*found, *outage)


def _incident_facts(state: ConversationState, deps: Deps) -> dict[str, Any]:
    """The open incident the message belongs to, and how many others reported its runbook lately."""
    store = deps.incidents
    if store is None:
        return {"incidents": False}
    if state.get("consumed") or state.get("stage") == "handed_off":
        return {}
    if state.get("stage") == "incident":
        return {"incident_id": state.get("incident_id")}
    understanding = state["understanding"]
    candidates = understanding.get("candidates") or []
    top = candidates[0] if candidates else None
    runbook = deps.pack.runbooks.get(top["runbook_id"]) if top else None
    strong = top is not None and runbook is not None and top["score"] >= deps.pack.policy.routing.min_score
    wide = bool(understanding.get("wide_impact"))
    cid = state["conversation_id"]
    if not strong and not wide:
        if state.get("stage") not in BETWEEN_PROBLEMS:
            return {}
        minutes = deps.pack.policy.incidents.spike_minutes
        cluster = store.cluster_peers(content_words(str(understanding.get("text", ""))), minutes, cid)
        return {"cluster_peers": len(cluster), "incident_id": store.incident_of([c for c, _ in cluster])}
    category = runbook.meta.category if strong and runbook else None
    found = store.matching(category, cid, wide=wide, related=related_categories(state, deps))
    if found is None and store.across:
        found = store.named_outage(str(understanding.get("text", "")))
    peers = 0
    spiky = runbook is not None and deps.pack.policy.incidents.counts_spikes(runbook.meta.id, runbook.meta.category)
    if strong and spiky and top is not None and state.get("stage") in BETWEEN_PROBLEMS:
        peers = len(store.peers(top["runbook_id"], deps.pack.policy.incidents.spike_minutes, cid))
    return {"incident_id": found, "spike_peers": peers}


def decide(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Apply the policy boundary to the latest understanding."""
    deps = runtime.context
    decision = boundary.decide(facts_of(state, deps), deps.pack.policy)
    update: Update = {
        "decision": decision.model_dump(),
        "trace": [
            {
                "turn": state.get("turn", 0),
                "at": deps.clock().isoformat(),
                "action": decision.action,
                "reasons": decision.reasons,
                "runbook_id": decision.runbook_id,
                "confidence": decision.confidence,
            }
        ],
    }
    understanding = state["understanding"]
    new_problem = state.get("stage") in BETWEEN_PROBLEMS
    fresh = new_problem and not state.get("consumed")
    if fresh and not state.get("take_queued"):
        # The customer's own words for the problem at hand, for the packet and any ticket.
        update["problem_text"] = redact(f"{state.get('context_text', '')} {state['inbox']['text']}".strip())
        # Said in a message that only got "tell me more" still counts for the problem it described.
        carried = state.get("stage") == "triage" and state.get("repeat_said", False)
        update["repeat_said"] = bool(understanding.get("says_repeat")) or carried
        # A new problem: its own slots, results and first runbook (kept across a switch).
        update |= {"started_runbook_id": decision.runbook_id or None, "slots": {}, "slot_refs": {}, "last_result": {}}
    if fresh and understanding.get("candidates"):
        update["candidates"] = understanding["candidates"]
    chosen = decision.runbook_id or None
    if chosen and (new_problem or chosen != state.get("runbook_id")):
        update |= {
            "runbook_id": chosen,
            "confidence": decision.confidence,
            "step": 0,
            "jumped": False,
            "step_tool_done": False,
            "counters": {
                k: v
                for k, v in (state.get("counters") or {}).items()
                if k not in ("step_failures", "unclear", "recontact", "tool_failed")
            },
        }
        if decision.action not in ("handoff", "incident"):
            update["stage"] = _moved(state, "runbook_chosen" if new_problem else "topic_changed")
    if decision.outcome is not None:
        update |= _answered(state, deps, decision)
    update |= problems.after_decision(state, deps, decision, fresh, update)
    _report(state, deps, decision, fresh, update)
    return update


def _answered(state: ConversationState, deps: Deps, decision: Decision) -> Update:
    """The answer after a step matched an outcome: recorded as an attempt, and its slots set."""
    runbook = deps.pack.runbooks[state.get("runbook_id") or ""]
    step = state.get("step", 0)
    outcome = next(o for o in runbook.steps[step].outcomes if o.name == decision.outcome)
    understanding = state["understanding"]
    by, score = understanding.get("outcome_by") or "yes_no", understanding.get("outcome_score", 0.0)
    if understanding.get("outcome") is None:  # the policy took an LLM brain's proposal
        by, score = "llm", understanding.get("outcome_confidence", 0.0)
    attempt = Attempt(
        at=deps.clock(),
        kind="answer",
        step=step,
        step_id=runbook.steps[step].id,
        outcome=outcome.name,
        detail=f"answer matched outcome {outcome.name!r} ({by}, {score:.2f}): then {outcome.then}",
    )
    update: Update = {"attempts": [attempt.model_dump(mode="json")]}
    if outcome.set:
        update["slots"] = {**(state.get("slots") or {}), **outcome.set}
    return update


def _report(state: ConversationState, deps: Deps, decision: Decision, fresh: bool, update: Update) -> None:
    """Count a new problem routed to a runbook towards that runbook's spike (agent/incidents.py)."""
    runbook = deps.pack.runbooks.get(decision.runbook_id or "")
    if deps.incidents is None or not fresh:
        return
    episode = str(update.get("episode_id") or state.get("episode_id") or f"t{state.get('turn', 0)}")
    if runbook is not None and decision.action != "handoff":
        deps.incidents.report(state["conversation_id"], episode, runbook.meta.id, runbook.meta.category)
    elif "no_runbook_fits" in decision.reasons or decision.action == "clarify":
        # Unrouted: its words may yet make a cluster with others' (agent/incidents.py cluster_peers).
        words = content_words(str(state["understanding"].get("text", "")))
        deps.incidents.report(state["conversation_id"], episode, "", None, words)


def act(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Carry out an acting decision: send or check a code, run a step's tool, or move on a step."""
    deps = runtime.context
    decision = Decision.model_validate(state["decision"])
    understanding = Understanding.model_validate(state["understanding"])
    now = deps.clock()
    update: Update = {"consumed": True}
    if decision.action == "send_code":
        update |= _send_code(state, deps, understanding, now)
    elif decision.action == "check_code":
        update |= _check_code(state, deps, understanding, now)
    elif decision.action == "run_tool":
        update |= _run_tool(state, deps, understanding, now)
    elif decision.action == "advance_step":
        update |= _advance_step(state)
    elif decision.action in ("goto_step", "skip_step"):
        update |= _advance_step(state, decision)
    elif decision.action == "fill_slot":
        slots = {**(state.get("slots") or {}), str(decision.slot): understanding.slot_value}
        refs = {**(state.get("slot_refs") or {})}
        if understanding.slot_ref:
            refs[str(decision.slot)] = understanding.slot_ref
        counters = {k: v for k, v in (state.get("counters") or {}).items() if k != "slot_invalid"}
        update |= {
            "slots": slots,
            "slot_refs": refs,
            "pending_slot": None,
            "counters": counters,
            "stage": _moved(state, "slot_filled"),
        }
    else:
        raise ValueError(f"act cannot carry out {decision.action!r}")
    return update


def _by_sms(state: ConversationState, deps: Deps) -> bool:
    runbook = deps.pack.runbooks.get(state.get("runbook_id") or "")
    return runbook is not None and runbook.meta.verify == "otp_sms"


def _send_sms_code(state: ConversationState, deps: Deps, understanding: Understanding, now: datetime) -> Update:
    cid = state["conversation_id"]
    phone = _vault(deps).get(understanding.phone) or ""
    key = f"{cid}:t{state.get('turn', 0)}:send_code"
    result = deps.toolbox.send_sms_code(phone, deps.pack.policy.verification, conversation_id=cid, key=key)
    customer = dict(state.get("customer") or {})
    # The number stays in the vault; the state keeps its last digits, as the reply may show them.
    customer |= {"email": None, "phone": f"***{phone[-3:]}", "account_id": None, "verified_at": None}
    attempt = Attempt(
        at=now,
        kind="tool",
        tool="send_code",
        ok=result.ok,
        idempotency_key=key,
        args={"phone": f"***{phone[-3:]}"},
        detail="one-time code texted to the number on file, if a line has it",
        result=result.data,
    )
    update: Update = {"last_tool": result.model_dump(), "attempts": [attempt.model_dump(mode="json")]}
    if not result.ok:
        # The lookup or the SMS tool failed: a person takes over (reason tool_failed).
        return update | {"counters": _counters(state, tool_failed=1)}
    return update | {
        "customer": customer,
        "stage": _moved(state, "code_sent"),
        "counters": {**(state.get("counters") or {}), "code_attempts": 0},
    }


def _send_code(state: ConversationState, deps: Deps, understanding: Understanding, now: datetime) -> Update:
    if _by_sms(state, deps):
        return _send_sms_code(state, deps, understanding, now)
    cid = state["conversation_id"]
    vault = _vault(deps)
    email = vault.get(understanding.email) or ""
    key = f"{cid}:t{state.get('turn', 0)}:send_code"
    result = deps.toolbox.send_code(email, conversation_id=cid, key=key)
    if email:
        vault.link_subject(cid, email)
    customer = dict(state.get("customer") or {})
    customer |= {
        "email": mask_email(email),
        "email_ref": understanding.email,
        "account_id": None,
        "verified_at": None,
    }
    return {
        "customer": customer,
        "stage": _moved(state, "code_sent"),
        "last_tool": result.model_dump(),
        "counters": {**(state.get("counters") or {}), "code_attempts": 0},
        "attempts": [
            Attempt(
                at=now,
                kind="tool",
                tool="send_code",
                ok=True,
                idempotency_key=key,
                args={"email": mask_email(email)},
                detail="one-time code sent to the contact on file, if the account exists",
                result=result.data,
            ).model_dump(mode="json")
        ],
    }


def _check_knowledge(state: ConversationState, deps: Deps, understanding: Understanding, now: datetime) -> Update:
    """Identity by facts: the number and date of birth (out of the vault) against the record on file."""
    cid = state["conversation_id"]
    vault = _vault(deps)
    key = f"{cid}:t{state.get('turn', 0)}:check_code"
    given = {"phone": vault.get(understanding.phone) or "", "dob": vault.get(understanding.dob) or ""}
    try:
        account = deps.toolbox.verify_knowledge(given, deps.pack.policy.verification, conversation_id=cid, key=key)
    except ToolError as exc:
        attempt = Attempt(
            at=now, kind="tool", tool="verify_identity", ok=False, detail=str(exc), result={"status": exc.status}
        )
        # The lookup tool failed: a person takes over (reason tool_failed), the status in the packet.
        return {"attempts": [attempt.model_dump(mode="json")], "counters": _counters(state, tool_failed=1)}
    ok = account is not None
    detail = "facts matched the record on file" if ok else "facts did not match (or no such record)"
    update: Update = {
        "attempts": [Attempt(at=now, kind="tool", tool="verify_identity", ok=ok, detail=detail).model_dump(mode="json")]
    }
    if account is None:
        return update | {"counters": _counters(state, code_attempts=1)}
    customer = dict(state.get("customer") or {})
    phone = given["phone"]
    customer |= {
        "account_id": account.account_id,
        "email": None,
        "phone": f"***{phone[-3:]}",
        "verified_at": account.verified_at.isoformat(),
    }
    return update | {"customer": customer, "stage": _moved(state, "identity_verified")}


def _check_code(state: ConversationState, deps: Deps, understanding: Understanding, now: datetime) -> Update:
    runbook = deps.pack.runbooks.get(state.get("runbook_id") or "")
    if runbook is not None and runbook.meta.verify == "knowledge":
        return _check_knowledge(state, deps, understanding, now)
    cid = state["conversation_id"]
    code = _vault(deps).get(understanding.code) or ""
    key = f"{cid}:t{state.get('turn', 0)}:check_code"
    account = deps.toolbox.check_code(code, conversation_id=cid, key=key, by_sms=_by_sms(state, deps))
    ok = account is not None
    update: Update = {
        "attempts": [
            Attempt(
                at=now,
                kind="tool",
                tool="verify_identity",
                ok=ok,
                detail="code matched" if ok else "code did not match",
            ).model_dump(mode="json")
        ]
    }
    if account is None:
        update["counters"] = _counters(state, code_attempts=1)
        return update
    found = deps.toolbox.directory.get(account.account_id)
    customer = dict(state.get("customer") or {})
    customer |= {
        # The keyed hash of the proven address: how a later conversation of the same customer is found.
        # From the directory's record: the verification keeps only the masked address, which two
        # customers can share (j***@example.com), so its hash would link strangers.
        "subject": _vault(deps).subject(found.email) if found else None,
        "account_id": account.account_id,
        # A code texted to the line proves the line, not an address: none is recorded.
        "email": mask_email(account.email) if account.email else None,
        "verified_at": account.verified_at.isoformat(),
        "account_state": _account_state(found),
    }
    return update | {"customer": customer, "stage": _moved(state, "identity_verified")}


def _run_tool(state: ConversationState, deps: Deps, understanding: Understanding, now: datetime) -> Update:
    cid = state["conversation_id"]
    pack_runbook = deps.pack.runbooks[state["runbook_id"] or ""]
    step = state.get("step", 0)
    tool = pack_runbook.steps[step].tool or ""
    failures = (state.get("counters") or {}).get("step_failures", 0)
    # Deterministic key: a replay after a crash finds the first run instead of acting again.
    key = f"{cid}:t{state.get('turn', 0)}:s{step}:{tool}:a{failures}"
    account = _verified(state, deps)
    args = {
        "text": understanding.text,
        "summary": f"{pack_runbook.meta.title}: {state.get('problem_text', '')}",
        # The values themselves: a phone number comes back out of the vault for the tool only.
        "slots": {
            **(state.get("slots") or {}),
            **{name: _vault(deps).get(ref) for name, ref in (state.get("slot_refs") or {}).items()},
        },
    }
    result = deps.toolbox.run(tool, key=key, conversation_id=cid, account=account, args=args)
    recorded: dict[str, Any] = {"account_id": account.account_id if account else None}
    if tool == "check_service_status":
        recorded = {"text": redact(understanding.text)}
    elif tool == "create_ticket":
        recorded["summary"] = args["summary"]
    update: Update = {
        "last_tool": result.model_dump(),
        "attempts": [
            Attempt(
                at=now,
                kind="tool",
                step=step,
                tool=tool,
                ok=result.ok,
                idempotency_key=key,
                args=recorded,
                detail=result.error or result.message,
                result=result.data,
            ).model_dump(mode="json")
        ],
    }
    if not result.ok:
        # A declared tool that answered an error or garbage hands off at once (reason tool_failed).
        declared = "status" in result.data
        update["counters"] = _counters(state, step_failures=1, **({"tool_failed": 1} if declared else {}))
        return update
    update["step_tool_done"] = True
    update["last_result"] = dict(result.data)
    if account is not None:
        found = deps.toolbox.directory.get(account.account_id)
        update["customer"] = {**(state.get("customer") or {}), "account_state": _account_state(found)}
    return update


def _advance_step(state: ConversationState, decision: Decision | None = None) -> Update:
    counters = {k: v for k, v in (state.get("counters") or {}).items() if k not in ("step_failures", "unclear")}
    event: Event = "step_did_not_work"
    step = state.get("step", 0) + 1
    if decision is not None and decision.action == "goto_step":
        event, step = "outcome_matched", decision.to_step if decision.to_step is not None else step
    elif decision is not None:
        event = "step_skipped"
    return {
        "step": step,
        "jumped": event == "outcome_matched",
        "step_tool_done": False,
        "stage": _moved(state, event),
        "counters": counters,
        "last_tool": None,
    }


def _reply_context(state: ConversationState, deps: Deps, decision: Decision, **extra: Any) -> ReplyContext:
    runbook = deps.pack.runbooks.get(state.get("runbook_id") or "") if state.get("runbook_id") else None
    last_tool = state.get("last_tool") or {}
    counters = state.get("counters") or {}
    return ReplyContext(
        decision=decision,
        runbook=runbook,
        step=state.get("step", 0),
        tool_message=str(last_tool.get("message", "")) if last_tool.get("ok") else "",
        titles={rid: rb.meta.title for rid, rb in deps.pack.runbooks.items()},
        code_attempts_left=deps.pack.policy.limits.max_code_attempts - counters.get("code_attempts", 0),
        language=str((state.get("understanding") or {}).get("language") or "en"),
        spent_tokens=_spent(state),
        slots=dict(state.get("slots") or {}),
        jumped=bool(state.get("jumped")),
        **extra,
    )


def _reply_moves(state: ConversationState, deps: Deps, decision: Decision) -> tuple[Update, bool] | None:
    """What a reply changes besides its words, and whether it repeats a question; None: stay silent."""
    now = deps.clock()
    update: Update = {}
    action = decision.action
    repeat = False
    if action == "relay":
        packets = deps.handoffs.for_conversation(state["conversation_id"])
        # Once a technician has claimed the conversation, the bot stays silent.
        if packets and packets[-1].status != "queued":
            return None
    elif action in ("clarify", "choose"):
        update["counters"] = _counters(state, clarifications=1)
        update["context_text"] = f"{state.get('context_text', '')} {state['inbox']['text']}".strip()
    elif action == "ask_identity":
        repeat = (state.get("counters") or {}).get("identity_asks", 0) > 0
        update |= {"stage": _moved(state, "identity_asked"), "counters": _counters(state, identity_asks=1)}
    elif action == "ask_code":
        # Asked again, for a message that carried neither a code nor an address: the send's own words
        # ("I've just sent a code") would no longer be true.
        repeat = not state.get("consumed")
        update["stage"] = _moved(state, "code_asked")
    elif action == "present_step":
        update["stage"] = _moved(state, "step_presented")
        update["attempts"] = [
            Attempt(at=now, kind="step", step=state.get("step", 0), detail="step shown to the customer").model_dump(
                mode="json"
            )
        ]
        if deps.episodes is not None and state.get("episode_id"):
            deps.episodes.tried(str(state["episode_id"]), state.get("step", 0))
    elif action == "reask_confirmation":
        update["counters"] = _counters(state, unclear=1)
    elif action == "ask_slot":
        invalid = "slot_invalid_answer" in decision.reasons
        update |= {"stage": _moved(state, "slot_asked"), "pending_slot": decision.slot}
        if invalid:
            update["counters"] = _counters(state, slot_invalid=1)
    elif action == "close_resolved":
        update |= {
            "stage": _moved(state, "customer_confirmed"),
            "resolution": "confirmed",
            "context_text": "",
            "counters": {},
            "step": 0,
            "step_tool_done": False,
            "last_tool": None,
            "repeat_said": False,
        }
        if deps.episodes is not None and state.get("episode_id"):
            deps.episodes.close(str(state["episode_id"]), "confirmed")
        # A problem the customer raised with this one begins now, without their repeating it.
        update |= problems.take_next(state)
    elif action not in ("greet", "acknowledge"):
        raise ValueError(f"reply cannot word {action!r}")
    return update, repeat


def reply(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Word the bot's answer and move the conversation to the stage it leads to."""
    deps = runtime.context
    decision = Decision.model_validate(state["decision"])
    now = deps.clock()
    channel = state.get("channel", "chat")
    moves = _reply_moves(state, deps, decision)
    if moves is None:
        return {"outgoing": []}
    update, repeat = moves
    ctx = _reply_context(state, deps, decision, repeat=repeat)
    preface = problems.preface(state, decision)
    if preface and state.get("stream"):
        emit_delta(Delta(preface + "\n\n"))
    # A streaming caller sees each checked piece of the reply as it is written (Resolver.send).
    worded = stream_reply(deps.brain, ctx, emit_delta) if state.get("stream") else deps.brain.reply(ctx)
    text = f"{preface}\n\n{worded.text}" if preface else worded.text
    update["usage"] = _add_usage(state, worded.usage)
    # A turn that solved one problem and began a queued one answers twice.
    update |= {"outgoing": [*(state.get("outgoing") or []), text], "transcript": [_line("bot", text, now, channel)]}
    return update


def _priority(deps: Deps, state: ConversationState) -> tuple[str, datetime, datetime]:
    pack = deps.pack
    runbook = pack.runbooks.get(state.get("runbook_id") or "")
    impact: Impact = runbook.meta.impact if runbook else "single_user"
    urgency: Urgency = runbook.meta.urgency if runbook else "normal"
    understanding = Understanding.model_validate(state["understanding"])
    if understanding.wide_impact and impact == "single_user":
        impact = "team"
    if understanding.urgent and urgency != "high":
        urgency = "high" if urgency == "normal" else "normal"
    priority = pack.policy.priority(impact, urgency)
    sla = pack.policy.sla[priority]
    now = deps.clock()
    return (priority, now + timedelta(minutes=sla.first_response_minutes), now + timedelta(minutes=sla.resolve_minutes))


def _tried(attempts: list[dict[str, Any]]) -> list[str]:
    """Each attempt in a few words, for the hypothesis."""
    return [
        f"{a.get('tool') or 'step ' + str((a.get('step') or 0) + 1)} ({'ok' if a.get('ok') else 'failed'})"
        if a["kind"] == "tool"
        else f"step {(a.get('step') or 0) + 1}"
        for a in attempts
        if a["kind"] != "answer"  # the matched outcomes are in the packet's attempts
    ]


def _customer_state(customer: dict[str, Any]) -> CustomerState:
    return CustomerState(
        account_id=customer.get("account_id") if customer.get("verified_at") else None,
        email=customer.get("email"),
        verified=bool(customer.get("verified_at")),
        verified_at=customer.get("verified_at"),
        account_state=customer.get("account_state"),
    )


def handoff(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Write the handoff packet to the queue, then tell the customer what happens next."""
    deps = runtime.context
    decision = Decision.model_validate(state["decision"])
    cid = state["conversation_id"]
    now = deps.clock()
    channel = state.get("channel", "chat")
    runbook_id = decision.runbook_id or None
    runbook = deps.pack.runbooks.get(runbook_id) if runbook_id else None
    priority, first_due, resolve_due = _priority(deps, {**state, "runbook_id": runbook_id})
    # The id depends on the conversation and turn only: a replayed turn finds the stored packet.
    packet_id = "HO-" + hashlib.sha256(f"{cid}:{state.get('turn', 0)}".encode()).hexdigest()[:10].upper()
    transcript = list(state.get("transcript", []))
    attempts = list(state.get("attempts", []))
    tried = _tried(attempts)
    problem = state.get("problem_text") or redact(state["inbox"]["text"])
    customer = state.get("customer") or {}
    score = float(state.get("sentiment", 0.0))
    handoff_info = {
        "packet_id": packet_id,
        "priority": priority,
        "reasons": decision.reasons,
        "first_response_due": first_due.isoformat(),
        "resolve_due": resolve_due.isoformat(),
    }
    ctx = _reply_context({**state, "runbook_id": runbook_id}, deps, decision, handoff=handoff_info)
    worded = deps.brain.reply(ctx)
    note = problems.handoff_note(state, ctx.titles)
    text = f"{worded.text} {note}" if note else worded.text
    hypothesis = deps.brain.hypothesis(runbook, list(decision.reasons), tried, problem)
    packet = HandoffPacket(
        packet_id=packet_id,
        conversation_id=cid,
        channel=channel,
        created_at=now,
        customer=_customer_state(customer),
        category=runbook.meta.category if runbook else None,
        runbook_id=runbook_id,
        started_runbook_id=state.get("started_runbook_id") or runbook_id,
        slots=dict(state.get("slots") or {}),
        runbook_candidates=[CandidateScore(**c) for c in state.get("candidates", [])],
        sla=Sla(priority=priority, first_response_due=first_due, resolve_due=resolve_due),  # type: ignore[arg-type]
        reason_codes=[*decision.reasons, *([decision.note] if decision.note else [])],
        attempts=[Attempt.model_validate(a) for a in attempts],
        # A model's words are redacted too: it saw placeholders only, but could still make things up.
        hypothesis=redact(hypothesis.text),
        summary=problem[:280],
        transcript=[TranscriptLine.model_validate(line) for line in [*transcript, _line("bot", text, now, channel)]],
        sentiment=Sentiment(score=score, label=sentiment_label(score)),
        summary_en=redact(hypothesis.summary) if hypothesis.summary else hypothesis.summary,
        language=str(state["understanding"].get("language") or "en"),
        usage=PacketUsage.model_validate(_add_usage(state, worded.usage, hypothesis.usage)),
        queued_problems=problems.queued_for_packet(state),
        earlier_episodes=problems.for_packet(state, deps),
    )
    deps.handoffs.put(packet)
    episodes = problems.hand_off_episodes(state, deps, list(decision.reasons), packet_id)
    if state.get("stream"):
        emit_delta(Delta(text))
    return episodes | {
        "stage": _moved(state, "handoff"),
        "runbook_id": runbook_id,
        "handoff": handoff_info,
        "queued_problems": [],
        "outgoing": [*(state.get("outgoing") or []), text],
        "transcript": [_line("bot", text, now, channel)],
        "usage": _add_usage(state, worded.usage, hypothesis.usage),
    }


def _down_component(deps: Deps, text: str) -> str | None:
    """A status-page service the message names that is not operational: it names the incident."""
    try:
        services = deps.toolbox.status_page.services()
    except Exception:  # noqa: BLE001 - an unreachable status page must not stop the incident
        return None
    down = [s for s in services if s.state in ("outage", "degraded")]
    named = [s for s in down if any(w.lower() in text.lower() for w in [s.name, *s.aliases])]
    return f"{named[0].name} {named[0].state}" if named else None


def _incident_ticket(deps: Deps, state: ConversationState, incident: Incident, runbook_id: str | None) -> str:
    """The incident's one ticket in the handoff queue: P1 or P2 from the matrix at organisation impact."""
    pack = deps.pack
    runbook = pack.runbooks.get(runbook_id or "")
    urgency: Urgency = runbook.meta.urgency if runbook else "normal"
    priority = pack.policy.priority("organisation", urgency)
    sla = pack.policy.sla[priority]
    now = deps.clock()
    packet_id = "HO-" + incident.id
    packet = HandoffPacket(
        packet_id=packet_id,
        conversation_id=state["conversation_id"],
        channel=state.get("channel", "chat"),
        created_at=now,
        customer=CustomerState(account_id=None, email=None, account_state=None),
        category=incident.category,
        runbook_id=runbook_id,
        started_runbook_id=runbook_id,
        runbook_candidates=[CandidateScore(**c) for c in state.get("candidates", [])],
        sla=Sla(
            priority=priority,
            first_response_due=now + timedelta(minutes=sla.first_response_minutes),
            resolve_due=now + timedelta(minutes=sla.resolve_minutes),
        ),
        reason_codes=list(Decision.model_validate(state["decision"]).reasons),
        attempts=[],
        hypothesis=f"Many customers, one cause: {incident.title}. Updates reach every attached customer.",
        summary=incident_summary(incident),
        # One ticket for many customers: no one customer's transcript in it (GET /incidents/{id} lists them).
        transcript=[],
        sentiment=Sentiment(score=0.0, label="neutral"),
        summary_en=None,
        language="en",
    )
    deps.handoffs.put(packet)
    return packet_id


def incident_summary(incident: Incident) -> str:
    """The incident ticket's summary line, with the affected count."""
    return f"{incident.id}: {incident.title} ({incident.affected} affected)"


def _incident_reply(incident: Incident, joined: bool) -> str:
    known = incident.updates[-1].text if incident.updates else "We are looking into it."
    lead = "This is a known problem" if joined else "Thank you: we have opened an incident for this"
    return (
        f"{lead}: incident {incident.id}, {incident.title}. {incident.affected} affected so far. "
        f"What we know: {known} You don't need to try anything on your own device; we will tell you here "
        "as soon as it is fixed. If you need a person anyway, just say so."
    )


def incident(state: ConversationState, runtime: Runtime[Deps]) -> Update:
    """Attach the conversation to the open incident of its cause (opening one if none is) and say so."""
    deps = runtime.context
    assert deps.incidents is not None  # the policy decides "incident" only where a store is kept
    decision = Decision.model_validate(state["decision"])
    cid = state["conversation_id"]
    channel = state.get("channel", "chat")
    now = deps.clock()
    runbook = deps.pack.runbooks.get(decision.runbook_id or "")
    category = runbook.meta.category if runbook else None
    problem = state.get("problem_text") or redact(state["inbox"]["text"])
    members: list[tuple[str, str | None]] = [(cid, state.get("episode_id"))]
    minutes = deps.pack.policy.incidents.spike_minutes
    if "incident_spike" in decision.reasons:
        # The conversations that made the spike are part of it too: they hear the updates.
        peers = (
            deps.incidents.peers(runbook.meta.id, minutes, cid)
            if runbook is not None
            else deps.incidents.cluster_peers(content_words(str(state["understanding"].get("text", ""))), minutes, cid)
        )
        members += peers
    # Only a report that may open an incident looks at the status page (joining one needs no name).
    component = None if decision.incident_id else _down_component(deps, problem)
    if "incident_spike" in decision.reasons and runbook is None:
        cause, title = "cluster", f"Many reports: {problem[:80]}"
    elif "incident_spike" in decision.reasons:
        cause, title = f"spike:{decision.runbook_id}", runbook.meta.title if runbook else "Many reports"
    else:
        # The first reporter's own (redacted) words say best what is down.
        cause, title = "wide_impact", problem[:1].upper() + problem[1:100]
    if component:
        cause, title = f"status:{component}", component[:1].upper() + component[1:]
    # The incident the policy matched (or the one the conversation is in), while it is still open.
    known = deps.incidents.join(decision.incident_id, members) if decision.incident_id else None
    joined = known or deps.incidents.open_or_join(
        seed=f"{cid}:{state.get('turn', 0)}",
        title=title,
        category=category,
        runbook_id=runbook.meta.id if runbook else None,
        cause=cause,
        opened_by=cid,
        members=members,
        wide=bool(state["understanding"].get("wide_impact")) or state.get("stage") == "incident",
        related=related_categories(state, deps),
    )
    found = joined.incident
    if joined.opened or not found.packet_id:
        # Also when a crash came between the opening and the ticket: the replayed turn files it (same id).
        deps.incidents.set_packet(found.id, _incident_ticket(deps, state, found, found.runbook_id))
    elif found.packet_id:
        deps.handoffs.set_summary(found.packet_id, incident_summary(found))
    text = _incident_reply(found, joined=not joined.opened)
    if state.get("stream"):
        emit_delta(Delta(text))
    return {
        "stage": _moved(state, "incident_joined"),
        "incident_id": found.id,
        "outgoing": [*(state.get("outgoing") or []), text],
        "transcript": [_line("bot", text, now, channel)],
    }
