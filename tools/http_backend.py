"""HTTP backends: a REST identity provider / ITSM directory, and an Atlassian-style status page.

Both adapters implement the protocols in ``tools.base`` and raise ``core.errors.ToolError`` for
every failure (HTTP status, network, malformed body), so the Toolbox records a failed step instead
of crashing the conversation.

Directory REST contract (what ``HttpDirectory`` expects of the server)
----------------------------------------------------------------------

All paths are relative to ``base_url``. Every request carries ``Accept: application/json`` and,
when a token is configured, ``Authorization: Bearer <token>``. Path segments (account ids) are
percent-encoded.

``GET /accounts?email=E``
    200 ``{"accounts": [ACCOUNT, ...]}``. An empty list means not found. The adapter keeps only
    accounts whose ``email`` equals ``E`` (case-insensitively, surrounding spaces ignored); more
    than one such account is an error.

``GET /accounts/{account_id}``
    200 ``ACCOUNT``; 404 when there is no such account (the adapter returns None).

``POST /accounts/{account_id}/password-reset``
``POST /accounts/{account_id}/unlock``
``POST /accounts/{account_id}/mfa/reset``
    No request body. 200 or 201 with a JSON object describing what was done, for example
    ``{"link_id": "...", "sent_to": "...", "expires_minutes": 30}`` (password reset),
    ``{"status_before": "locked", "status_after": "active"}`` (unlock) or
    ``{"removed": "authenticator app", "enrolment": "required at next sign-in"}`` (MFA reset).
    The object is passed to the tool unchanged.

``POST /tickets`` with body ``{"account_id": "...", "summary": "..."}``
    201 (or 200) ``{"ticket": "REQ-123456", ...}``; ``ticket`` must be a string.

``ACCOUNT`` is the JSON form of ``tools.base.Account``::

    {"account_id": "acc-1001", "email": "jane.doe@example.com", "name": "Jane Doe",
     "status": "active" | "locked" | "disabled", "mfa_method": "authenticator app",
     "plan": "Business", "next_invoice": "2026-12-01, 240.00 EUR" | null, "failed_sign_ins": 0}

Only ``account_id``, ``email`` and ``name`` are required; extra fields are ignored.

Idempotency. Every POST carries ``Idempotency-Key: <key>``; the same key is sent again on every
retry and whenever the bot replays a step. The server must perform the action at most once per
key and answer a repeated key with the first result. It may mark such an answer with the response
header ``Idempotent-Replayed: true``; the adapter then adds ``"replayed": true`` to the result, as
the embedded SQLite directory does. A key reused for a different action or account should be
refused with 409 or 422.

Errors. 429 and 5xx answers, and network failures (connection errors, timeouts), are retried up to
``retries`` more times after a short pause: the ``Retry-After`` header in seconds when present,
otherwise 0.25 s doubling per attempt, and never more than 2 s. Any other status outside 2xx
(including 404 on a POST) is not retried. Error bodies may be ``{"detail": "..."}`` or
``{"error": "..."}``; that text is included in the ``ToolError`` message together with the method,
path and status code.

Status page
-----------

``HttpStatusPage`` reads the public Atlassian Statuspage v2 document
``GET {base_url}/api/v2/components.json``::

    {"components": [{"name": "Email", "status": "operational", "description": null,
                     "group": false, ...}, ...]}

Component groups (``"group": true``) are skipped; names are lower-cased; ``description`` becomes
the note. Statuses map to ``tools.base.ServiceState``: ``operational`` -> operational,
``degraded_performance`` and ``partial_outage`` -> degraded, ``major_outage`` -> outage,
``under_maintenance`` -> maintenance. Any other status is an error rather than a guess.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from core.errors import ToolError
from tools.base import Account, ServiceState, ServiceStatus

# Seconds a single request may take (connect, read, write and pool wait each).
DEFAULT_TIMEOUT = 5.0
# No pause between attempts is longer than this, whatever Retry-After says.
MAX_BACKOFF = 2.0
# The first pause when the server gives no Retry-After; it doubles per attempt.
BASE_BACKOFF = 0.25
# How much of a server's error text goes into a ToolError message.
_DETAIL_LIMIT = 300

_STATUSPAGE_STATES: dict[str, ServiceState] = {
    "operational": "operational",
    "degraded_performance": "degraded",
    "partial_outage": "degraded",
    "major_outage": "outage",
    "under_maintenance": "maintenance",
}


def _segment(value: str) -> str:
    """Percent-encode one path segment so an id cannot change the path."""
    return quote(value, safe="")


def _check_base_url(base_url: str) -> str:
    """Return ``base_url`` without a trailing slash, refusing anything that is not http(s)."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
    return base_url.rstrip("/")


