"""The desk's resolve form teaches the bot, in real headless Chromium against the real server.

Set TIERONE_SCREENSHOTS=docs/img to save docs/img/desk-teach.png.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.e2e.test_browser import Live, browser, contexts, live, open_context, shoot  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_resolving_says_which_runbook_could_have_handled_it(
    live: Live,  # noqa: F811
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],  # noqa: F811
) -> None:
    answer = live.converse(
        ["the wifi on the third floor drops every few minutes since Monday", "can I speak to a real person please"]
    )
    packet_id = answer["handoff"]["packet_id"]
    desk = open_context(browser, contexts, viewport={"width": 1280, "height": 820}).new_page()
    desk.goto(f"{live.url}/desk#/{packet_id}")
    desk.get_by_label("API key").fill(live.key("Dana Scully"))
    desk.get_by_role("button", name="Sign in").click()
    packet = desk.locator("#packet-view")
    packet.get_by_role("button", name="Claim ticket").click()
    expect(packet).to_contain_text("You hold this ticket")

    packet.get_by_role("button", name="Resolve…").click()
    expect(packet.get_by_role("group", name="Could the bot have handled this?")).to_be_visible()
    pick = packet.locator("#teach-runbook")
    expect(pick).to_be_hidden()  # "No" is the default: nothing more to fill in
    packet.get_by_label("Yes, with this runbook").check()
    expect(pick).to_be_visible()
    expect(pick.locator("option", has_text="(wifi-connection)")).to_have_count(1)
    pick.select_option("wifi-connection")
    packet.get_by_label("Resolution note").fill("Forgot and re-joined the network; the access point was fine.")
    shoot(desk, "desk-teach.png")
    packet.get_by_role("button", name="Resolve", exact=True).click()
    expect(packet.locator(".notice")).to_contain_text(re.compile(r"SUG-\d+ goes to the runbook authors"))
    expect(packet.locator(".packet-title")).to_contain_text("Resolved")

    [suggestion] = [s for s in live.runtime.suggestions.list() if s.packet_id == packet_id]
    assert (suggestion.kind, suggestion.runbook_id, suggestion.technician) == (
        "example",
        "wifi-connection",
        "Dana Scully",
    )
    assert suggestion.text == "the wifi on the third floor drops every few minutes since Monday"


def test_a_missing_runbook_needs_a_title_and_steps(
    live: Live,  # noqa: F811
    browser: Browser,  # noqa: F811
    contexts: list[BrowserContext],  # noqa: F811
) -> None:
    answer = live.converse(["my badge no longer opens the car park barrier", "I want to talk to a human"])
    packet_id = answer["handoff"]["packet_id"]
    desk = open_context(browser, contexts, viewport={"width": 1400, "height": 1100}).new_page()
    desk.goto(f"{live.url}/desk#/{packet_id}")
    desk.get_by_label("API key").fill(live.key("Sam Rivera"))
    desk.get_by_role("button", name="Sign in").click()
    packet = desk.locator("#packet-view")
    packet.get_by_role("button", name="Claim ticket").click()
    packet.get_by_role("button", name="Resolve…").click()
    packet.get_by_label("Yes, with a runbook we lack").check()
    packet.get_by_label("Resolution note").fill("Re-enabled the badge for the car park zone.")
    packet.get_by_role("button", name="Resolve", exact=True).click()
    expect(packet.locator(".notice")).to_contain_text("Give the missing runbook a title and at least one step")
    packet.get_by_placeholder("Title of the missing runbook").fill("Badge does not open the car park")
    packet.get_by_placeholder("The steps that solved it, one a line").fill("Check the badge zones\nRe-enable the zone")
    packet.get_by_role("button", name="Resolve", exact=True).click()
    expect(packet.locator(".packet-title")).to_contain_text("Resolved")
    [suggestion] = [s for s in live.runtime.suggestions.list() if s.packet_id == packet_id]
    assert suggestion.kind == "new_runbook" and suggestion.draft["steps"] == [
        "Check the badge zones",
        "Re-enable the zone",
    ]
