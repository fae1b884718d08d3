"""PII redaction: find personal data and secrets in a message and replace them with typed placeholders.

Everything stored for people or processes to read (transcripts in packets and checkpoints, tool
arguments, logs) goes through here first. ``find`` returns the spans it would replace, so the
service can move the few values a tool needs (an email address, a one-time code) into the vault
before the text goes anywhere else.

Classes and placeholders: ``[email]``, ``[phone]``, ``[card]`` (Luhn-valid), ``[iban]`` (mod-97
valid), ``[ip]`` (v4 and v6), ``[national_id]`` (US SSN, UK NI number, Spanish DNI/NIE with its
check letter, Dutch BSN with its 11-check, Indian Aadhaar with its Verhoeff digit, and any value
after words such as "passport number" or "tax id"), ``[address]`` (street addresses in English,
German, Dutch, French, Spanish and Italian forms), ``[secret]`` (passwords, API keys, bearer
tokens, JWTs, private keys, long hex or base64 blobs), ``[code]`` (one-time codes) and ``[dob]``
(a whole date after "born" or "date of birth", or any whole date in an answer to a question that
asked for one: ``find(text, dates=True)``).

Detection is rules and check digits only: no model, no network; about 0.1 ms for a typical
message and under 0.1 s for the longest one accepted (8,000 characters), adversarial shapes
included. Recall and precision are measured on tests/data/pii_labelled.jsonl (see SECURITY.md).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["email", "phone", "card", "iban", "ip", "national_id", "address", "secret", "code", "dob"]
# Every kind ``find`` reports in any message; a date of birth (``dob``) only where one is surely meant.
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "ip", "national_id", "address", "secret", "code")

# When two findings overlap, the one of the earlier kind here wins.
_ORDER: tuple[Kind, ...] = ("secret", "email", "iban", "card", "national_id", "ip", "address", "dob", "phone", "code")
_PRIORITY: dict[Kind, int] = {k: i for i, k in enumerate(_ORDER)}


@dataclass(frozen=True)
class Span:
    """One finding: ``text[start:end]`` is a value of ``kind``."""

    start: int
    end: int
    kind: Kind


# --- secrets -------------------------------------------------------------------------------------

# Words that follow "password is" in sentences about a password rather than in a password.
_NOT_A_SECRET = (
    "expired|expiring|expires|wrong|incorrect|invalid|locked|not|no|too|the|my|a|an|still|correct|being|getting|"
    "working|required|needed|changed|blank|empty|also|same|different|fine|ok|okay|rejected|accepted|and|but|for|to|"
    "in|on|of|that|this|it|which|because|so|when|never|always|now|just|already|definitely|probably|weak|strong|long|"
    "short|valid|broken|gone|lost|forgotten|unknown|right|saved|stored|asking|prompt|field|manager|policy|history|"
    "requirements|sync|reset|resets|resetting|change|changes|complexity|again|at|with|from|after|before|until|"
    "doesn|didn|isn|wasn|won|can|cannot|will|would|should|could|has|have|had|is|was|were|are|be|been|i|you|we|they|"
    "he|she|there|here|what|how|why|where|who|same|new|old|one|link|page|screen|box|form|expiry|expiration|age|"
    "stuck|failing|failed|case|sensitive|hint|hidden|masked|saved|remembered|please|help|issue|problem|error|missing|"
    "present|configured|here|above|below|attached|revoked|leaked|exposed|compromised|rotated|disabled|enabled|"
    "active|inactive|deleted|generated|created|shown|displayed|visible|copied|pasted|field|for|ist|war"
)
_SECRET_WORD = (
    r"pass(?:word|wd|phrase|code)?|pw|pwd|pin|api[ _-]?key|apikey|access[ _-]?key|secret(?:[ _-]?key)?|"
    r"client[ _-]?secret|token|auth[ _-]?token|private[ _-]?key|credentials?|kennwort|passwort|wachtwoord|"
    r"mot de passe|contraseña"
)
_VALUE = r"""(?:"[^"\n]{1,80}"|'[^'\n]{1,80}'|`[^`\n]{1,80}`|[^\s"'`]+)"""
# "password: X", "my pw is X", "api key = X", "the password I used was X"
_SECRET_AFTER_WORD = re.compile(
    rf"(?i)\b(?:{_SECRET_WORD})\b(?:\s+(?:I|we)\s+(?:used|use|typed|type|tried|set|chose|entered|have))?"
    rf"(?:\s*(?:=|:|->|=>)\s*|\s+(?:is|was|ist|war|es|est)\s+(?:now\s+)?|\s+set\s+to\s+|\s*\(\s*"
    rf"|\s+(?=[^\s]*\d)(?=[^\s]{{4,}}))"
    rf"(?!(?:{_NOT_A_SECRET})\b)({_VALUE})"
)
# "the new one is X", "old one was X", "I changed it to X", "I set it to X", "tried X as password"
_SECRET_BY_CONTEXT = re.compile(
    rf"(?i)\b(?:(?:new|old|current|temporary|temp|previous|last)\s+one\s+(?:is|was|=|:)|"
    rf"(?:changed|set|reset)\s+(?:it|mine|my\s+(?:password|pw|pin|passcode))\s+to|(?:tried|typed|used)\s+(?=\S*\d)(?=\S+\s+as\s+(?:my\s+)?pass))"
    rf"\s*(?!(?:{_NOT_A_SECRET})\b)({_VALUE})"
)
_TOKENS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|\beyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]{5,}"  # JWT
    r"|(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]{12,}"
    r"|\b(?:sk|pk|rk)-(?:live_|test_|proj-|ant-)?[A-Za-z0-9_-]{16,}"
    r"|\b(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|\bglpat-[A-Za-z0-9_-]{16,}|\bxox[abprs]-[A-Za-z0-9-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,}"
    r"|(?<![\w/])[0-9a-fA-F]{32,}(?![\w])"  # long hex
    r"|(?<![\w/+=.-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[A-Z])"
    r"[A-Za-z0-9+/_-]{28,}={0,2}(?![\w/+=-])"  # base64 blob
)
_URL_PASSWORD = re.compile(r"://[^/\s:@]+:([^@\s/]+)@")
# Password-shaped tokens without any keyword: letters, digits and a symbol, 8 characters or more.
_PW = r"[A-Za-z0-9!#$%^&*?~+=@_]"
_PASSWORD_SHAPE = re.compile(
    rf"(?<![\w@/.:-])(?={_PW}*[A-Za-z])(?={_PW}*\d)(?={_PW}*[!#$%^&*?~+=@]){_PW}{{8,64}}(?![\w@/.-]|{_PW})"
)

