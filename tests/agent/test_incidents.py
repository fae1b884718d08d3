"""Incidents: the wide-impact boundary, spike thresholds and their edges, attaching, restarts."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agent.brains.offline import _ASKS_IF_WIDE, _WIDE
from agent.incidents import IncidentStore, content_words
from agent.policy import Facts, decide
from agent.state import Understanding
from app.runtime import Runtime
from core.db import DatabaseTarget
from core.pack import Policy
from tests.agent.test_policy import PW, RUNBOOKS, VPN, u
from tests.conftest import Clock

POLICY = Policy.model_validate(
    {
        "routing": {"min_score": 0.55, "min_margin": 0.02, "clarify_floor": 0.45},
        "incidents": {"spike_count": 5, "spike_minutes": 10},
    }
)


def facts(understanding: Understanding, **kw: Any) -> Facts:
    return Facts(understanding=understanding, runbooks=RUNBOOKS, **{"stage": "triage", **kw})


WIDE = {"wide_impact": True}

# (why, facts, action, reasons)
ROWS: list[tuple[str, Facts, str, list[str]]] = [
    ("wide impact opens an incident", facts(u("all of us", VPN, **WIDE)), "incident", ["wide_impact"]),
    (
        "wide impact joins the open one",
        facts(u("all of us", VPN, **WIDE), incident_id="INC-1"),
        "incident",
        ["wide_impact", "incident_known"],
    ),
    ("wide impact with no runbook near", facts(u("nobody can work", **WIDE)), "incident", ["wide_impact"]),
    (
        "wide impact mid-runbook",
        facts(u("all of us", VPN, **WIDE), stage="steps", runbook_id="vpn-connection"),
        "incident",
        ["wide_impact"],
    ),
    (
        "a yes that mentions everyone is an answer, not a report",
        facts(u("yes it works for everyone", **WIDE, affirm=True), stage="confirm", runbook_id="vpn-connection"),
        "close_resolved",
        ["customer_confirmed"],
    ),
    (
        "asking for a person beats wide impact",
        facts(u("all of us", VPN, wants_human=True, **WIDE)),
        "handoff",
        ["customer_requested_human"],
    ),
    (
        "no incident store: a person, never single-user steps",
        facts(u("all of us", VPN, **WIDE), incidents=False),
        "handoff",
        ["wide_impact"],
    ),
    # an open incident of the same category
    (
        "a strong match joins the open incident",
        facts(u("vpn down", VPN), incident_id="INC-1"),
        "incident",
        ["incident_known"],
    ),
    (
        "a grey-zone message still asks first",
        facts(u("hmm", ("vpn-connection", 0.5)), incident_id="INC-1"),
        "clarify",
        ["low_confidence"],
    ),
    # spike thresholds: this message plus its peers against spike_count (5)
    (
        "three others: the runbook",
        facts(u("vpn down", VPN), spike_peers=3),
        "present_step",
        ["runbook_matched", "step_presented"],
    ),
    ("four others make five: an incident", facts(u("vpn down", VPN), spike_peers=4), "incident", ["incident_spike"]),
    ("more than enough", facts(u("vpn down", VPN), spike_peers=40), "incident", ["incident_spike"]),
    # attached
    (
        "attached: told again what is known",
        facts(u("any news?"), stage="incident", incident_id="INC-1"),
        "incident",
        ["incident_known"],
    ),
    (
        "attached and asking for a person",
        facts(u("a human please", wants_human=True), stage="incident", incident_id="INC-1"),
        "handoff",
        ["customer_requested_human"],
    ),
    (
        "attached past the time limit stays attached",
        facts(u("any news?"), stage="incident", elapsed_minutes=600),
        "incident",
        ["incident_known"],
    ),
    (
        "a password reset is not an outage",
        facts(u("forgot pw", PW), spike_peers=0),
        "ask_identity",
        ["runbook_matched", "identity_required"],
    ),
]


@pytest.mark.parametrize(("why", "situation", "action", "reasons"), ROWS, ids=[r[0] for r in ROWS])
def test_incident_boundary(why: str, situation: Facts, action: str, reasons: list[str]) -> None:
    decision = decide(situation, POLICY)
    assert (decision.action, decision.reasons) == (action, reasons), why


def test_a_spike_of_two_is_the_smallest_threshold() -> None:
    with pytest.raises(ValueError, match="spike_count"):
        Policy.model_validate({"incidents": {"spike_count": 1}})
    assert decide(
        facts(u("vpn down", VPN), spike_peers=1), Policy.model_validate({"incidents": {"spike_count": 2}})
    ).reasons == ["incident_spike"]


@pytest.mark.parametrize(
    ("text", "wide"),
    [
        ("everyone in the office lost internet 10 minutes ago", True),
        ("network outage: Leeds site is hard down since 05:04 pm", True),
        ("the whole floor can't print", True),
        ("nobody can log in to the portal", True),
        ("nobody at building B can get online", True),
        ("all of us get a VPN error", True),
        ("building B is down", True),
        ("my laptop is down to 5% battery", False),
        ("I can't get online", False),
        ("the printer next to me is jammed", False),
        ("nobody can hear me on teams calls", False),
        ("Is Slack down for everyone or is it just me?", False),
    ],
)
def test_the_offline_reader_sees_wide_impact(text: str, wide: bool) -> None:
    assert (bool(_WIDE.search(text)) and not _ASKS_IF_WIDE.search(text)) is wide


# -- the store: windows and restarts ------------------------------------------------------------


def test_peers_count_inside_the_window_and_its_edge(db_target: DatabaseTarget, clock: Clock) -> None:
    store = IncidentStore(db_target, clock)
    store.report("c1", "c1:e0", "vpn-connection", "network")
    clock.advance(minutes=5)
    store.report("c2", "c2:e0", "vpn-connection", "network")
    store.report("c3", "c3:e0", "wifi-connection", "network")
    # A replayed turn reports nothing twice.
    store.report("c2", "c2:e0", "vpn-connection", "network")
    clock.advance(minutes=5)
    # c1 is exactly 10 minutes old: still inside; the asker itself never counts.
    assert store.peers("vpn-connection", 10, "c9") == [("c1", "c1:e0"), ("c2", "c2:e0")]
    assert store.peers("vpn-connection", 10, "c2") == [("c1", "c1:e0")]
    clock.advance(seconds=1)
    assert store.peers("vpn-connection", 10, "c9") == [("c2", "c2:e0")]
    # Strangers (the eval's cases) never count each other.
    assert IncidentStore(db_target, clock, across_conversations=False).peers("vpn-connection", 10, "x") == []


def test_one_cause_one_incident_and_a_restart_keeps_it(db_target: DatabaseTarget, clock: Clock) -> None:
    path = db_target
    store = IncidentStore(path, clock)
    first = store.open_or_join(
        seed="a",
        title="VPN",
        category="network",
        runbook_id="vpn-connection",
        cause="wide_impact",
        opened_by="c1",
        members=[("c1", "c1:e0")],
    )
    again = IncidentStore(path, clock).open_or_join(
        seed="b",
        title="VPN 2",
        category="network",
        runbook_id=None,
        cause="wide_impact",
        opened_by="c2",
        members=[("c2", None)],
    )
    assert first.opened and not again.opened and again.incident.id == first.incident.id
    assert again.incident.affected == 2
    # Another category is another cause; a wide report of unknown category joins the newest open one.
    other = store.open_or_join(
        seed="c",
        title="Mail",
        category="email",
        runbook_id=None,
        cause="wide_impact",
        opened_by="c3",
        members=[("c3", None)],
    )
    assert other.opened and other.incident.id != first.incident.id
    assert store.matching(None, "c4", wide=True) == other.incident.id
    assert store.matching(None, "c4") is None
    # "The internet is down for everyone" may read as service status: its words came near network too.
    near = ("service-status", "network")
    assert store.matching("service-status", "c5", wide=True, related=near) == first.incident.id
    assert store.matching("service-status", "c5", related=near) is None  # one customer's problem joins by category only
    # A report that reads as an outage ("*") joins whatever is open; one customer's outage question does not.
    assert store.matching("devices", "c6", wide=True, related=("*",)) == other.incident.id
    assert store.matching("devices", "c6", related=("*",)) is None


def test_one_outage_in_many_words_is_one_incident(runtime: Runtime) -> None:
    words = [
        "all of us at Leeds lost the network half an hour ago",  # reads as service status
        "everyone here gets 'no internet' on the wifi since 9:10",  # reads as Wi-Fi
        "nobody at building B can get online since lunch",
        "the whole floor lost wifi just now",
    ]
    for text in words:
        assert runtime.resolver.send(runtime.resolver.start(), text).stage == "incident", text
    assert [i.affected for i in runtime.resolver.deps.incidents.find("all")] == [4]  # type: ignore[union-attr]


# -- whole conversations -------------------------------------------------------------------------


def test_wide_impact_opens_one_incident_and_one_ticket(runtime: Runtime) -> None:
    resolver = runtime.resolver
    first = resolver.start()
    turn = resolver.send(first, "everyone in the office lost internet 10 minutes ago")
    assert turn.stage == "incident" and turn.reasons[0] == "wide_impact"
    [incident] = resolver.deps.incidents.find()  # type: ignore[union-attr]
    assert incident.id in turn.replies[0] and "Wi-Fi off and on" not in turn.replies[0]
    second = resolver.start("email")
    joined = resolver.send(second, "network outage: Leeds site is hard down since 05:04 pm")
    assert joined.stage == "incident" and incident.id in joined.replies[0]
    assert [i.affected for i in resolver.deps.incidents.find()] == [2]  # type: ignore[union-attr]
    [ticket] = resolver.deps.handoffs.packets()
    assert ticket.packet_id == f"HO-{incident.id}" and ticket.sla.priority in ("P1", "P2")
    assert "(2 affected)" in ticket.summary
    # Still attached: told again, no second ticket; asking for a person still hands off.
    assert incident.id in resolver.send(second, "any news?").replies[0]
    assert resolver.send(second, "I want to talk to a person").stage == "handed_off"
    assert len(resolver.deps.handoffs.packets()) == 2


def test_a_spike_opens_an_incident_that_holds_the_conversations_before_a_restart(
    make_runtime: Callable[..., Runtime], tmp_path: Path, clock: Clock
) -> None:
    data = tmp_path / "data"
    runtime = make_runtime(data)
    cids = []
    for _ in range(3):
        cid = runtime.resolver.start()
        assert runtime.resolver.send(cid, "my vpn keeps disconnecting when I work from home").stage == "confirm"
        cids.append(cid)
        clock.advance(minutes=2)
    runtime = make_runtime(data)  # a restart in the middle of the spike
    fourth = runtime.resolver.start()
    assert runtime.resolver.send(fourth, "the vpn drops every few minutes").stage != "incident"
    fifth = runtime.resolver.start()
    turn = runtime.resolver.send(fifth, "vpn keeps disconnecting, started a few minutes ago")
    assert (turn.stage, turn.reasons) == ("incident", ["incident_spike"])
    [incident] = runtime.resolver.deps.incidents.find()  # type: ignore[union-attr]
    members = {m.conversation_id for m in runtime.resolver.deps.incidents.members(incident.id)}  # type: ignore[union-attr]
    assert members == {*cids, fourth, fifth} and incident.cause == "spike:vpn-connection"
    # Later reports of the same category join it; one ticket in all.
    sixth = runtime.resolver.start()
    assert incident.id in runtime.resolver.send(sixth, "vpn not connecting").replies[0]
    assert [p.packet_id for p in runtime.resolver.deps.handoffs.packets()] == [f"HO-{incident.id}"]


def test_a_spike_needs_its_window(make_runtime: Callable[..., Runtime], clock: Clock) -> None:
    runtime = make_runtime()
    for _ in range(6):
        cid = runtime.resolver.start()
        assert runtime.resolver.send(cid, "my vpn keeps disconnecting when I work from home").stage == "confirm"
        clock.advance(minutes=3)  # four in any ten minutes: never five
    assert runtime.resolver.deps.incidents.find("all") == []  # type: ignore[union-attr]


def test_a_burst_of_routine_asks_is_demand_not_an_incident(runtime: Runtime) -> None:
    # licence-request is routine in the bundled policy.yaml: ten in a minute open nothing.
    assert "licence-request" in runtime.pack.policy.incidents.routine
    for _ in range(10):
        cid = runtime.resolver.start()
        assert runtime.resolver.send(cid, "I need a Visio licence").stage != "incident"
    assert runtime.resolver.deps.incidents.find("all") == []  # type: ignore[union-attr]
    # A routine ask that says many people are affected still opens one.
    cid = runtime.resolver.start()
    assert runtime.resolver.send(cid, "nobody in the office can get a Visio licence").stage == "incident"


def test_an_incident_left_without_its_ticket_by_a_crash_gets_it_on_the_next_report(runtime: Runtime) -> None:
    store = runtime.resolver.deps.incidents
    assert store is not None
    # As a process killed between opening the incident and filing its ticket leaves it.
    store.open_or_join(
        seed="x",
        title="Wi-Fi",
        category="network",
        runbook_id=None,
        cause="wide_impact",
        opened_by="c0",
        members=[("c0", None)],
    )
    runtime.resolver.send(runtime.resolver.start(), "everyone in the office lost the wifi")
    [incident] = store.find()
    assert incident.affected == 2 and incident.packet_id == f"HO-{incident.id}"
    assert [p.packet_id for p in runtime.resolver.deps.handoffs.packets()] == [incident.packet_id]


def test_content_words_drop_the_small_and_common_ones() -> None:
    assert content_words("The canteen kiosk says E42 and it REJECTS my card!") == "canteen card kiosk rejects says"
    assert content_words("hi, it's me") == ""


def test_a_tight_cluster_no_runbook_fits_opens_one_incident(runtime: Runtime) -> None:
    texts = [
        "the canteen payment kiosk shows error E42 and rejects my card",
        "canteen kiosk rejects my card with error E42",
        "error E42 at the canteen payment kiosk, card rejected",
        "the payment kiosk in the canteen says E42 and rejects cards",
    ]
    first = [runtime.resolver.send(runtime.resolver.start(), t) for t in texts]
    assert [t.reasons for t in first] == [["no_runbook_fits"]] * 4
    # Something else no runbook knows is no part of it.
    other = runtime.resolver.send(runtime.resolver.start(), "please order more coffee for the kitchen")
    assert other.stage == "handed_off"
    fifth = runtime.resolver.send(runtime.resolver.start(), "canteen payment kiosk error E42, it rejects the card")
    assert (fifth.stage, fifth.reasons) == ("incident", ["incident_spike"])
    [incident] = runtime.resolver.deps.incidents.find()  # type: ignore[union-attr]
    attached = {m.conversation_id for m in runtime.resolver.deps.incidents.members(incident.id)}  # type: ignore[union-attr]
    assert attached == {t.conversation_id for t in [*first, fifth]}
    sixth = runtime.resolver.send(runtime.resolver.start(), "kiosk in canteen: error E42, card rejected again")
    assert (sixth.stage, sixth.reasons) == ("incident", ["incident_known"])


def test_replicas_posting_and_delivering_at_once_number_and_send_each_once(
    db_target: DatabaseTarget, clock: Clock
) -> None:
    here, there = IncidentStore(db_target, clock), IncidentStore(db_target, clock)
    incident = here.declare("VPN down", "network", "Sam", "Looking into it")
    assert there.join(incident.id, [("c1", None), ("c2", None)]) is not None
    with ThreadPoolExecutor(max_workers=6) as pool:
        posted = list(pool.map(lambda i: (here, there)[i % 2].post(incident.id, "update", f"u{i}", "Sam"), range(12)))
    assert len({u.update_id for u in posted}) == 12
    writes: list[str] = []
    deliveries = here.pending()
    assert len(deliveries) == 24
    with ThreadPoolExecutor(max_workers=6) as pool:
        made = list(
            pool.map(
                lambda job: (here, there)[job[0]].deliver(job[1], lambda conn: writes.append(job[1].update_id)),
                [(side, d) for d in deliveries for side in (0, 1)],
            )
        )
    assert made.count(True) == 24 and len(writes) == 24 and here.pending() == []
