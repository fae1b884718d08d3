"""A tiny runbook pack for the routing tests: three runbooks, a few examples each."""

from __future__ import annotations

from pathlib import Path

import yaml

RUNBOOKS = {
    "password-reset": (
        "Reset a forgotten password",
        ["I forgot my password", "can't remember my login password", "reset my password please", "password lost"],
    ),
    "vpn-connection": (
        "Fix a VPN that will not connect",
        ["the vpn keeps disconnecting", "vpn won't connect from home", "GlobalProtect drops", "no vpn connection"],
    ),
    "printer-problem": (
        "Fix a printer that will not print",
        ["the printer is offline", "my print jobs are stuck", "printer shows paper jam", "can't print anything"],
    ),
}


def write_pack(root: Path, runbooks: dict[str, tuple[str, list[str]]] | None = None) -> Path:
    """Write the pack (or the given runbooks) under root and return its folder."""
    root.mkdir(parents=True, exist_ok=True)
    for rid, (title, examples) in (runbooks or RUNBOOKS).items():
        front = {"id": rid, "title": title, "category": "it", "tier": 1, "examples": examples}
        body = "Does what the title says.\n\n## Steps\n1. Try the usual fix.\n\n## Check\nDid that work?\n"
        (root / f"{rid}.md").write_text("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body)
    return root
