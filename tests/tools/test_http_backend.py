"""The HTTP directory and status page against a faked REST API in its real wire format (respx)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from core.errors import ToolError
from tools.actions import Toolbox
from tools.base import make_verified
from tools.http_backend import HttpDirectory, HttpStatusPage
from tools.ledger import Ledger
from tools.outbox import FileOutbox

BASE = "https://idp.example.test/api/v1"
STATUS = "https://status.example.test"
TOKEN = "s3cret-token"

JANE = {
    "account_id": "acc-1001",
    "email": "jane.doe@example.com",
    "name": "Jane Doe",
    "status": "active",
    "mfa_method": "authenticator app",
    "plan": "Business",
    "next_invoice": "2026-12-01, 240.00 EUR",
    "failed_sign_ins": 0,
}
BOB = {"account_id": "acc-1002", "email": "bob.smith@example.com", "name": "Bob Smith", "status": "locked"}


class Sleeps:
    """Records the pauses the directory asks for instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def directory(http: httpx.Client, sleeps: Sleeps) -> HttpDirectory:
    return HttpDirectory(BASE, TOKEN, client=http, retries=2, sleep=sleeps)


# --- reads -----------------------------------------------------------------------------------


def test_find_by_email_found(api: respx.MockRouter, directory: HttpDirectory) -> None:
    route = api.get("/accounts").respond(200, json={"accounts": [JANE]})
    account = directory.find_by_email(" Jane.Doe@example.com ")
    assert account is not None
    assert account.account_id == "acc-1001" and account.next_invoice == "2026-12-01, 240.00 EUR"
    request = route.calls.last.request
    assert request.url.params["email"] == "Jane.Doe@example.com"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert "Idempotency-Key" not in request.headers


