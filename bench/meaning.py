"""False refusals and catches of the meaning check on reworded replies, over a sweep of its floors.

Prints, for the recorded rewordings of the bundled eval, the hand-written faithful paraphrases
and the off-script rewordings (eval/meaning.py): the floors the sweep picks, each set's refusal
rate at those floors, one-floor-at-a-time sweeps around them, both ways of comparing a sentence
(with the draft's nearest sentence, or with the draft as a whole), and the same rewordings sent
through the LLM brain plain and streamed (a mock endpoint in this process), to show that both
paths refuse the same ones.

    .venv/bin/python bench/meaning.py
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence

import httpx

from agent.brains.llm import LLMBrain, LLMConfig
from agent.brains.meaning import Floors, Measures
from agent.brains.offline import OfflineBrain
from agent.brains.streaming import stream_reply
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from eval.meaning import (
    COVER_GRID,
    SENTENCE_GRID,
    WHOLE_GRID,
    Mode,
    Pair,
    choose,
    grounding_catches,
    measure_all,
    rate,
    refused,
)
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client

Measured = Sequence[tuple[Pair, Measures]]


def line(label: str, keep: Measured, offscript: Measured, floors: Floors, mode: Mode) -> str:
    """False-refusal rates (recorded, written) and the catch rate at ``floors``."""
    recorded = [x for x in keep if x[0].kind == "recorded"]
    written = [x for x in keep if x[0].kind != "recorded"]
    return (
        f"{label:<28} false refusals: recorded {rate(recorded, floors, mode):.3f}, "
        f"written {rate(written, floors, mode):.3f}; caught {rate(offscript, floors, mode):.3f}"
    )


def sweeps(keep: Measured, offscript: Measured, chosen: Floors, mode: Mode) -> None:
    """One floor at a time, the others held at the chosen ones."""
    for name, grid in (("sentence", SENTENCE_GRID), ("cover", COVER_GRID), ("whole", WHOLE_GRID)):
        print(f"  sweep of the {name} floor ({mode}):")
        for value in grid:
            floors = Floors(**{**chosen.__dict__, name: value})
            print("   ", line(f"{name} {value:.2f}", keep, offscript, floors, mode))


def _answer(text: str, stream: bool) -> httpx.Response:
    base: dict[str, object] = {"id": "chatcmpl-bench", "created": 1767225600, "model": "gpt-4.1-mini"}
    if not stream:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        return httpx.Response(200, json={**base, "object": "chat.completion", "choices": [choice]})
    words = text.split(" ")
    pieces = [" ".join(words[i : i + 3]) + " " for i in range(0, len(words), 3)]
    chunks: list[dict[str, object]] = [
        {"index": 0, "delta": {"content": piece}, "finish_reason": None} for piece in pieces
    ]
    chunks.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    events = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in chunks]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


def through_brain(index: RunbookIndex, pairs: Sequence[Pair], stream: bool) -> set[str]:
    """Ids of the pairs whose rewording the LLM brain replaced with the offline text."""
    current: list[Pair] = []
    # The brain asks for a stream for every rewording, whole reply or not: answer as asked.
    transport = httpx.MockTransport(
        lambda request: _answer(current[0].rewording, bool(json.loads(request.content).get("stream")))
    )
    config = LLMConfig(model="gpt-4.1-mini", api_key="bench", max_retries=0)
    brain = LLMBrain(config, index, OfflineBrain(index), http_client=httpx.Client(transport=transport))
    fell_back = set()
    for pair in pairs:
        assert pair.ctx is not None
        current[:] = [pair]
        reply = stream_reply(brain, pair.ctx, lambda delta: None) if stream else brain.reply(pair.ctx)
        if reply.fallback:
            fell_back.add(pair.id)
    return fell_back


def main() -> None:
    """Measure and print."""
    logging.getLogger("agent.brains.llm").setLevel(logging.ERROR)  # one warning per refusal otherwise
    index = RunbookIndex(open_client(None), load_pack(BUNDLED_RUNBOOKS), MiniLMEmbedder())
    index.sync()
    sets = measure_all(index)
    keep, offscript = sets["recorded"] + sets["faithful"], sets["offscript"]
    kinds = Counter(p.kind for p, _ in offscript)
    print(f"recorded rewordings {len(sets['recorded'])}, written faithful {len(sets['faithful'])}, off-script {kinds}")
    ground = grounding_catches(p for p, _ in offscript)
    print(f"off-script rewordings the grounding check alone refuses: {len(ground)} {ground}")
    for mode in ("nearest", "whole"):
        chosen, caught = choose(keep, offscript, mode)
        print(f"\nsentences compared with the draft's {mode} {'sentence' if mode == 'nearest' else 'text'}:")
        print(" ", line(f"chosen {chosen}", keep, offscript, chosen, mode))
        for kind in kinds:
            rows = [x for x in offscript if x[0].kind == kind]
            missed = [p.id for p, m in rows if not refused(m, chosen, mode)]
            print(f"    {kind:<16} caught {len(rows) - len(missed)}/{len(rows)}  missed {missed}")
        sweeps(keep, offscript, chosen, mode)
    written = [p for p, _ in sets["faithful"] + offscript]
    plain, streamed = through_brain(index, written, False), through_brain(index, written, True)
    print("\nthrough the LLM brain at the product's floors (written sets):")
    for label, fell in (("plain", plain), ("streamed", streamed)):
        faithful = sorted(i for i in fell if i.startswith("f-"))
        print(
            f"  {label:<9} faithful refused {len(faithful)}/{len(sets['faithful'])} {faithful}; "
            f"off-script refused {len(fell) - len(faithful)}/{len(offscript)}"
        )
    print(f"  refused by one path only: {sorted(plain ^ streamed)}")


if __name__ == "__main__":
    main()