# --- contact -------------------------------------------------------------------------------------

# The one email-address pattern: redaction, routing and the grounding check all use it.
EMAIL = re.compile(r"(?<![\w.+'-])[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
_EMAIL_SPELLED = re.compile(
    r"(?i)(?<![\w.])[\w.+-]+\s*(?:\[at\]|\(at\)|\{at\}|\sat\s)\s*[\w-]+(?:\s*(?:\[dot\]|\(dot\)|\{dot\}|\sdot\s)\s*[\w-]+)+"
)
_PHONE_CANDIDATE = re.compile(r"(?<![\w+.,/:-])(?:\+|00)?\(?\d[\d\s().\-/]{5,22}\d(?![\w.-]?\d)(?!\w)")
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:call|phone|mobile|cell|tel|telephone|number|reach|ring|whatsapp|sms|text|landline|fax|ext)\b[^.\n]{0,25}$"
)
_DATE = re.compile(r"^\d{1,4}[./-]\d{1,2}[./-]\d{1,4}$")

# --- dates of birth ------------------------------------------------------------------------------

# A whole date, year included ("03/04/1990", "1990-04-03", "3rd of April 1990", "April 3, 1990"):
# a date without a year ("my bill of 3 March") or a time ("since 05:04 pm") is never one.
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_FULL_DATE = re.compile(
    r"(?i)(?<![\w./-])(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH}\.?,?\s+\d{{4}}"
    rf"|{_MONTH}\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})(?![\w/-]|\.\d)"
)
# Words after which a date is a date of birth, in any message.
_BIRTH_BEFORE = re.compile(r"(?i)\b(?:born|birth(?:day|date)?|dob|d\.o\.b\.?)\b[^.\n\d]{0,25}$")

