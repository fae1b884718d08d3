"""Runs the tools a pack declares in its tools.yaml, over HTTP against the deployment's own API.

The Toolbox (tools/actions.py) decides whether a call may run and records it in the ledger; this
module only makes the call: arguments checked against the tool's JSON Schema, the URL filled, the
settings' values put in place of ``${TIERONE_...}`` references, and the answer read. Whatever is not
a JSON object under a 2xx status is a ToolError carrying the status; the raw answer never reaches a
reply. Results are redacted before they are stored.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs

from core.errors import ToolError
from core.pack_tools import DeclaredTools, ToolSpec, fill_references
from core.redact import redact
from tools.base import ToolResult


def redact_value(value: Any) -> Any:
    """The value with every string in it redacted (addresses, phone numbers, card numbers...)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def arguments_for(spec: ToolSpec, known: dict[str, Any]) -> dict[str, Any]:
    """The tool's arguments: what the conversation knows of its properties, and the schema's defaults."""
    properties: dict[str, Any] = spec.arguments.get("properties") or {}
    args = {name: known[name] for name in properties if known.get(name) is not None}
    for name, schema in properties.items():
        if name not in args and isinstance(schema, dict) and "default" in schema:
            args[name] = schema["default"]
    return args


def _quoted(spec: ToolSpec, data: dict[str, Any]) -> str:
    parts = [f"{field.replace('_', ' ')}: {data[field]}" for field in spec.quote if data.get(field) not in (None, "")]
    return f"({'; '.join(parts)}.)" if parts else ""


class DeclaredRunner:
    """Calls a pack's declared tools; ``values`` holds the settings its references name."""

    def __init__(self, declared: DeclaredTools, values: dict[str, str], client: httpx.Client | None = None) -> None:
        self.declared = declared
        self.tools = declared.by_name()
        self._values = values
        self._client = client or httpx.Client(timeout=declared.timeout_s)

    def _filled(self, text: str, what: str) -> str:
        try:
            return fill_references(text, self._values)
        except KeyError as exc:
            raise ToolError(f"{what} refers to {exc.args[0]}, which is not set; set it in the environment") from None

    def call(self, name: str, args: dict[str, Any], *, key: str) -> ToolResult:
        """Call tool ``name`` with ``args``; ToolError (with the HTTP status when there was one) on failure."""
        spec = self.tools[name]
        data = redact_value(self.call_raw(name, args, key=key))
        return ToolResult(tool=name, ok=True, data=data, idempotency_key=key, message=_quoted(spec, data))

    def call_raw(self, name: str, args: dict[str, Any], *, key: str) -> dict[str, Any]:
        """The API's JSON answer as it came, unredacted: for a check that compares it and stores none of it."""
        spec = self.tools[name]
        errors = [
            f"{'.'.join(str(p) for p in err.instance_path) or 'arguments'}: {err.message}"
            for err in jsonschema_rs.validator_for(spec.arguments).iter_errors(args)
        ]
        if errors:
            raise ToolError(f"{name}: the arguments do not fit its schema ({'; '.join(errors)})")
        in_url = set(spec.placeholders())
        path = spec.url
        for placeholder in in_url:
            path = path.replace("{" + placeholder + "}", quote(str(args[placeholder]), safe=""))
        url = self._filled(self.declared.base_url, "base_url").rstrip("/") + path
        headers = {h: self._filled(v, f"headers.{h}") for h, v in self.declared.headers.items()}
        if spec.changes:
            # The API can drop a repeat of the same change; the ledger already never sends one twice.
            headers["Idempotency-Key"] = key
        rest = {k: v for k, v in args.items() if k not in in_url}
        body = {"params": rest} if spec.method in ("GET", "DELETE") else {"json": rest}
        try:
            response = self._client.request(spec.method, url, headers=headers, **body)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise ToolError(f"{name}: the API could not be reached ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise ToolError(f"{name}: the API answered HTTP {response.status_code}", status=response.status_code)
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ToolError(f"{name}: the API's answer is not a JSON object", status=response.status_code)
        return data
