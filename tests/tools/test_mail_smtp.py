"""The SMTP adapter against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from core.errors import ToolError
from tests.conftest import Clock
from tests.net import free_port
from tools.mail import SmtpMailer, compose, new_message_id
from tools.outbox import FileOutbox


@dataclass
class Inbox:
    """What the test SMTP server received."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def only_support_user(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"support", b"s3cret")
    # handled=False: aiosmtpd answers a refusal with 535 itself.
    return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    inbox: Inbox
    port: int
    ca: trustme.CA | None = None

    def client_context(self) -> ssl.SSLContext:
        assert self.ca is not None
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def start(**kwargs: Any) -> tuple[Controller, Server]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return controller, Server(inbox, port)


@pytest.fixture
def plain_server() -> Iterator[Server]:
    controller, server = start(authenticator=only_support_user, auth_require_tls=False)
    yield server
    controller.stop()


@pytest.fixture
def tls_server() -> Iterator[Server]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    # The server refuses everything but STARTTLS until the channel is encrypted, and AUTH over plain text.
    controller, server = start(
        tls_context=server_context, require_starttls=True, authenticator=only_support_user, auth_required=True
    )
    server.ca = ca
    yield server
    controller.stop()


def mailer(server: Server, clock: Clock, **kwargs: Any) -> SmtpMailer:
    options: dict[str, Any] = {"security": "none", "user": "support", "password": "s3cret", "timeout_s": 5} | kwargs
    return SmtpMailer("127.0.0.1", server.port, sender="Acme Support <help@acme.example>", clock=clock, **options)


def test_a_reply_arrives_with_its_threading_headers(plain_server: Server, clock: Clock) -> None:
    sent_id = mailer(plain_server, clock).deliver(
        "Jane Doe <jane.doe@example.com>",
        "Re: VPN\r\nBcc: everyone@example.com",
        "Try reconnecting.\n\nDid that work?",
        conversation_id="c_1",
        in_reply_to="<m2@mail.example.com>",
        references=["<m1@mail.example.com>"],
    )
    [message] = plain_server.inbox.messages
    assert message["Message-ID"] == sent_id
    assert sent_id.startswith("<") and sent_id.endswith("@acme.example>")
    assert message["In-Reply-To"] == "<m2@mail.example.com>"
    assert message["References"] == "<m1@mail.example.com> <m2@mail.example.com>"
    assert message["From"] == "Acme Support <help@acme.example>"
    assert message["To"] == "Jane Doe <jane.doe@example.com>"
    # A line break in a subject cannot smuggle in a header.
    assert message["Subject"] == "Re: VPN Bcc: everyone@example.com"
    assert message["Bcc"] is None
    assert message.get_content().replace("\r\n", "\n").strip() == "Try reconnecting.\n\nDid that work?"
    assert plain_server.inbox.envelopes == [("help@acme.example", ["jane.doe@example.com"])]


def test_a_given_message_id_is_used(plain_server: Server, clock: Clock) -> None:
    wanted = new_message_id("help@acme.example")
    assert mailer(plain_server, clock).deliver("a@example.com", "s", "b", conversation_id="c", message_id=wanted) == (
        wanted
    )
    assert plain_server.inbox.messages[0]["Message-ID"] == wanted


def test_starttls_with_login(tls_server: Server, clock: Clock) -> None:
    sender = mailer(tls_server, clock, security="starttls", ssl_context=tls_server.client_context())
    sender.deliver("bob@example.com", "Your code", "123456", conversation_id="c_2")
    assert [m["To"] for m in tls_server.inbox.messages] == ["bob@example.com"]


def test_starttls_refuses_a_server_it_does_not_trust(tls_server: Server, clock: Clock) -> None:
    # The system trust store does not know the test CA: no mail goes out over an unverified channel.
    with pytest.raises(ToolError, match="could not send mail through the SMTP relay 127.0.0.1"):
        mailer(tls_server, clock, security="starttls").deliver("bob@example.com", "s", "b", conversation_id="c")
    assert tls_server.inbox.messages == []


def test_starttls_required_but_not_offered(plain_server: Server, clock: Clock) -> None:
    with pytest.raises(ToolError, match=r"lacks what the settings ask for \(STARTTLS.*TIERONE_SMTP_SECURITY"):
        mailer(plain_server, clock, security="starttls").deliver("bob@example.com", "s", "b", conversation_id="c")
    assert plain_server.inbox.messages == []


def test_a_wrong_password_says_which_settings_to_check(plain_server: Server, clock: Clock) -> None:
    with pytest.raises(ToolError, match="refused the login .*TIERONE_SMTP_PASSWORD"):
        mailer(plain_server, clock, password="wrong").deliver("bob@example.com", "s", "b", conversation_id="c")
    assert plain_server.inbox.messages == []


