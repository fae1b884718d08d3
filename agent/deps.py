"""The run-scoped dependencies every node receives: pack, brain, tools, queue, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.brains.base import Brain
from agent.handoff import HandoffQueue
from agent.pack import Pack
from tools.actions import Toolbox


def utc_now() -> datetime:
    """The real clock (tests pass their own)."""
    return datetime.now(UTC)


@dataclass
class Deps:
    """What nodes may use; passed as the graph's context, never read from globals."""

    pack: Pack
    brain: Brain
    toolbox: Toolbox
    handoffs: HandoffQueue
    clock: Callable[[], datetime] = utc_now
