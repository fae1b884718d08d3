"""Tools a pack declares in its ``tools.yaml``: HTTP calls to the deployment's own REST API.

docs/runbook-format.md describes the file. The pack says what each tool is (method, URL template,
arguments as JSON Schema, whether it needs a verified customer, whether it changes something, which
result fields a reply may quote); where the API lives and its secrets come from settings, through
``${TIERONE_...}`` references, never from the pack itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import jsonschema_rs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import PackProblem
from core.settings import own_setting

TOOLS_FILE = "tools.yaml"
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# A reference to a setting: ${TIERONE_SOMETHING}. Anything else in braces is not a reference.
_REF = re.compile(r"\$\{([^}]*)\}")
_SETTING = re.compile(r"^TIERONE_[A-Z0-9_]+$")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# Headers whose value is a credential: they must come from settings, never be written in the pack.
_SECRET_HEADER = re.compile(r"authorization|token|secret|key|password|cookie", re.IGNORECASE)


class ToolSpec(BaseModel):
    """One declared tool."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = Field(min_length=10)
    method: Method
    # Path below the API's base URL; {name} placeholders are filled from the arguments.
    url: str = Field(min_length=1)
    # JSON Schema of the arguments (an object); defaults fill what the conversation does not give.
    arguments: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    needs_verified: bool = False
    # A tool that changes something runs once per idempotency key, through the ledger and the limits.
    changes: bool = False
    # Fields of the JSON result a reply may quote to the customer ("data_left_gb"); the rest is for L2.
    quote: list[str] = Field(default_factory=list)

    def placeholders(self) -> list[str]:
        """The argument names the URL template takes."""
        return _PLACEHOLDER.findall(self.url)


class DeclaredTools(BaseModel):
    """A pack's tools.yaml: where the API lives (by reference to settings) and its tools."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # "${TIERONE_MOBILE_API_URL}": the address is the deployment's, set in its environment.
    base_url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    tools: list[ToolSpec] = Field(min_length=1)

    def by_name(self) -> dict[str, ToolSpec]:
        """The tools by name."""
        return {tool.name: tool for tool in self.tools}

    def references(self) -> set[str]:
        """Every setting (TIERONE_ variable) the file refers to."""
        texts = [self.base_url, *self.headers.values()]
        return {ref for text in texts for ref in _REF.findall(text)}


def fill_references(text: str, values: dict[str, str]) -> str:
    """Put the settings' values in place of ``${TIERONE_...}`` references; KeyError names a missing one."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise KeyError(name)
        return values[name]

    return _REF.sub(one, text)