def _retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds, or None when absent or not a number of seconds."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None  # An HTTP-date: fall back to the default backoff.
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_detail(response: httpx.Response) -> str:
    """The server's ``detail`` or ``error`` text from an error body, or an empty string."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    for field in ("detail", "error"):
        value = body.get(field)
        if value:
            text = value if isinstance(value, str) else str(value)
            return text[:_DETAIL_LIMIT]
    return ""


def _json_object(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    """Decode a success body that must be a JSON object."""
    try:
        body = response.json()
    except ValueError:
        raise ToolError(f"{method} {path} returned HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise ToolError(f"{method} {path} returned HTTP {response.status_code} with JSON that is not an object")
    return cast(dict[str, Any], body)


def _account(data: Any, method: str, path: str) -> Account:
    """Validate one account from the directory's JSON."""
    try:
        return Account.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'account'}: {err['msg']}" for err in exc.errors()
        )
        raise ToolError(f"{method} {path} returned an account that is not valid: {problems}") from None


class _Transport:
    """Sends requests with the common headers, retrying 429, 5xx and network errors."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        client: httpx.Client | None,
        retries: int,
        sleep: Callable[[float], None],
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        self.base_url = _check_base_url(base_url)
        self._token = token
        self._owns_client = client is None
        self.client = client if client is not None else httpx.Client(timeout=DEFAULT_TIMEOUT)
        self.retries = retries
        self._sleep = sleep

    def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owns_client:
            self.client.close()

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def _pause(self, attempt: int, response: httpx.Response | None) -> None:
        wait = _retry_after(response) if response is not None else None
        if wait is None:
            wait = BASE_BACKOFF * (2**attempt)
        self._sleep(min(wait, MAX_BACKOFF))

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        allow: Sequence[int] = (),
    ) -> httpx.Response:
        """Send one request, retrying transient failures; return a 2xx response or one in ``allow``.

        Raises:
            ToolError: The server answered with another status, or kept failing, or could not be
                reached. The message names the method, path and status or network error.
        """
        url = self.base_url + path
        headers = self._headers(idempotency_key)
        attempt = 0
        while True:
            response: httpx.Response | None = None
            try:
                response = self.client.request(method, url, params=params, json=json, headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self.retries:
                    reason = str(exc) or "no detail"
                    raise ToolError(
                        f"{method} {path} failed after {attempt + 1} attempt(s): {type(exc).__name__}: {reason}"
                    ) from exc
            except httpx.HTTPError as exc:  # Not transient (too many redirects, bad body encoding).
                raise ToolError(f"{method} {path} failed: {type(exc).__name__}: {exc}") from exc
            else:
                status = response.status_code
                if 200 <= status < 300 or status in allow:
                    return response
                transient = status == 429 or status >= 500
                if not transient or attempt >= self.retries:
                    detail = _error_detail(response)
                    tries = f" after {attempt + 1} attempts" if transient and attempt else ""
                    raise ToolError(
                        f"{method} {path} failed with HTTP {status}{tries}" + (f": {detail}" if detail else "")
                    )
            self._pause(attempt, response)
            attempt += 1


class HttpDirectory:
    """The Directory protocol over a REST identity provider / ITSM API (see the module docstring).

    Args:
        base_url: Root of the API, e.g. ``https://idp.example.com/api/v1``.
        token: Bearer token sent with every request, or None to send none.
        client: HTTP client to use; by default one with a 5 s timeout is created (and closed by
            ``close``). A client passed in stays owned by the caller.
        retries: How many more times a 429, 5xx or network failure is tried again.
        sleep: Called with the pause in seconds between attempts (injectable for tests).

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL, or ``retries`` is negative.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        client: httpx.Client | None = None,
        retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = _Transport(base_url, token, client, retries, sleep)

    def close(self) -> None:
        """Release the HTTP client if this directory created it."""
        self._http.close()

    def find_by_email(self, email: str) -> Account | None:
        """The account with this contact email, or None.

        Raises:
            ToolError: The request failed, the body is malformed, or several accounts share the email.
        """
        wanted = email.strip()
        path = "/accounts"
        response = self._http.request("GET", path, params={"email": wanted})
        body = _json_object(response, "GET", path)
        found = body.get("accounts")
        if not isinstance(found, list):
            raise ToolError(f"GET {path} returned JSON without an 'accounts' list")
        accounts = [_account(item, "GET", path) for item in found]
        matches = [a for a in accounts if a.email.strip().casefold() == wanted.casefold()]
        if len({a.account_id for a in matches}) > 1:
            raise ToolError(f"GET {path} returned {len(matches)} accounts with the same email; refusing to pick one")
        return matches[0] if matches else None

    def get(self, account_id: str) -> Account | None:
        """The account with this id, or None when the API answers 404.

        Raises:
            ToolError: The request failed, or the body is not an account with this id.
        """
        path = f"/accounts/{_segment(account_id)}"
        response = self._http.request("GET", path, allow=(404,))
        if response.status_code == 404:
            return None
        account = _account(_json_object(response, "GET", path), "GET", path)
        if account.account_id != account_id:
            raise ToolError(f"GET {path} returned account {account.account_id!r} instead of {account_id!r}")
        return account

    def _post(self, path: str, key: str, json: dict[str, Any] | None = None) -> dict[str, Any]:
        if not key:
            raise ToolError(f"POST {path} needs a non-empty idempotency key")
        response = self._http.request("POST", path, json=json, idempotency_key=key)
        result = _json_object(response, "POST", path)
        if response.headers.get("Idempotent-Replayed", "").strip().lower() == "true":
            result.setdefault("replayed", True)
        return result

    def reset_password(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Ask the API to send a reset link to the contact on file; idempotent by key.

        Raises:
            ToolError: The request failed or the body is not a JSON object.
        """
        return self._post(f"/accounts/{_segment(account_id)}/password-reset", key)

    def unlock(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Ask the API to unlock the account; idempotent by key.

        Raises:
            ToolError: The request failed or the body is not a JSON object.
        """
        return self._post(f"/accounts/{_segment(account_id)}/unlock", key)

    def reset_mfa(self, account_id: str, *, key: str) -> dict[str, Any]:
        """Ask the API to remove the account's second factors; idempotent by key.

        Raises:
            ToolError: The request failed or the body is not a JSON object.
        """
        return self._post(f"/accounts/{_segment(account_id)}/mfa/reset", key)

    def create_ticket(self, account_id: str, summary: str, *, key: str) -> dict[str, Any]:
        """File a request for approval (licence, access); idempotent by key.

        Raises:
            ToolError: The request failed or the body has no ticket number.
        """
        path = "/tickets"
        result = self._post(path, key, {"account_id": account_id, "summary": summary})
        if not isinstance(result.get("ticket"), str) or not result["ticket"]:
            raise ToolError(f"POST {path} returned JSON without a 'ticket' number")
        return result


class HttpStatusPage:
    """The StatusPage protocol over an Atlassian Statuspage v2 public API (see the module docstring).

    Args:
        base_url: The status page's root, e.g. ``https://status.example.com``.
        client: HTTP client to use; by default one with a 5 s timeout is created (and closed by
            ``close``). A client passed in stays owned by the caller.
        aliases: Words customers use for a service, keyed by lower-cased component name
            (e.g. ``{"email": ["outlook", "mail"]}``).

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL.
    """

    PATH = "/api/v2/components.json"

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._http = _Transport(base_url, None, client, 0, lambda _: None)
        self._aliases = {name.lower(): list(words) for name, words in (aliases or {}).items()}

    def close(self) -> None:
        """Release the HTTP client if this status page created it."""
        self._http.close()

    def services(self) -> list[ServiceStatus]:
        """Every component that is not a group, with its state.

        Raises:
            ToolError: The request failed, or the document is not in the Statuspage v2 format.
        """
        path = self.PATH
        body = _json_object(self._http.request("GET", path), "GET", path)
        components = body.get("components")
        if not isinstance(components, list):
            raise ToolError(f"GET {path} returned JSON without a 'components' list")
        services: list[ServiceStatus] = []
        for component in components:
            if not isinstance(component, dict):
                raise ToolError(f"GET {path} returned a component that is not an object")
            if component.get("group") is True:
                continue
            name, status = component.get("name"), component.get("status")
            if not isinstance(name, str) or not name.strip():
                raise ToolError(f"GET {path} returned a component without a name")
            if not isinstance(status, str) or status not in _STATUSPAGE_STATES:
                raise ToolError(f"GET {path}: component {name!r} has an unknown status {status!r}")
            description = component.get("description")
            key = name.strip().lower()
            services.append(
                ServiceStatus(
                    name=key,
                    state=_STATUSPAGE_STATES[status],
                    note=description.strip() if isinstance(description, str) else "",
                    aliases=self._aliases.get(key, []),
                )
            )
        return services
