"""Eval cases: loading JSON Lines or YAML files into validated cases, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import CaseFileError

OTP = "{otp}"
_UNSET = "<unset>"


class Expect(BaseModel):
    """What must hold at the end of a case."""

    model_config = ConfigDict(extra="forbid")

    handoff: bool
    # A runbook id, None for "no runbook fits", or left out when the case does not test routing.
    runbook: str | None = _UNSET
    reason: str | None = None
    tools_called: list[str] = Field(default_factory=list)
    tools_not_called: list[str] = Field(default_factory=list)
    reply_contains: list[str] = Field(default_factory=list)

    @property
    def checks_runbook(self) -> bool:
        """Whether the case says which runbook must be chosen (None included)."""
        return self.runbook != _UNSET


class Case(BaseModel):
    """One scripted conversation and its expectations."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    turns: list[str] = Field(min_length=1)
    expect: Expect
    tags: list[str] = Field(default_factory=list)


def _raw_cases(path: Path) -> list[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CaseFileError(f"{path}: not valid YAML: {exc}") from exc
        if isinstance(data, dict):
            data = data.get("cases")
        if not isinstance(data, list):
            raise CaseFileError(f"{path}: expected a list of cases (or a mapping with `cases:`)")
        return [(f"case {i + 1}", item) for i, item in enumerate(data)]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rows.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise CaseFileError(f"{path}: line {number}: not valid JSON ({exc.msg})") from exc
    return rows


def load_cases(path: Path) -> list[Case]:
    """Read a case file (.jsonl, .json lines, .yaml); raise CaseFileError naming each bad case."""
    if not path.is_file():
        raise CaseFileError(f"{path}: no such case file")
    cases: list[Case] = []
    problems: list[str] = []
    seen: set[str] = set()
    for where, raw in _raw_cases(path):
        try:
            case = Case.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"])
                problems.append(f"{where}: {field}: {err['msg']}")
            continue
        if case.id in seen:
            problems.append(f"{where}: id: {case.id!r} is used twice")
        seen.add(case.id)
        cases.append(case)
    if problems:
        raise CaseFileError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not cases:
        raise CaseFileError(f"{path}: holds no cases")
    return cases
