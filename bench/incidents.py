"""Incident benchmark: many customers report one outage within a minute, over chat and email, on the real server.

    python bench/incidents.py                                  # 200 customers in 60 s, a third by email
    python bench/incidents.py --customers 200 --seconds 60 --email-share 0.33 --quiet 40

Starts ``tierone serve`` on a free 127.0.0.1 port with a fresh data folder (bench/local_server.py).
First a quiet run: ``--quiet`` customers, one at a time at the flood's rhythm (a new one every
``--seconds``/``--customers`` seconds, or when the last is answered), by chat and mail in the
flood's shares, with ordinary single-user problems (no runbook more than four times, under the
spike threshold of five), for the per-turn latency of a calm server. Then the flood: ``--customers`` customers
arrive spread evenly over ``--seconds``, each reporting the same network outage in their own words
(templates, sites and times varied), by chat (POST /conversations/{id}/messages) or by email
(POST /inbound/email, signed). Then a technician
posts one update and resolves the incident through the desk API.

Prints: incidents opened, customers attached, tickets in the handoff queue, messages lost or
duplicated (every customer message once in its transcript, answered; every mail answered once),
the per-turn p95 of the flood against the quiet run's, and how many customers got the update and
the resolution exactly once, counted in the transcripts and in the mail outbox. Exits 1 when a
check the issue sets fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from local_server import local_server

from app.auth import ApiKeys
from core.signing import sign

SECRET = "bench-inbound-secret"
SITES = ("Leeds", "Manchester", "the Bristol office", "HQ", "building B", "the 3rd floor", "our site")
TIMES = ("05:04 pm", "9:10", "about ten minutes ago", "half an hour ago", "just now", "lunch")
OUTAGE = (
    "everyone in {site} lost internet {time}",
    "network outage: {site} is hard down since {time}",
    "nobody at {site} can get online since {time}",
    "the whole office is offline, nothing loads since {time}",
    "all of us at {site} lost the network {time}",
    "internet is down for the whole team at {site}",
    "{site} circuit down, all users offline",
    "wifi dropped for everybody at {site} {time}",
    "no one can connect to anything at {site}",
    "our whole department has no internet since {time}",
    "everybody's connection just died at {site}",
    "the network at {site} went down, none of us can work - all of us are stuck",
    "no internet at {site}, everyone is affected",
    "the whole floor lost wifi {time}",
    "everyone here gets 'no internet' on the wifi since {time}",
)
QUIET = (
    "I forgot my password",
    "my password expired this morning",
    "printer on floor 3 shows offline",
    "the printer is jammed again",
    "my laptop is really slow since the update",
    "outlook stopped syncing on my phone",
    "the vpn disconnects every few minutes",
    "my disk is full and I can't save files",
    "teams calls have no sound",
    "how do I install Slack",
    "my account is locked after too many tries",
    "I need a licence for Visio",
    "chrome keeps crashing",
    "the vpn won't connect from home",
    "teams video freezes",
    "my phone needs the new MFA app",
    "I can't open the shared mailbox",
    "my email isn't syncing",
    "the laptop screen is cracked",
    "I got a weird phishing email",
)


@dataclass
class Customer:
    """One customer of the flood and what happened to them."""

    n: int
    channel: str
    text: str
    conversation_id: str = ""
    token: str = ""
    latency_ms: float = 0.0
    replies: list[str] = field(default_factory=list)
    error: str = ""


def outage_text(rng: random.Random) -> str:
    """One customer's words for the outage."""
    return rng.choice(OUTAGE).format(site=rng.choice(SITES), time=rng.choice(TIMES))


async def chat(client: httpx.AsyncClient, customer: Customer) -> None:
    """Open a chat conversation and send the report; time the message."""
    created = (await client.post("/conversations", json={"channel": "chat"})).json()
    customer.conversation_id, customer.token = created["conversation_id"], created["token"]
    started = time.perf_counter()
    response = await client.post(
        f"/conversations/{customer.conversation_id}/messages",
        json={"text": customer.text},
        headers={"Authorization": f"Bearer {customer.token}"},
    )
    customer.latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        customer.error = f"chat {customer.n}: {response.status_code} {response.text[:200]}"
        return
    customer.replies = response.json()["replies"]


