"""The lead's /insights page and the HTML audit in real headless Chromium, over a simulated month.

Set TIERONE_SCREENSHOTS=DIR to save docs/img/insights.png and docs/img/audit.png.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, expect

from app.auth import ApiKeys
from app.runtime import open_runtime
from core.settings import BUNDLED_RUNBOOKS, Settings
from eval.cases import load_cases
from eval.simulate import SimClock, Simulator
from server import create_app
from tests.e2e.test_browser import SHOTS, browser, free_port  # noqa: F401 - the browser fixture
from vectorstore.index import RunbookIndex

pytestmark = [pytest.mark.browser, pytest.mark.slow]
START = datetime(2026, 11, 1, tzinfo=UTC)
CASES = Path(__file__).resolve().parents[2] / "eval" / "cases" / "bundled.jsonl"


@dataclass
class Served:
    url: str
    lead: str
    tech: str

    def insights(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.url}/insights", headers={"Authorization": f"Bearer {self.lead}"})
        assert answer.status_code == 200, answer.text
        report: dict[str, Any] = answer.json()
        return report


@pytest.fixture(scope="module")
def served(bundled_index: RunbookIndex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A month of simulated traffic, then the real app under uvicorn, its clock stopped on 4 December."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("insights") / "data", runbooks=BUNDLED_RUNBOOKS)
    clock = SimClock(START)
    runtime = open_runtime(settings, clock=clock, index=bundled_index)
    Simulator(runtime, clock, load_cases(CASES), seed=13).run(START, days=30, conversations=150)
    clock.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    keys = ApiKeys(settings.desk_db)
    lead, tech = keys.create("Morgan Lead", "lead"), keys.create("Alex", "l2")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runtime), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield Served(url, lead, tech)
    server.should_exit = True
    thread.join(timeout=15)


def test_the_page_shows_the_same_figures_as_the_api_in_charts(served: Served, browser: Browser) -> None:  # noqa: F811
    report = served.insights()
    assert report["episodes"] > 100 and report["handed_off"] > 0 and report["confirmed"] > 0
    context = browser.new_context(locale="en-GB", viewport={"width": 1360, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{served.url}/insights")
        page.get_by_label("API key").fill(served.tech)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#key-error")).to_contain_text("needs the lead or admin role")
        page.get_by_label("API key").fill(served.lead)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#board")).to_have_attribute("data-ready", "true")
        containment = f"{100 * report['containment_rate']:.1f}%"
        expect(page.locator('[data-kpi="containment"] b')).to_have_text(containment)
        for outcome in ("confirmed", "no_recontact", "reopened", "abandoned", "handed_off", "pending"):
            expect(page.locator(f'[data-kpi="{outcome}"] b')).to_have_text(str(report[outcome]))
        days = len(report["timeline"])
        assert days > 20 and page.locator("#timeline svg rect").count() >= days
        top_reason = max(
            ((code, n) for c in report["categories"] for code, n in c["reasons"].items()), key=lambda kv: kv[1]
        )[0]
        expect(page.locator("#reasons svg")).to_contain_text(top_reason)
        expect(page.locator("#times svg")).to_contain_text("First response, median")
        expect(page.locator("#sla svg")).to_contain_text("Resolve late")
        expect(page.locator("#didnt svg")).to_contain_text(report["didnt_work"][0]["runbook_id"])
        expect(page.locator("#categories tbody tr")).to_have_count(len(report["categories"]))
        if SHOTS is not None:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "insights.png"), full_page=True)
    finally:
        context.close()


def test_the_html_audit_renders_for_a_lead(served: Served, browser: Browser) -> None:  # noqa: F811
    context = browser.new_context(
        locale="en-GB",
        viewport={"width": 1100, "height": 900},
        extra_http_headers={"Authorization": f"Bearer {served.lead}"},
    )
    try:
        page = context.new_page()
        page.goto(f"{served.url}/audit?month=2026-11&format=html")
        expect(page.locator("h1")).to_have_text("Tier-boundary audit, 2026-11")
        expect(page.locator("table").first).to_contain_text("recommendation")
        expect(page.locator("h2").first).to_be_visible()
        if SHOTS is not None:
            page.screenshot(path=str(SHOTS / "audit.png"), full_page=False)
    finally:
        context.close()
