"""packs/mobile's tools.yaml against the stand-in operator API (bench/mobile_backend.py), in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.mobile_backend import create_backend
from core.errors import ToolError
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS
from tests.conftest import Clock
from tools.declared import DeclaredRunner
from tools.ledger import Ledger
from tools.verification import verify_knowledge

MOBILE = BUNDLED_RUNBOOKS.parent / "packs" / "mobile"


def runner(token: str = "dev-token", fail: dict[str, int] | None = None) -> DeclaredRunner:
    pack = load_pack(MOBILE)
    assert pack.tools is not None
    client = TestClient(create_backend("dev-token", fail))
    values = {"TIERONE_MOBILE_API_URL": "http://testserver", "TIERONE_MOBILE_API_TOKEN": token}
    return DeclaredRunner(pack.tools, values, client)


def test_a_top_up_changes_the_line_once_per_key() -> None:
    tools = runner()
    first = tools.call("top_up_data", {"account_id": "acc-1001", "gb": 2}, key="k1")
    again = tools.call("top_up_data", {"account_id": "acc-1001", "gb": 2}, key="k1")
    other = tools.call("top_up_data", {"account_id": "acc-1001", "gb": 1}, key="k2")
    assert first.data == again.data == {"gb": 2, "price": "EUR 10.00", "data_left_gb": 2.0}
    assert other.data["data_left_gb"] == 3.0
    line = tools.call("lookup_line", {"account_id": "acc-1001"}, key="k3")
    assert line.data["data_left_gb"] == 3.0 and "date_of_birth" not in line.data


def test_a_wrong_token_an_unknown_line_and_a_forced_failure_carry_their_status() -> None:
    with pytest.raises(ToolError) as wrong:
        runner(token="nope").call("lookup_line", {"account_id": "acc-1001"}, key="k")
    assert wrong.value.status == 401
    with pytest.raises(ToolError) as unknown:
        runner().call("lookup_line", {"account_id": "acc-9999"}, key="k")
    assert unknown.value.status == 404
    with pytest.raises(ToolError) as forced:
        runner(fail={"resume_line": 503}).call("resume_line", {"account_id": "acc-1005"}, key="k")
    assert forced.value.status == 503


def test_the_packs_knowledge_check_runs_against_the_standin(tmp_path: Path, clock: Clock) -> None:
    pack = load_pack(MOBILE)
    config = pack.policy.verification.knowledge
    assert config is not None
    ledger = Ledger(tmp_path / "desk.sqlite", clock)

    def check(phone: str, born: str, key: str) -> str | None:
        found = verify_knowledge(
            {"phone": phone, "date_of_birth": born},
            conversation_id="c_1",
            key=key,
            config=config,
            account_field=pack.policy.verification.account_field,
            runner=runner(),
            ledger=ledger,
            clock=clock,
        )
        return found.account_id if found else None

    assert check("07700 900104", "3 April 1990", "k1") == "acc-1004"
    assert check("07700 900104", "4 March 1990", "k2") is None
    assert check("07700 999999", "3 April 1990", "k3") is None
