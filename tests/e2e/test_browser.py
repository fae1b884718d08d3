"""The chat page and the L2 desk in real headless Chromium, against the real server on loopback.

Chromium is the Debian package (`make test` installs it); playwright drives it and never downloads
a browser. Set TIERONE_SCREENSHOTS=DIR to save the pages as PNGs (docs/img holds the committed ones).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from app.auth import ApiKeys
from app.runtime import Runtime, open_runtime
from core.settings import BUNDLED_RUNBOOKS, Settings
from server import create_app
from tests.net import free_port
from vectorstore.index import RunbookIndex

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# The customer's browser sits in another time zone than the server (UTC): due times must be shown locally.
CUSTOMER_TZ = "America/New_York"
SHOTS = Path(os.environ["TIERONE_SCREENSHOTS"]) if os.environ.get("TIERONE_SCREENSHOTS") else None
# A turn takes milliseconds; the slack is for a loaded 2-core machine. Waits end as soon as the page matches.
expect.set_options(timeout=20_000)


class ShiftedClock:
    """The real clock, which a test may set back to make a conversation that happened hours ago."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@dataclass
class Live:
    url: str
    runtime: Runtime
    settings: Settings
    clock: ShiftedClock
    tokens: dict[str, str] = field(default_factory=dict)  # conversation id -> customer token

    def mail(self, conversation_id: str) -> list[dict[str, Any]]:
        path = self.settings.outbox_dir / "mail.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if r["conversation_id"] == conversation_id]

    def code(self, conversation_id: str) -> str:
        match = re.search(r"\b(\d{6})\b", self.mail(conversation_id)[-1]["body"])
        assert match, self.mail(conversation_id)
        return match.group(1)

    def key(self, name: str, role: str = "l2") -> str:
        return ApiKeys(self.settings.desk_db).create(name, role)

    def say(self, cid: str, text: str) -> dict[str, Any]:
        """One customer message through the HTTP API, as another tab or app of the same customer would."""
        auth = {"Authorization": f"Bearer {self.tokens[cid]}"}
        response = httpx.post(f"{self.url}/conversations/{cid}/messages", json={"text": text}, headers=auth)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def converse(self, turns: list[str], *, ago: timedelta = timedelta(0)) -> dict[str, Any]:
        """Play a whole conversation through the HTTP API, ``ago`` in the past; the last answer."""
        self.clock.offset = -ago
        try:
            created = httpx.post(f"{self.url}/conversations", json={"channel": "chat"}).json()
            cid, auth = created["conversation_id"], {"Authorization": f"Bearer {created['token']}"}
            self.tokens[cid] = created["token"]
            answer: dict[str, Any] = {}
            for turn in turns:
                text = self.code(cid) if turn == "{otp}" else turn
                response = httpx.post(f"{self.url}/conversations/{cid}/messages", json={"text": text}, headers=auth)
                assert response.status_code == 200, response.text
                answer = response.json()
            return answer
        finally:
            self.clock.offset = timedelta(0)


@pytest.fixture(scope="module")
def live(bundled_index: RunbookIndex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The real app under uvicorn on 127.0.0.1, on fresh stores, with the real clock."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("browser") / "data", runbooks=BUNDLED_RUNBOOKS)
    clock = ShiftedClock()
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, runtime),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # wait for readiness; the deadline only stops a broken start from hanging
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert thread.is_alive(), "the server thread died during start-up"
        assert time.monotonic() < deadline, "the server did not become ready in 60 s"
        time.sleep(0.05)
    yield Live(url, runtime, settings, clock)
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: `make test` installs it (apt-get install -y chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def contexts(browser: Browser) -> Iterator[list[BrowserContext]]:
    opened: list[BrowserContext] = []
    yield opened
    for context in opened:
        context.close()


def open_context(browser: Browser, opened: list[BrowserContext], **kwargs: Any) -> BrowserContext:
    context = browser.new_context(locale="en-GB", **kwargs)
    context.set_default_timeout(20_000)
    opened.append(context)
    return context


def shoot(page: Page, name: str, *, full_page: bool = False) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        if full_page:
            page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SHOTS / name), full_page=full_page)