def test_an_unreachable_relay_is_a_tool_error(clock: Clock) -> None:
    port = free_port()
    sender = SmtpMailer("127.0.0.1", port, sender="help@acme.example", clock=clock, security="none", timeout_s=2)
    with pytest.raises(ToolError, match=f"127.0.0.1:{port}"):
        sender.deliver("bob@example.com", "s", "b", conversation_id="c")


def test_not_an_address_is_refused_before_connecting(clock: Clock) -> None:
    sender = SmtpMailer("127.0.0.1", free_port(), sender="help@acme.example", clock=clock, security="none")
    with pytest.raises(ToolError, match="is not an email address"):
        sender.deliver("nobody", "s", "b", conversation_id="c")


def test_compose_without_a_parent_has_no_threading_headers(clock: Clock) -> None:
    message = compose(
        sender="help@acme.example", to="a@example.com", subject="Hi", body="x", message_id="<1@a>", at=clock()
    )
    assert message["In-Reply-To"] is None and message["References"] is None
    assert message["Date"] == "Mon, 23 Nov 2026 09:00:00 +0000"


def test_file_outbox_records_the_threading_headers(tmp_path: Any, clock: Clock) -> None:
    outbox = FileOutbox(tmp_path, clock)
    sent = outbox.deliver(
        "a@example.com",
        "Re: x",
        "body",
        conversation_id="c_1",
        message_id="<r@t>",
        in_reply_to="<p@c>",
        references=["<o@c>", "<p@c>"],
    )
    assert sent == "<r@t>"
    [record] = outbox.messages("c_1")
    assert (record["in_reply_to"], record["references"]) == ("<p@c>", ["<o@c>", "<p@c>"])
    # A code mail (no parent) keeps its old shape.
    outbox.deliver("a@example.com", "Code", "123456", conversation_id="c_2")
    assert "in_reply_to" not in outbox.messages("c_2")[0]


def test_settings_choose_the_relay_or_the_outbox(tmp_path: Any, clock: Clock) -> None:
    from app.mail.channel import open_mailer
    from core.settings import Settings

    outbox = FileOutbox(tmp_path, clock)
    assert open_mailer(Settings(data_dir=tmp_path), outbox, clock) is outbox
    relay = open_mailer(
        Settings(data_dir=tmp_path, smtp_host="smtp.acme.example", smtp_port=465, smtp_security="ssl"), outbox, clock
    )
    assert isinstance(relay, SmtpMailer)
    assert (relay.host, relay.port, relay.security, relay.sender) == (
        "smtp.acme.example",
        465,
        "ssl",
        "Tierone Support <support@tierone.local>",
    )


def test_a_mail_conversation_is_answered_through_the_relay(
    plain_server: Server, clock: Clock, tmp_path: Any, bundled_index: Any
) -> None:
    from agent.resolver import validate_message
    from app.mail.inbound import parse_inbound
    from app.runtime import open_runtime
    from core.settings import BUNDLED_RUNBOOKS, Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        runbooks=BUNDLED_RUNBOOKS,
        smtp_host="127.0.0.1",
        smtp_port=plain_server.port,
        smtp_security="none",
        smtp_user="support",
        smtp_password="s3cret",
        mail_from="Acme Support <help@acme.example>",
    )
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    assert runtime.email is not None
    mail = parse_inbound(
        {
            "from": "Bob <bob.smith@example.com>",
            "subject": "locked out",
            "text": "my account is locked",
            "message_id": "<b1@client.example>",
        },
        own_address=settings.mail_from,
        validate=lambda t: validate_message(t, 8000),
    )
    got = runtime.email.receive(mail)
    assert (got.replies_sent, got.replies_pending) == (1, 0)
    # The code the customer asks for goes out through the relay as well, to the address on file.
    runtime.email.receive(
        parse_inbound(
            {
                "from": "Bob <bob.smith@example.com>",
                "subject": "Re: locked out",
                "text": "bob.smith@example.com",
                "message_id": "<b2@client.example>",
                "in_reply_to": plain_server.inbox.messages[0]["Message-ID"],
            },
            own_address=settings.mail_from,
            validate=lambda t: validate_message(t, 8000),
        )
    )
    subjects = [m["Subject"] for m in plain_server.inbox.messages]
    assert subjects == ["Re: locked out", "Your Tierone support verification code", "Re: locked out"]
    first, code, second = plain_server.inbox.messages
    assert first["In-Reply-To"] == "<b1@client.example>" and second["In-Reply-To"] == "<b2@client.example>"
    # The thread's whole chain, though the customer's client sent In-Reply-To alone.
    assert second["References"] == f"<b1@client.example> {first['Message-ID']} <b2@client.example>"
    assert code["To"] == "bob.smith@example.com"
    assert runtime.outbox.messages() == []  # nothing fell back to the file