# --- money ---------------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"(?i)\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")

# --- network -------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?![\w.]\d)")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:.]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:.]{2,45}(?:%\w+)?(?![\w:])")
_VERSION_CONTEXT = re.compile(r"(?i)\b(?:version|ver|v|build|release|firmware|driver|kb|update)\.?\s*$")

# --- national ids --------------------------------------------------------------------------------

_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_NINO = re.compile(r"(?i)\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_DNI = re.compile(r"(?i)\b([XYZ]?)(\d{7,8})[ -]?([A-Z])\b")
_AADHAAR = re.compile(r"(?<![\d-])[2-9]\d{3}[ -]?\d{4}[ -]?\d{4}(?![\d-])")
_BSN = re.compile(r"(?i)\b(?:bsn|burgerservicenummer)\b\D{0,15}(\d{9})\b")
_ID_AFTER_WORD = re.compile(
    r"(?i)\b(?:passport|national id|national identity|id card|identity card|social security|ssn|sin|"
    r"tax id|tin|personnummer|personal number|nin|ni number|national insurance|steuer-id|codice fiscale|nif|nie|"
    r"dni|pesel|cpr|driver'?s licen[cs]e)(?:\s+(?:number|no\.?|#|nr\.?))?(?:\s*(?:is|was|:|=|-)\s*|\s+)"
    r"((?=[A-Z0-9 -]*\d)[A-Z0-9][A-Z0-9 -]{4,18}[A-Z0-9])\b"
)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

# --- addresses -----------------------------------------------------------------------------------

_STREET_SUFFIX = (
    r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|square|sq|terrace|"
    r"close|crescent|parkway|pkwy|highway|hwy|row|mews|gardens|hill|grove"
)
_CAP = r"[A-Z][\w'’.-]*"
_ADDRESS = re.compile(
    # 221B Baker Street, 1600 Pennsylvania Ave NW, 12 rue de la Paix
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:{_CAP}\s+){{0,4}}(?i:{_STREET_SUFFIX})\b\.?(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    rf"|\b\d{{1,5}}[a-z]?,?\s+(?i:rue|avenue|boulevard|bd|chemin|impasse|allée|place|quai)\s+"
    rf"(?:(?:de|du|des|la|le|l'|d')\s*)*{_CAP}(?:\s+{_CAP})?"
    # Hauptstraße 5, Keizersgracht 123, Rue de Rivoli 10, Calle Mayor 5, Via Roma 3
    rf"|\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|laan|straat|gracht|plein|kade|"
    rf"dijk|singel)\s+\d{{1,4}}[a-z]?\b"
    rf"|\b(?:Rue|Avenue|Boulevard|Calle|Avenida|Via|Viale|Piazza|Corso|Rua|Plaza|Paseo)\s+(?:(?:de|del|de la|des|du|"
    rf"della|dei|do|da)\s+)?{_CAP}(?:\s+{_CAP})?,?\s+\d{{1,4}}[a-z]?\b"
    rf"|\b(?i:p\.?\s?o\.?\s+box)\s+\d{{1,6}}\b"
)
# What may follow a street: unit, town, region and postcode.
_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|\d{4}\s?[A-Z]{2}\b|\d{4,5}(?:-\d{4})?|[A-Z]{2}\s+\d{5}(?:-\d{4})?)"
_TOWN = r"[A-Z][a-zäöüéèàß]+(?:[ -][A-Z][a-zäöüéèàß]+)?"
_ADDRESS_TAIL = re.compile(
    r"^(?:,?\s*(?i:apt|apartment|suite|unit|flat|floor)\.?\s*#?\w{1,5})?"
    rf"(?:,\s*(?:{_POSTCODE}(?:\s+{_TOWN})?|{_TOWN}(?:,?\s+{_POSTCODE})?)){{0,3}}"
)

# --- one-time codes ------------------------------------------------------------------------------

