"""Knowledge gaps over 20,000 handoffs: time to find them the first time (embedding) and again (cached).

Writes 20,000 handoff packets into a fresh desk database: 80% handed off because no runbook fitted
(18 made-up topics the bundled pack lacks, of very unequal sizes, each phrased many ways), the rest
for other reasons. Then `find_gaps` runs twice on the bundled pack's index, and the largest gaps are
printed with the topics of their examples, beside each topic's true size.

    .venv/bin/python bench/gaps.py [--handoffs 20000] [--distance 0.6]
"""

from __future__ import annotations

import argparse
import collections
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agent.handoff import CustomerState, HandoffPacket, HandoffQueue, Sentiment, Sla, TranscriptLine
from app.gaps import find_gaps
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from vectorstore.embeddings import MiniLMEmbedder
from vectorstore.index import RunbookIndex, open_client

TOPICS = {
    "dock": [
        "my monitor flickers when docked",
        "second screen goes black on the docking station",
        "external display keeps blinking through the dock",
        "the dock doesn't detect my monitor",
    ],
    "carpark": [
        "my badge doesn't open the car park barrier",
        "the garage gate won't read my access card",
        "can't get into the parking with my pass",
        "parking barrier ignores my badge",
    ],
    "expenses": [
        "where do I submit an expense report",
        "the expense claim form rejects my receipt",
        "how do I get reimbursed for travel costs",
        "my expense report is stuck in approval",
    ],
    "projector": [
        "the projector in the meeting room shows no signal",
        "hdmi to the room projector does nothing",
        "projector says no input when I plug my laptop in",
        "can't get the beamer to show my screen",
    ],
    "battery": [
        "my laptop battery drains in an hour",
        "battery dies really fast now",
        "laptop won't hold a charge anymore",
        "battery percentage drops quickly even when idle",
    ],
    "keyboard": [
        "my keyboard types the wrong characters",
        'the @ and " keys are swapped on my keyboard',
        "keyboard layout changed to something weird",
        "typing gives me different symbols than the keys",
    ],
    "csv": [
        "excel puts every csv column into one",
        "csv files open with all data in column A",
        "excel doesn't split my csv by commas",
        "opening a csv in excel squashes the columns",
    ],
    "timesheet": [
        "timesheet portal keeps logging me out",
        "stuck in a login loop on the timesheet site",
        "can't submit hours, the timesheet page reloads",
        "time tracking tool kicks me out",
    ],
    "voicemail": [
        "I forgot my voicemail pin",
        "how do I reset my desk phone voicemail code",
        "voicemail asks for a pin I never set",
        "can't listen to voicemail, wrong pin",
    ],
    "desk": [
        "the desk booking app shows no free desks",
        "can't book a desk for tomorrow",
        "hot desk reservation fails with an error",
        "desk booking says I have no permission",
    ],
    "mouse": [
        "my new wireless mouse doesn't work",
        "mouse pointer jumps around the screen",
        "bluetooth mouse won't pair",
        "the mouse stops moving every few seconds",
    ],
    "headset": [
        "my headset isn't recognised by the laptop",
        "usb headset gives no sound at all",
        "headset mic shows up but nobody hears me",
        "bluetooth headphones keep disconnecting",
    ],
    "pdf": [
        "I can't sign a pdf in acrobat",
        "the pdf form won't let me type in it",
        "adobe says the document is locked for signing",
        "how do I add a digital signature to a pdf",
    ],
    "brightness": [
        "screen brightness is stuck on low",
        "can't change the brightness of my display",
        "my screen is too dim and the keys do nothing",
        "brightness slider is missing",
    ],
    "webcam": [
        "camera shows a black image with a slash",
        "webcam is greyed out in settings",
        "my laptop camera light is on but picture is black",
        "the built-in camera isn't found",
    ],
    "room": [
        "how do I book a meeting room with a screen",
        "room calendar won't accept my booking",
        "meeting room shows as busy but it's empty",
        "can't find the big conference room in outlook",
    ],
    "sync": [
        "onedrive says there's a sync conflict",
        "files duplicated with my pc name after sync",
        "sharepoint library won't sync to my laptop",
        "sync icon stuck on processing changes",
    ],
    "printer-card": [
        "how do I top up my print credit",
        "print release station rejects my card",
        "my print quota is used up",
        "where do I pay for colour printing",
    ],
}
PREFIXES = ["", "hi, ", "hello team, ", "urgent: ", "quick question - ", "good morning, "]
SUFFIXES = ["", " since this morning", " again", " after the update", ", please help", " on my new laptop", "!!"]
OTHER_REASONS = ["customer_requested_human", "tier2_runbook", "steps_exhausted", "negative_sentiment"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def packets(count: int, rng: random.Random) -> tuple[list[HandoffPacket], dict[str, str]]:
    """The handoffs, and each gap handoff's topic by packet id."""
    names = list(TOPICS)
    weights = [1 / (k + 1) for k in range(len(names))]  # very unequal, as real gaps are
    out, topic_of = [], {}
    for n in range(count):
        topic = rng.choices(names, weights)[0]
        text = rng.choice(PREFIXES) + rng.choice(TOPICS[topic]) + rng.choice(SUFFIXES)
        gap = rng.random() < 0.8
        at = T0 + timedelta(seconds=n * 120)
        pid = f"HO-{n:06d}"
        if gap:
            topic_of[pid] = topic
        out.append(
            HandoffPacket(
                packet_id=pid,
                conversation_id=f"c_{n}",
                channel="chat",
                created_at=at,
                customer=CustomerState(),
                category=None,
                runbook_id=None,
                runbook_candidates=[],
                sla=Sla(priority="P3", first_response_due=at, resolve_due=at),
                reason_codes=["no_runbook_fits" if gap else rng.choice(OTHER_REASONS)],
                attempts=[],
                hypothesis="",
                summary="",
                transcript=[TranscriptLine(at=at, role="customer", text=text)],
                sentiment=Sentiment(score=0.0, label="neutral"),
            )
        )
    return out, topic_of


def main() -> None:
    """Write the handoffs, find the gaps twice, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handoffs", type=int, default=20_000)
    parser.add_argument("--distance", type=float, default=0.6)
    args = parser.parse_args()
    rng = random.Random(13)
    with tempfile.TemporaryDirectory(prefix="tierone-gaps-") as tmp:
        queue = HandoffQueue(Path(tmp) / "tierone.sqlite", lambda: T0)
        made, topic_of = packets(args.handoffs, rng)
        for packet in made:
            queue.put(packet)
        index = RunbookIndex(open_client(None), load_pack(BUNDLED_RUNBOOKS), MiniLMEmbedder(cache_size=0))
        index.sync()
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            gaps = find_gaps(queue, index, distance=args.distance)
            timings.append(time.perf_counter() - started)
        members = sum(g.size for g in gaps)
        print(f"{args.handoffs} handoffs, {len(topic_of)} for want of a runbook ({len(TOPICS)} topics)")
        print(f"find_gaps first (embedding every message): {timings[0]:.1f} s")
        print(f"find_gaps again (vectors cached):          {timings[1]:.2f} s")
        print(f"{len(gaps)} gaps holding {members} handoffs; the ten largest:")
        # Each message's topic, from its text (every variant belongs to one topic).
        topic_by_text = {
            prefix + base + suffix: topic
            for topic, bases in TOPICS.items()
            for base in bases
            for prefix in PREFIXES
            for suffix in SUFFIXES
        }
        for gap in gaps[:10]:
            topics = collections.Counter(topic_by_text.get(e, "?") for e in gap.examples)
            print(
                f"  #{gap.rank:<3} {gap.size:>5}  nearest {gap.nearest_runbook} ({gap.nearest_score:.2f})"
                f"  {gap.examples[0]!r}  topics of its examples: {dict(topics)}"
            )
        largest = {t: n for t, n in collections.Counter(topic_of.values()).most_common()}
        print(f"topic sizes: {largest}")


if __name__ == "__main__":
    main()
