"""The tools a runbook may run, and the Toolbox that runs them with authorization and a ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from core.errors import NotAuthorized, ToolError
from core.pack_tools import Verification, knowledge_field
from core.redact import mask_email
from core.vault import Vault
from tools.base import Directory, Outbox, ServiceStatus, StatusPage, ToolResult, VerifiedAccount, make_verified
from tools.declared import DeclaredRunner, arguments_for
from tools.identity import CODE_SENT, check_code, send_code
from tools.ledger import Ledger
from tools.verification import check_sms_code, send_sms_code, verify_knowledge

# A verification is good for this long; after that the customer proves it again.
VERIFICATION_TTL = timedelta(minutes=30)


def _mask(email: str) -> str:
    return mask_email(email) if "@" in email else "***"


@dataclass(frozen=True)
class Limits:
    """Per-account brakes on what an attacker could make the bot do again and again."""

    verification_ttl: timedelta = VERIFICATION_TTL
    # One-time codes to one account: a pause between two in one conversation, a cap per rolling hour.
    code_cooldown: timedelta = timedelta(seconds=60)
    codes_per_hour: int = 5
    # Changes to one account (password and MFA resets, unlocks) per rolling day.
    account_actions_per_day: int = 3


# One-time codes sent, by mail or by text; they count against the code limits together.
CODE_SENDS = ("send_code", "send_sms_code")

# Tools that change an account; they count against Limits.account_actions_per_day.
ACCOUNT_CHANGES = ("reset_password", "unlock_account", "reset_mfa")


def reset_password(account: VerifiedAccount, *, key: str, directory: Directory) -> ToolResult:
    """Send a single-use password-reset link to the verified account's email on file."""
    data = directory.reset_password(account.account_id, key=key)
    if "sent_to" in data:
        data = {**data, "sent_to": _mask(str(data["sent_to"]))}
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
        # Said after the step's "I've unlocked your account": what the unlock found, not a contradiction of it.
        else "(It turned out not to be locked: it is active, so the unlock changed nothing.)",
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
    limits: Limits = field(default_factory=Limits)
    # Values tools need (the address given, the code typed), by reference; see core/vault.py.
    vault: Vault | None = None
    # The pack's own HTTP tools (tools.yaml), when it declares any.
    declared: DeclaredRunner | None = None

    def __post_init__(self) -> None:
        if self.vault is None:
            self.vault = Vault.in_memory(self.clock)

    def send_code(self, email: str, *, conversation_id: str, key: str) -> ToolResult:
        """Send a one-time code to the account's contact on file (see tools.identity), within the limits."""
        if self.ledger.finished(key) is None:
            account = self.directory.find_by_email(email)
            refusal = self._code_limit(account.account_id, conversation_id) if account else None
            if account is not None and refusal:
                # Nothing is sent, and the reply is the usual one: the chat reveals no more than before.
                self.ledger.start(key, conversation_id, "send_code", account.account_id)
                held = ToolResult(
                    tool="send_code",
                    ok=True,
                    message=CODE_SENT.format(email=_mask(email)),
                    data={"account_found": True, "sent": False},
                    idempotency_key=key,
                )
                self.ledger.finish(
                    key, conversation_id, "send_code", account.account_id, held.model_dump(), ok=True, detail=refusal
                )
                self.ledger.refuse(key, conversation_id, "send_code", account.account_id, refusal)
                return held
        return send_code(
            email,
            conversation_id=conversation_id,
            key=key,
            directory=self.directory,
            outbox=self.outbox,
            ledger=self.ledger,
            clock=self.clock,
            make_code=self.vault.code_for if self.vault is not None else None,
        )

    def send_sms_code(self, phone: str, verification: Verification, *, conversation_id: str, key: str) -> ToolResult:
        """Text a one-time code to the line with this number (tools.verification), within the code limits.

        A failing lookup or SMS tool gives ``ok=False`` with the API's status, as a declared tool does.
        """
        if self.declared is None or verification.otp_sms is None:
            raise ToolError("otp_sms needs the pack's declared tools and `verification.otp_sms` in policy.yaml")
        try:
            return send_sms_code(
                phone,
                conversation_id=conversation_id,
                key=key,
                config=verification.otp_sms,
                account_field=verification.account_field,
                runner=self.declared,
                ledger=self.ledger,
                clock=self.clock,
                make_code=self.vault.code_for if self.vault is not None else None,
                refuse=lambda account_id: self._code_limit(account_id, conversation_id),
            )
        except ToolError as exc:
            failed = ToolResult(
                tool="send_sms_code",
                ok=False,
                message="",
                idempotency_key=key,
                error=str(exc),
                data={"status": exc.status},
            )
            self.ledger.finish(
                key, conversation_id, "send_sms_code", None, failed.model_dump(), ok=False, detail=str(exc)
            )
            return failed

    def verify_knowledge(
        self, given: dict[str, str], verification: Verification, *, conversation_id: str, key: str
    ) -> VerifiedAccount | None:
        """Identity by facts (tools.verification): ``given`` holds a ``phone`` and a ``dob`` from the chat.

        Each of the policy's fields takes the fact of its kind (``knowledge_field``). A failing lookup
        raises ToolError with the API's status; a wrong fact or an unknown number is None alike.
        """
        knowledge = verification.knowledge
        if self.declared is None or knowledge is None:
            raise ToolError("knowledge needs the pack's declared tools and `verification.knowledge` in policy.yaml")
        facts = {field: given.get(knowledge_field(field) or "", "") for field in knowledge.fields}
        return verify_knowledge(
            facts,
            conversation_id=conversation_id,
            key=key,
            config=knowledge,
            account_field=verification.account_field,
            runner=self.declared,
            ledger=self.ledger,
            clock=self.clock,
        )

    def check_code(self, code: str, *, conversation_id: str, key: str, by_sms: bool = False) -> VerifiedAccount | None:
        """Check a one-time code typed in the conversation, once per key (a replay gets the same answer).

        ``by_sms``: the code was texted to a line of the pack's API, which the directory does not hold.
        """
        done = self.ledger.finished(key)
        if done is None:
            self.ledger.start(key, conversation_id, "verify_identity", None)
            if by_sms:
                account = check_sms_code(code, conversation_id=conversation_id, ledger=self.ledger, clock=self.clock)
            else:
                account = check_code(
                    code,
                    conversation_id=conversation_id,
                    directory=self.directory,
                    ledger=self.ledger,
                    clock=self.clock,
                )
            done = (
                {
                    "account_id": account.account_id,
                    "email": _mask(account.email) if account.email else "",
                    "at": account.verified_at.isoformat(),
                }
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
                consume_code=account is not None,
            )
        if not done:
            return None
        return make_verified(done["account_id"], done["email"], datetime.fromisoformat(done["at"]), conversation_id)

    def verified(self, account_id: str, email: str, at: datetime, conversation_id: str) -> VerifiedAccount | None:
        """Rebuild a verification recorded in conversation state, or None once it has expired."""
        if self.clock() - at > self.limits.verification_ttl:
            return None
        return make_verified(account_id, email, at, conversation_id)

    def _code_limit(self, account_id: str, conversation_id: str) -> str | None:
        now = self.clock()
        sent = self.ledger.recent(account_id, CODE_SENDS, now - timedelta(hours=1))
        if len(sent) >= self.limits.codes_per_hour:
            return f"rate limited: {len(sent)} codes to this account in the last hour"
        here = self.ledger.recent(account_id, CODE_SENDS, now - self.limits.code_cooldown, conversation_id)
        if here:
            return "rate limited: this conversation had a code sent to this account moments ago"
        return None

    def _refuse(self, tool: str, key: str, conversation_id: str, account: VerifiedAccount | None) -> str | None:
        """Why this call may not run (audited), or None when it may."""
        account_id = account.account_id if account else None
        reason = None
        spec = self.declared.tools.get(tool) if self.declared else None
        changes = ACCOUNT_CHANGES + self._declared_changes()
        if tool in ACCOUNT_TOOLS or (spec is not None and spec.needs_verified):
            if account is None or account.conversation_id != conversation_id:
                reason = f"not authorized: {tool} needs the verified account of this conversation"
            elif self.clock() - account.verified_at > self.limits.verification_ttl:
                reason = f"not authorized: the verification for {tool} has expired"
            elif tool in changes:
                done = self.ledger.recent(account.account_id, changes, self.clock() - timedelta(days=1))
                if len(done) >= self.limits.account_actions_per_day:
                    reason = f"rate limited: {len(done)} changes to this account in the last day"
        if reason:
            self.ledger.refuse(key, conversation_id, tool, account_id, reason)
        return reason

    def _declared_changes(self) -> tuple[str, ...]:
        """The declared tools that change something: they count against the same daily limit."""
        return tuple(t.name for t in self.declared.tools.values() if t.changes) if self.declared else ()

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
        spec = self.declared.tools.get(tool) if self.declared else None
        if tool not in ACCOUNT_TOOLS and tool != "check_service_status" and spec is None:
            raise ToolError(f"unknown tool {tool!r}")
        refusal = self._refuse(tool, key, conversation_id, account)
        if refusal and refusal.startswith("not authorized"):
            raise NotAuthorized(refusal)
        if refusal:
            return ToolResult(tool=tool, ok=False, message="", idempotency_key=key, error=refusal)
        self.ledger.start(key, conversation_id, tool, account_id)
        try:
            if spec is not None:
                assert self.declared is not None
                # A step's tool gets the slots filled so far (a number of GB); the account is always the
                # verified one, whatever a slot says.
                known = {**(args.get("slots") or {}), **args, "account_id": account_id}
                result = self.declared.call(tool, arguments_for(spec, known), key=key)
            elif tool == "check_service_status":
                result = check_service_status(str(args.get("text", "")), key=key, status_page=self.status_page)
            elif tool == "create_ticket":
                assert account is not None
                result = create_ticket(account, str(args.get("summary", "")), key=key, directory=self.directory)
            else:
                result = ACCOUNT_TOOLS[tool](account, key=key, directory=self.directory)
        except (ToolError, httpx.HTTPError) as exc:
            # A declared tool's failure carries the API's status (None: no answer) for the packet.
            data = {"status": exc.status} if spec is not None and isinstance(exc, ToolError) else {}
            failed = ToolResult(tool=tool, ok=False, message="", idempotency_key=key, error=str(exc), data=data)
            self.ledger.finish(key, conversation_id, tool, account_id, failed.model_dump(), ok=False, detail=str(exc))
            return failed
        self.ledger.finish(key, conversation_id, tool, account_id, result.model_dump(), ok=True)
        return result