async def email(client: httpx.AsyncClient, customer: Customer) -> None:
    """Send the report as an inbound mail (signed as the mail provider's webhook signs it); time it."""
    mail = {
        "from": f"Customer {customer.n} <customer{customer.n}@example.org>",
        "subject": "Internet down",
        "text": customer.text,
        "message_id": f"<outage-{customer.n}@mail.example.org>",
    }
    raw = json.dumps(mail).encode()
    headers = {"X-Tierone-Signature": sign(SECRET, raw), "Content-Type": "application/json"}
    started = time.perf_counter()
    response = await client.post("/inbound/email", content=raw, headers=headers)
    customer.latency_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        customer.error = f"mail {customer.n}: {response.status_code} {response.text[:200]}"
        return
    customer.conversation_id = response.json()["conversation_id"]


async def arrive(client: httpx.AsyncClient, customer: Customer, at: float, start: float) -> None:
    """Wait until this customer's arrival time, then report."""
    await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
    try:
        await (email(client, customer) if customer.channel == "email" else chat(client, customer))
    except httpx.HTTPError as exc:
        customer.error = f"{customer.channel} {customer.n}: {exc!r}"


async def quiet_run(client: httpx.AsyncClient, args: argparse.Namespace) -> list[Customer]:
    """Ordinary single-user problems, one customer at a time, by chat and mail in the flood's shares.

    Three untimed warm-up turns first; the latencies are the calm server's, to hold the flood's against.
    """
    rng = random.Random(args.seed + 1)
    for _ in range(3):
        await chat(client, Customer(-1, "chat", "hello"))  # routes nowhere: counts toward no spike
    customers = []
    step = args.seconds / max(1, args.customers)  # the flood's rhythm, one customer at a time
    for i in range(args.quiet):
        started = time.perf_counter()
        customer = Customer(10_000 + i, "email" if rng.random() < args.email_share else "chat", QUIET[i % len(QUIET)])
        await (email(client, customer) if customer.channel == "email" else chat(client, customer))
        customers.append(customer)
        await asyncio.sleep(max(0.0, started + step - time.perf_counter()))
    return customers


async def flood(client: httpx.AsyncClient, args: argparse.Namespace) -> list[Customer]:
    """The customers, arriving evenly over the window, a share of them by mail."""
    rng = random.Random(args.seed)
    customers = [
        Customer(n, "email" if rng.random() < args.email_share else "chat", outage_text(rng))
        for n in range(args.customers)
    ]
    start = time.perf_counter()
    step = args.seconds / max(1, args.customers)
    await asyncio.gather(*(arrive(client, c, i * step, start) for i, c in enumerate(customers)))
    return customers


def mail_records(outbox: Path) -> list[dict[str, str]]:
    """Every mail the server sent (the demo outbox is a local file)."""
    if not outbox.exists():
        return []
    return [json.loads(line) for line in outbox.read_text(encoding="utf-8").splitlines() if line.strip()]


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile, linear between ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def lines_of(client: httpx.AsyncClient, customer: Customer) -> list[dict[str, str]]:
    """A chat customer's transcript through the customer API."""
    response = await client.get(
        f"/conversations/{customer.conversation_id}", headers={"Authorization": f"Bearer {customer.token}"}
    )
    response.raise_for_status()
    lines: list[dict[str, str]] = response.json()["transcript"]
    return lines


