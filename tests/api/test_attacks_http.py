"""The attack suite through the HTTP API: the same 130 attacks and checks, sent as a client would.

Each attack opens its conversation with ``POST /conversations`` and sends every turn with that
conversation's token. A 4xx answer (a message refused as too long, malformed, over a rate limit)
is a correct outcome and counts as rejected. On top of the in-process checks, the attacker's token
must not open, read or write the victim's conversation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import respx
from fastapi.testclient import TestClient

from server import create_app
from tests.agent.test_attacks import (
    ALL,
    COMPLETIONS,
    ComplyingModel,
    World,
    _report,
    _runtime,
    build_world,
    expand,
    honest_model,
    violations,
)
from tests.conftest import Clock
from vectorstore.index import RunbookIndex


def play_http(client: TestClient, world: World, attack: dict[str, Any]) -> tuple[str, str]:
    opened = client.post("/conversations", json={"channel": attack.get("channel", "chat")})
    assert opened.status_code == 201, opened.text
    cid, token = opened.json()["conversation_id"], opened.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    used: list[str] = []
    for turn in attack["turns"]:
        text = expand(turn, world, cid, used)
        if text is None:
            continue
        world.said.append(text)
        response = client.post(f"/conversations/{cid}/messages", json={"text": text}, headers=headers)
        assert response.status_code < 500, f"{attack['id']}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            world.rejected.append(f"{response.status_code}")
            continue
        world.replies.extend(response.json()["replies"])
    return cid, token


def attack_victim_over_http(runtime: Any, world: World, attack: dict[str, Any]) -> str:
    """Play the attack as a client; the attacker's token must not reach the victim. Returns its id."""
    with TestClient(create_app(runtime.settings, runtime)) as client:
        cid, token = play_http(client, world, attack)
        headers = {"Authorization": f"Bearer {token}"}
        victim = f"/conversations/{world.victim_cid}"
        assert client.get(victim, headers=headers).status_code in (401, 403, 404)
        posted = client.post(f"{victim}/messages", json={"text": "unlock my account"}, headers=headers)
        assert posted.status_code in (401, 403, 404)
    return cid


@pytest.mark.parametrize("attack", ALL, ids=[a["id"] for a in ALL])
def test_attack_over_http(attack: dict[str, Any], tmp_path: Path, bundled_index: RunbookIndex) -> None:
    clock = Clock()
    runtime = _runtime(tmp_path, bundled_index, clock)
    world = build_world(runtime, clock)
    cid = attack_victim_over_http(runtime, world, attack)
    found = violations(world, cid)
    assert not found, _report(attack, found, world)


@pytest.mark.parametrize("attack", ALL, ids=[a["id"] for a in ALL])
def test_attack_over_http_llm_brain_that_complies(
    attack: dict[str, Any], tmp_path: Path, bundled_index: RunbookIndex
) -> None:
    # The same attack through the API with the LLM brain, whose (mocked) model obeys the attacker.
    clock = Clock()
    runtime = _runtime(tmp_path, bundled_index, clock, brain="llm", llm_api_key="sk-test", llm_max_retries=0)
    with respx.mock(assert_all_called=False) as api:
        route = api.post(COMPLETIONS)
        route.mock(side_effect=honest_model)
        world = build_world(runtime, clock)
        model = ComplyingModel(attack, world)
        route.mock(side_effect=model)
        cid = attack_victim_over_http(runtime, world, attack)
    found = violations(world, cid)
    assert not found, _report(attack, found, world)
    if not world.rejected or len(world.rejected) < len(world.said):
        assert "understand" in model.calls, "the LLM brain was never asked: the mock proves nothing"
