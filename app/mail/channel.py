"""The email channel: mail posted by an inbound-parse service in, replies out by mail, one thread.

A mail opens a conversation on channel "email" or continues one, found in this order:

1. its In-Reply-To / References name a mail of the conversation (one we sent, or the customer's own);
2. its sender is the address of a conversation still open (not resolved) and active within the
   last week: a conversation opened by mail from that address, or a chat whose customer proved
   the address with a one-time code (an address merely typed in a chat never links: anyone can
   type one);
3. otherwise it opens a new conversation.

Each Message-ID is played once: a retried webhook finds its first record and plays nothing again,
but still retries any reply that could not be sent. The bot's replies, and L2's replies while the
customer's latest message came by mail, go out through the Mailer (tools/mail.py) with the
threading headers. A reply is recorded before it is sent, so a failed send is retried, not lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any, Literal

from app.mail.inbound import InboundEmail, thread_subject, trim_references
from app.mail.store import MailStore, Matched, Pending
from core.errors import ConversationNotFound, MessageRejected, ToolError
from core.settings import Settings
from tools.mail import Mailer, SmtpMailer, new_message_id
from tools.outbox import FileOutbox

if TYPE_CHECKING:
    from agent.resolver import Resolver
    from app.desk import ReplySent

log = logging.getLogger(__name__)

# A sender's later mail continues their open conversation only if it was active this recently.
CONTINUE_WITHIN = timedelta(days=7)


def open_mailer(settings: Settings, outbox: FileOutbox, clock: Callable[[], datetime]) -> Mailer:
    """The SMTP relay when TIERONE_SMTP_HOST is set, else the file outbox."""
    if not settings.smtp_host:
        return outbox
    return SmtpMailer(
        settings.smtp_host,
        settings.smtp_port,
        sender=settings.mail_from,
        clock=clock,
        security=settings.smtp_security,
        user=settings.smtp_user,
        password=settings.smtp_password,
        timeout_s=settings.smtp_timeout_s,
    )


# -- the channel ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """What the webhook did with one mail."""

    status: Literal["accepted", "duplicate"]
    conversation_id: str | None  # None for a duplicate whose first delivery is still being played
    matched: Matched | None
    replies_sent: int
    replies_pending: int
    error: str | None = None


class EmailChannel:
    """Plays inbound mail into conversations and sends the replies by mail."""

    def __init__(
        self,
        store: MailStore,
        mailer: Mailer,
        resolver: Resolver,
        *,
        sender: str,
        status: Callable[[str], str],
        validate: Callable[[str], str],
        clock: Callable[[], datetime],
        email_of_account: Callable[[str], str | None] | None = None,
        remember_address: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.resolver = resolver
        self.sender = sender
        # Checks a customer message the way every channel does (agent/resolver.py validate_message).
        self.validate = validate
        self._status = status
        self._clock = clock
        self._email_of_account = email_of_account
        # Lets erasure by address (app/erasure.py) find the conversations that mail from it opened.
        self._remember_address = remember_address
        self._send_lock = threading.Lock()
        self._find_lock = threading.Lock()
        self._taker: threading.Thread | None = None
        self._stop_taking = threading.Event()

    @property
    def signature(self) -> str:
        """The name replies are signed with."""
        return parseaddr(self.sender)[0] or "Support"

    # -- inbound ---------------------------------------------------------------------------------

    def receive(self, mail: InboundEmail) -> Received:
        """Play one mail into its conversation (once per Message-ID) and send the bot's replies.

        A delivery cut short (a crash, an error) is finished by the next delivery of the same mail:
        the mail stays tied to its conversation, and the resolver answers a message it already
        played (named by the Message-ID) from its record instead of playing it again.
        """
        taken = self.store.take(mail.message_id)
        if taken.played:
            sent, pending, error = self.flush(mail.message_id)
            return Received("duplicate", taken.conversation_id, None, sent, pending, error)
        with self._find_lock:  # two deliveries at once must not open two conversations
            taken = self.store.take(mail.message_id)
            if taken.conversation_id is None:
                cid, matched = self._find(mail)
                self.store.assign(mail.message_id, cid, matched)
            else:
                cid, matched = taken.conversation_id, taken.matched or "thread"
        text = mail.text
        subject = thread_subject(mail.subject)
        if matched == "new" and subject and subject.casefold() not in text.casefold():
            # A first mail's subject often names the problem ("VPN drops every hour").
            with contextlib.suppress(MessageRejected):  # too long with it: the body alone
                text = self.validate(f"{subject}\n\n{text}")
        key = "mail:" + hashlib.sha256(mail.message_id.encode()).hexdigest()
        result = self.resolver.send(cid, text, channel="email", client_message_id=key)
        self.store.link(mail.sender, cid)
        if self._remember_address is not None:
            self._remember_address(cid, mail.sender)
        replies = [self._reply(mail, cid, result.replies)] if result.replies else []
        first = self.store.played(mail, cid, replies)
        sent, pending, error = self.flush(mail.message_id)
        if not pending:
            self.flush()  # and any other reply still waiting (an L2 reply the relay refused before)
        return Received("accepted" if first else "duplicate", cid, matched, sent, pending, error)

    def _find(self, mail: InboundEmail) -> tuple[str, Matched]:
        cid = self.store.conversation_of_mail(mail.parents)
        if cid is not None and self._exists(cid):
            return cid, "thread"
        for candidate in self.store.linked(mail.sender, self._clock() - CONTINUE_WITHIN):
            if self._exists(candidate) and self._open(candidate):
                return candidate, "sender"
        return self.resolver.start("email"), "new"

    def _exists(self, conversation_id: str) -> bool:
        try:
            self.resolver.conversations.get(conversation_id)
        except ConversationNotFound:
            return False
        return True

    def _open(self, conversation_id: str) -> bool:
        if self._status(conversation_id) == "resolved":
            return False
        return bool(self.resolver.view(conversation_id).get("stage") != "resolved")

    def _reply(self, mail: InboundEmail, conversation_id: str, replies: Sequence[str]) -> Pending:
        subject = thread_subject(mail.subject)
        thread = self.store.thread(conversation_id)
        earlier = thread.references if thread else ()
        references = trim_references(dict.fromkeys([*earlier, *mail.references, mail.message_id]))
        return Pending(
            message_id=new_message_id(self.sender),
            conversation_id=conversation_id,
            to=mail.reply_to,
            subject=f"Re: {subject}" if subject else "Re: your support request",
            body="\n\n".join(replies) + self._footer(),
            in_reply_to=mail.message_id,
            references=references,
        )

    def _footer(self, name: str | None = None) -> str:
        who = f"{name}, {self.signature}" if name else self.signature
        # "-- " marks a signature (RFC 3676): when the customer replies, strip_reply drops it again.
        return f"\n\n-- \n{who}\nReply to this email to continue the conversation."

    # -- outbound --------------------------------------------------------------------------------

    def flush(self, inbound_id: str | None = None, *, abandoned: bool = False) -> tuple[int, int, str | None]:
        """Send pending replies (those answering one mail, or all): (sent, still pending, last error).

        ``abandoned``: only the replies whose sender's lease ran out (a replica that died sending).
        """
        sent = 0
        error = None
        # One sender at a time, so that two retries never send the same reply twice.
        with self._send_lock:
            # Leased: another process sending at once skips these.
            pending = self.store.claim(inbound_id, abandoned=abandoned)
            for reply in pending:
                if not self.store.hold(reply.message_id):
                    continue  # another process took it over while this batch was sending
                try:
                    self.mailer.deliver(
                        reply.to,
                        reply.subject,
                        reply.body,
                        conversation_id=reply.conversation_id,
                        message_id=reply.message_id,
                        in_reply_to=reply.in_reply_to,
                        references=reply.references,
                    )
                except ToolError as exc:
                    error = str(exc)
                    self.store.failed(reply.message_id, error)
                    log.warning("mail reply %s to %s not sent: %s", reply.message_id, reply.conversation_id, exc)
                    continue
                self.store.sent(reply.message_id)
                sent += 1
            if pending:
                self.store.compact()  # no copy of a sent or given-up body stays in the write-ahead log
        return sent, len(pending) - sent, error

    def start_taking_over(self, every_s: float) -> None:
        """Every ``every_s``, send the replies that a sender which died left leased (replicas on PostgreSQL)."""
        if self._taker is not None:
            return
        self._stop_taking.clear()

        def run() -> None:
            while not self._stop_taking.wait(every_s):
                try:
                    self.flush(abandoned=True)
                except Exception:  # a database that went away must not end the loop
                    log.exception("taking over abandoned mail replies failed; trying again in %.0f s", every_s)

        self._taker = threading.Thread(target=run, name="tierone-mail-takeover", daemon=True)
        self._taker.start()

    def stop_taking_over(self) -> None:
        """Stop the loop of ``start_taking_over`` (after the send in flight)."""
        self._stop_taking.set()
        if self._taker is not None:
            self._taker.join(timeout=30)
            self._taker = None

    def on_desk_reply(self, reply: ReplySent) -> None:
        """Send an L2 reply by mail when the customer's latest message came by mail (a Desk hook).

        It never raises: the reply is in the transcript already; a send that fails stays pending
        and is retried with the next mail of any conversation.
        """
        if reply.line.channel != "email":
            return
        cid = reply.packet.conversation_id
        thread = self.store.thread(cid)
        if thread is None:
            log.warning("conversation %s is on email but has no mail thread; the L2 reply went to chat only", cid)
            return
        self.store.record(
            Pending(
                message_id=new_message_id(self.sender),
                conversation_id=cid,
                to=thread.reply_to,
                subject=f"Re: {thread.subject}" if thread.subject else "Re: your support request",
                body=reply.text.strip() + self._footer(reply.technician),
                in_reply_to=thread.last_in,
                references=trim_references(thread.references),
            )
        )
        self.flush()

    def notice(self, conversation_id: str, text: str, author: str) -> Pending | None:
        """A message to the customer of a mail conversation, to record with ``store.record_on``; None without a thread.

        The caller records it inside its own transaction (an incident's delivery ledger), then calls ``flush``.
        """
        thread = self.store.thread(conversation_id)
        if thread is None:
            return None
        return Pending(
            message_id=new_message_id(self.sender),
            conversation_id=conversation_id,
            to=thread.reply_to,
            subject=f"Re: {thread.subject}" if thread.subject else "Re: your support request",
            body=text.strip() + self._footer(author),
            in_reply_to=thread.last_in,
            references=trim_references(thread.references),
        )

    # -- linking chats to addresses --------------------------------------------------------------

    def after_turn(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Link a conversation to its customer's address once they proved it with a code (a Resolver hook)."""
        customer = values.get("customer") or {}
        account_id = customer.get("account_id")
        if not (customer.get("verified_at") and account_id):
            return
        # Every verified turn refreshes the link: "active within the last week" counts from here.
        if self.store.touch(conversation_id) or self._email_of_account is None:
            return
        # The address on file is the one the code went to: the one the customer proved.
        address = self._email_of_account(str(account_id))
        if address and "@" in address:
            self.store.link(address, conversation_id)
