"""The conversation's typed state, and the models that flow between nodes."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

Stage = Literal["triage", "identity", "code", "steps", "slot", "confirm", "resolved", "handed_off", "incident"]

Action = Literal[
    "greet",  # a bare greeting: ask what is wrong
    "clarify",  # not sure enough: ask the customer to say more
    "choose",  # two runbooks fit almost equally: ask which one
    "ask_identity",  # ask for the email address on the account
    "send_code",  # send a one-time code to the contact on file        (acts)
    "ask_code",  # ask for the code that was sent
    "check_code",  # check the code the customer typed                  (acts)
    "run_tool",  # run the current step's tool                        (acts)
    "present_step",  # say the current step and ask the check question
    "advance_step",  # the step did not work: move to the next one        (acts)
    "goto_step",  # the answer matched an outcome that names a step     (acts)
    "skip_step",  # the step's condition does not hold: the next one    (acts)
    "ask_slot",  # ask for a value the step needs (a slot)
    "fill_slot",  # the answer gave a valid value for the slot          (acts)
    "reask_confirmation",  # the answer was neither yes nor no
    "close_resolved",  # the customer confirmed it worked
    "acknowledge",  # thanks after the conversation closed
    "handoff",  # a person takes over
    "relay",  # already with a person: pass the message on
    "incident",  # many people, one cause: open or join an incident and say so
]

# Actions that change state or call a tool; the graph decides again after each one.
ACTING: frozenset[str] = frozenset(
    {"send_code", "check_code", "run_tool", "advance_step", "goto_step", "skip_step", "fill_slot"}
)

ReasonCode = Literal[
    # decisions that keep the conversation with the bot
    "greeting",
    "low_confidence",
    "ambiguous_runbooks",
    "runbook_matched",
    "topic_changed",
    "identity_required",
    "identity_provided",
    "code_sent",
    "code_entered",
    "code_mismatch",
    "step_tool",
    "step_presented",
    "step_did_not_work",
    "unclear_answer",
    "customer_confirmed",
    "closed_thanks",
    "relayed_to_l2",
    "two_problems",  # the message carried a second problem: it waits until the first one ends
    "next_problem",  # the first problem was solved: the waiting one begins
    "outcome_matched",  # the answer after a step matched one of its outcomes
    "step_skipped",  # the step's condition (a slot or a tool result) does not hold
    "slot_required",  # the step needs a value the customer has not given yet
    "slot_filled",
    "slot_invalid_answer",  # the answer did not validate: asked again
    # incidents: one cause, many customers (agent/incidents.py)
    "wide_impact",  # the message reports many people affected: no single-user troubleshooting
    "incident_known",  # an open incident matches: the customer joins it
    "incident_spike",  # enough conversations about one runbook in a short time: an incident opens
    # handoff reasons
    "no_runbook_fits",
    "tier2_runbook",
    "customer_requested_human",
    "negative_sentiment",
    "escalation_keyword",
    "steps_exhausted",
    "verification_failed",
    "identity_not_provided",
    "step_failed",
    "tool_failed",  # a tool the pack declares answered an error or garbage: a person takes over at once
    "time_limit",
    "turn_limit",
    "unclear_response",
    "ambiguous_after_clarifying",
    "repeat_contact",
    "outcome_handoff",  # the matched outcome says a person takes over (its own reason follows)
    "slot_invalid",  # no valid value for a slot after the answers allowed
    "runbook_switched",  # the answer fit another runbook, which is the one handed off
    # an LLM brain's proposals, as the policy judged them
    "llm_proposal_accepted",
    "llm_proposal_refused",
    "llm_unavailable",
    "manipulation_suspected",
]


class Usage(BaseModel):
    """Tokens an LLM call used (zero for the offline brain)."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # At the configured prices (settings llm_price_*), in currency units.
    estimated_cost: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            estimated_cost=round(self.estimated_cost + other.estimated_cost, 8),
        )


class Reply(BaseModel):
    """A worded reply, with what it cost and whether a fallback wrote it."""

    model_config = ConfigDict(frozen=True)

    text: str
    usage: Usage = Field(default_factory=lambda: Usage())
    # True when the LLM's wording was refused (ungrounded, empty, failed) and the offline text used.
    fallback: bool = False
    # An LLM brain's one-line English summary of the customer's problem (handoff packets).
    summary: str | None = None


class Scored(BaseModel):
    """A runbook candidate and its routing score."""

    model_config = ConfigDict(frozen=True)

    runbook_id: str
    score: float


class Clause(BaseModel):
    """One part of a message that may carry a problem of its own, routed on its own words."""

    model_config = ConfigDict(frozen=True)

    text: str
    candidates: list[Scored] = Field(default_factory=list)

    @property
    def top(self) -> Scored | None:
        """The best candidate, if any."""
        return self.candidates[0] if self.candidates else None


