"""Reading a slot's value out of a customer's answer, and saying what was wrong when it does not fit."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.pack import Slot, SlotValue

_INT = re.compile(r"(?<![\d.])-?\d+(?![\d.])")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s\-().]{5,20}\d(?!\w)")
_YES = re.compile(r"^\s*(?:y|yes|yep|yeah|sure|correct|ok(?:ay)?|i do|please do|go ahead|confirm(?:ed)?)\b", re.I)
_NO = re.compile(r"^\s*(?:n|no|nope|nah|not really|don'?t|do not|cancel)\b", re.I)


@dataclass(frozen=True)
class SlotReading:
    """A slot's value read from an answer, or why none could be."""

    value: SlotValue | None = None
    problem: str | None = None


def read_slot(slot: Slot, text: str) -> SlotReading:
    """Read ``slot`` from ``text``; never guesses: an answer that does not validate gives a problem."""
    answer = text.strip()
    if not answer:
        return SlotReading(problem="the answer was empty")
    if slot.type == "int":
        numbers = _INT.findall(answer)
        if len(numbers) != 1:
            return SlotReading(problem="please answer with one whole number, in digits")
        value = int(numbers[0])
        if (slot.min is not None and value < slot.min) or (slot.max is not None and value > slot.max):
            return SlotReading(problem=f"it must be between {slot.min} and {slot.max}")
        return SlotReading(value=value)
    if slot.type == "enum":
        lowered = answer.lower()
        named = [v for v in slot.values if re.search(rf"\b{re.escape(v.lower())}\b", lowered)]
        if len(named) != 1:
            return SlotReading(problem="please answer with one of: " + ", ".join(slot.values))
        return SlotReading(value=named[0])
    if slot.type == "phone":
        found = _PHONE.findall(answer)
        digits = re.sub(r"\D", "", found[0]) if len(found) == 1 else ""
        if not 7 <= len(digits) <= 15:
            return SlotReading(problem="please type the phone number with its digits, for example +44 7700 900123")
        return SlotReading(value=("+" if found[0].lstrip().startswith("+") else "") + digits)
    if slot.type == "yesno":
        yes, no = bool(_YES.search(answer)), bool(_NO.search(answer))
        if yes == no:
            return SlotReading(problem="a yes or a no is enough")
        return SlotReading(value=yes)
    return SlotReading(value=answer)


def mask_phone(value: str) -> str:
    """A phone number as packets and transcripts show it: the last three digits only."""
    return "•" * max(len(value) - 3, 0) + value[-3:]
