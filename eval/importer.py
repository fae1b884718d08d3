"""Import a public intent dataset ([text, intent] pairs) as a runbook pack plus eval cases.

k examples per intent become the runbook's ``examples``; the rest become cases. Intents held out
get no runbook: their cases expect a handoff with no runbook, so the "nothing fits" boundary is
measured on data nobody here wrote.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

from core.errors import CaseFileError


@dataclass(frozen=True)
class ImportReport:
    """What an import wrote."""

    runbooks: int
    held_out: list[str]
    cases: int
    pack_dir: Path
    cases_file: Path


def _read_pairs(path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise CaseFileError(f"{path}: is not UTF-8 text ({exc.reason})") from exc
    except json.JSONDecodeError as exc:
        raise CaseFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, list):
        raise CaseFileError(f"{path}: expected a JSON list of [text, intent] pairs, got a {type(data).__name__}")
    pairs = []
    for i, pair in enumerate(data):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise CaseFileError(f"{path}: item {i}: expected a [text, intent] pair, got {json.dumps(pair)[:80]}")
        for field, value in zip(("text", "intent"), pair, strict=True):
            if not isinstance(value, str):
                raise CaseFileError(f"{path}: item {i}: {field}: expected a string, got {json.dumps(value)[:80]}")
        pairs.append((pair[0], pair[1]))
    return pairs


def write_policy(pack_dir: Path, updates: dict[str, object]) -> None:
    """Merge top-level keys into a pack's policy.yaml (created when missing)."""
    path = pack_dir / "policy.yaml"
    raw = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


def _kebab(intent: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", intent.lower()).strip("-")


def _ids(intents: list[str]) -> dict[str, str]:
    """A valid, unique runbook id per intent (an intent with no ASCII letters or digits gets a hash)."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for intent in intents:
        base = _kebab(intent) or "intent-" + hashlib.sha256(intent.encode()).hexdigest()[:8]
        rid, n = base, 2
        while rid in taken:
            rid, n = f"{base}-{n}", n + 1
        ids[intent] = rid
        taken.add(rid)
    return ids


def _title(intent: str) -> str:
    """A one-line title of at least 3 characters, as the pack's lint asks."""
    title = " ".join(intent.replace("_", " ").split()).capitalize()
    return title if len(title) >= 3 else f"Intent {title or intent!r}".strip()


def _write_runbooks(
    pack_dir: Path,
    by_intent: dict[str, list[str]],
    ids: dict[str, str],
    held_out: list[str],
    rng: random.Random,
    *,
    k: int,
    category: str,
) -> list[tuple[str, str]]:
    """Write one runbook per intent not held out, with up to ``k`` of its texts as examples.

    An intent left with no example of its own is appended to ``held_out``.

    Returns:
        The [text, intent] pairs not used as examples, in the order met.
    """
    intents = sorted(by_intent)
    leftovers: list[tuple[str, str]] = []
    used: set[str] = set()  # an example may belong to one runbook only (the lint's rule)
    for intent in intents:
        texts = list(dict.fromkeys(by_intent[intent]))
        rng.shuffle(texts)
        if intent in held_out:
            leftovers.extend((t, intent) for t in texts)
            continue
        fresh = [t for t in texts if " ".join(t.lower().split()) not in used]
        examples = fresh[:k]
        rest = [t for t in texts if t not in examples]
        leftovers.extend((t, intent) for t in rest)
        if not examples:  # every text is another intent's example: nothing to route by
            held_out.append(intent)
            continue
        used.update(" ".join(t.lower().split()) for t in examples)
        rid = ids[intent]
        title = _title(intent)
        front = {"id": rid, "title": title, "category": category, "tier": 1, "examples": examples}
        body = (
            f"Imported intent {json.dumps(intent)}.\n\n"
            f"## Steps\n1. Follow the documented answer for {title.lower()}.\n\n"
            "## Check\nDid that answer your question?\n"
        )
        (pack_dir / f"{rid}.md").write_text(
            "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body, encoding="utf-8"
        )
    return leftovers


def _write_cases(cases_file: Path, case_pairs: list[tuple[str, str]], ids: dict[str, str], held_out: list[str]) -> None:
    """Write one single-message case per pair: routed to its runbook when known, else a handoff."""
    with cases_file.open("w", encoding="utf-8") as fh:
        for i, (text, intent) in enumerate(case_pairs):
            known = intent in ids and intent not in held_out
            expect: dict[str, object] = (
                {"handoff": False, "runbook": ids[intent]} if known else {"handoff": True, "runbook": None}
            )
            case = {
                "id": f"{ids.get(intent) or _kebab(intent) or 'case'}-{i:05d}",
                "turns": [text],
                "expect": expect,
                "tags": ["known" if known else "held-out"],
            }
            fh.write(json.dumps(case) + "\n")


def import_intents(
    train: Path,
    out: Path,
    *,
    k: int = 10,
    holdout: int = 20,
    seed: int = 0,
    test: Path | None = None,
    category: str = "imported",
) -> ImportReport:
    """Write ``out/runbooks/`` (a pack) and ``out/cases.jsonl`` from [text, intent] pairs.

    Cases come from ``test`` when given (the dataset's own test split), else from the train
    examples not used as runbook examples.
    """
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in _read_pairs(train):
        if text.strip():  # the pack's lint refuses an empty example
            by_intent[intent].append(text)
    intents = sorted(by_intent)
    if not intents:
        raise CaseFileError(f"{train}: holds no [text, intent] pair with a text")
    if holdout >= len(intents):
        raise CaseFileError(f"--holdout {holdout}: {train} has only {len(intents)} intents; hold out fewer")
    rng = random.Random(seed)
    held_out = sorted(rng.sample(intents, holdout))
    pack_dir = out / "runbooks"
    pack_dir.mkdir(parents=True, exist_ok=True)
    ids = _ids(intents)
    leftovers = _write_runbooks(pack_dir, by_intent, ids, held_out, rng, k=k, category=category)
    # Imported cases are single messages: nobody is there to answer "could you tell me more?",
    # so the pack hands off instead of asking, and the figures count every message.
    write_policy(pack_dir, {"categories": {category: {"tier": 1}}, "limits": {"max_clarifications": 0}})
    case_pairs = [(t, i) for t, i in _read_pairs(test) if t.strip()] if test else leftovers
    cases_file = out / "cases.jsonl"
    _write_cases(cases_file, case_pairs, ids, held_out)
    return ImportReport(
        runbooks=len(intents) - len(held_out),
        held_out=sorted(held_out),
        cases=len(case_pairs),
        pack_dir=pack_dir,
        cases_file=cases_file,
    )
