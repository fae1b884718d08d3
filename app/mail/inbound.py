"""Reading mail posted by an inbound-parse service: the webhook's authentication, the fields, the reply text."""

from __future__ import annotations

import base64
import binascii
import email.policy
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from email.utils import formataddr, parseaddr
from typing import TYPE_CHECKING, Any, Literal

from core.errors import MessageRejected
from core.signing import sign
from tools.mail import one_line

if TYPE_CHECKING:
    pass


# How many of a thread's Message-IDs a reply's References header carries (the oldest and newest).
MAX_REFERENCES = 20


# -- authentication ------------------------------------------------------------------------------

Auth = Literal["ok", "missing", "wrong"]


def authenticate(secret: str, body: bytes, signature: str | None, authorization: str | None) -> Auth:
    """Check a webhook call: the body's HMAC signature, or the secret as the basic-auth password.

    "missing" when the call carries neither (answer 401), "wrong" when what it carries does not match
    (answer 403).
    """
    basic = _basic_password(authorization)
    if signature is None and basic is None:
        return "missing"
    if signature is not None:
        given = signature.strip().removeprefix("sha256=").lower()
        if hmac.compare_digest(given.encode(), sign(secret, body).encode()):
            return "ok"
    if basic is not None and hmac.compare_digest(basic.encode(), secret.encode()):
        return "ok"
    return "wrong"


