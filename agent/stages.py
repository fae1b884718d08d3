"""The stage machine: every move of a conversation from one stage to another, declared once.

A node never writes a stage. It names what happened (an event: "code_sent", "handoff", ...) and
``advance`` finds where that leads from the conversation's current stage. An event the table does not
declare for that stage is a bug in the caller, and raises. docs/stages.md draws the table
(``python -m agent.drawing > docs/stages.md`` writes it again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agent.state import Stage

Event = Literal[
    "runbook_chosen",  # decide: the policy picked a runbook for a new problem
    "topic_changed",  # decide: the message fits another runbook than the current one
    "identity_asked",  # reply: asked for the email address on the account
    "code_sent",  # act: a one-time code went to the contact on file
    "code_asked",  # reply: asked for the code
    "identity_verified",  # act: the code matched (or, verify: knowledge, the facts named did)
    "step_presented",  # reply: the current step shown, with its check question
    "step_did_not_work",  # act: the customer said no, the next step comes
    "outcome_matched",  # act: the answer matched an outcome that leads to a named step
    "step_skipped",  # act: the step's condition does not hold, the next step comes
    "slot_asked",  # reply: asked for a value the step needs
    "slot_filled",  # act: the answer gave a valid value
    "customer_confirmed",  # reply: the customer said it worked
    "handoff",  # handoff: the packet is queued for L2
    "returned_by_l2",  # Resolver.reopen: the technician gave the conversation back
    "resolved_by_l2",  # Resolver.reopen: the technician resolved it
    "incident_joined",  # incident: the customer was attached to an open (or newly opened) incident
    "incident_resolved",  # Resolver.leave_incident: the incident was resolved
    "incident_detached",  # Resolver.leave_incident: a technician detached the conversation from it
]


@dataclass(frozen=True)
class Transition:
    """One declared move: from ``source`` on ``event`` to ``target``, and why it happens."""

    source: Stage
    event: Event
    target: Stage
    doc: str


# A new conversation's first message is routed like any new problem.
INITIAL: Stage = "triage"

# The stages in which the next message is read as a new problem, not as an answer within a runbook.
BETWEEN_PROBLEMS: frozenset[Stage] = frozenset({"triage", "resolved"})

TRANSITIONS: tuple[Transition, ...] = (
    Transition("triage", "runbook_chosen", "steps", "a runbook fits the problem: its first step begins"),
    Transition("triage", "handoff", "handed_off", "no runbook fits, a tier-2 one does, or a boundary was crossed"),
    Transition("identity", "identity_asked", "identity", "the answer held no address: asked again"),
    Transition("identity", "code_sent", "code", "the customer gave an address: a code went to the contact on file"),
    Transition("identity", "topic_changed", "steps", "the message clearly fits another runbook: that one begins"),
    Transition(
        "identity",
        "step_presented",
        "confirm",
        "identity no longer needed: the pack or the verification window changed since the question",
    ),
    Transition("identity", "handoff", "handed_off", "no address after the asks allowed, or a boundary was crossed"),
    Transition("code", "code_asked", "code", "asked for the code just sent, or again after a wrong one"),
    Transition("code", "code_sent", "code", "another address while a code was awaited: a code went there instead"),
    Transition("code", "identity_verified", "steps", "the code matched: the customer is verified, the steps begin"),
    Transition(
        "identity", "identity_verified", "steps", "knowledge: the facts given matched the record, the steps begin"
    ),
    Transition(
        "steps", "identity_verified", "steps", "verify: knowledge: the facts came with the problem and matched at once"
    ),
    Transition(
        "confirm", "identity_verified", "steps", "verify: knowledge: the verification expired, the facts matched again"
    ),
    Transition("code", "topic_changed", "steps", "the message clearly fits another runbook: that one begins"),
    Transition(
        "code", "step_presented", "confirm", "identity no longer needed: the runbook's pack changed since the code"
    ),
    Transition("code", "handoff", "handed_off", "too many wrong codes, or a boundary was crossed"),
    Transition("steps", "step_presented", "confirm", "the step (and its tool's outcome) shown with its check question"),
    Transition(
        "steps",
        "identity_asked",
        "identity",
        "the runbook needs a verified customer: asked for the address on the account",
    ),
    Transition("steps", "code_sent", "code", "the address came with the problem: a code went out at once"),
    Transition("steps", "topic_changed", "steps", "the message clearly fits another runbook: that one begins"),
    Transition("steps", "handoff", "handed_off", "the step's tool kept failing, or a boundary was crossed"),
    Transition("steps", "step_skipped", "steps", "the step's condition does not hold: the next step begins"),
    Transition("steps", "slot_asked", "slot", "the step needs a value the customer has not given: asked for it"),
    Transition("slot", "slot_asked", "slot", "the answer did not validate: asked again, saying what was wrong"),
    Transition("slot", "slot_filled", "steps", "the answer gave a valid value: the step goes on"),
    Transition("slot", "topic_changed", "steps", "the message clearly fits another runbook: that one begins"),
    Transition("slot", "handoff", "handed_off", "no valid value after the answers allowed, or a boundary was crossed"),
    Transition("confirm", "customer_confirmed", "resolved", "the customer said the step worked"),
    Transition("confirm", "outcome_matched", "steps", "the answer matched an outcome that names a step: it begins"),
    Transition("confirm", "step_did_not_work", "steps", "the customer said it did not work: the next step begins"),
    Transition("confirm", "topic_changed", "steps", "the message clearly fits another runbook: that one begins"),
    Transition("confirm", "identity_asked", "identity", "the verification expired before the answer: asked again"),
    Transition("confirm", "code_sent", "code", "the verification expired and the answer held the address"),
    Transition("confirm", "handoff", "handed_off", "no step left, no clear answer, or a boundary was crossed"),
    Transition("resolved", "runbook_chosen", "steps", "a new problem after a resolved one: its runbook begins"),
    Transition("resolved", "handoff", "handed_off", "the new problem fits no runbook, or a boundary was crossed"),
    Transition("triage", "incident_joined", "incident", "many people affected, or a known incident: it joins that"),
    Transition("resolved", "incident_joined", "incident", "a new problem that is part of an incident: it joins that"),
    Transition("identity", "incident_joined", "incident", "the customer reported wide impact: an incident, not steps"),
    Transition("code", "incident_joined", "incident", "the customer reported wide impact: an incident, not steps"),
    Transition("steps", "incident_joined", "incident", "the customer reported wide impact: an incident, not steps"),
    Transition("confirm", "incident_joined", "incident", "the customer reported wide impact: an incident, not steps"),
    Transition("slot", "incident_joined", "incident", "the customer reported wide impact: an incident, not steps"),
    Transition("incident", "incident_joined", "incident", "another message while attached: what is known, again"),
    Transition("incident", "handoff", "handed_off", "the customer asked for a person, or a boundary was crossed"),
    Transition("incident", "incident_resolved", "resolved", "the incident was fixed: a new message is a new problem"),
    Transition("incident", "incident_detached", "triage", "not part of the incident: the next message is routed anew"),
    Transition(
        "handed_off", "returned_by_l2", "triage", "the technician gave it back: the next message is routed afresh"
    ),
    Transition(
        "handed_off", "resolved_by_l2", "resolved", "the technician resolved it: a later message starts a new problem"
    ),
)


def advance(stage: Stage, event: Event) -> Stage:
    """The stage that ``event`` leads to from ``stage``; ValueError when the table does not declare it."""
    for move in TRANSITIONS:
        if move.source == stage and move.event == event:
            return move.target
    declared = ", ".join(move.event for move in TRANSITIONS if move.source == stage) or "none"
    raise ValueError(
        f"no transition from stage {stage!r} on event {event!r} (declared from {stage!r}: {declared}); "
        "declare the move in agent/stages.py TRANSITIONS if it is meant"
    )


def mermaid() -> str:
    """The table as a Mermaid state diagram, each arrow labelled with its event."""
    lines = ["stateDiagram-v2", f"    [*] --> {INITIAL}"]
    lines += [f"    {move.source} --> {move.target} : {move.event}" for move in TRANSITIONS]
    return "\n".join(lines) + "\n"