def test_find_by_email_not_found(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.get("/accounts").respond(200, json={"accounts": []})
    assert directory.find_by_email("nobody@example.com") is None


def test_find_by_email_ignores_accounts_with_another_email(api: respx.MockRouter, directory: HttpDirectory) -> None:
    # A server that matches loosely must not make the bot pick someone else's account.
    api.get("/accounts").respond(200, json={"accounts": [BOB]})
    assert directory.find_by_email("bob@example.com") is None


def test_find_by_email_refuses_two_accounts_with_the_same_email(
    api: respx.MockRouter, directory: HttpDirectory
) -> None:
    api.get("/accounts").respond(200, json={"accounts": [JANE, {**JANE, "account_id": "acc-9"}]})
    with pytest.raises(ToolError, match="same email"):
        directory.find_by_email("jane.doe@example.com")


def test_get_found(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.get("/accounts/acc-1002").respond(200, json=BOB)
    account = directory.get("acc-1002")
    assert account is not None and account.status == "locked" and account.email == "bob.smith@example.com"


def test_get_404_is_none_and_not_retried(api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps) -> None:
    route = api.get("/accounts/acc-404").respond(404, json={"detail": "no such account"})
    assert directory.get("acc-404") is None
    assert route.call_count == 1 and sleeps.calls == []


def test_account_id_is_percent_encoded_in_the_path(api: respx.MockRouter, directory: HttpDirectory) -> None:
    route = api.get(url=f"{BASE}/accounts/a%2F..%2Fadmin").respond(404)
    assert directory.get("a/../admin") is None
    assert route.called


def test_invalid_account_json_raises(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.get("/accounts/acc-1001").respond(200, json={**JANE, "status": "frozen"})
    with pytest.raises(ToolError, match="not valid.*status"):
        directory.get("acc-1001")


def test_accounts_body_without_list_raises(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.get("/accounts").respond(200, json={"items": [JANE]})
    with pytest.raises(ToolError, match="'accounts' list"):
        directory.find_by_email("jane.doe@example.com")


def test_no_authorization_header_without_token(api: respx.MockRouter, http: httpx.Client) -> None:
    route = api.get("/accounts/acc-1001").respond(200, json=JANE)
    HttpDirectory(BASE, None, client=http).get("acc-1001")
    assert "Authorization" not in route.calls.last.request.headers


# --- actions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "result"),
    [
        ("reset_password", "/accounts/acc-1001/password-reset", {"link_id": "ab12", "sent_to": "jane.doe@example.com"}),
        ("unlock", "/accounts/acc-1001/unlock", {"status_before": "locked", "status_after": "active"}),
        ("reset_mfa", "/accounts/acc-1001/mfa/reset", {"removed": "authenticator app"}),
    ],
)
def test_action_posts_with_auth_and_idempotency_key(
    api: respx.MockRouter, directory: HttpDirectory, method: str, path: str, result: dict[str, Any]
) -> None:
    route = api.post(path).respond(201 if method == "unlock" else 200, json=result)
    assert getattr(directory, method)("acc-1001", key=f"c_1:t3:{method}") == result
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Idempotency-Key"] == f"c_1:t3:{method}"
    assert request.headers["Accept"] == "application/json"


def test_create_ticket_sends_json_body(api: respx.MockRouter, directory: HttpDirectory) -> None:
    route = api.post("/tickets").respond(201, json={"ticket": "REQ-123456", "summary": "Visio licence"})
    result = directory.create_ticket("acc-1001", "Visio licence", key="k-ticket")
    assert result["ticket"] == "REQ-123456"
    request = route.calls.last.request
    assert json.loads(request.content) == {"account_id": "acc-1001", "summary": "Visio licence"}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "k-ticket"


def test_create_ticket_without_ticket_number_raises(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.post("/tickets").respond(201, json={"id": 7})
    with pytest.raises(ToolError, match="'ticket'"):
        directory.create_ticket("acc-1001", "Visio licence", key="k")


def test_server_replay_header_marks_result_replayed(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.post("/accounts/acc-1001/unlock").respond(
        200, json={"status_before": "locked"}, headers={"Idempotent-Replayed": "true"}
    )
    assert directory.unlock("acc-1001", key="k") == {"status_before": "locked", "replayed": True}


# --- retries and errors ----------------------------------------------------------------------


def test_503_then_200_is_retried_with_the_same_idempotency_key(
    api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps
) -> None:
    route = api.post("/accounts/acc-1002/unlock").mock(
        side_effect=[httpx.Response(503), httpx.Response(200, json={"status_before": "locked"})]
    )
    assert directory.unlock("acc-1002", key="k-unlock") == {"status_before": "locked"}
    assert route.call_count == 2
    assert [call.request.headers["Idempotency-Key"] for call in route.calls] == ["k-unlock", "k-unlock"]
    assert len(sleeps.calls) == 1 and 0 < sleeps.calls[0] <= 2


def test_429_retry_after_is_honoured_and_capped(
    api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps
) -> None:
    route = api.post("/accounts/acc-1001/password-reset").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(429, headers={"Retry-After": "120"}),
            httpx.Response(200, json={"link_id": "x"}),
        ]
    )
    assert directory.reset_password("acc-1001", key="k") == {"link_id": "x"}
    assert route.call_count == 3
    assert sleeps.calls == [1.0, 2.0]


def test_persistent_500_raises_naming_path_and_status(
    api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps
) -> None:
    route = api.post("/accounts/acc-1001/mfa/reset").respond(500, json={"error": "database unavailable"})
    with pytest.raises(ToolError) as raised:
        directory.reset_mfa("acc-1001", key="k")
    message = str(raised.value)
    assert "POST" in message and "/accounts/acc-1001/mfa/reset" in message and "500" in message
    assert "database unavailable" in message
    assert TOKEN not in message
    assert route.call_count == 3  # the first try and two retries
    assert len(sleeps.calls) == 2 and all(0 < s <= 2 for s in sleeps.calls)


def test_403_raises_with_detail_and_is_not_retried(
    api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps
) -> None:
    route = api.post("/accounts/acc-1001/unlock").respond(403, json={"detail": "token lacks scope accounts:write"})
    with pytest.raises(ToolError, match=r"POST /accounts/acc-1001/unlock .*403.*token lacks scope accounts:write"):
        directory.unlock("acc-1001", key="k")
    assert route.call_count == 1 and sleeps.calls == []


def test_timeout_is_retried_then_raises(api: respx.MockRouter, directory: HttpDirectory, sleeps: Sleeps) -> None:
    route = api.get("/accounts/acc-1001").mock(side_effect=httpx.ConnectTimeout("timed out"))
    with pytest.raises(ToolError, match=r"GET /accounts/acc-1001 .*ConnectTimeout"):
        directory.get("acc-1001")
    assert route.call_count == 3
    assert len(sleeps.calls) == 2


def test_timeout_then_success_keeps_the_key(api: respx.MockRouter, directory: HttpDirectory) -> None:
    route = api.post("/tickets").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(201, json={"ticket": "REQ-100001"})]
    )
    assert directory.create_ticket("acc-1001", "access", key="k-t")["ticket"] == "REQ-100001"
    assert [c.request.headers["Idempotency-Key"] for c in route.calls] == ["k-t", "k-t"]


def test_malformed_json_body_raises(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.post("/accounts/acc-1001/unlock").respond(
        200, content=b"<html>Gateway</html>", headers={"Content-Type": "text/html"}
    )
    with pytest.raises(ToolError, match="not JSON"):
        directory.unlock("acc-1001", key="k")


def test_json_that_is_not_an_object_raises(api: respx.MockRouter, directory: HttpDirectory) -> None:
    api.post("/accounts/acc-1001/unlock").respond(200, json=["ok"])
    with pytest.raises(ToolError, match="not an object"):
        directory.unlock("acc-1001", key="k")


def test_bad_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="http"):
        HttpDirectory("idp.example.test", None)


# --- status page -----------------------------------------------------------------------------


def test_status_page_maps_all_statuses_and_skips_groups(http: httpx.Client) -> None:
    components = [
        {"id": "g1", "name": "Productivity", "status": "major_outage", "description": None, "group": True},
        {"id": "c1", "name": "Email", "status": "operational", "description": None, "group": False},
        {"id": "c2", "name": "VPN", "status": "degraded_performance", "description": "Slow in EU", "group": False},
        {"id": "c3", "name": "SSO", "status": "partial_outage", "description": None, "group": False},
        {"id": "c4", "name": "Payments", "status": "major_outage", "description": "Card payments fail"},
        {"id": "c5", "name": "API", "status": "under_maintenance", "description": None, "group_id": "g1"},
    ]
    with respx.mock(base_url=STATUS) as router:
        route = router.get("/api/v2/components.json").respond(200, json={"page": {"id": "p"}, "components": components})
        page = HttpStatusPage(STATUS, client=http, aliases={"email": ["outlook"]})
        services = page.services()
    assert route.call_count == 1
    assert [(s.name, s.state, s.note) for s in services] == [
        ("email", "operational", ""),
        ("vpn", "degraded", "Slow in EU"),
        ("sso", "degraded", ""),
        ("payments", "outage", "Card payments fail"),
        ("api", "maintenance", ""),
    ]
    assert services[0].aliases == ["outlook"]


def test_status_page_unknown_status_raises(http: httpx.Client) -> None:
    with respx.mock(base_url=STATUS) as router:
        router.get("/api/v2/components.json").respond(
            200, json={"components": [{"name": "Email", "status": "on_fire", "group": False}]}
        )
        with pytest.raises(ToolError, match="unknown status 'on_fire'"):
            HttpStatusPage(STATUS, client=http).services()


def test_status_page_http_error_raises(http: httpx.Client) -> None:
    with respx.mock(base_url=STATUS) as router:
        router.get("/api/v2/components.json").respond(502)
        with pytest.raises(ToolError, match=r"GET /api/v2/components.json .*502"):
            HttpStatusPage(STATUS, client=http).services()


# --- through the Toolbox ---------------------------------------------------------------------


def make_toolbox(tmp_path: Path, directory: HttpDirectory, http: httpx.Client) -> Toolbox:
    def clock() -> datetime:
        return datetime(2026, 11, 23, tzinfo=UTC)

    return Toolbox(
        directory=directory,
        status_page=HttpStatusPage(STATUS, client=http),
        outbox=FileOutbox(tmp_path, clock),
        ledger=Ledger(tmp_path / "ledger.db", clock),
        clock=clock,
    )


def test_toolbox_unlock_acts_once_per_key(
    api: respx.MockRouter, directory: HttpDirectory, http: httpx.Client, tmp_path: Path
) -> None:
    route = api.post("/accounts/acc-1002/unlock").respond(
        200, json={"status_before": "locked", "status_after": "active"}
    )
    toolbox = make_toolbox(tmp_path, directory, http)
    account = make_verified("acc-1002", "bob.smith@example.com", toolbox.clock(), "c_1")
    first = toolbox.run("unlock_account", key="k1", conversation_id="c_1", account=account)
    assert first.ok and not first.replayed
    assert first.data == {"status_before": "locked", "status_after": "active"}
    assert first.message == "(It was locked; it is active now.)"
    assert route.call_count == 1
    assert route.calls.last.request.headers["Idempotency-Key"] == "k1"
    again = toolbox.run("unlock_account", key="k1", conversation_id="c_1", account=account)
    assert again.replayed and again.ok and again.data == first.data
    assert route.call_count == 1


def test_toolbox_reports_a_failing_api_as_a_failed_step(
    api: respx.MockRouter, directory: HttpDirectory, http: httpx.Client, tmp_path: Path, sleeps: Sleeps
) -> None:
    route = api.post("/accounts/acc-1002/unlock").respond(500)
    toolbox = make_toolbox(tmp_path, directory, http)
    account = make_verified("acc-1002", "bob.smith@example.com", toolbox.clock(), "c_1")
    result = toolbox.run("unlock_account", key="k1", conversation_id="c_1", account=account)
    assert not result.ok
    assert result.error is not None and "500" in result.error and "/accounts/acc-1002/unlock" in result.error
    assert route.call_count == 3 and len(sleeps.calls) == 2
    assert [row["outcome"] for row in toolbox.ledger.audit("c_1")] == ["failed"]


def test_settings_choose_the_http_backends(tmp_path: Path) -> None:
    from app.runtime import open_runtime
    from core.pack import load_pack
    from core.settings import BUNDLED_RUNBOOKS, Settings
    from vectorstore.index import RunbookIndex, open_client

    class NoEmbedder:
        name = "none"

        def embed(self, texts: object) -> object:
            raise AssertionError("not used")

    settings = Settings(
        data_dir=tmp_path, directory_url="https://idp.example.com/api", status_url="https://status.example.com"
    )
    index = RunbookIndex(open_client(None), load_pack(BUNDLED_RUNBOOKS), NoEmbedder())  # type: ignore[arg-type]
    toolbox = open_runtime(settings, index=index).resolver.deps.toolbox
    assert isinstance(toolbox.directory, HttpDirectory)
    assert isinstance(toolbox.status_page, HttpStatusPage)
