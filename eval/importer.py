"""Import a public intent dataset ([text, intent] pairs) as a runbook pack plus eval cases.

k examples per intent become the runbook's ``examples``; the rest become cases. Intents held out
get no runbook: their cases expect a handoff with no runbook, so the "nothing fits" boundary is
measured on data nobody here wrote.
"""

from __future__ import annotations

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
    except json.JSONDecodeError as exc:
        raise CaseFileError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in data
    ):
        raise CaseFileError(f"{path}: expected a JSON list of [text, intent] pairs")
    return [(text, intent) for text, intent in data]


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
        by_intent[intent].append(text)
    intents = sorted(by_intent)
    if holdout >= len(intents):
        raise CaseFileError(f"cannot hold out {holdout} of {len(intents)} intents")
    rng = random.Random(seed)
    held_out = sorted(rng.sample(intents, holdout))
    pack_dir = out / "runbooks"
    pack_dir.mkdir(parents=True, exist_ok=True)
    leftovers: list[tuple[str, str]] = []
    for intent in intents:
        texts = list(dict.fromkeys(by_intent[intent]))
        rng.shuffle(texts)
        if intent in held_out:
            leftovers.extend((t, intent) for t in texts)
            continue
        examples, rest = texts[:k], texts[k:]
        leftovers.extend((t, intent) for t in rest)
        rid = _kebab(intent)
        title = intent.replace("_", " ").capitalize()
        front = {"id": rid, "title": title, "category": category, "tier": 1, "examples": examples}
        body = (
            f"Imported intent `{intent}`.\n\n## Steps\n1. Follow the documented answer for {title.lower()}.\n\n"
            "## Check\nDid that answer your question?\n"
        )
        (pack_dir / f"{rid}.md").write_text(
            "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body, encoding="utf-8"
        )
    # Imported cases are single messages: nobody is there to answer "could you tell me more?",
    # so the pack hands off instead of asking, and the figures count every message.
    write_policy(pack_dir, {"categories": {category: {"tier": 1}}, "limits": {"max_clarifications": 0}})
    case_pairs = _read_pairs(test) if test else leftovers
    cases_file = out / "cases.jsonl"
    with cases_file.open("w", encoding="utf-8") as fh:
        for i, (text, intent) in enumerate(case_pairs):
            expect: dict[str, object] = (
                {"handoff": True, "runbook": None}
                if intent in held_out
                else {"handoff": False, "runbook": _kebab(intent)}
            )
            case = {
                "id": f"{_kebab(intent)}-{i:05d}",
                "turns": [text],
                "expect": expect,
                "tags": ["held-out" if intent in held_out else "known"],
            }
            fh.write(json.dumps(case) + "\n")
    return ImportReport(
        runbooks=len(intents) - holdout,
        held_out=held_out,
        cases=len(case_pairs),
        pack_dir=pack_dir,
        cases_file=cases_file,
    )
