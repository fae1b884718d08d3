"""Streaming replies: deltas a caller can show as they come, and the reply they add up to.

A brain that can stream offers ``reply_stream(ctx) -> ReplyStream``; any other brain is streamed as
one delta holding its whole reply. A delta with ``replace=True`` tells the client to throw away what
it showed of this reply and show ``text`` instead (the grounding check refused a later part).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from agent.brains.base import Brain, ReplyContext
from agent.state import Reply


@dataclass(frozen=True)
class Delta:
    """A piece of a reply that passed the grounding check, or the whole replacement text."""

    text: str
    replace: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The delta as JSON-ready data (for an SSE ``delta`` event)."""
        return {"text": self.text, "replace": self.replace}


# Where the running turn's deltas go: set by the caller around one graph run (Resolver.send).
# The reply node calls it in its own thread, as each piece is released: no stream mode that hands
# every node to a worker thread, which cost about 7 ms a turn (README, "Measured").
DELTA_SINK: ContextVar[Callable[[Delta], None] | None] = ContextVar("tierone_delta_sink", default=None)


def emit_delta(delta: Delta) -> None:
    """Hand ``delta`` to the running turn's sink; nothing when the caller does not stream."""
    sink = DELTA_SINK.get()
    if sink is not None:
        sink(delta)


@dataclass
class ReplyStream:
    """Iterate for the deltas; ``reply`` holds the finished reply once they are exhausted."""

    deltas: Iterator[Delta] = field(default_factory=lambda: iter(()))
    reply: Reply | None = None

    def __iter__(self) -> Iterator[Delta]:
        return self.deltas


def stream_reply(brain: Brain, ctx: ReplyContext, emit: Callable[[Delta], None]) -> Reply:
    """Word a reply, handing each delta to ``emit`` as it is released; return the final reply.

    Args:
        brain: Any brain; one without ``reply_stream`` is streamed as one delta.
        ctx: What the reply may be written from.
        emit: Called with every delta, in order.

    Returns:
        The reply the deltas add up to (after any replacement).
    """
    streamer = getattr(brain, "reply_stream", None)
    if streamer is None:
        reply = brain.reply(ctx)
        emit(Delta(reply.text))
        return reply
    stream: ReplyStream = streamer(ctx)
    for delta in stream:
        emit(delta)
    if stream.reply is None:  # a brain's bug, never the customer's problem
        raise RuntimeError(f"{type(brain).__name__}.reply_stream ended without a reply")
    return stream.reply
