"""PII redaction for anything stored for people to read: transcripts in packets, logs."""

from __future__ import annotations

import re

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SECRET = re.compile(
    r"(?i)\b(pass(?:word|wd|code)?|pw|pwd|api[ _-]?key|token|secret)\b(\s*(?:is|was|=|:)\s*)"
    r"(?!(?:expired|wrong|incorrect|invalid|locked|not|no|too|the|my|a|an|still|correct)\b)(\S+)"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_IP = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_PHONE = re.compile(r"(?<![\w])\+?\d[\d ()./-]{7,}\d\b")
_CODE = re.compile(r"\b\d{3}[ -]?\d{3}\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def redact(text: str) -> str:
    """Replace emails, secrets, card numbers, IBANs, IPs, phone numbers and codes with placeholders."""
    text = _EMAIL.sub("[email]", text)
    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}[secret]", text)
    text = _IBAN.sub("[iban]", text)
    text = _CARD.sub(_card, text)
    text = _IP.sub("[ip]", text)
    text = _PHONE.sub("[phone]", text)
    return _CODE.sub("[code]", text)