_CODE = re.compile(r"(?<![\w@#.:/-])(\d{3})[ -]?(\d{3})(?![\w-]|\.\d)")
_CODE_AFTER_WORD = re.compile(
    r"(?i)\b(?:code|otp|one[- ]time (?:code|password)|passcode|verification (?:number|code)|2fa|mfa code|token code)"
    r"\b(?:\s*(?:is|was|:|=)\s*|\s+)(\d{4,8}|\d{3}[ -]\d{3})(?![\w-])"
)
# Numbers after these words are references, not codes.
_REFERENCE_BEFORE = re.compile(
    r"(?i)\b(?:ticket|case|order|invoice|ref|reference|incident|request|req|inc|build|version|error|err|port|"
    r"extension|ext|room|employee|id|po|sku|item|kb|account|acct|customer|member|job|batch|serial)\b\W{0,3}$"
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _iban_ok(value: str) -> bool:
    compact = re.sub(r"\s", "", value).upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in moved)
    return int(number) % 97 == 1


_VERHOEFF_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_VERHOEFF_P = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
    [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
    [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
    [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
    [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
    [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
    [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
]


def _verhoeff(digits: str) -> bool:
    check = 0
    for i, ch in enumerate(reversed(digits)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[i % 8][int(ch)]]
    return check == 0


def _bsn_ok(digits: str) -> bool:
    total = sum(int(d) * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - int(digits[8])
    return total % 11 == 0 and digits != "000000000"


def _dni_ok(match: re.Match[str]) -> bool:
    prefix, number, letter = match.group(1).upper(), match.group(2), match.group(3).upper()
    if prefix:
        if len(number) != 7:
            return False
        number = str("XYZ".index(prefix)) + number
    elif len(number) != 8:
        return False
    return _DNI_LETTERS[int(number) % 23] == letter


def _trim_value(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop quotes around a value and sentence punctuation after it."""
    value = text[start:end]
    if len(value) >= 2 and value[0] in "\"'`" and value[-1] == value[0]:
        return start + 1, end - 1
    while end > start + 1 and text[end - 1] in ".,;:)]}\"'":
        end -= 1
    return start, end


def _phone_ok(text: str, start: int, value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if not 7 <= len(digits) <= 15 or _DATE.match(value.strip()):
        return False
    separators = re.findall(r"[\s().\-/]+", value.strip())
    if "." in value and not value.startswith(("+", "00")):
        groups = re.split(r"\.", value)
        if len(groups) > 4 or any(len(re.sub(r"\D", "", g)) < 2 for g in groups):
            return False
    if value.startswith(("+", "00")) and len(digits) >= 8:
        return True
    if "(" in value and ")" in value:
        return True
    if _PHONE_CONTEXT.search(text[max(0, start - 40) : start]):
        return True
    if value.startswith("0") and len(digits) >= 10:
        return True
    return len(separators) >= 2 and len(digits) >= 9


def _dates_of_birth(text: str, dates: bool) -> list[Span]:
    """Whole dates after "born", "date of birth", "DOB"; with ``dates``, every whole date."""
    return [
        Span(m.start(), m.end(), "dob")
        for m in _FULL_DATE.finditer(text)
        if dates or _BIRTH_BEFORE.search(text[max(0, m.start() - 40) : m.start()])
    ]


def find(text: str, *, dates: bool = False) -> list[Span]:
    """Every PII or secret span in the text, left to right, without overlaps.

    A date is a date of birth after words such as "born" or "date of birth"; ``dates`` makes every
    whole date (year included) one, for an answer to a question that asked for a date of birth.
    """
    found: list[Span] = []
    births = _dates_of_birth(text, dates)
    found.extend(births)
    # Phone numbers are looked for with the dates blanked, so "07700 900123 03/04/1990" is both.
    blanked = text
    for span in births:
        blanked = blanked[: span.start] + " " * (span.end - span.start) + blanked[span.end :]

    def add(start: int, end: int, kind: Kind) -> None:
        if end > start:
            found.append(Span(start, end, kind))

    for m in _SECRET_AFTER_WORD.finditer(text):
        start, end = _trim_value(text, m.start(1), m.end(1))
        # "the password of jane@example.com", "login: jane@example.com": an address, not a secret
        add(start, end, "email" if EMAIL.fullmatch(text[start:end]) else "secret")
    for m in _SECRET_BY_CONTEXT.finditer(text):
        add(*_trim_value(text, m.start(1), m.end(1)), "secret")
    for m in _TOKENS.finditer(text):
        add(m.start(), m.end(), "secret")
    for m in _URL_PASSWORD.finditer(text):
        add(m.start(1), m.end(1), "secret")
    for m in _PASSWORD_SHAPE.finditer(text):
        if not EMAIL.search(m.group(0)):
            add(*_trim_value(text, m.start(), m.end()), "secret")
    for m in EMAIL.finditer(text):
        add(m.start(), m.end(), "email")
    for m in _EMAIL_SPELLED.finditer(text):
        add(m.start(), m.end(), "email")
    for m in _IBAN.finditer(text):
        if _iban_ok(m.group(0)):
            add(m.start(), m.end(), "iban")
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and _luhn(digits):
            add(m.start(), m.end(), "card")
    for m in _SSN.finditer(text):
        add(m.start(), m.end(), "national_id")
    for m in _NINO.finditer(text):
        if any(ch.isupper() for ch in m.group(0)) or _ID_AFTER_WORD.search(text[max(0, m.start() - 30) : m.end()]):
            add(m.start(), m.end(), "national_id")
    for m in _DNI.finditer(text):
        if _dni_ok(m):
            add(m.start(), m.end(), "national_id")
    for m in _AADHAAR.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if _verhoeff(digits) and re.search(r"(?i)aadhaar|uid", text[max(0, m.start() - 40) : m.start()]):
            add(m.start(), m.end(), "national_id")
    for m in _BSN.finditer(text):
        if _bsn_ok(m.group(1)):
            add(m.start(1), m.end(1), "national_id")
    for m in _ID_AFTER_WORD.finditer(text):
        add(m.start(1), m.end(1), "national_id")
    for m in _IPV4.finditer(text):
        if not _VERSION_CONTEXT.search(text[max(0, m.start() - 12) : m.start()]):
            add(m.start(), m.end(), "ip")
    for m in _IPV6_CANDIDATE.finditer(text):
        candidate = m.group(0).split("%")[0]
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        add(m.start(), m.end(), "ip")
    for m in _ADDRESS.finditer(text):
        tail = _ADDRESS_TAIL.match(text[m.end() :])
        add(m.start(), m.end() + (tail.end() if tail else 0), "address")
    for m in _PHONE_CANDIDATE.finditer(blanked):
        value = m.group(0).rstrip(" -/(")
        if _phone_ok(blanked, m.start(), value):
            add(m.start(), m.start() + len(value), "phone")
    for m in _CODE_AFTER_WORD.finditer(text):
        add(m.start(1), m.end(1), "code")
    for m in _CODE.finditer(text):
        if not _REFERENCE_BEFORE.search(text[max(0, m.start() - 20) : m.start()]):
            add(m.start(), m.end(), "code")

    # Keep the strongest finding where two overlap: the earlier kind in _PRIORITY, then the longer.
    chosen: list[Span] = []
    for span in sorted(found, key=lambda s: (_PRIORITY[s.kind], -(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def placeholder(kind: Kind) -> str:
    """The placeholder that stands for a value of this kind."""
    return f"[{kind}]"


def redact_spans(text: str, *, dates: bool = False) -> tuple[str, list[tuple[Span, Span]]]:
    """Redact the text; also return each (span in the original, span of its placeholder in the result).

    ``dates``: every whole date is a date of birth (see ``find``).
    """
    out: list[str] = []
    pairs: list[tuple[Span, Span]] = []
    at = 0
    length = 0
    for span in find(text, dates=dates):
        out.append(text[at : span.start])
        length += span.start - at
        mark = placeholder(span.kind)
        pairs.append((span, Span(length, length + len(mark), span.kind)))
        out.append(mark)
        length += len(mark)
        at = span.end
    out.append(text[at:])
    return "".join(out), pairs


def redact(text: str) -> str:
    """Replace every email, phone number, card, IBAN, IP, national id, address, secret, code and birth date."""
    return redact_spans(text)[0]


def mask_email(email: str) -> str:
    """Show an address as its first letter and domain (``j***@example.com``), for replies and packets."""
    name, _, domain = email.strip().partition("@")
    return f"{name[:1]}***@{domain}" if domain and name else "[email]"
