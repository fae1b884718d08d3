"""The inbound-mail webhook: an inbound-parse service posts each customer mail here (app/mail/)."""

from __future__ import annotations

import json
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from api.deps import AppRuntime, AppSettings
from api.errors import error_doc
from api.schemas import InboundOut
from app.mail.inbound import authenticate, parse_inbound
from core import logs
from core.errors import MessageRejected

router = APIRouter(tags=["email"])


def _check_sender(secret: str, raw: bytes, request: Request) -> None:
    """Refuse a post that is neither signed with the shared secret nor sent with it as the password."""
    verdict = authenticate(
        secret, raw, request.headers.get("x-tierone-signature"), request.headers.get("authorization")
    )
    if verdict == "missing":
        raise HTTPException(
            401,
            "sign the body (X-Tierone-Signature: hex HMAC-SHA256 with the shared secret) or send the secret"
            " as the basic-auth password",
            headers={"WWW-Authenticate": 'Basic realm="tierone-inbound"'},
        )
    if verdict == "wrong":
        raise HTTPException(403, "the signature or password does not match the shared secret")


async def _fields(request: Request, raw: bytes) -> dict[str, Any]:
    """The mail's fields, from a JSON object or a form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            posted = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageRejected(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(posted, dict):
            raise MessageRejected("the JSON body must be an object with the fields from, subject, text, message_id")
        return posted
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields: dict[str, Any] = {}
        async with request.form() as form:
            for key, value in form.multi_items():  # the first of repeated fields; attachments are skipped
                if isinstance(value, str):
                    fields.setdefault(key, value)
        return fields
    raise HTTPException(415, "post the mail as JSON or as a form (urlencoded or multipart)")


@router.post(
    "/inbound/email",
    response_model=InboundOut,
    responses={
        401: error_doc("Neither an X-Tierone-Signature header nor basic auth was sent"),
        403: error_doc("The signature or the basic-auth password does not match TIERONE_INBOUND_SECRET"),
        413: error_doc("The post is over TIERONE_INBOUND_MAX_BYTES"),
        415: error_doc("The body is neither JSON nor a form"),
        422: error_doc("A field is missing, empty or malformed; the detail names it"),
        502: error_doc("The mail was played but its reply could not be sent; post it again to retry the send"),
        503: error_doc("TIERONE_INBOUND_SECRET is not set, so inbound mail is refused"),
    },
)
async def inbound_email(request: Request, runtime: AppRuntime, settings: AppSettings) -> InboundOut | JSONResponse:
    """Take one customer mail from an inbound-parse service, authenticated by the shared secret.

    Fields from, subject, text, message_id, in_reply_to (JSON or a form). The mail opens or
    continues a conversation; the bot's reply goes back by mail. A Message-ID already taken
    answers 200 with status "duplicate" and plays nothing again.
    """
    email = runtime.email
    secret = settings.inbound_secret
    if not secret or email is None:
        raise HTTPException(503, "inbound email is not set up: set TIERONE_INBOUND_SECRET and restart")
    raw = await request.body()
    _check_sender(secret, raw, request)
    mail = parse_inbound(await _fields(request, raw), own_address=email.sender, validate=email.validate)
    got = await to_thread.run_sync(email.receive, mail)
    logs.log(
        "mail in",
        conversation_id=got.conversation_id,
        status=got.status,
        matched=got.matched,
        sent=got.replies_sent,
        pending=got.replies_pending,
    )
    out = InboundOut(
        status=got.status,
        conversation_id=got.conversation_id,
        matched=got.matched,
        replies_sent=got.replies_sent,
        replies_pending=got.replies_pending,
    )
    if got.replies_pending:
        # A parse service retries a failed post: the retry finds the mail played and sends the reply.
        detail = f"the mail was taken, but its reply could not be sent ({got.error}); post it again to retry"
        return JSONResponse(status_code=502, content={"detail": detail, **out.model_dump()})
    return out
