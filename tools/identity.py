"""Identity verification: a one-time code sent to the contact on file, checked in the chat."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from core.redact import mask_email
from tools.base import Directory, Outbox, ToolResult, VerifiedAccount, make_verified
from tools.ledger import Ledger

CODE_TTL = timedelta(minutes=10)
# The same words whether or not the address has an account, so the chat reveals nothing.
CODE_SENT = (
    "If {email} belongs to an account, I've just sent a 6-digit code to the contact on file. "
    "Please type the code here; it expires in 10 minutes."
)


def code_hash(conversation_id: str, code: str) -> str:
    """How a pending one-time code is stored: bound to its conversation, never in clear."""
    return hashlib.sha256(f"{conversation_id}:{code}".encode()).hexdigest()


def send_code(
    email: str,
    *,
    conversation_id: str,
    key: str,
    directory: Directory,
    outbox: Outbox,
    ledger: Ledger,
    clock: Callable[[], datetime],
    make_code: Callable[[str], str] | None = None,
) -> ToolResult:
    """Send a one-time code to the contact on file of the account with this email, if any.

    ``make_code`` gives the code for the send's key (``Vault.code_for``): a send that a crash cut
    off between the mail and the ledger's record is replayed with the same code, so the customer
    may get the mail twice but never two codes. Without it the code is random.
    """
    done = ledger.finished(key)
    if done is not None:
        return ToolResult.model_validate({**done, "replayed": True})
    account = directory.find_by_email(email)
    ledger.start(key, conversation_id, "send_code", account.account_id if account else None)
    if account is not None:
        code = make_code(key) if make_code is not None else f"{secrets.randbelow(1_000_000):06d}"
        ledger.put_code(conversation_id, account.account_id, code_hash(conversation_id, code), clock() + CODE_TTL)
        # The code goes to the address on file, never to an address typed in the chat.
        outbox.deliver(
            account.email,
            "Your Tierone support verification code",
            f"Your verification code is {code}. It expires in 10 minutes. "
            "If you did not ask for it, ignore this message.",
            conversation_id=conversation_id,
        )
    else:
        ledger.drop_code(conversation_id)
    result = ToolResult(
        tool="send_code",
        ok=True,
        # Masked: the reply is stored with the conversation, and the address stays in the vault.
        message=CODE_SENT.format(email=mask_email(email)),
        data={"account_found": account is not None},
        idempotency_key=key,
    )
    ledger.finish(
        key, conversation_id, "send_code", account.account_id if account else None, result.model_dump(), ok=True
    )
    return result


def check_code(
    code: str,
    *,
    conversation_id: str,
    directory: Directory,
    ledger: Ledger,
    clock: Callable[[], datetime],
) -> VerifiedAccount | None:
    """Return the verified account when the code matches this conversation's pending code.

    A matching code is not consumed here: the caller consumes it in the transaction that records
    the check's result (``Ledger.finish(consume_code=...)``), so a process killed in between
    replays the check with the code still pending instead of answering "didn't match".
    """
    account_id = matching_code_account(code, conversation_id=conversation_id, ledger=ledger, clock=clock)
    account = directory.get(account_id) if account_id is not None else None
    if account is None:
        return None
    return make_verified(account.account_id, account.email, clock(), conversation_id)


def matching_code_account(
    code: str, *, conversation_id: str, ledger: Ledger, clock: Callable[[], datetime]
) -> str | None:
    """The account of the conversation's pending code when ``code`` matches it and it has not expired.

    Mailed and texted codes alike; an expired code is dropped. Nothing is consumed (see ``check_code``).
    """
    pending = ledger.take_code_attempt(conversation_id)
    if pending is None or pending["account_id"] is None:
        return None
    if clock() > datetime.fromisoformat(pending["expires_at"]):
        ledger.drop_code(conversation_id)
        return None
    if not hmac.compare_digest(pending["code_hash"], code_hash(conversation_id, code.strip())):
        return None
    return str(pending["account_id"])