class Understanding(BaseModel):
    """What the brain read in one customer message. The policy decides what to do with it."""

    model_config = ConfigDict(frozen=True)

    text: str
    candidates: list[Scored] = Field(default_factory=list)
    email: str | None = None
    code: str | None = None
    # A phone number the message held (a vault reference in state), for a code texted to the line.
    phone: str | None = None
    # A date of birth the message held (a vault reference), for identity by facts (verify: knowledge).
    dob: str | None = None
    affirm: bool = False
    deny: bool = False
    wants_human: bool = False
    greeting_only: bool = False
    thanks_only: bool = False
    # -1 furious .. 0 neutral .. 1 delighted
    sentiment: float = 0.0
    urgent: bool = False
    wide_impact: bool = False
    # The message split at a joining phrase ("... and also ..."), each part routed alone; empty
    # when there was no joining phrase. The policy decides whether the parts are two problems.
    clauses: list[Clause] = Field(default_factory=list)
    # The customer says they have written about this before ("third time", "I already reported").
    says_repeat: bool = False
    # After a step with outcomes: the outcome the answer matched (agent/outcomes.py), how, how sure.
    outcome: str | None = None
    outcome_by: str | None = None
    outcome_score: float = 0.0
    # In the slot stage: the value read for the slot asked, or why the answer did not validate.
    slot_value: str | int | bool | None = None
    slot_problem: str | None = None
    # An LLM brain's reading of an answer no outcome matched by meaning or yes/no; the policy judges it.
    proposed_outcome: str | None = None
    outcome_confidence: float = 0.0
    # A phone number's vault reference (the state keeps it masked; a tool gets the number itself).
    slot_ref: str | None = None
    # What an LLM brain proposes; the policy checks every proposal before using it.
    proposed_runbook: str | None = None
    proposal_confidence: float = 0.0
    manipulation: bool = False
    language: str = "en"
    # The LLM brain was unavailable and the offline brain read this message instead.
    degraded: bool = False
    usage: Usage = Field(default_factory=lambda: Usage())

    @property
    def top(self) -> Scored | None:
        """The best candidate, if any."""
        return self.candidates[0] if self.candidates else None

    @property
    def margin(self) -> float:
        """Lead of the best candidate over the second (1.0 when there is only one)."""
        if len(self.candidates) < 2:
            return 1.0
        return self.candidates[0].score - self.candidates[1].score


class Decision(BaseModel):
    """What the policy decided, and why: every decision carries its reason codes."""

    model_config = ConfigDict(frozen=True)

    action: Action
    reasons: list[ReasonCode]
    runbook_id: str | None = None
    confidence: float = 0.0
    # For "choose": the runbooks offered.
    options: list[str] = Field(default_factory=list)
    # The runbooks of problems the message also carried, in the order they will be taken up.
    queued: list[str] = Field(default_factory=list)
    # A repeat contact that continues the runbook: the first step not tried in earlier episodes.
    from_step: int | None = None
    # goto_step: the step an outcome leads to; the outcome matched; handoff: the outcome's own reason.
    to_step: int | None = None
    outcome: str | None = None
    note: str | None = None
    # ask_slot / fill_slot: the slot.
    slot: str | None = None
    # For "incident": the open incident the customer joins (None: one opens).
    incident_id: str | None = None


class ConversationState(TypedDict, total=False):
    """Everything one conversation holds; checkpointed after every node.

    Values are plain JSON-like data (models are dumped) so a checkpoint reads back the same in
    any process.
    """

    conversation_id: str
    channel: str
    started_at: str
    inbox: dict[str, Any]  # this turn's customer message: {"text", "at"}
    turn: int
    turns_before: int  # customer turns before the bot last took the conversation back from L2
    stage: Stage
    runbook_id: str | None
    confidence: float
    candidates: list[dict[str, Any]]
    context_text: str  # earlier messages of an unresolved triage
    problem_text: str  # the customer's words for the current problem, redacted
    step: int
    step_tool_done: bool
    customer: dict[str, Any]  # email, account_id, verified_at, account_state
    counters: dict[str, int]
    understanding: dict[str, Any]
    decision: dict[str, Any]
    consumed: bool  # this turn's message already acted on
    last_tool: dict[str, Any] | None
    outgoing: list[str]  # the bot's replies in this turn
    usage: dict[str, Any]  # LLM tokens (and their estimated cost) the conversation used so far
    stream: bool  # this turn's reply is streamed to the caller (Resolver.send's on_delta)
    sentiment: float
    resolution: str | None  # "confirmed" once the customer said it worked
    handoff: dict[str, Any] | None  # packet id, reasons, SLA of the handoff
    # Problems the customer raised alongside the current one, each {"text", "runbook_id", "candidates"}.
    queued_problems: list[dict[str, Any]]
    # Set when the current problem was solved this turn and a queued one is to begin before the turn ends.
    take_queued: bool
    episode_id: str | None  # the current problem's episode (agent/episodes.py)
    episodes: int  # episodes this conversation has opened, for the next one's id
    repeat_said: bool  # the current problem's first message said the customer had written before
    started_runbook_id: str | None  # the runbook the current problem began with (before any switch)
    slots: dict[str, Any]  # the current problem's slot values (a phone number masked)
    slot_refs: dict[str, str]  # vault references of slot values kept out of the state (phone numbers)
    pending_slot: str | None  # the slot just asked for
    jumped: bool  # the current step was reached by an outcome that names it
    last_result: dict[str, Any]  # the latest successful tool result of the current problem (conditions)
    incident_id: str | None  # the incident the conversation is attached to (agent/incidents.py)
    transcript: Annotated[list[dict[str, Any]], operator.add]
    attempts: Annotated[list[dict[str, Any]], operator.add]
    trace: Annotated[list[dict[str, Any]], operator.add]
