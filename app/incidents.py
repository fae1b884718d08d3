"""The desk's side of incidents: declare, claim, post updates, resolve, detach; and the broadcast.

An update reaches every attached customer in their own channel (the chat transcript; email too
when the customer's latest message came by mail) exactly once: agent/incidents.py keeps one
delivery row per (update, conversation), and each message is written in the same transaction
that marks its row sent. A broadcast killed halfway resumes with ``deliver`` (the server calls it
at start-up) and reaches only those it had not reached.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from agent.incidents import Delivery, Incident, IncidentStore, IncidentUpdate, Member
from agent.nodes import incident_summary
from agent.resolver import Resolver
from app.mail.channel import EmailChannel
from app.messages import MessageLog
from core.errors import ConversationNotFound, MessageRejected
from tools.base import ServiceStatus, StatusPage

log = logging.getLogger(__name__)


def wording(incident: Incident, delivery: Delivery) -> str:
    """What the customer reads for one update or the resolution."""
    if delivery.kind == "resolve":
        return (
            f"Incident {incident.id} ({incident.title}) is resolved: {delivery.text} "
            "If you still have trouble, write back and we will look at it afresh."
        )
    return f"Update on incident {incident.id} ({incident.title}): {delivery.text}"


class IncidentDesk:
    """What a technician does with incidents; every change to customers goes through the delivery ledger."""

    def __init__(
        self,
        store: IncidentStore,
        resolver: Resolver,
        messages: MessageLog,
        email: EmailChannel | None,
        *,
        validate: Callable[[object], str],
        close_ticket: Callable[[str, str, str], Any] | None = None,
        status_page: StatusPage | None = None,
        outage_category: str | None = None,
        status_every_s: float = 30.0,
    ) -> None:
        self.store = store
        self.resolver = resolver
        self.messages = messages
        self.email = email
        self._validate = validate
        # Closes the incident's ticket in the handoff queue when it is resolved (packet id, technician, note).
        self._close_ticket = close_ticket
        # One delivery pass at a time: two would each find the same row unsent and skip it in turn, harmlessly,
        # but one at a time keeps the order of updates per customer.
        self._delivering = threading.Lock()
        # The status page as published (not the one with incidents added), and how often the desk looks at it.
        self._status_page = status_page
        self._outage_category = outage_category
        self._status_every_s = status_every_s
        self._next_look = 0.0

    def _text(self, text: object) -> str:
        try:
            return self._validate(text)
        except MessageRejected as exc:
            raise MessageRejected(f"the update's text was refused, nothing was sent: {exc}") from exc

    def find(self, status: Literal["open", "resolved", "all"] = "open") -> list[Incident]:
        """Incidents, newest first."""
        return self.store.find(status)

    def get(self, incident_id: str) -> Incident:
        """One incident (IncidentNotFound when none has the id)."""
        return self.store.get(incident_id)

    def members(self, incident_id: str) -> list[Member]:
        """The conversations attached now."""
        return self.store.members(incident_id)

    def declare(self, title: object, category: str | None, technician: str, text: object = "") -> Incident:
        """Open an incident by hand; customers of its category who write in join it."""
        name = self._text(title)
        note = self._text(text) if isinstance(text, str) and text.strip() else "We are looking into it."
        return self.store.declare(name[:200], category, technician, note)

    def claim(self, incident_id: str, technician: str) -> Incident:
        """Take the incident."""
        return self.store.claim(incident_id, technician)

    def update(self, incident_id: str, text: object, technician: str) -> IncidentUpdate:
        """Post an update; it reaches each attached customer once."""
        posted = self.store.post(incident_id, "update", self._text(text), technician)
        self.deliver()
        return posted

    def resolve(self, incident_id: str, text: object, technician: str) -> IncidentUpdate:
        """Resolve: every attached customer is told, and their episodes close as resolved_by_incident."""
        posted = self.store.post(incident_id, "resolve", self._text(text), technician)
        self.deliver()
        packet_id = self.store.get(incident_id).packet_id
        if packet_id and self._close_ticket is not None:
            self._close_ticket(packet_id, technician, f"incident resolved: {posted.text}")
        return posted

    def detach(self, incident_id: str, conversation_id: str, technician: str) -> Incident:
        """Take a conversation off the incident; its next message is routed anew."""
        self.store.detach(incident_id, conversation_id)
        try:
            self.resolver.leave_incident(conversation_id, "incident_detached")
        except ConversationNotFound:
            pass  # erased since it was attached: nothing of it is left to move
        found = self.store.get(incident_id)
        if found.packet_id:
            self.resolver.deps.handoffs.set_summary(found.packet_id, incident_summary(found))
        return found

    # -- the status page ---------------------------------------------------------------------------

    def watch_status(self) -> list[Incident]:
        """Open an incident for each status-page service in outage that has none open; return those opened."""
        if self._status_page is None:
            return []
        try:
            services = self._status_page.services()
        except Exception as exc:  # noqa: BLE001 - an unreachable page must not take the desk down
            log.warning("the status page could not be read (%s); no incident opened from it", exc)
            return []
        opened = []
        for service in services:
            cause = f"status:{service.name} outage"
            if service.state != "outage" or any(i.cause == cause for i in self.store.find("open")):
                continue
            joined = self.store.open_or_join(
                seed=f"{cause}:{time.time_ns()}",
                title=f"{service.name[:1].upper()}{service.name[1:]} outage",
                category=self._outage_category,
                runbook_id=None,
                cause=cause,
                opened_by="status-page",
                members=[],
                summary=service.note or f"The status page shows {service.name} down; we are on it.",
            )
            if joined.opened:
                opened.append(joined.incident)
        return opened

    def watch_status_now_and_then(self) -> None:
        """``watch_status`` at most once per ``status_every_s`` (the desk's list calls it on every poll)."""
        now = time.monotonic()
        if now >= self._next_look:
            self._next_look = now + self._status_every_s
            self.watch_status()

        # -- the broadcast -----------------------------------------------------------------------------

    def deliver(self) -> int:
        """Make every delivery not yet made; return how many were made now."""
        made = 0
        with self._delivering:
            while batch := self.store.pending():
                incidents: dict[str, Incident] = {}
                episodes: dict[tuple[str, str], str | None] = {}
                mailed = False
                for delivery in batch:
                    if delivery.incident_id not in incidents:
                        incidents[delivery.incident_id] = self.store.get(delivery.incident_id)
                        for m in self.store.members(delivery.incident_id, attached_only=False):
                            episodes[(delivery.incident_id, m.conversation_id)] = m.episode_id
                    episode = episodes.get((delivery.incident_id, delivery.conversation_id))
                    sent, by_mail = self._deliver(incidents[delivery.incident_id], delivery, episode)
                    made += sent
                    mailed = mailed or by_mail
                if mailed and self.email is not None:
                    self.email.flush()
        return made

    def _deliver(self, incident: Incident, delivery: Delivery, episode_id: str | None) -> tuple[bool, bool]:
        cid = delivery.conversation_id
        try:
            channel = self.messages.last_channel(cid) or self.resolver.conversations.get(cid)["channel"]
        except ConversationNotFound:
            channel = "chat"
        text = wording(incident, delivery)
        # Read before the delivery's transaction opens: the mail store reads on its own connection.
        mail = self.email.notice(cid, text, delivery.author) if channel == "email" and self.email else None
        if delivery.kind == "resolve":
            # Both are safe to repeat: a crash before the delivery below finds them done.
            try:
                self.resolver.leave_incident(cid, "incident_resolved")
            except ConversationNotFound:
                pass
            self._close_episode(episode_id)

        def write(conn: Any) -> None:
            self.messages.append_on(conn, cid, "technician", text, channel, author=delivery.author)
            if mail is not None and self.email is not None:
                self.email.store.record_on(conn, mail)

        sent = self.store.deliver(delivery, write)
        if sent:
            self.messages.feed.notify(cid)
        return sent, sent and mail is not None

    def _close_episode(self, episode_id: str | None) -> None:
        episodes = self.resolver.deps.episodes
        if episodes is None or not episode_id:
            return
        found = episodes.get(episode_id)
        # An episode that ended otherwise (the customer confirmed a fix, or asked for a person) keeps its outcome.
        if found is not None and found.outcome == "in_progress":
            episodes.close(episode_id, "resolved_by_incident")


class IncidentStatusPage:
    """The embedded status page with each open incident on it, so check_service_status and customers see them."""

    def __init__(self, page: StatusPage, store: IncidentStore) -> None:
        self.page = page  # the page it adds to
        self._store = store

    def services(self) -> list[ServiceStatus]:
        """The page's services, then one line per open incident."""
        shown = [
            ServiceStatus(
                name=f"{i.id} {i.title}",
                state="outage",
                note=(i.updates[-1].text if i.updates else "") + f" ({i.affected} affected)",
            )
            for i in self._store.find("open")
        ]
        return [*self.page.services(), *shown]
