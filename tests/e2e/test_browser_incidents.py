"""The desk's Incidents view in real headless Chromium, against the real server on loopback.

Its own server (the module-scoped ``live`` fixture, re-declared here), so the incident it opens
does not meet the conversations of the other browser tests.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.e2e.test_browser import Live, bot_lines, browser, contexts, live, open_context, say, shoot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

__all__ = ["browser", "contexts", "live"]  # fixtures, used by name


def test_affected_count_rises_live_and_an_update_reaches_the_chat(
    live: Live, browser: Browser, contexts: list[BrowserContext]
) -> None:
    key = live.key("Dana Scully")
    desk = open_context(browser, contexts, viewport={"width": 1400, "height": 1000}).new_page()
    desk.goto(f"{live.url}/desk")
    desk.get_by_label("API key").fill(key)
    desk.get_by_role("button", name="Sign in").click()
    expect(desk.locator("#incidents-empty")).to_be_visible()

    # The first customer reports the outage in the chat page: an incident opens, named in the reply.
    chat = open_context(browser, contexts, viewport={"width": 900, "height": 820}).new_page()
    chat.goto(f"{live.url}/chat")
    say(chat, "everyone in the office lost internet 10 minutes ago")
    expect(bot_lines(chat).last).to_contain_text("INC-")
    incident = desk.locator(".incident")
    expect(incident).to_have_count(1)
    expect(incident.locator(".affected")).to_have_text("1 affected")

    # More customers report it in other words; the desk's count rises without a reload.
    for text in ("network outage: Leeds site is hard down since 05:04 pm", "nobody can get online on our floor"):
        answer = live.converse([text])
        assert answer["stage"] == "incident"
    expect(incident.locator(".affected")).to_have_text("3 affected")
    expect(incident.locator(".attached li")).to_have_count(3)
    shoot(desk, "desk-incidents.png")

    # Claimed, then an update goes out: the chat customer sees it once.
    incident.get_by_role("button", name="Claim").click()
    expect(incident.locator(".incident-facts")).to_contain_text("claimed by Dana Scully")
    incident.get_by_label("Message to every affected customer").fill("The ISP has an engineer on site.")
    incident.get_by_role("button", name="Post update").click()
    tech = chat.locator("#messages .msg-technician")
    expect(tech).to_have_count(1)
    expect(tech.last).to_contain_text("The ISP has an engineer on site.")
    expect(incident.locator(".incident-known")).to_contain_text("The ISP has an engineer on site.")

    # An empty update is refused with the reason, and nothing reaches the customer.
    incident.get_by_role("button", name="Post update").click()
    expect(incident.get_by_role("status")).to_contain_text("empty")

    # Resolved: it leaves the list, and the customer is told.
    incident.get_by_label("Message to every affected customer").fill("Service is back.")
    incident.get_by_role("button", name="Resolve").click()
    expect(tech).to_have_count(2)
    expect(tech.last).to_contain_text("Service is back.")
    expect(desk.locator(".incident")).to_have_count(0)