async def run(url: str, data: Path, args: argparse.Namespace) -> int:
    """The quiet run, the flood, the update and the resolution; print the figures; the number of failed checks."""
    desk = {"Authorization": f"Bearer {ApiKeys(data / 'tierone.sqlite').create('Bench', 'l2')}"}
    outbox = data / "outbox" / "mail.jsonl"
    limits = httpx.Limits(max_connections=args.customers + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        calm = await quiet_run(client, args)
        quiet = [c.latency_ms for c in calm if not c.error]
        after_quiet = len((await client.get("/incidents?status=all", headers=desk)).json())
        print(f"quiet run: {len(calm)} customers, incidents opened {after_quiet} (ordinary traffic opens none)")
        started = time.perf_counter()
        customers = await flood(client, args)
        wall = time.perf_counter() - started
        failed = 0
        errors = [c.error for c in customers if c.error]
        incidents = (await client.get("/incidents?status=all", headers=desk)).json()
        tickets = (await client.get("/handoffs?status=all", headers=desk)).json()
        ids = {c.conversation_id for c in customers}
        attached = {cid for i in incidents for cid in (x["conversation_id"] for x in i["conversations"])} & ids
        incident_tickets = [t for t in tickets if t["packet_id"].startswith("HO-INC-")]
        flood_tickets = [t for t in tickets if t["conversation_id"] in ids and t not in incident_tickets]
        # Lost or duplicated: each chat message once in its transcript and answered; each mail answered once.
        chats = [c for c in customers if c.channel == "chat" and not c.error]
        mails = [c for c in customers if c.channel == "email" and not c.error]
        lost = dup = 0
        for c in chats:
            lines = await lines_of(client, c)
            said = [line for line in lines if line["role"] == "customer"]
            lost += len(said) == 0 or not any(line["role"] == "bot" for line in lines)
            dup += max(0, len(said) - 1)
        answered: dict[str, int] = {}
        for record in mail_records(outbox):
            answered[record["conversation_id"]] = answered.get(record["conversation_id"], 0) + 1
        lost += sum(1 for c in mails if answered.get(c.conversation_id, 0) == 0)
        dup += sum(max(0, answered.get(c.conversation_id, 0) - 1) for c in mails)
        flood_ms = [c.latency_ms for c in customers if not c.error]
        print(
            f"{len(customers)} customers in {wall:.1f} s ({len(chats)} chat, {len(mails)} email); "
            f"request errors {len(errors)}"
        )
        print(
            f"incidents opened: {len(incidents)}; attached: {len(attached)} of {len(customers)}; "
            f"handoff queue: {len(incident_tickets)} incident ticket(s), {len(flood_tickets)} other ticket(s) "
            "from these customers"
        )
        print(f"messages lost: {lost}; duplicated: {dup}")
        quiet_p95, flood_p95 = percentile(quiet, 95), percentile(flood_ms, 95) if flood_ms else float("nan")
        print(
            f"per-turn p95: quiet {quiet_p95:.1f} ms ({len(quiet)} turns, one at a time), "
            f"flood {flood_p95:.1f} ms ({len(flood_ms)} turns) = {flood_p95 / quiet_p95:.2f}x"
        )
        for channel in ("chat", "email"):
            q = [c.latency_ms for c in calm if c.channel == channel and not c.error]
            f = [c.latency_ms for c in customers if c.channel == channel and not c.error]
            if q and f:
                print(
                    f"  {channel}: p50 quiet {percentile(q, 50):.1f} / flood {percentile(f, 50):.1f} ms, "
                    f"p95 quiet {percentile(q, 95):.1f} / flood {percentile(f, 95):.1f} ms"
                )
        failed += len(incidents) != 1 or after_quiet != 0
        failed += len(attached) < int(args.customers * 0.95)
        failed += len(incident_tickets) != 1 or len(flood_tickets) != 0
        failed += lost + dup > 0 or bool(errors)
        failed += flood_p95 > 2 * quiet_p95
        if len(incidents) != 1:
            for error in errors[:10]:
                print("  " + error)
            return failed + 1
        incident = incidents[0]["id"]
        mailed_before = mail_records(outbox)
        for verb, text in (("update", "An engineer is on site with the ISP."), ("resolve", "The line is back up.")):
            response = await client.post(f"/incidents/{incident}/{verb}", json={"text": text}, headers=desk)
            response.raise_for_status()
        new_mail = mail_records(outbox)[len(mailed_before) :]
        attached_chats = [c for c in chats if c.conversation_id in attached]
        attached_mails = [c for c in mails if c.conversation_id in attached]
        counts = {"update": {"chat": 0, "email": 0}, "resolve": {"chat": 0, "email": 0}}
        wrong = 0
        for kind, text in (("update", "An engineer is on site"), ("resolve", "The line is back up.")):
            for c in attached_chats:
                got = sum(1 for line in await lines_of(client, c) if text in line["text"])
                counts[kind]["chat"] += got == 1
                wrong += got != 1
            for c in attached_mails:
                got = sum(1 for m in new_mail if m["conversation_id"] == c.conversation_id and text in m["body"])
                counts[kind]["email"] += got == 1
                wrong += got != 1
        for kind in ("update", "resolve"):
            print(
                f"{kind}: exactly once to {counts[kind]['chat']} of {len(attached_chats)} chat transcripts and "
                f"{counts[kind]['email']} of {len(attached_mails)} mail conversations (outbox)"
            )
        after = (await client.get(f"/incidents/{incident}", headers=desk)).json()
        print(f"incident {incident}: {after['status']}, {len(after['updates'])} updates")
        return failed + wrong


def main() -> None:
    """Start the server, run the quiet run and the flood, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60, help="the customers arrive evenly over this")
    parser.add_argument("--email-share", type=float, default=0.33, help="the share that writes by email")
    parser.add_argument("--quiet", type=int, default=40, help="customers of the quiet run, one at a time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ["TIERONE_INBOUND_SECRET"] = SECRET  # the server starts with the environment of this process
    with tempfile.TemporaryDirectory(prefix="tierone-incidents-") as tmp:
        with local_server(Path(tmp)) as (url, _server):
            failed = asyncio.run(run(url, Path(tmp) / "data", args))
    print("all checks hold" if not failed else f"{failed} check(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