def _basic_password(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ""  # present but unreadable: a wrong credential, not a missing one
    return decoded.partition(":")[2]


# -- reading a posted mail -----------------------------------------------------------------------

_ID = re.compile(r"<[^<>\s]+>")
# "On Mon, 23 Nov 2026 at 09:00, Support <help@acme.example> wrote:", in a few languages; German puts
# the name after the verb ("Am 23.11.2026 schrieb Support <help@acme.example>:").
_ATTRIBUTION = re.compile(
    r"^\s*(on|am|le|el|il|op|em)\b.*\b(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu)"
    r"(\s+[^:]*[@>][^:]*)?\s*:\s*$",
    re.IGNORECASE,
)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(original message|ursprüngliche nachricht|message d'origine)\s*-{2,}\s*$", re.I)
_HEADER_FROM = re.compile(r"^\s*(from|von|de)\s*:", re.IGNORECASE)
_HEADER_NEXT = re.compile(r"^\s*(sent|date|gesendet|envoyé|to|an|à|subject)\s*:", re.IGNORECASE)
_MOBILE = re.compile(r"^\s*(sent from my |get outlook for |sent from (yahoo )?mail for )", re.IGNORECASE)
_REPLY_PREFIX = re.compile(r"^\s*((re|fw|fwd|aw|wg|sv|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def strip_reply(text: str) -> str:
    """The new text of a mail: quoted lines, the quoted mail under its attribution, and the signature removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.rstrip() == "--":  # "-- " (RFC 3676) and clients that trim its space: a signature follows
            break
        if _ATTRIBUTION.match(line) or (line.strip() and _ATTRIBUTION.match(f"{line} {following}")):
            break
        if _ORIGINAL.match(line) or re.fullmatch(r"\s*_{10,}\s*", line):
            break
        if _HEADER_FROM.match(line) and any(_HEADER_NEXT.match(n) for n in lines[i + 1 : i + 4]):
            break  # an Outlook-style quoted header block
        if line.lstrip().startswith(">"):
            continue  # quoted inline: the customer's own lines between quotes are kept
        kept.append(line.rstrip())
    while kept and (not kept[-1].strip() or _MOBILE.match(kept[-1])):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept))


def message_ids(value: str) -> list[str]:
    """The Message-IDs in a header value, angle brackets included (a bare id gets them)."""
    found = _ID.findall(value)
    if found:
        return found
    bare = value.strip()
    return [f"<{bare}>"] if bare and " " not in bare else []


def thread_subject(subject: str) -> str:
    """A subject without its "Re:"/"Fwd:" prefixes."""
    return _REPLY_PREFIX.sub("", one_line(subject)).strip()


@dataclass(frozen=True)
class InboundEmail:
    """A customer's mail as the webhook received it, its text reduced to what is new."""

    sender: str  # the address alone
    sender_name: str
    subject: str
    text: str
    message_id: str
    parents: tuple[str, ...] = ()  # In-Reply-To first, then References newest first
    references: tuple[str, ...] = ()  # as the mail carried them, oldest first

    @property
    def reply_to(self) -> str:
        """Where replies go: the sender, with their name."""
        return formataddr((self.sender_name, self.sender)) if self.sender_name else self.sender


# Mailgun posts "sender" and "body-plain" beside "from" and "text".
_ALIASES = {"sender": "from", "body_plain": "text"}
_THREAD_HEADERS = ("message_id", "in_reply_to", "references")


def _normalised(fields: Mapping[str, Any]) -> dict[str, Any]:
    # Parse services spell fields "Message-Id", "message_id", "body-plain": read them alike.
    out: dict[str, Any] = {}
    for key, value in fields.items():
        name = str(key).strip().lower().replace("-", "_")
        out.setdefault(name, value)
    for alias, name in _ALIASES.items():
        if alias in out and name not in out:
            out[name] = out[alias]
    headers = out.get("headers")
    if isinstance(headers, str) and any(name not in out for name in _THREAD_HEADERS):
        # SendGrid's Inbound Parse posts the thread headers only inside the raw header block.
        parsed = HeaderParser(policy=email.policy.compat32).parsestr(headers)
        for name in _THREAD_HEADERS:
            value = parsed.get(name.replace("_", "-"))
            if name not in out and value:
                out[name] = str(value)
    return out


def _text_field(fields: Mapping[str, Any], name: str, *, required: bool) -> str:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise MessageRejected(f"the field {name!r} is missing or empty")
        return ""
    if not isinstance(value, str):
        raise MessageRejected(f"the field {name!r} must be text, not {type(value).__name__}")
    return value


def parse_inbound(fields: Mapping[str, Any], *, own_address: str, validate: Callable[[str], str]) -> InboundEmail:
    """Read a posted mail (fields from, subject, text, message_id, in_reply_to, references).

    ``validate`` checks the text the way every customer message is checked (agent/resolver.py).

    Raises:
        MessageRejected: A field is missing, empty or malformed, the mail holds no new text, or it
            comes from Tierone's own address (a mail loop); the message names the field.
    """
    fields = _normalised(fields)
    raw_from = _text_field(fields, "from", required=True)
    name, address = parseaddr(one_line(raw_from))
    local, at, domain = address.rpartition("@")
    if not (local and at and "." in domain) or any(c.isspace() for c in address):
        raise MessageRejected("the field 'from' holds no email address; post the sender as 'Name <address>'")
    if address.casefold() == parseaddr(own_address)[1].casefold():
        raise MessageRejected("the field 'from' is Tierone's own address; a mail loop is refused")
    raw_id = _text_field(fields, "message_id", required=True)
    ids = message_ids(raw_id)
    if len(ids) != 1:
        raise MessageRejected("the field 'message_id' must hold one Message-ID, such as <abc@mail.example.com>")
    if len(ids[0]) > 998:
        raise MessageRejected("the field 'message_id' is longer than a mail header line may be")
    body = _text_field(fields, "text", required=True)
    new_text = strip_reply(body)
    if not new_text.strip():
        raise MessageRejected("the field 'text' holds no new text above the quoted reply and signature")
    subject = one_line(_text_field(fields, "subject", required=False))
    in_reply_to = message_ids(_text_field(fields, "in_reply_to", required=False))
    references = message_ids(_text_field(fields, "references", required=False))
    parents = tuple(dict.fromkeys([*in_reply_to, *reversed(references)]))
    return InboundEmail(
        sender=address,
        sender_name=one_line(name),
        subject=subject,
        text=validate(new_text),
        message_id=ids[0],
        parents=parents[:MAX_REFERENCES],
        references=tuple(references[-MAX_REFERENCES:]),
    )


def trim_references(references: Iterable[str]) -> tuple[str, ...]:
    """A thread's Message-IDs cut to what a References header carries: the root and the latest."""
    refs = tuple(references)
    if len(refs) <= MAX_REFERENCES:
        return refs
    # RFC 5322 readers need the first (the thread's root) and the latest ids most.
    return (refs[0], *refs[-(MAX_REFERENCES - 1) :])
