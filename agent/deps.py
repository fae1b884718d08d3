"""The run-scoped dependencies every node receives: pack, brain, tools, queue, clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agent.brains.base import Brain
from agent.episodes import EpisodeStore
from agent.handoff import HandoffQueue
from agent.incidents import IncidentStore
from agent.outcomes import OutcomeMatcher
from core.clock import utc_now
from core.pack import Pack
from tools.actions import Toolbox


@dataclass
class Deps:
    """What nodes may use; passed as the graph's context, never read from globals."""

    pack: Pack
    brain: Brain
    toolbox: Toolbox
    handoffs: HandoffQueue
    # Where episodes are recorded and earlier ones found (repeat contacts); None records nothing.
    episodes: EpisodeStore | None = None
    clock: Callable[[], datetime] = utc_now
    # Matches answers to a step's outcomes by meaning; None: the yes/no patterns alone.
    outcomes: OutcomeMatcher | None = None
    # Where incidents are kept and spikes counted; None: wide impact goes to a person instead.
    incidents: IncidentStore | None = None
