"""Ways to prove identity besides an email code, through the tools a pack declares.

- ``otp_sms``: a one-time code texted, by the pack's SMS tool, to the number on file of the line
  the customer names; checked like the email code (same pending-code store, same attempt count).
- ``knowledge``: the customer names N facts (phone number and date of birth, say); the record the
  pack's lookup tool finds by the first must match the others.

Both answer the same whether or not a record exists, and store none of the record: the ledger
keeps the outcome and the account id only.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from dateutil import parser as dateparser

from core.errors import ToolError
from core.pack_tools import Knowledge, SmsCode
from tools.base import ToolResult, VerifiedAccount, make_verified
from tools.declared import DeclaredRunner
from tools.identity import CODE_TTL, code_hash, matching_code_account
from tools.ledger import Ledger

SMS_SENT = (
    "If that number has a line with us, I've just texted a 6-digit code to it. "
    "Please type the code here; it expires in 10 minutes."
)
KNOWLEDGE_TOOL = "verify_knowledge"
# Shortest run of digits two phone numbers must share at their end to be the same number
# (+44 7700 900123 and 07700 900123 are one number).
_PHONE_DIGITS = 9


def normalise(field: str, value: object) -> str:
    """A fact in the form two answers are compared in: digits of a phone number, ISO dates, folded text."""
    text = str(value).strip()
    if "phone" in field or "msisdn" in field:
        digits = re.sub(r"\D", "", text)
        return digits[-_PHONE_DIGITS:] if len(digits) >= _PHONE_DIGITS else digits
    if "date" in field or "birth" in field or field.endswith("_on"):
        try:
            return date.fromisoformat(text[:10]).isoformat()
        except ValueError:
            pass
        try:
            # Day first, as written outside the US ("03/04/1990" is 3 April); ISO dates were read above,
            # because dayfirst would swap their month and day too.
            return str(dateparser.parse(text, dayfirst=True).date().isoformat())
        except (ValueError, OverflowError):
            return text.casefold()
    return " ".join(text.casefold().split())


def _lookup(runner: DeclaredRunner, tool: str, field: str, value: str, key: str) -> dict[str, Any] | None:
    """The record the lookup tool finds, or None for "no such record" (404); other failures raise."""
    try:
        return runner.call_raw(tool, {field: value}, key=key)
    except ToolError as exc:
        if exc.status == 404:
            return None
        raise


def verify_knowledge(
    given: dict[str, str],
    *,
    conversation_id: str,
    key: str,
    config: Knowledge,
    account_field: str,
    runner: DeclaredRunner,
    ledger: Ledger,
    clock: Callable[[], datetime],
) -> VerifiedAccount | None:
    """The verified account when every fact given matches the record found by the first; else None.

    Past ``config.max_attempts`` wrong answers in the conversation nothing is looked up and the
    answer is None, as for a wrong answer. A lookup failure other than 404 raises ToolError.
    """
    done = ledger.finished(key)
    if done is None:
        wrong = [
            row
            for row in ledger.audit(conversation_id)
            if row["tool"] == KNOWLEDGE_TOOL and row["detail"] in ("did not match", "over the attempt limit")
        ]
        if len(wrong) >= config.max_attempts:
            ledger.start(key, conversation_id, KNOWLEDGE_TOOL, None)
            ledger.finish(key, conversation_id, KNOWLEDGE_TOOL, None, {}, ok=True, detail="over the attempt limit")
            return None
        missing = [f for f in config.fields if not str(given.get(f) or "").strip()]
        if missing:
            raise ValueError(f"verify_knowledge needs {', '.join(missing)}")
        first = config.fields[0]
        ledger.start(key, conversation_id, KNOWLEDGE_TOOL, None)
        try:
            record = _lookup(runner, config.lookup, first, str(given[first]).strip(), key)
        except ToolError as exc:
            ledger.finish(key, conversation_id, KNOWLEDGE_TOOL, None, {}, ok=False, detail=str(exc))
            raise
        # Every field is compared (no early exit), so the time taken says nothing about which one differed.
        matches = [
            record is not None
            and hmac.compare_digest(normalise(f, record.get(f, "")).encode(), normalise(f, given[f]).encode())
            for f in config.fields
        ]
        account_id = str(record.get(account_field) or "") if record else ""
        ok = all(matches) and bool(account_id)
        done = {"account_id": account_id, "at": clock().isoformat()} if ok else {}
        ledger.finish(
            key,
            conversation_id,
            KNOWLEDGE_TOOL,
            account_id or None,
            done,
            ok=True,
            detail="matched" if ok else "did not match",
        )
    if not done:
        return None
    return make_verified(done["account_id"], "", datetime.fromisoformat(done["at"]), conversation_id)


def send_sms_code(
    phone: str,
    *,
    conversation_id: str,
    key: str,
    config: SmsCode,
    account_field: str,
    runner: DeclaredRunner,
    ledger: Ledger,
    clock: Callable[[], datetime],
    make_code: Callable[[str], str] | None = None,
    refuse: Callable[[str], str | None] | None = None,
) -> ToolResult:
    """Text a one-time code to the number on file of the line with this number, if there is one.

    ``refuse`` says why no code may go to that account now (a rate limit), or None: then nothing is
    sent and the answer is the usual one.
    """
    done = ledger.finished(key)
    if done is not None:
        return ToolResult.model_validate({**done, "replayed": True})
    ledger.start(key, conversation_id, "send_sms_code", None)
    record = _lookup(runner, config.lookup, "phone", phone.strip(), key)
    account_id = str(record.get(account_field) or "") if record else ""
    refusal = refuse(account_id) if (refuse is not None and account_id) else None
    if refusal:
        ledger.drop_code(conversation_id)
        ledger.refuse(key, conversation_id, "send_sms_code", account_id, refusal)
    elif record is not None and account_id:
        code = make_code(key) if make_code is not None else f"{secrets.randbelow(1_000_000):06d}"
        ledger.put_code(conversation_id, account_id, code_hash(conversation_id, code), clock() + CODE_TTL)
        # To the number on file, never to one typed in the chat.
        runner.call(config.send, {"phone": str(record.get("phone") or phone), "code": code}, key=f"{key}:sms")
    else:
        ledger.drop_code(conversation_id)
    result = ToolResult(
        tool="send_sms_code", ok=True, message=SMS_SENT, data={"account_found": bool(account_id)}, idempotency_key=key
    )
    ledger.finish(key, conversation_id, "send_sms_code", account_id or None, result.model_dump(), ok=True)
    return result


def check_sms_code(
    code: str, *, conversation_id: str, ledger: Ledger, clock: Callable[[], datetime]
) -> VerifiedAccount | None:
    """The verified account when the code matches the conversation's pending texted code.

    As with the email code, a matching code is not consumed here: the caller consumes it in the
    transaction that records the check (``Ledger.finish(consume_code=True)``).
    """
    account_id = matching_code_account(code, conversation_id=conversation_id, ledger=ledger, clock=clock)
    return make_verified(account_id, "", clock(), conversation_id) if account_id is not None else None
