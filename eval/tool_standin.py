"""The stand-in API an eval plays a pack's declared tools against: no eval reaches a real API.

A pack may script the answers in ``eval/backend.yaml`` beside its cases:

```yaml
answers:
  top_up_data:
    - when: {account_id: acc-1003}   # a customer whose top-up fails
      status: 503
    - json: {gb: 1, data_left_gb: 1.0}
```

Each tool's answers are tried in order; the first whose ``when`` holds of the call's arguments (the
URL's placeholders, the query and the JSON body) is given. A tool with no answer that fits gets
``200 {}``. The calls go through httpx's MockTransport, in the real wire format.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import CaseFileError
from core.pack_tools import DeclaredTools

BACKEND_FILE = Path("eval") / "backend.yaml"
STANDIN_URL = "http://standin.tierone.invalid"


class Answer(BaseModel):
    """One scripted answer of the stand-in."""

    model_config = ConfigDict(extra="forbid")

    when: dict[str, Any] = Field(default_factory=dict)
    status: int = Field(default=200, ge=100, le=599)
    json_body: Any = Field(default_factory=dict, alias="json")
    # Sent as is instead of JSON: to script an API that answers garbage.
    text: str | None = None


class Backend(BaseModel):
    """eval/backend.yaml."""

    model_config = ConfigDict(extra="forbid")

    answers: dict[str, list[Answer]] = Field(default_factory=dict)


def load_backend(pack_root: Path, declared: DeclaredTools) -> Backend:
    """The pack's scripted answers (none when it has no eval/backend.yaml); CaseFileError names a bad one."""
    path = pack_root / BACKEND_FILE
    if not path.exists():
        return Backend()
    try:
        backend = Backend.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise CaseFileError(f"{path}: {exc}") from None
    unknown = sorted(set(backend.answers) - set(declared.by_name()))
    if unknown:
        raise CaseFileError(f"{path}: answers: {', '.join(unknown)} is not a tool of tools.yaml")
    return backend


def standin_client(
    declared: DeclaredTools, backend: Backend, *, sms_tool: str | None = None, texts: dict[str, str] | None = None
) -> httpx.Client:
    """An httpx client whose every request the stand-in answers.

    Codes sent through ``sms_tool`` are noted in ``texts`` by conversation id (the first part of the
    Idempotency-Key the Toolbox sends), so an eval's ``{otp}`` can type a texted code too.
    """
    routes = [
        (tool, re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(tool.url)) + "$"))
        for tool in declared.tools
    ]

    def handle(request: httpx.Request) -> httpx.Response:
        for tool, pattern in routes:
            match = pattern.match(request.url.path)
            if tool.method != request.method or match is None:
                continue
            args: dict[str, Any] = {**match.groupdict(), **dict(request.url.params)}
            if request.content:
                args |= json.loads(request.content)
            key = request.headers.get("Idempotency-Key", "")
            if texts is not None and tool.name == sms_tool and key and "code" in args:
                texts[key.split(":", 1)[0]] = str(args["code"])
            for answer in backend.answers.get(tool.name, []):
                if all(str(args.get(k)) == str(v) for k, v in answer.when.items()):
                    if answer.text is not None:
                        return httpx.Response(answer.status, text=answer.text)
                    return httpx.Response(answer.status, json=answer.json_body)
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"error": "the stand-in knows no such tool"})

    return httpx.Client(transport=httpx.MockTransport(handle))


def standin_values(declared: DeclaredTools) -> dict[str, str]:
    """Values for the settings tools.yaml refers to: the stand-in's address, dummy secrets."""
    base = declared.base_url
    return {ref: (STANDIN_URL if f"${{{ref}}}" in base else "standin") for ref in declared.references()}