def say(page: Page, text: str) -> None:
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")


def stored_conversation(page: Page) -> dict[str, str]:
    stored: dict[str, str] = page.evaluate("JSON.parse(localStorage.getItem('tierone.chat'))")
    return stored


def bot_lines(page: Page) -> Any:
    return page.locator("#messages .msg-bot .bubble")


# ---- pages without a browser ---------------------------------------------------------------------


def test_pages_are_served_with_a_same_origin_policy(live: Live) -> None:
    root = httpx.get(f"{live.url}/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/chat"
    for page in ("/chat", "/desk"):
        response = httpx.get(f"{live.url}{page}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        # Nothing is loaded from another origin: every src and href is a path on this server.
        for ref in re.findall(r'(?:src|href)="([^"]+)"', response.text):
            assert ref.startswith(("/", "#")), ref
    assert httpx.get(f"{live.url}/static/js/chat.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{live.url}/static/nothing-here.js").status_code == 404


# ---- the customer --------------------------------------------------------------------------------


def test_password_reset_end_to_end_in_the_chat_page(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_context(browser, contexts, viewport={"width": 900, "height": 820}).new_page()
    page.goto(f"{live.url}/")
    expect(page).to_have_url(f"{live.url}/chat")
    expect(page.get_by_role("heading", name="Tierone Support")).to_be_visible()
    expect(page.get_by_label("Your message")).to_be_focused()

    say(page, "I forgot my password")
    expect(bot_lines(page).last).to_contain_text("email address on your account")
    expect(page.get_by_label("Your message")).to_be_enabled()
    cid = stored_conversation(page)["id"]

    say(page, "jane.doe@example.com")
    expect(bot_lines(page).last).to_contain_text("code")
    say(page, live.code(cid))
    expect(bot_lines(page).last).to_contain_text("password-reset link")
    expect(page.locator("#typing")).to_be_hidden()
    shoot(page, "chat-conversation.png")

    say(page, "yes, I'm in now, thanks")
    expect(bot_lines(page).last).to_contain_text("glad")
    # The reset really ran, once, on Jane's account.
    with sqlite3.connect(live.settings.desk_db) as conn:
        actions = conn.execute("SELECT account_id, action FROM directory_actions").fetchall()
    assert actions.count(("acc-1001", "reset_password")) == 1, actions

    # A reload finds the whole conversation, in order.
    page.reload()
    expect(page.locator("#messages .msg-customer")).to_have_count(4)
    expect(bot_lines(page)).to_have_count(4)
    expect(bot_lines(page).last).to_contain_text("glad")
    assert page.locator("#handoff-banner").is_hidden()


def test_a_refused_message_shows_the_reason_and_keeps_the_text(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    page = open_context(browser, contexts).new_page()
    page.goto(f"{live.url}/chat")
    say(page, "my VPN keeps dropping")
    expect(bot_lines(page)).to_have_count(1)
    bad = "still broken \u0007 here"
    say(page, bad)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("control character")
    expect(page.get_by_label("Your message")).to_have_value(bad)
    expect(page.locator("#messages .msg-customer")).to_have_count(1)


# ---- handoff, the desk, and the technician's reply ------------------------------------------------


def test_handoff_desk_claim_reply_reaches_the_customer(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    # The customer reports a phishing click; that goes to a person.
    customer = open_context(browser, contexts, timezone_id=CUSTOMER_TZ, viewport={"width": 900, "height": 820})
    chat = customer.new_page()
    chat.goto(f"{live.url}/chat")
    say(chat, "I clicked a link in a phishing email")
    banner = chat.locator("#handoff-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("passed your conversation to a person")
    conv = stored_conversation(chat)
    view = httpx.get(
        f"{live.url}/conversations/{conv['id']}", headers={"Authorization": f"Bearer {conv['token']}"}
    ).json()
    packet_id = view["handoff"]["packet_id"]
    due = datetime.fromisoformat(view["handoff"]["first_response_due"])
    expect(banner).to_contain_text(f"Ticket {packet_id}")
    expect(banner).to_contain_text(f"Priority {view['handoff']['priority']}")
    local_due = due.astimezone(ZoneInfo(CUSTOMER_TZ)).strftime("%H:%M")
    # Local time, with the day in front when it is not today there.
    expect(banner).to_contain_text(re.compile(f"A technician will reply by ([^,]+, )?{local_due} \\(your time\\)"))
    expect(chat.locator("#presence-text")).to_have_text("Waiting for a support technician")
    shoot(chat, "chat-handoff.png")

    # Two more tickets wait: one from five hours ago, past its first-response time.
    late = live.converse(
        ["it says my account is locked", "li.wei@example.com", "{otp}"] + ["no"] * 4, ago=timedelta(hours=5)
    )
    human = live.converse(["my laptop fan is really loud", "can I speak to a real person please"])
    assert late["handoff"] and human["handoff"]

    # The technician signs in to the desk; a wrong key is refused first.
    key = live.key("Dana Scully")
    desk = open_context(browser, contexts, viewport={"width": 1400, "height": 1000}).new_page()
    desk.goto(f"{live.url}/desk")
    desk.get_by_label("API key").fill("not-a-key")
    desk.get_by_role("button", name="Sign in").click()
    expect(desk.get_by_role("alert")).to_contain_text("not recognised")
    desk.get_by_label("API key").fill(key)
    desk.get_by_role("button", name="Sign in").click()
    expect(desk.locator("#who-name")).to_have_text("Dana Scully · L2 technician")

    # The ticket is in the queue with a live countdown to its first-response due time.
    ticket = desk.locator(f'.ticket[data-packet="{packet_id}"]')
    expect(ticket).to_be_visible()
    countdown = ticket.locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"^due in \d+:\d\d(:\d\d)?$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)  # it ticks
    expect(ticket).to_contain_text(view["handoff"]["priority"])
    expect(ticket.locator(".flag")).to_have_text("At risk")  # P1: first reply due within 15 minutes
    overdue = desk.locator(f'.ticket[data-packet="{late["handoff"]["packet_id"]}"]')
    expect(overdue.locator(".flag")).to_have_text("Breached")
    expect(overdue.locator(".countdown")).to_have_text(re.compile(r"overdue$"))
    # Sorted by first-response due time: the breached one first.
    order = desk.locator(".ticket").evaluate_all("nodes => nodes.map(n => n.dataset.packet)")
    assert order.index(late["handoff"]["packet_id"]) < order.index(packet_id)
    assert human["handoff"]["packet_id"] in order
    shoot(desk, "desk-queue.png")

    # The packet view shows what the bot knew: reasons, the customer's words, the hypothesis.
    ticket.click()
    expect(desk).to_have_url(re.compile(f"#/{packet_id}$"))
    packet = desk.locator("#packet-view")
    expect(packet.get_by_role("heading", name=packet_id)).to_be_visible()
    expect(packet.locator(".transcript")).to_contain_text("phishing")
    stored = live.runtime.resolver.deps.handoffs.get(packet_id)
    for code in stored.reason_codes:
        expect(packet.locator(".reason code", has_text=code)).to_be_visible()
    expect(packet.locator(".hypothesis")).to_have_text(stored.hypothesis)
    expect(packet).to_contain_text("Not verified")

    # Dana claims it; a second technician who tries too is told it is taken.
    packet.get_by_role("button", name="Claim ticket").click()
    expect(packet).to_contain_text("You hold this ticket")
    expect(chat.locator("#handoff-banner")).to_contain_text("Dana Scully has joined the conversation")

    other = open_context(browser, contexts).new_page()
    other.goto(f"{live.url}/desk#/{packet_id}")
    other.get_by_label("API key").fill(live.key("Sam Rivera"))
    other.get_by_role("button", name="Sign in").click()
    expect(other.locator("#packet-view")).to_contain_text("Dana Scully holds this ticket")
    other.get_by_role("button", name="Claim ticket").click()
    expect(other.locator("#packet-view .notice")).to_contain_text("Conflict")

    # Dana replies; the reply arrives in the customer's open chat page.
    reply = "Hi, Dana from IT security here. Don't type anything into that page; I'm signing you out everywhere now."
    packet.get_by_label("Reply to the customer").fill(reply)
    packet.get_by_role("button", name="Send reply").click()
    expect(packet.locator(".transcript")).to_contain_text("signing you out everywhere")
    tech = chat.locator("#messages .msg-technician")
    expect(tech).to_have_count(1)
    expect(tech.locator(".bubble")).to_have_text(reply)
    expect(tech.locator(".meta")).to_contain_text("Dana Scully")
    shoot(desk, "desk-claimed.png", full_page=True)

    # The customer answers; the bot stays quiet and the technician sees it.
    say(chat, "ok thank you, I closed the tab")
    expect(packet.locator(".transcript")).to_contain_text("I closed the tab")
    expect(chat.locator("#messages .msg-customer")).to_have_count(2)
    expect(bot_lines(chat)).to_have_count(1)
    shoot(chat, "chat-technician.png")

    # The shareable link opens the whole conversation, technician reply included, in a fresh browser.
    link = f"{live.url}/chat#c={conv['id']}&t={conv['token']}"
    phone = {"width": 390, "height": 800}
    elsewhere = open_context(browser, contexts, viewport=phone, is_mobile=True, has_touch=True).new_page()
    elsewhere.goto(link)
    expect(elsewhere.locator("#messages .msg-technician .bubble")).to_have_text(reply)
    expect(elsewhere.locator("#messages .msg-customer")).to_have_count(2)
    expect(elsewhere).to_have_url(f"{live.url}/chat")  # the token leaves the address bar
    # At a phone's width nothing runs off the side.
    assert elsewhere.evaluate("document.documentElement.scrollWidth") <= phone["width"]
    shoot(elsewhere, "chat-phone.png")

    # Resolving with a note tells the customer.
    packet.get_by_role("button", name="Resolve…").click()
    packet.get_by_label("Resolution note").fill("Sessions revoked, password reset forced, no data entered.")
    packet.get_by_role("button", name="Resolve", exact=True).click()
    expect(packet.locator(".packet-title")).to_contain_text("Resolved")
    expect(chat.locator("#handoff-banner")).to_contain_text("resolved")

    # The late ticket's packet: a verified customer, the tool the bot ran and what it returned.
    overdue.click()
    late_packet = live.runtime.resolver.deps.handoffs.get(late["handoff"]["packet_id"])
    expect(packet.get_by_role("heading", name=late_packet.packet_id)).to_be_visible()
    expect(packet).to_contain_text("✓ Verified")
    tools = [a.tool for a in late_packet.attempts if a.kind == "tool"]
    assert tools
    for tool in tools:
        expect(packet.locator(".attempt .title", has_text=f"Tool {tool}").first).to_be_visible()
    expect(packet.locator(".countdown").first).to_have_text(re.compile(r"overdue$"))
    shoot(desk, "desk-packet.png", full_page=True)

    # Claimed, then sent back to the bot: the bot answers that customer again.
    packet.get_by_role("button", name="Claim ticket").click()
    late_cid = late["conversation_id"]
    assert live.say(late_cid, "are you there?")["replies"] == []  # claimed: the bot is silent
    packet.get_by_role("button", name="Return to bot…").click()
    packet.get_by_label("Why it goes back to the bot (optional)").fill("Unlocked in the on-prem directory.")
    packet.get_by_role("button", name="Return to bot", exact=True).click()
    expect(packet.locator(".packet-title")).to_contain_text("Returned to bot")
    expect(packet.locator(".events")).to_contain_text("Unlocked in the on-prem directory.")
    assert live.say(late_cid, "my printer is jammed")["replies"]


def test_the_desk_works_by_keyboard_alone(live: Live, browser: Browser, contexts: list[BrowserContext]) -> None:
    answer = live.converse(["please get me a human"])
    packet_id = answer["handoff"]["packet_id"]
    desk = open_context(browser, contexts).new_page()
    desk.goto(f"{live.url}/desk")
    expect(desk.get_by_label("API key")).to_be_focused()
    desk.keyboard.type(live.key("Kim Lee"))
    desk.keyboard.press("Enter")
    ticket = desk.locator(f'.ticket[data-packet="{packet_id}"]')
    expect(ticket).to_be_visible()
    for _ in range(40):  # Tab through the filters to the ticket
        if ticket.evaluate("node => node === document.activeElement"):
            break
        desk.keyboard.press("Tab")
    expect(ticket).to_be_focused()
    desk.keyboard.press("Enter")
    expect(desk.locator("#packet-view").get_by_role("heading", name=packet_id)).to_be_visible()
    expect(desk.locator("#packet")).to_be_focused()

    # Filters narrow the queue on the server's side; the open ticket stays on the right.
    priority = answer["handoff"]["priority"]
    other = "P1" if priority != "P1" else "P4"
    desk.get_by_label("Priority").select_option(other)
    expect(ticket).to_have_count(0)
    desk.get_by_label("Priority").select_option(priority)
    expect(ticket).to_be_visible()
    desk.get_by_label("Status").select_option("resolved")
    expect(ticket).to_have_count(0)
    desk.get_by_label("Status").select_option("open")
    expect(ticket).to_be_visible()


def test_the_packet_shows_the_matched_outcome_and_the_runbook_switched_from(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    fault = live.converse(["the printer jammed again", "the paper jam keeps coming back every time"])
    switched = live.converse(["wifi not working", "I think I clicked a phishing link and now the wifi is acting weird"])
    desk = open_context(browser, contexts).new_page()
    desk.goto(f"{live.url}/desk#/{fault['handoff']['packet_id']}")
    desk.get_by_label("API key").fill(live.key("Kim Lee"))
    desk.get_by_role("button", name="Sign in").click()
    packet = desk.locator("#packet-view")
    expect(packet.locator(".attempts")).to_contain_text("Answer to step 1: hardware-fault")
    expect(packet.locator(".reason code", has_text="printer_hardware_fault")).to_be_visible()
    desk.goto(f"{live.url}/desk#/{switched['handoff']['packet_id']}")
    expect(packet).to_contain_text("Started with")
    expect(packet).to_contain_text("wifi-connection")


def test_the_chat_stream_reconnects_from_the_last_line(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    first = live.converse(["my VPN keeps dropping"])
    cid = first["conversation_id"]
    page = open_context(browser, contexts).new_page()
    requests: list[str] = []

    def cut_the_first_stream(route: Any) -> None:
        requests.append(route.request.url)
        if len(requests) == 1:  # the stream ends at once, as a proxy cutting it would
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=": bye\n\n")
        else:
            route.continue_()

    page.route(re.compile(r"/conversations/[^/]+/events"), cut_the_first_stream)
    seen: list[str] = []

    def second_stream(request: Any) -> bool:
        if "/events" in request.url:
            seen.append(request.url)
        return len(seen) >= 2

    with page.expect_request(second_stream) as reconnect:
        page.goto(f"{live.url}/chat#c={cid}&t={live.tokens[cid]}")
    expect(bot_lines(page)).to_have_count(1)
    last_seq = max(int(n) for n in page.locator("#messages li").evaluate_all("ns => ns.map(n => n.dataset.seq)"))
    assert f"after={last_seq}" in reconnect.value.url
    # A message from another tab of the same customer arrives over the new stream.
    live.say(cid, "it drops every ten minutes on the office wifi")
    expect(page.locator("#messages .msg-customer .bubble").last).to_contain_text("every ten minutes")
    expect(bot_lines(page)).to_have_count(2)
