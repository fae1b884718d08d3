"""Conditions and slots through the graph: a step skipped when its condition does not hold, a slot
asked for (never guessed), an invalid answer asked again and then handed off.

The pack is written here and routed with the hashing embedder: these tests are about the moves, and
each customer message repeats an example or an outcome phrasing word for word.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.runtime import Runtime, open_runtime
from core.pack import load_pack
from core.settings import Settings
from tests.conftest import Clock
from tests.fakes import HashingEmbedder
from vectorstore.index import RunbookIndex, open_client

TOP_UP = """---
id: data-top-up
title: Mobile data ran out
category: mobile
tier: 1
examples: [my mobile data ran out, no more data on my plan, data allowance used up]
slots:
  gigabytes: {type: int, ask: "How many GB would you like to add (1 or 2)?", min: 1, max: 2}
  abroad: {type: yesno, ask: "Are you abroad?"}
  phone: {type: phone, ask: "Which phone number is the line?"}
steps:
  - id: where
    say: Let's check where you are using data.
    check:
      question: Are you at home or travelling abroad?
      outcomes:
        - {name: abroad, when: [travelling abroad in another country], then: next, set: {abroad: yes}}
        - {name: at-home, when: [at home in my own country], then: next, set: {abroad: no}}
  - id: roaming
    if: {slot: abroad, equals: yes}
    say: Turn on data roaming in your phone's settings.
  - id: top-up
    needs: [phone, gigabytes]
    say: "I've noted a top-up of {gigabytes} GB for your line."
---
Data top-ups.

## Check
Is mobile data working now?

## For L2
Check the line's allowance.
"""

OTHER = """---
id: voicemail
title: Set up voicemail
category: mobile
tier: 1
examples: [set up my voicemail, voicemail greeting, how do I listen to voicemail]
---
Voicemail.

## Steps
1. Hold the 1 key.

## Check
Did that work?
"""

POLICY = """routing: {scorer: nearest, min_score: 0.5, min_margin: 0.0, clarify_floor: 0.3}
categories: {mobile: {tier: 1}}
"""


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    pack_dir = tmp_path / "pack"
    pack_dir.mkdir()
    (pack_dir / "top-up.md").write_text(TOP_UP, encoding="utf-8")
    (pack_dir / "voicemail.md").write_text(OTHER, encoding="utf-8")
    (pack_dir / "policy.yaml").write_text(POLICY, encoding="utf-8")
    index = RunbookIndex(
        open_client(tmp_path / "chroma"), load_pack(pack_dir), HashingEmbedder(), head_cache=tmp_path / "heads"
    )
    index.sync()
    settings = Settings(data_dir=tmp_path / "data", runbooks=pack_dir)
    runtime = open_runtime(settings, clock=Clock(), index=index)
    yield runtime
    runtime.close()


def test_the_roaming_step_is_skipped_at_home_and_the_slot_is_asked_for(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    first = runtime.resolver.send(cid, "my mobile data ran out")
    assert "Are you at home or travelling abroad?" in first.replies[0]
    asked = runtime.resolver.send(cid, "at home in my own country")
    # No roaming step (the condition does not hold); the top-up needs a number of GB, which is asked for.
    assert asked.stage == "slot"
    assert asked.replies == ["Which phone number is the line?"]
    assert runtime.resolver.send(cid, "it's +44 7700 900123").replies == ["How many GB would you like to add (1 or 2)?"]
    again = runtime.resolver.send(cid, "5")
    assert again.stage == "slot"
    assert "it must be between 1 and 2" in again.replies[0]
    done = runtime.resolver.send(cid, "2")
    assert done.stage == "confirm"
    assert "I've noted a top-up of 2 GB for your line." in done.replies[0]
    view = runtime.resolver.view(cid)
    # The number is kept masked in the conversation; the vault holds it for a tool that needs it.
    assert view["slots"] == {"abroad": False, "gigabytes": 2, "phone": "••••••••••123"}
    vault = runtime.resolver.deps.toolbox.vault
    assert vault is not None and vault.get(view["slot_refs"]["phone"]) == "+447700900123"
    resolved = runtime.resolver.send(cid, "yes it works")
    assert resolved.stage == "resolved"


def test_abroad_the_roaming_step_runs(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    runtime.resolver.send(cid, "my mobile data ran out")
    roaming = runtime.resolver.send(cid, "travelling abroad in another country")
    assert roaming.stage == "confirm"
    assert "Turn on data roaming" in roaming.replies[0]


def test_invalid_answers_to_a_slot_hand_off(runtime: Runtime) -> None:
    cid = runtime.resolver.start()
    for text in ("my mobile data ran out", "at home in my own country", "07700 900123", "lots", "loads"):
        result = runtime.resolver.send(cid, text)
    assert result.stage == "slot"
    last = runtime.resolver.send(cid, "a lot")
    assert last.stage == "handed_off"
    assert last.handoff is not None and last.handoff["reasons"] == ["slot_invalid"]
    packet = runtime.resolver.deps.handoffs.get(last.handoff["packet_id"])
    assert packet.slots == {"abroad": False, "phone": "••••••••123"}
