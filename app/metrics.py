"""Prometheus metrics of the service: turns, handoffs by reason, honest containment, latency, SLA standing.

Label values come from closed sets only (channels, decision outcomes, reason codes, priorities), so
a customer cannot grow the number of series. Figures that live in the database (containment, open
tickets at risk or breached) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.state import ReasonCode
from app.desk import Desk
from app.insights import OUTCOMES, Insights, Period

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = frozenset(get_args(ReasonCode))
_CHANNELS = frozenset({"chat", "api", "email"})


def _outcome(action: str) -> str:
    if action == "handoff":
        return "handoff"
    if action == "relay":
        return "relayed"
    if action == "close_resolved":
        return "resolved"
    return "answered"


class _DeskCollector(Collector):
    """Containment and ticket SLA standing, read from the stores at scrape time."""

    def __init__(self, desk: Desk, insights: Insights | None) -> None:
        self._desk = desk
        self._insights = insights

    def collect(self) -> Iterable[Metric]:
        customers, handed_off = self._desk.conversation_counts()
        conversations = GaugeMetricFamily(
            "tierone_conversations", "Conversations in which the customer wrote, by outcome so far", labels=["state"]
        )
        conversations.add_metric(["handed_off"], handed_off)
        conversations.add_metric(["contained"], customers - handed_off)
        yield conversations
        if self._insights is not None:
            # The honest figures (app/insights.py): every episode so far, judged now.
            totals = self._insights.totals(Period.of(None, None, self._insights.clock))
            episodes = GaugeMetricFamily(
                "tierone_episodes", "Episodes (one problem each) by honest outcome, judged now", labels=["outcome"]
            )
            for outcome in OUTCOMES:
                episodes.add_metric([outcome], totals[outcome])
            yield episodes
            ratio = GaugeMetricFamily(
                "tierone_containment_ratio",
                "Resolved by the bot, honestly: (confirmed + no_recontact) / (episodes - pending - in_progress)",
            )
            ratio.add_metric([], totals["containment_rate"])
            yield ratio
        open_tickets = GaugeMetricFamily(
            "tierone_open_tickets",
            "Queued or claimed handoffs, by priority and SLA standing",
            labels=["priority", "sla"],
        )
        breached = GaugeMetricFamily(
            "tierone_sla_breached_tickets",
            "Handoffs that missed a first-response or resolve due time",
            labels=["priority"],
        )
        standing: dict[tuple[str, str], int] = {}
        late: dict[str, int] = {}
        for ticket in self._desk.tickets("all"):
            priority = ticket.packet.sla.priority
            if ticket.breached:
                late[priority] = late.get(priority, 0) + 1
            if ticket.packet.status in ("queued", "claimed"):
                key = (priority, "breached" if ticket.breached else "at_risk" if ticket.at_risk else "ok")
                standing[key] = standing.get(key, 0) + 1
        for (level, sla), count in sorted(standing.items()):
            open_tickets.add_metric([level, sla], count)
        for level, count in sorted(late.items()):
            breached.add_metric([level], count)
        yield open_tickets
        yield breached


class Metrics:
    """The service's metrics, in a registry of their own (one per app, so tests do not share counts)."""

    def __init__(self, desk: Desk, insights: Insights | None = None) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter(
            "tierone_turns_total",
            "Customer messages the resolver finished, by channel and outcome",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.handoffs = Counter(
            "tierone_handoffs_total", "Handoffs to L2, by reason code", ["reason"], registry=self.registry
        )
        self.turn_seconds = Histogram(
            "tierone_turn_seconds",
            "Time to answer one customer message through the API",
            ["channel"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "tierone_rate_limited_total",
            "Requests refused by a rate limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        self.registry.register(_DeskCollector(desk, insights))

    def after_turn(self, conversation_id: str, values: dict[str, Any]) -> None:
        """Count a finished turn (a Resolver.after_turn hook)."""
        decision = values.get("decision") or {}
        channel = str(values.get("channel", "chat"))
        channel = channel if channel in _CHANNELS else "other"
        action = str(decision.get("action", ""))
        self.turns.labels(channel, _outcome(action)).inc()
        if action == "handoff":
            for reason in decision.get("reasons") or []:
                self.handoffs.labels(reason if reason in _REASONS else "other").inc()

    def observe_latency(self, channel: str, seconds: float) -> None:
        """Record one turn's time as the API saw it."""
        self.turn_seconds.labels(channel if channel in _CHANNELS else "other").observe(seconds)

    def render(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
