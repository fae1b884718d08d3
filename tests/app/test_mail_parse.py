"""Reading inbound mail: quoted text and signatures, fields, Message-IDs, the webhook's credentials."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from agent.resolver import validate_message
from app.mail.inbound import authenticate, message_ids, parse_inbound, strip_reply, thread_subject
from core.errors import MessageRejected
from core.signing import sign

OWN = "Acme Support <help@acme.example>"


def parse(**fields: Any) -> Any:
    base: dict[str, Any] = {
        "from": "Jane Doe <jane.doe@example.com>",
        "subject": "VPN keeps dropping",
        "text": "The VPN disconnects every few minutes.",
        "message_id": "<m1@mail.example.com>",
    }
    return parse_inbound(base | fields, own_address=OWN, validate=lambda t: validate_message(t, 8000))


@pytest.mark.parametrize(
    ("body", "new"),
    [
        (
            "yes, that worked\n\nOn Mon, 23 Nov 2026 at 09:00, Acme Support <help@acme.example> wrote:\n"
            "> Can you sign in now?\n> \n> -- \n> Acme Support",
            "yes, that worked",
        ),
        # A client that wraps the attribution line.
        (
            "still broken\n\nOn Mon, 23 Nov 2026 at 09:00, Acme Support\n<help@acme.example> wrote:\n> old text",
            "still broken",
        ),
        ("thanks!\n-- \nJane Doe\nFinance, 3rd floor\n+44 20 7946 0000", "thanks!"),
        ("thanks!\n--\nJane", "thanks!"),
        ("no luck\n\nSent from my iPhone", "no luck"),
        # Inline answers between quotes are kept; the quotes go.
        ("> Which floor?\n3rd\n> Which printer?\nthe big one by the window", "3rd\nthe big one by the window"),
        (
            "it is back\n\n-----Original Message-----\nFrom: Acme Support\nSent: Monday\nSubject: VPN",
            "it is back",
        ),
        (
            "see below\n\nFrom: Acme Support <help@acme.example>\nSent: Monday, 23 November 2026 09:00\n"
            "To: Jane\nSubject: RE: VPN\n\nCan you sign in now?",
            "see below",
        ),
        ("ok\n________________________________\nFrom: Acme Support", "ok"),
        (
            "danke, geht wieder\n\nAm 23.11.2026 um 09:00 schrieb Acme Support <help@acme.example>:\n> Hallo",
            "danke, geht wieder",
        ),
        ("\r\n\r\nline one\r\n\r\n\r\n\r\nline two\r\n", "line one\n\nline two"),
        # Text that merely mentions these words stays.
        ("On Monday I wrote to IT about this, no answer", "On Monday I wrote to IT about this, no answer"),
        ("From: now on the printer says offline", "From: now on the printer says offline"),
    ],
)
def test_strip_reply(body: str, new: str) -> None:
    assert strip_reply(body) == new


def test_a_mail_is_read_into_its_parts() -> None:
    mail = parse(in_reply_to="<r2@acme.example>", references="<m0@mail.example.com> <r1@acme.example>")
    assert (mail.sender, mail.sender_name, mail.message_id) == (
        "jane.doe@example.com",
        "Jane Doe",
        "<m1@mail.example.com>",
    )
    assert mail.reply_to == "Jane Doe <jane.doe@example.com>"
    # Parents: In-Reply-To first, then References newest first.
    assert mail.parents == ("<r2@acme.example>", "<r1@acme.example>", "<m0@mail.example.com>")
    assert mail.references == ("<m0@mail.example.com>", "<r1@acme.example>")


def test_service_spellings_of_the_fields_are_read() -> None:
    mail = parse_inbound(
        {
            "sender": "bob.smith@example.com",
            "Subject": "Locked out",
            "body-plain": "My account is locked.",
            "Message-Id": "abc123@mail.example.com",
            "In-Reply-To": "<r1@acme.example>",
        },
        own_address=OWN,
        validate=lambda t: validate_message(t, 8000),
    )
    assert (mail.sender, mail.text, mail.message_id, mail.parents) == (
        "bob.smith@example.com",
        "My account is locked.",
        "<abc123@mail.example.com>",
        ("<r1@acme.example>",),
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"from": ""}, "'from' is missing or empty"),
        ({"from": None}, "'from' is missing or empty"),
        ({"from": "Jane Doe"}, "'from' holds no email address"),
        ({"from": "jane@localhost"}, "'from' holds no email address"),
        ({"from": 42}, "'from' must be text, not int"),
        ({"from": "help@acme.example"}, "Tierone's own address"),
        ({"text": "   "}, "'text' is missing or empty"),
        ({"text": "> only a quote\n\nOn Mon, X wrote:\n> more"}, "no new text above the quoted reply"),
        ({"text": "-- \nJane Doe"}, "no new text"),
        ({"text": "x" * 9000}, "the limit is 8,000"),
        ({"text": "bad \x00 byte"}, "control character"),
        ({"message_id": ""}, "'message_id' is missing or empty"),
        ({"message_id": "<a@b> <c@d>"}, "one Message-ID"),
        ({"message_id": "not an id"}, "one Message-ID"),
        ({"subject": ["a"]}, "'subject' must be text, not list"),
    ],
)
def test_bad_fields_are_refused_by_name(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(MessageRejected, match=says):
        parse(**fields)


def test_message_ids() -> None:
    assert message_ids(" <a@b>\r\n\t<c@d> ") == ["<a@b>", "<c@d>"]
    assert message_ids("bare@id") == ["<bare@id>"]
    assert message_ids("") == []
    assert thread_subject("RE: Fwd: AW:  VPN\r\n keeps dropping") == "VPN keeps dropping"
    assert thread_subject("Re[2]: printer") == "printer"


def basic(password: str, user: str = "inbound") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("signature", "authorization", "expected"),
    [
        (None, None, "missing"),
        (sign("s3cret", b"body"), None, "ok"),
        ("sha256=" + sign("s3cret", b"body"), None, "ok"),
        (sign("s3cret", b"body").upper(), None, "ok"),
        (sign("other", b"body"), None, "wrong"),
        (sign("s3cret", b"another body"), None, "wrong"),
        ("", None, "wrong"),
        (None, basic("s3cret"), "ok"),
        (None, basic("wrong"), "wrong"),
        (None, "Basic !!!not-base64", "wrong"),
        (None, "Bearer s3cret", "missing"),
        (sign("other", b"body"), basic("s3cret"), "ok"),
    ],
)
def test_authenticate(signature: str | None, authorization: str | None, expected: str) -> None:
    assert authenticate("s3cret", b"body", signature, authorization) == expected


def test_thread_headers_are_read_from_a_raw_header_block() -> None:
    # SendGrid's Inbound Parse shape: the Message-ID and In-Reply-To only inside "headers".
    mail = parse_inbound(
        {
            "from": "Jane Doe <jane.doe@example.com>",
            "subject": "Re: VPN",
            "text": "still dropping",
            "headers": "Received: by mx.example.com\r\nMessage-ID: <m9@mail.example.com>\r\n"
            "In-Reply-To: <r1@acme.example>\r\nReferences: <m1@mail.example.com>\r\n <r1@acme.example>\r\n"
            "Subject: Re: VPN\r\n",
            "SPF": "pass",
        },
        own_address=OWN,
        validate=lambda t: validate_message(t, 8000),
    )
    assert mail.message_id == "<m9@mail.example.com>"
    assert mail.parents == ("<r1@acme.example>", "<m1@mail.example.com>")
