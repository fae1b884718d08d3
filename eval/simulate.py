"""A deterministic month of traffic: the eval cases played through the real graph, with realistic gaps in time.

It seeds a deployment's data (the demo, the /insights page, the audit) with what a month of customers
and technicians leave behind: customers who confirm, say a step did not work, go quiet, or come back
a day later about the same problem; technicians who claim, answer and resolve handoffs with a note,
some late for their SLA, some not yet. One seed gives the same conversations, in the same order, at
the same simulated times; only the generated ids differ.

Every conversation is a generator of moves, each after a delay; a heap plays them in time order, so
the runtime's clock only ever moves forward, as it would in production.
"""

from __future__ import annotations

import heapq
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.desk import DeskConflict
from app.runtime import Runtime
from core.errors import MessageRejected, TieroneError
from eval.cases import OTP, Case

_CODE = re.compile(r"\b(\d{6})\b")
TECHNICIANS = ("Alex Moreau", "Sam Okafor", "Priya Nair", "Jonas Berg")
# A move of a conversation: wait this long, then do the next thing.
Moves = Iterator[timedelta]


class SimClock:
    """The simulated time every store and node reads."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        """The simulated now."""
        return self.now


@dataclass
class Tally:
    """What the simulator did, for its summary line."""

    conversations: int = 0
    turns: int = 0
    events: Counter[str] = field(default_factory=Counter)


def _latest_code(runtime: Runtime, conversation_id: str) -> str:
    for message in reversed(runtime.outbox.messages(conversation_id)):
        found = _CODE.search(message["body"])
        if found:
            return found.group(1)
    return "000000"


class Simulator:
    """Plays cases through a runtime whose clock is ``clock``."""

    def __init__(self, runtime: Runtime, clock: SimClock, cases: list[Case], seed: int) -> None:
        self.runtime = runtime
        self.clock = clock
        self.cases = cases
        self.rng = random.Random(seed)
        self.tally = Tally()

    def _minutes(self, median: float, spread: float = 0.8) -> timedelta:
        """A log-normal delay: most near the median, a long tail (queues, lunch, the weekend)."""
        return timedelta(minutes=median * self.rng.lognormvariate(0, spread))

    def _say(self, cid: str, text: str) -> str:
        message = _latest_code(self.runtime, cid) if text == OTP else text
        self.tally.turns += 1
        try:
            return self.runtime.resolver.send(cid, message).stage
        except MessageRejected:
            return str(self.runtime.resolver.view(cid).get("stage", "triage"))

    def conversation(self, case: Case) -> Moves:
        """One customer's conversation: the case's turns, then what people do after them."""
        rng = self.rng
        cid = self.runtime.resolver.start(rng.choice(("chat", "chat", "chat", "api")))
        self.tally.conversations += 1
        stage = "triage"
        for text in case.texts:
            stage = self._say(cid, text)
            if stage == "handed_off":
                break
            yield timedelta(seconds=rng.uniform(20, 150))
        answers = 0
        while stage == "confirm" and answers < 3:
            answers += 1
            draw = rng.random()
            if draw < 0.6:
                stage = self._say(cid, rng.choice(("yes that worked, thanks", "yes, it works now", "that fixed it")))
                self.tally.events["confirmed"] += 1
                if rng.random() < 0.12:
                    # Back the next day with the same problem, in the same conversation.
                    yield timedelta(hours=rng.uniform(6, 60))
                    self.tally.events["came back"] += 1
                    stage = self._say(cid, case.texts[0])
            elif draw < 0.8:
                self.tally.events["didn't work"] += 1
                stage = self._say(cid, rng.choice(("no, that didn't work", "still not working", "no luck")))
                yield timedelta(seconds=rng.uniform(30, 240))
            else:
                self.tally.events["went quiet"] += 1
                break
        if stage == "handed_off":
            yield from self._technician(cid)

    def _technician(self, cid: str) -> Moves:
        """A technician claims the ticket, answers, and (mostly) resolves it with a note."""
        rng, desk = self.rng, self.runtime.desk
        packet = self.runtime.resolver.deps.handoffs.for_conversation(cid)[-1]
        who = rng.choice(TECHNICIANS)
        yield self._minutes({"P1": 8, "P2": 35, "P3": 120, "P4": 300}.get(packet.sla.priority, 120))
        try:
            desk.claim(packet.packet_id, who)
            desk.reply(packet.packet_id, who, "Hi, I've picked this up and I'm looking into it now.")
            self.tally.events["answered by L2"] += 1
            if rng.random() < 0.1:
                return  # still open at the end of the month
            yield self._minutes({"P1": 90, "P2": 240, "P3": 600, "P4": 1500}.get(packet.sla.priority, 600))
            desk.resolve(packet.packet_id, who, self._note(packet.runbook_id))
            self.tally.events["resolved by L2"] += 1
        except (DeskConflict, TieroneError):
            self.tally.events["desk conflict"] += 1

    def _note(self, runbook_id: str | None) -> str:
        """What L2 writes: often a step the runbook already has (what the audit looks for), else their own fix."""
        runbook = self.runtime.pack.runbooks.get(runbook_id or "")
        if runbook and runbook.steps and self.rng.random() < 0.7:
            step = self.rng.choice(runbook.steps).text
            return f"Walked the customer through it: {step[:200]}"
        return self.rng.choice(
            (
                "Fixed on the server side; nothing the customer could have done.",
                "Escalated to the vendor, workaround applied for now.",
                "Account needed a manual change in the admin console.",
                "Replaced the device; asset record updated.",
            )
        )

    def run(self, start: datetime, days: int, conversations: int) -> Tally:
        """Play ``conversations`` conversations starting at random moments of ``days`` days from ``start``."""
        queue: list[tuple[datetime, int, Moves]] = []
        for n in range(conversations):
            day = self.rng.randrange(days)
            # Office hours mostly, some evenings.
            hour = min(23.5, max(0.0, self.rng.gauss(13, 3.5)))
            at = start + timedelta(days=day, hours=hour, minutes=self.rng.uniform(0, 30))
            heapq.heappush(queue, (at, n, self.conversation(self.rng.choice(self.cases))))
        while queue:
            at, n, moves = heapq.heappop(queue)
            self.clock.now = max(self.clock.now, at)
            delay = next(moves, None)
            if delay is not None:
                heapq.heappush(queue, (self.clock.now + delay, n, moves))
        return self.tally


def summary(tally: Tally) -> dict[str, Any]:
    """The tally as a plain object."""
    return {"conversations": tally.conversations, "turns": tally.turns, **dict(sorted(tally.events.items()))}
