"""Write a big synthetic runbook pack from a [text, intent] dataset, for timing (not for quality).

Each intent is split into ``--parts`` runbooks of ``--k`` examples each (BANKING77's 77 intents
in two parts: 154 runbooks, 1,540 examples), so that index building, head training and per-turn
latency can be measured at the size of a large pack. Two runbooks of one intent overlap on
purpose: routing figures on this pack mean nothing.

    .venv/bin/python bench/make_pack.py OUT [--dataset ../shared/datasets/banking77/train.json]
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path

import yaml

from eval.importer import _kebab, write_policy


def main() -> None:
    """Write the pack and print its size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dataset", type=Path, default=Path("../shared/datasets/banking77/train.json"))
    parser.add_argument("--parts", type=int, default=2, help="runbooks per intent")
    parser.add_argument("--k", type=int, default=10, help="examples per runbook")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text, intent in json.loads(args.dataset.read_text(encoding="utf-8")):
        by_intent[intent].append(text)
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    examples = 0
    for intent in sorted(by_intent):
        texts = list(dict.fromkeys(by_intent[intent]))
        rng.shuffle(texts)
        for part in range(args.parts):
            chunk = texts[part * args.k : (part + 1) * args.k]
            if not chunk:
                continue
            rid = f"{_kebab(intent)}-{part + 1}"
            title = f"{intent.replace('_', ' ').capitalize()} (part {part + 1})"
            front = {"id": rid, "title": title, "category": "synthetic", "tier": 1, "examples": chunk}
            body = "Synthetic.\n\n## Steps\n1. Follow the documented answer.\n\n## Check\nDid that help?\n"
            (args.out / f"{rid}.md").write_text(
                "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body, encoding="utf-8"
            )
            examples += len(chunk)
    write_policy(args.out, {"categories": {"synthetic": {"tier": 1}}, "limits": {"max_clarifications": 0}})
    print(f"wrote {len(list(args.out.glob('*.md')))} runbooks, {examples} examples to {args.out}")


if __name__ == "__main__":
    main()
