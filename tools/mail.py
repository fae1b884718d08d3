"""Outbound mail: the Mailer protocol and its SMTP adapter (the file outbox is tools/outbox.py).

One-time codes and replies to email conversations go out through a Mailer. Replies carry the
threading headers (Message-ID, In-Reply-To, References) that keep a customer's mail client showing
the conversation as one thread.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Literal, Protocol

from core.errors import ToolError

Security = Literal["starttls", "ssl", "none"]


class Mailer(Protocol):
    """Sends one message and returns its Message-ID."""

    def deliver(
        self,
        to: str,
        subject: str,
        body: str,
        *,
        conversation_id: str,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
    ) -> str:
        """Send a plain-text message; ``message_id`` is used when given, else one is made."""
        ...


def one_line(text: str) -> str:
    """Header-safe text: line breaks and runs of whitespace become single spaces."""
    return " ".join(text.split())


def sender_domain(sender: str) -> str:
    """The domain of a From address, for the right-hand side of Message-IDs."""
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "tierone.local"


def new_message_id(sender: str) -> str:
    """A fresh, globally unique Message-ID in the sender's domain, angle brackets included."""
    return make_msgid(domain=sender_domain(sender))


def compose(
    *,
    sender: str,
    to: str,
    subject: str,
    body: str,
    message_id: str,
    at: datetime,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
) -> EmailMessage:
    """Build the message with the headers that thread it in the customer's mail client."""
    name, address = parseaddr(to)
    if "@" not in address:
        raise ToolError(f"cannot send mail: {to!r} is not an email address")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = Address(display_name=one_line(name), addr_spec=address) if name else address
    message["Subject"] = one_line(subject)
    message["Date"] = format_datetime(at)
    message["Message-ID"] = message_id
    chain = [r for r in references if r]
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        if in_reply_to not in chain:
            chain.append(in_reply_to)
    if chain:
        # RFC 5322: the parent's references followed by the parent's own id.
        message["References"] = " ".join(chain)
    message.set_content(body)
    return message


class SmtpMailer:
    """Sends mail through an SMTP relay (STARTTLS on 587, implicit TLS on 465, or plain), one connection a message.

    ``ssl_context`` defaults to the system's trust store with hostname checks; pass another to
    trust a private CA.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        clock: Callable[[], datetime],
        security: Security = "starttls",
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.security = security
        self._user = user
        self._password = password
        self._timeout = timeout_s
        self._clock = clock
        self._context = ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.security == "ssl":
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self._timeout, context=self._context)
        smtp = smtplib.SMTP(self.host, self.port, timeout=self._timeout)
        try:
            if self.security == "starttls":
                # starttls() fails unless the server offers it: never fall back to plain text silently.
                smtp.starttls(context=self._context)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def deliver(
        self,
        to: str,
        subject: str,
        body: str,
        *,
        conversation_id: str,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
    ) -> str:
        """Send the message through the relay and return its Message-ID.

        Raises:
            ToolError: The address is not one, or the relay refused, failed or could not be reached.
        """
        message_id = message_id or new_message_id(self.sender)
        message = compose(
            sender=self.sender,
            to=to,
            subject=subject,
            body=body,
            message_id=message_id,
            at=self._clock(),
            in_reply_to=in_reply_to,
            references=references,
        )
        where = f"{self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self._user:
                    smtp.login(self._user, self._password or "")
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise ToolError(
                f"the SMTP relay {where} refused the login ({exc.smtp_code}); check TIERONE_SMTP_USER and "
                "TIERONE_SMTP_PASSWORD"
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ToolError(
                f"the SMTP relay {where} lacks what the settings ask for ({exc}); check TIERONE_SMTP_SECURITY "
                "and TIERONE_SMTP_USER"
            ) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise ToolError(f"the SMTP relay {where} refused the recipient") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ToolError(f"could not send mail through the SMTP relay {where}: {exc}") from exc
        return message_id