def _field_of(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """The field's path, naming a tool by its name rather than its position where it has one."""
    parts = [str(part) for part in loc]
    tools = raw.get("tools")
    if len(loc) > 1 and loc[0] == "tools" and isinstance(loc[1], int) and isinstance(tools, list):
        entry = tools[loc[1]] if loc[1] < len(tools) else None
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"]:
            parts[1] = entry["name"]
    return ".".join(parts)


def _check_reference(text: str, where: str) -> list[PackProblem]:
    problems = []
    for ref in _REF.findall(text):
        if not _SETTING.match(ref):
            problems.append(
                PackProblem(TOOLS_FILE, where, f"${{{ref}}} is not a setting: references name TIERONE_ variables")
            )
        elif own_setting(ref):
            problems.append(
                PackProblem(
                    TOOLS_FILE,
                    where,
                    f"${{{ref}}} is one of Tierone's own settings, which a pack's tools never get; name a variable"
                    " of the pack's own (e.g. ${TIERONE_MOBILE_API_TOKEN})",
                )
            )
    return problems


def _check_tool(i: int, tool: ToolSpec, builtin: set[str]) -> list[PackProblem]:
    at = f"tools.{tool.name}"
    problems: list[PackProblem] = []
    if not _NAME.match(tool.name):
        problems.append(PackProblem(TOOLS_FILE, f"{at}.name", f"{tool.name!r} is not snake_case (a-z, 0-9, _)"))
    if tool.name in builtin:
        problems.append(PackProblem(TOOLS_FILE, f"{at}.name", f"{tool.name!r} is a built-in tool; choose another"))
    if "://" in tool.url or not tool.url.startswith("/"):
        problems.append(
            PackProblem(TOOLS_FILE, f"{at}.url", "must be a path starting with / (the address is base_url's)")
        )
    try:
        jsonschema_rs.meta.validate(tool.arguments)
    except jsonschema_rs.ValidationError as exc:
        path = ".".join(str(p) for p in exc.instance_path)
        where = f"{at}.arguments" + (f".{path}" if path else "")
        return [*problems, PackProblem(TOOLS_FILE, where, f"is not a valid JSON Schema: {exc.message}")]
    except jsonschema_rs.ReferencingError as exc:
        return [*problems, PackProblem(TOOLS_FILE, f"{at}.arguments", f"is not a valid JSON Schema: {exc}")]
    if tool.arguments.get("type") != "object":
        problems.append(PackProblem(TOOLS_FILE, f"{at}.arguments.type", "must be `object` (arguments by name)"))
    properties = tool.arguments.get("properties") or {}
    required = set(tool.arguments.get("required") or [])
    for name in tool.placeholders():
        if name not in properties:
            problems.append(PackProblem(TOOLS_FILE, f"{at}.url", f"{{{name}}} is not one of the arguments"))
        elif name not in required and "default" not in properties[name]:
            problems.append(
                PackProblem(TOOLS_FILE, f"{at}.url", f"{{{name}}} must be a required argument or have a default")
            )
    for j, field in enumerate(tool.quote):
        if not field.strip():
            problems.append(PackProblem(TOOLS_FILE, f"{at}.quote.{j}", "is empty"))
    return problems


def lint_tools(root: Path, builtin: set[str]) -> tuple[DeclaredTools | None, list[PackProblem]]:
    """Read and check a pack's tools.yaml; (None, []) when the pack has none."""
    path = root / TOOLS_FILE
    if not path.exists():
        return None, []
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return None, [PackProblem(TOOLS_FILE, "file", f"cannot be read: {exc}")]
    if not isinstance(raw, dict):
        return None, [PackProblem(TOOLS_FILE, "file", "must be a YAML mapping with `base_url` and `tools`")]
    try:
        declared = DeclaredTools.model_validate(raw)
    except ValidationError as exc:
        return None, [PackProblem(TOOLS_FILE, _field_of(err["loc"], raw), err["msg"]) for err in exc.errors()]
    problems: list[PackProblem] = []
    if not re.fullmatch(r"\$\{[^}]*\}(/[^\s]*)?", declared.base_url):
        problems.append(
            PackProblem(
                TOOLS_FILE,
                "base_url",
                "must be a reference to a setting, e.g. ${TIERONE_MOBILE_API_URL}: the address is the deployment's",
            )
        )
    problems += _check_reference(declared.base_url, "base_url")
    for header, value in declared.headers.items():
        problems += _check_reference(value, f"headers.{header}")
        if _SECRET_HEADER.search(header) and not _REF.search(value):
            problems.append(
                PackProblem(
                    TOOLS_FILE,
                    f"headers.{header}",
                    "holds a credential written in the pack; refer to a setting instead, e.g. ${TIERONE_API_TOKEN}",
                )
            )
    seen: set[str] = set()
    for i, tool in enumerate(declared.tools):
        if tool.name in seen:
            problems.append(
                PackProblem(TOOLS_FILE, f"tools.{i}.name", f"{tool.name!r} is declared twice (tool {i + 1})")
            )
        seen.add(tool.name)
        problems += _check_tool(i, tool, builtin)
    return (None if problems else declared), problems


class SmsCode(BaseModel):
    """policy.yaml ``verification.otp_sms``: a one-time code texted to the number on file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A declared tool that finds the customer's record by phone number (its first argument)...
    lookup: str
    # ...and one that texts a message; it takes `phone` and `code` arguments.
    send: str


class Knowledge(BaseModel):
    """policy.yaml ``verification.knowledge``: the customer names N facts the record must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A declared tool that finds the record by the first field (404: no such record).
    lookup: str
    # The facts asked for, the first being the lookup key: phone number and date of birth, say.
    fields: list[str] = Field(min_length=2)
    # Wrong answers allowed in one conversation; past them every answer is refused the same way.
    max_attempts: int = Field(default=3, gt=0, le=10)


def knowledge_field(field: str) -> str | None:
    """What a conversation asks for to fill this field: ``phone``, ``dob``, or None (not askable in chat yet).

    A chat holds phone numbers and dates of birth in the vault (core/redact.py); other facts (a
    postcode, a customer id) would sit in clear in the transcript, so they cannot be asked for yet.
    """
    name = field.casefold()
    if "phone" in name or "msisdn" in name:
        return "phone"
    if "birth" in name or "dob" in name:
        return "dob"
    return None


class Verification(BaseModel):
    """How a pack's customers can prove who they are, besides an email code (``otp_email``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    otp_sms: SmsCode | None = None
    knowledge: Knowledge | None = None
    # The field of a lookup's answer that names the account (tools then act on it).
    account_field: str = "account_id"


def check_verification(verification: Verification, declared: DeclaredTools | None) -> list[PackProblem]:
    """Problems of policy.yaml's verification section against the pack's declared tools."""
    tools = declared.by_name() if declared else {}
    problems: list[PackProblem] = []

    def needs(tool: str, where: str, arguments: list[str]) -> None:
        spec = tools.get(tool)
        if spec is None:
            known = ", ".join(sorted(tools)) or "none: add a tools.yaml"
            problems.append(
                PackProblem("policy.yaml", where, f"{tool!r} is not a tool of tools.yaml (declared: {known})")
            )
            return
        properties = spec.arguments.get("properties") or {}
        for argument in arguments:
            if argument not in properties:
                problems.append(PackProblem("policy.yaml", where, f"{tool!r} takes no {argument!r} argument"))

    if verification.otp_sms is not None:
        needs(verification.otp_sms.lookup, "verification.otp_sms.lookup", ["phone"])
        needs(verification.otp_sms.send, "verification.otp_sms.send", ["phone", "code"])
        send = tools.get(verification.otp_sms.send)
        if send is not None and not send.changes:
            problems.append(
                PackProblem(
                    "policy.yaml",
                    "verification.otp_sms.send",
                    f"{send.name!r} sends a text: declare it `changes: true`, so one is sent once per key",
                )
            )
    if verification.knowledge is not None:
        knowledge = verification.knowledge
        needs(knowledge.lookup, "verification.knowledge.lookup", knowledge.fields[:1])
    return problems
