"""The tools a runbook may run, and the Toolbox that runs them with authorization and a ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from agent.errors import NotAuthorized, ToolError
from tools.base import Directory, Outbox, ServiceStatus, StatusPage, ToolResult, VerifiedAccount, make_verified
from tools.identity import check_code, send_code
from tools.ledger import Ledger

# A verification is good for this long; after that the customer proves it again.
VERIFICATION_TTL = timedelta(minutes=30)


def _mask(email: str) -> str:
    name, _, domain = email.partition("@")
    return f"{name[:1]}***@{domain}" if domain else "***"


def reset_password(account: VerifiedAccount, *, key: str, directory: Directory) -> ToolResult:
    """Send a single-use password-reset link to the verified account's email on file."""
    data = directory.reset_password(account.account_id, key=key)
    return ToolResult(
        tool="reset_password",
        ok=True,
        data=data,
        idempotency_key=key,
        message=f"(It went to {_mask(account.email)}.)",
    )


def unlock_account(account: VerifiedAccount, *, key: str, directory: Directory) -> ToolResult:
    """Unlock the verified account and clear its failed sign-in count."""
    data = directory.unlock(account.account_id, key=key)
    return ToolResult(
        tool="unlock_account",
        ok=True,
        data=data,
        idempotency_key=key,
        message="(It was locked; it is active now.)"
        if data.get("status_before") == "locked"
        else "(It was not locked; it is active.)",
    )


def reset_mfa(account: VerifiedAccount, *, key: str, directory: Directory) -> ToolResult:
    """Remove the verified account's second factor so a new device can be enrolled."""
    data = directory.reset_mfa(account.account_id, key=key)
    return ToolResult(
        tool="reset_mfa",
        ok=True,
        data=data,
        idempotency_key=key,
        message=f"(Removed: {data.get('removed', 'the old device')}.)",
    )


def lookup_account(account: VerifiedAccount, *, key: str, directory: Directory) -> ToolResult:
    """Read the verified account's plan, status and next invoice."""
    found = directory.get(account.account_id)
    if found is None:
        raise ToolError("the verified account is no longer in the directory")
    data = {"plan": found.plan, "status": found.status, "next_invoice": found.next_invoice}
    invoice = f" Your next invoice: {found.next_invoice}." if found.next_invoice else ""
    return ToolResult(
        tool="lookup_account",
        ok=True,
        data=data,
        idempotency_key=key,
        message=f"You're on the {found.plan} plan.{invoice}",
    )


def create_ticket(account: VerifiedAccount, summary: str, *, key: str, directory: Directory) -> ToolResult:
    """File a request that needs approval (a licence, an access right) for the verified account."""
    data = directory.create_ticket(account.account_id, summary, key=key)
    return ToolResult(
        tool="create_ticket",
        ok=True,
        data=data,
        idempotency_key=key,
        message=f"(Request number: {data.get('ticket')}.)",
    )


_STATE_WORDS = {
    "operational": "is running normally",
    "degraded": "has degraded performance",
    "outage": "is down",
    "maintenance": "is under maintenance",
}


def _mentions(text: str, service: ServiceStatus) -> bool:
    lowered = text.lower()
    return any(re.search(rf"\b{re.escape(word)}\b", lowered) for word in [service.name, *service.aliases])


def check_service_status(text: str, *, key: str, status_page: StatusPage) -> ToolResult:
    """Report the published state of the services the message names, or of all when it names none."""
    services = status_page.services()
    services = [s for s in services if _mentions(text, s)] or services
    lines = [f"{s.name}: {s.state}" + (f" ({s.note})" if s.note else "") for s in services]
    trouble = [s for s in services if s.state != "operational"]
    headline = (
        "Everything is running normally."
        if not trouble
        else ("Known issue: " + "; ".join(f"{s.name} {_STATE_WORDS[s.state]}" for s in trouble) + ".")
    )
    return ToolResult(
        tool="check_service_status",
        ok=True,
        idempotency_key=key,
        data={"services": [s.model_dump() for s in services]},
        message=headline + " " + " · ".join(lines),
    )


