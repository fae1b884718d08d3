from __future__ import annotations

import pytest

from core.redact import redact, redact_spans


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jdoe@corp.example please", "write to [email] please"),
        ("my pw is hunter2", "my pw is [secret]"),
        ("password: Tr0ub4dor&3", "password: [secret]"),
        ("the code is 123 456", "the code is [code]"),
        ("482910", "[code]"),
        ("call me on +44 20 7946 0958", "call me on [phone]"),
        ("card 4111 1111 1111 1111 was charged", "card [card] was charged"),
        ("IBAN DE89 3704 0044 0532 0130 00", "IBAN [iban]"),
        ("from 10.0.0.12 only", "from [ip] only"),
        ("my password expired yesterday", "my password expired yesterday"),
        ("my password is not working", "my password is not working"),
        ("3 laptops since 2026", "3 laptops since 2026"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_card_number_failing_luhn_is_not_a_card() -> None:
    assert "[card]" not in redact("order 4111 1111 1111 1112")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I was born 03/04/1990", "I was born [dob]"),
        ("date of birth: April 3, 1990", "date of birth: [dob]"),
        ("DOB 1990-04-03, line 07700 900123", "DOB [dob], line [phone]"),
        # Dates that are not a birth date stay: a time, a date without a year, a date without birth words.
        ("no signal since 05:04 pm", "no signal since 05:04 pm"),
        ("my bill of 3 March is wrong", "my bill of 3 March is wrong"),
        ("the outage on 2026-01-05 again", "the outage on 2026-01-05 again"),
    ],
)
def test_dates_of_birth_only_where_one_is_meant(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_an_answer_to_a_birth_date_question_has_every_whole_date_redacted() -> None:
    text, _ = redact_spans("07700 900123 3rd of April 1990, bill of 3 March", dates=True)
    assert text == "[phone] [dob], bill of 3 March"
    text, _ = redact_spans("07700900123 and 03/04/90", dates=True)
    assert text == "[phone] and [dob]"
