from __future__ import annotations

import pytest

from core.redact import redact


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