ACCOUNT_TOOLS: dict[str, Callable[..., ToolResult]] = {
    "reset_password": reset_password,
    "unlock_account": unlock_account,
    "reset_mfa": reset_mfa,
    "lookup_account": lookup_account,
    "create_ticket": create_ticket,
}


@dataclass
class Toolbox:
    """Runs tools for one deployment: checks authorization, records intent and result, audits."""

    directory: Directory
    status_page: StatusPage
    outbox: Outbox
    ledger: Ledger
    clock: Callable[[], datetime]

    def send_code(self, email: str, *, conversation_id: str, key: str) -> ToolResult:
        """Send a one-time code to the account's contact on file (see tools.identity)."""
        return send_code(
            email,
            conversation_id=conversation_id,
            key=key,
            directory=self.directory,
            outbox=self.outbox,
            ledger=self.ledger,
            clock=self.clock,
        )

    def check_code(self, code: str, *, conversation_id: str, key: str) -> VerifiedAccount | None:
        """Check a one-time code typed in the conversation, once per key (a replay gets the same answer)."""
        done = self.ledger.finished(key)
        if done is None:
            self.ledger.start(key, conversation_id, "verify_identity", None)
            account = check_code(
                code, conversation_id=conversation_id, directory=self.directory, ledger=self.ledger, clock=self.clock
            )
            done = (
                {"account_id": account.account_id, "email": account.email, "at": account.verified_at.isoformat()}
                if account
                else {}
            )
            self.ledger.finish(
                key,
                conversation_id,
                "verify_identity",
                account.account_id if account else None,
                done,
                ok=True,
                detail="code matched" if account else "code did not match",
            )
        if not done:
            return None
        return make_verified(done["account_id"], done["email"], datetime.fromisoformat(done["at"]), conversation_id)

    def verified(self, account_id: str, email: str, at: datetime, conversation_id: str) -> VerifiedAccount | None:
        """Rebuild a verification recorded in conversation state, or None once it has expired."""
        if self.clock() - at > VERIFICATION_TTL:
            return None
        return make_verified(account_id, email, at, conversation_id)

    def run(
        self,
        tool: str,
        *,
        key: str,
        conversation_id: str,
        account: VerifiedAccount | None = None,
        args: dict[str, Any] | None = None,
    ) -> ToolResult:
        """Run a tool once per key; a replay returns the stored result without acting again."""
        args = args or {}
        done = self.ledger.finished(key)
        if done is not None:
            return ToolResult.model_validate({**done, "replayed": True})
        account_id = account.account_id if account else None
        if tool in ACCOUNT_TOOLS:
            if account is None or account.conversation_id != conversation_id:
                raise NotAuthorized(f"{tool} needs the verified account of this conversation")
        elif tool != "check_service_status":
            raise ToolError(f"unknown tool {tool!r}")
        self.ledger.start(key, conversation_id, tool, account_id)
        try:
            if tool == "check_service_status":
                result = check_service_status(str(args.get("text", "")), key=key, status_page=self.status_page)
            elif tool == "create_ticket":
                assert account is not None
                result = create_ticket(account, str(args.get("summary", "")), key=key, directory=self.directory)
            else:
                result = ACCOUNT_TOOLS[tool](account, key=key, directory=self.directory)
        except (ToolError, httpx.HTTPError) as exc:
            failed = ToolResult(tool=tool, ok=False, message="", idempotency_key=key, error=str(exc))
            self.ledger.finish(key, conversation_id, tool, account_id, failed.model_dump(), ok=False, detail=str(exc))
            return failed
        self.ledger.finish(key, conversation_id, tool, account_id, result.model_dump(), ok=True)
        return result
