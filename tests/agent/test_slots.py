"""Reading slot values out of answers: each type, and the problem named when an answer does not fit."""

from __future__ import annotations

import pytest

from agent.slots import mask_phone, read_slot
from core.pack import Slot

GB = Slot(type="int", ask="How many GB?", min=1, max=2)
PLAN = Slot(type="enum", ask="Which plan?", values=["prepaid", "monthly"])
PHONE = Slot(type="phone", ask="Which number?")
YESNO = Slot(type="yesno", ask="Shall I go ahead?")
TEXT = Slot(type="text", ask="Where are you?")


@pytest.mark.parametrize(
    ("slot", "answer", "value"),
    [
        (GB, "2", 2),
        (GB, "just 1 GB please", 1),
        (PLAN, "I'm on the Monthly one", "monthly"),
        (PHONE, "it's +44 7700 900123", "+447700900123"),
        (PHONE, "07700-900-123", "07700900123"),
        (YESNO, "yes please", True),
        (YESNO, "no, cancel that", False),
        (TEXT, "Lisbon", "Lisbon"),
    ],
)
def test_a_valid_answer_gives_the_value(slot: Slot, answer: str, value: object) -> None:
    read = read_slot(slot, answer)
    assert (read.value, read.problem) == (value, None)


@pytest.mark.parametrize(
    ("slot", "answer", "problem"),
    [
        (GB, "5", "it must be between 1 and 2"),
        (GB, "a couple", "please answer with one whole number, in digits"),
        (GB, "1 or 2", "please answer with one whole number, in digits"),
        (PLAN, "the cheap one", "please answer with one of: prepaid, monthly"),
        (PLAN, "prepaid or monthly", "please answer with one of: prepaid, monthly"),
        (PHONE, "call me at home", "please type the phone number"),
        (PHONE, "12 34", "please type the phone number"),
        (YESNO, "maybe", "a yes or a no is enough"),
        (TEXT, "   ", "the answer was empty"),
    ],
)
def test_an_invalid_answer_is_never_guessed(slot: Slot, answer: str, problem: str) -> None:
    read = read_slot(slot, answer)
    assert read.value is None
    assert read.problem is not None and read.problem.startswith(problem)


def test_a_phone_number_is_masked_but_its_end() -> None:
    assert mask_phone("+447700900123") == "••••••••••123"
