"""A pack's tools.yaml: a good one loads; every broken one names file, tool and field, and nothing loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.pack import lint_pack
from core.pack_tools import fill_references

RUNBOOK = """---
id: roaming-help
title: Data does not work abroad
category: mobile
tier: 1
examples: [no data abroad, roaming does not work, cannot use internet on holiday]
verify: {verify}
tools: [{tools}]
---
What it covers.

## Steps
1. [tool: {tool}] Roaming is on for your line now.
2. Restart the phone.

## Check
Does data work now?
"""

TOOLS = """base_url: ${TIERONE_MOBILE_API_URL}
headers:
  Authorization: Bearer ${TIERONE_MOBILE_API_TOKEN}
tools:
  - name: enable_roaming
    description: Turn roaming on for the verified customer's line.
    method: POST
    url: /lines/{account_id}/roaming
    arguments:
      type: object
      properties:
        account_id: {type: string}
        zone: {type: string, enum: [eu, world], default: eu}
      required: [account_id]
    needs_verified: true
    changes: true
    quote: [zone]
"""


def make_pack(tmp_path: Path, tools: str = TOOLS, verify: str = "otp", tool: str = "enable_roaming") -> Path:
    (tmp_path / "roaming.md").write_text(RUNBOOK.format(verify=verify, tools=tool, tool=tool), encoding="utf-8")
    (tmp_path / "tools.yaml").write_text(tools, encoding="utf-8")
    return tmp_path


def problems(root: Path) -> list[str]:
    pack, found = lint_pack(root)
    assert pack is None, "a pack with problems must not load"
    return [str(p) for p in found]


def test_a_good_tools_file_loads_with_its_tools(tmp_path: Path) -> None:
    pack, found = lint_pack(make_pack(tmp_path))
    assert found == []
    assert pack is not None and pack.tools is not None
    spec = pack.tools.by_name()["enable_roaming"]
    assert (spec.method, spec.changes, spec.needs_verified, spec.quote) == ("POST", True, True, ["zone"])
    assert spec.placeholders() == ["account_id"]
    assert pack.tools.references() == {"TIERONE_MOBILE_API_URL", "TIERONE_MOBILE_API_TOKEN"}
    assert pack.runbooks["roaming-help"].steps[0].tool == "enable_roaming"


def test_a_pack_without_tools_file_has_none(tmp_path: Path) -> None:
    (tmp_path / "roaming.md").write_text(
        RUNBOOK.format(verify="none", tools="check_service_status", tool="check_service_status"), encoding="utf-8"
    )
    pack, found = lint_pack(tmp_path)
    assert found == [] and pack is not None and pack.tools is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "type: string, enum",
            "type: strin, enum",
            "tools.enable_roaming.arguments.properties.zone.type: is not a valid",
        ),
        ("method: POST", "method: FETCH", "tools.yaml: tools.enable_roaming.method: Input should be 'GET'"),
        (
            "url: /lines/{account_id}/roaming",
            "url: /lines/{line}/roaming",
            "tools.enable_roaming.url: {line} is not one of",
        ),
        (
            "url: /lines/{account_id}/roaming",
            "url: https://api.example/x",
            "tools.enable_roaming.url: must be a path starting",
        ),
        (
            "name: enable_roaming",
            "name: Enable-Roaming",
            "tools.Enable-Roaming.name: 'Enable-Roaming' is not snake_case",
        ),
        ("base_url: ${TIERONE_MOBILE_API_URL}", "base_url: https://api.example", "base_url: must be a reference"),
        ("${TIERONE_MOBILE_API_TOKEN}", "${HOME}", "headers.Authorization: ${HOME} is not a setting"),
        ("Bearer ${TIERONE_MOBILE_API_TOKEN}", "Bearer s3cr3t", "headers.Authorization: holds a credential"),
        (
            "${TIERONE_MOBILE_API_TOKEN}",
            "${TIERONE_VAULT_KEY}",
            "${TIERONE_VAULT_KEY} is one of Tierone's own settings",
        ),
        (
            "    needs_verified: true",
            "    needs_verified: true\n    secret: x",
            "tools.enable_roaming.secret: Extra inputs",
        ),
        ("type: object\n", "type: array\n", "tools.enable_roaming.arguments.type: must be `object`"),
        (
            "description: Turn",
            "description: X\n    note: Turn",
            "tools.enable_roaming.description: String should have at least",
        ),
    ],
)
def test_each_broken_tools_file_names_its_field(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in TOOLS
    found = problems(make_pack(tmp_path, TOOLS.replace(old, new, 1)))
    assert any(expected in p for p in found), found


def test_a_tool_declared_twice_or_shadowing_a_builtin_is_refused(tmp_path: Path) -> None:
    tool = TOOLS.split("tools:\n", 1)[1]
    twice = TOOLS + tool.replace("enable_roaming", "reset_password")
    found = problems(make_pack(tmp_path, twice + tool))
    assert "tools.yaml: tools.reset_password.name: 'reset_password' is a built-in tool; choose another" in found
    assert "tools.yaml: tools.2.name: 'enable_roaming' is declared twice (tool 3)" in found


def test_runbooks_may_name_declared_tools_only_with_verification_when_needed(tmp_path: Path) -> None:
    found = problems(make_pack(tmp_path, verify="none"))
    assert found == ["roaming.md: verify: tool 'enable_roaming' acts on an account: set `verify: otp`"]


def test_a_runbook_naming_an_undeclared_tool_lists_the_declared_ones(tmp_path: Path) -> None:
    found = problems(make_pack(tmp_path, tool="top_up_data"))
    assert any("unknown tool 'top_up_data'" in p and "enable_roaming" in p for p in found), found


def test_unreadable_tools_file_is_named(tmp_path: Path) -> None:
    assert problems(make_pack(tmp_path, "tools: [unclosed"))[0].startswith("tools.yaml: file: cannot be read")
    found = problems(make_pack(tmp_path, "- a list"))
    assert found[0] == "tools.yaml: file: must be a YAML mapping with `base_url` and `tools`"
    # The runbook's tool is then unknown too: the pack is refused as a whole.
    assert "unknown tool 'enable_roaming'" in found[1]


def test_references_are_filled_from_settings_and_a_missing_one_is_named() -> None:
    assert fill_references("Bearer ${TIERONE_T}", {"TIERONE_T": "abc"}) == "Bearer abc"
    with pytest.raises(KeyError, match="TIERONE_U"):
        fill_references("${TIERONE_U}/x", {"TIERONE_T": "abc"})


def test_tierone_own_settings_never_reach_a_pack(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import Settings

    monkeypatch.setenv("TIERONE_VAULT_KEY", "vault-secret")
    monkeypatch.setenv("TIERONE_LLM_API_KEY", "llm-secret")
    monkeypatch.setenv("TIERONE_MOBILE_API_TOKEN", "tok")
    values = Settings().tool_values
    assert set(values) >= {"TIERONE_MOBILE_API_TOKEN"}
    assert "TIERONE_VAULT_KEY" not in values and "TIERONE_LLM_API_KEY" not in values


def test_a_runbook_verified_by_sms_needs_the_verification_section(tmp_path: Path) -> None:
    found = problems(make_pack(tmp_path, verify="otp_sms"))
    assert found == ["roaming.md: verify: otp_sms needs `verification.otp_sms` in policy.yaml (docs/runbook-format.md)"]
