"""Eval cases: loading JSON Lines or YAML files into validated cases and gates, with clear errors.

A case is a scripted conversation. Each turn is a string, or ``{"say": ..., "expect": {...}}``
with expectations for that turn alone; ``expect`` on the case holds what must hold at its end.
A file may also set gates on the summary metrics: in YAML a top-level ``gates:`` mapping, in JSON
Lines a line ``{"gates": {"routing_accuracy": ">= 0.9"}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import CaseFileError

OTP = "{otp}"
_UNSET = "<unset>"
_GATE = re.compile(r"^\s*(?P<metric>[a-z_0-9]+)?\s*(?P<op><=|>=|<|>|==)\s*(?P<value>-?[0-9.]+)\s*$")


class ToolCall(BaseModel):
    """A tool call a turn must make; ``args`` must be a subset of the call's arguments."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class TurnExpect(BaseModel):
    """What must hold right after one turn."""

    model_config = ConfigDict(extra="forbid")

    tools_called: list[str | ToolCall] = Field(default_factory=list)
    tools_not_called: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    reply_contains: list[str] = Field(default_factory=list)
    reply_not_contains: list[str] = Field(default_factory=list)
    stage: str | None = None
    handoff: bool | None = None
    # A runbook that branches: the outcome this answer must match, and slot values that must hold after it.
    outcome: str | None = None
    slots: dict[str, Any] = Field(default_factory=dict)


class Turn(BaseModel):
    """One customer message, with optional expectations for the bot's answer to it."""

    model_config = ConfigDict(extra="forbid")

    say: str
    expect: TurnExpect | None = None


class ProblemExpect(BaseModel):
    """One problem of a conversation that carries several, in the order the bot takes them up."""

    model_config = ConfigDict(extra="forbid")

    runbook: str | None
    handoff: bool


class Expect(BaseModel):
    """What must hold at the end of a case."""

    model_config = ConfigDict(extra="forbid")

    handoff: bool
    # A runbook id, None for "no runbook fits", or left out when the case does not test routing.
    runbook: str | None = _UNSET
    reason: str | None = None
    tools_called: list[str | ToolCall] = Field(default_factory=list)
    tools_not_called: list[str] = Field(default_factory=list)
    reply_contains: list[str] = Field(default_factory=list)
    reply_not_contains: list[str] = Field(default_factory=list)
    # Dotted paths into the handoff packet and the value each must have ("*": present, not empty).
    packet: dict[str, Any] = Field(default_factory=dict)
    # Each problem (episode) of the conversation, scored on its own: its runbook, and whether it went to a person.
    problems: list[ProblemExpect] = Field(default_factory=list)
    # True: the case must open or join an incident (many people, one cause); False: it must not.
    incident: bool | None = None

    @property
    def checks_runbook(self) -> bool:
        """Whether the case says which runbook must be chosen (None included)."""
        return self.runbook != _UNSET


class Case(BaseModel):
    """One scripted conversation and its expectations."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    turns: list[str | Turn] = Field(min_length=1)
    expect: Expect
    tags: list[str] = Field(default_factory=list)

    @property
    def steps(self) -> list[Turn]:
        """The turns, each as a Turn."""
        return [Turn(say=t) if isinstance(t, str) else t for t in self.turns]

    @property
    def texts(self) -> list[str]:
        """What the customer says, turn by turn."""
        return [t.say for t in self.steps]


@dataclass(frozen=True)
class Gate:
    """A bound on one summary metric, e.g. ``wrong_resolution_rate <= 0.02``."""

    metric: str
    op: str
    value: float

    def holds(self, actual: float | None) -> bool:
        """Whether the metric's value meets the bound (a missing value never does)."""
        if actual is None:
            return False
        return {
            "<=": actual <= self.value,
            ">=": actual >= self.value,
            "<": actual < self.value,
            ">": actual > self.value,
            "==": actual == self.value,
        }[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_gate(text: str, metric: str | None = None) -> Gate:
    """Parse ``metric>=0.9`` (or ``>= 0.9`` with the metric given apart)."""
    match = _GATE.match(text)
    name = (match.group("metric") if match else None) or metric
    if not match or not name:
        raise CaseFileError(f"gate {text!r} is not of the form METRIC>=NUMBER (or <=, <, >, ==)")
    return Gate(name, match.group("op"), float(match.group("value")))


@dataclass(frozen=True)
class CaseFile:
    """The cases of a file and the gates it sets."""

    cases: list[Case]
    gates: list[Gate]


def _raw(path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    gates: dict[str, Any] = {}
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CaseFileError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(data, dict):
            gates = data.get("gates") or {}
            data = data.get("cases")
        if not isinstance(data, list):
            raise CaseFileError(f"{path}: expected a list of cases (or a mapping with `cases:`)")
        return [(f"case {i + 1}", item) for i, item in enumerate(data)], gates
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CaseFileError(f"{path}: line {number}: not valid JSON ({exc.msg})") from exc
        if isinstance(item, dict) and set(item) == {"gates"}:
            gates.update(item["gates"])
            continue
        rows.append((f"line {number}", item))
    return rows, gates


def load_case_file(path: Path) -> CaseFile:
    """Read a case file (.jsonl or .yaml); raise CaseFileError naming each bad case."""
    if not path.is_file():
        raise CaseFileError(f"{path}: no such case file")
    raw, raw_gates = _raw(path)
    cases: list[Case] = []
    problems: list[str] = []
    seen: set[str] = set()
    for where, item in raw:
        try:
            case = Case.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                problems.append(f"{where}: {field}: {err['msg']}")
            continue
        if case.id in seen:
            problems.append(f"{where}: id: {case.id!r} is used twice")
        seen.add(case.id)
        cases.append(case)
    gates = []
    for metric, bound in (raw_gates or {}).items():
        try:
            gates.append(parse_gate(str(bound), metric))
        except CaseFileError as exc:
            problems.append(f"gates: {metric}: {exc}")
    if problems:
        raise CaseFileError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not cases:
        raise CaseFileError(f"{path}: holds no cases")
    return CaseFile(cases=cases, gates=gates)


def load_cases(path: Path) -> list[Case]:
    """The cases of a file (see load_case_file)."""
    return load_case_file(path).cases
