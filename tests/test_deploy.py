"""deploy/: the compose file, the Caddyfile and the env examples, read as far as possible without Docker or Caddy.

Neither Docker (no daemon, no compose plugin) nor Caddy runs on the machines the tests run on, so
these tests parse the files and check what the topology depends on: the services and their order,
no secret in the compose file, health checks on /readyz, SSE unbuffered, and settings that exist.
The same topology is run from processes by bench/replicas.py.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from core import db as core_db
from core.settings import Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
REPLICAS = ("tierone-1", "tierone-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def caddy_blocks(text: str) -> list[tuple[list[str], list[Any]]]:
    """The Caddyfile as nested (tokens, children) pairs: comments dropped, one directive a line."""
    root: list[tuple[list[str], list[Any]]] = []
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line == "}":
            assert len(stack) > 1, f"Caddyfile line {number}: a closing brace without an opening one"
            stack.pop()
            continue
        tokens = line.split()
        children: list[Any] = []
        stack[-1].append((tokens[:-1] if tokens[-1] == "{" else tokens, children))
        if tokens[-1] == "{":
            stack.append(children)
    assert len(stack) == 1, "the Caddyfile leaves a block open"
    return root


def test_compose_has_the_whole_topology_in_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "chroma", "migrate", "proxy", *REPLICAS}
    assert services["migrate"]["command"] == ["tierone", "migrate"]
    # Two replicas may hold 2 x 84 connections (core/db.py's pool sizes): more than the default 100.
    sizes = sum(high for _, high in core_db._POOL_SIZES.values())
    limit = int(next(arg for arg in services["postgres"]["command"] if "max_connections=" in arg).split("=")[1])
    assert limit >= len(REPLICAS) * sizes + 10
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in REPLICAS:
        replica = services[name]
        assert replica["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["environment"]["TIERONE_CHROMA_URL"] == "http://chroma:8000"
        assert "ports" not in replica, "replicas are reached through the proxy only (FORWARDED_ALLOW_IPS is *)"
        assert services["proxy"]["depends_on"][name]["condition"] == "service_healthy"
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in services["proxy"]["volumes"]


def test_compose_holds_no_secret_and_its_env_files_have_examples(compose: dict[str, Any]) -> None:
    secret = re.compile(r"PASSWORD|SECRET|TOKEN|VAULT_KEY|DATABASE_URL", re.IGNORECASE)
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        leaked = [key for key in environment if secret.search(key)]
        assert not leaked, f"{name} sets {leaked} in compose.yaml; secrets belong in its env file"
        for env_file in [service["env_file"]] if isinstance(service.get("env_file"), str) else []:
            assert (DEPLOY / f"{env_file}.example").is_file(), f"{name}: no {env_file}.example to copy"
    assert "*.env" in (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()


def test_env_example_names_only_real_settings() -> None:
    names = set()
    for line in (DEPLOY / "tierone.env.example").read_text(encoding="utf-8").splitlines():
        found = re.match(r"#?\s*(TIERONE_[A-Z0-9_]+)=", line)
        if found:
            names.add(found.group(1))
    fields = {f"TIERONE_{name.upper()}" for name in Settings.model_fields}
    assert {"TIERONE_DATABASE_URL", "TIERONE_VAULT_KEY", "TIERONE_SMTP_HOST"} <= names
    assert names - fields == set(), f"not settings: {sorted(names - fields)}"
    database = next(
        line
        for line in (DEPLOY / "tierone.env.example").read_text().splitlines()
        if line.startswith("TIERONE_DATABASE_URL=")
    )
    assert "@postgres:5432/" in database, "the database host is the compose service's name"


def test_caddyfile_balances_the_replicas_on_readyz_and_streams_sse() -> None:
    sites = [block for block in caddy_blocks((DEPLOY / "Caddyfile").read_text(encoding="utf-8")) if block[0]]
    site = next(children for tokens, children in sites if tokens == [":80"])
    proxies = [(tokens, children) for tokens, children in site if tokens[0] == "reverse_proxy"]
    assert len(proxies) == 1
    tokens, children = proxies[0]
    assert tokens[1:] == [f"{name}:8000" for name in REPLICAS]
    options = {child[0][0]: child[0][1:] for child in children}
    assert options["health_uri"] == ["/readyz"]
    assert options["health_status"] == ["200"]
    assert options["flush_interval"] == ["-1"], "SSE must not be buffered"
    assert options["lb_policy"] == ["round_robin"]


def test_dockerfile_installs_cpu_torch_before_the_project() -> None:
    lines = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
    torch = next(i for i, line in enumerate(lines) if "pip install torch==" in line)
    project = next(i for i, line in enumerate(lines) if "pip install -e ." in line)
    assert torch < project
    assert "download.pytorch.org/whl/cpu" in "\n".join(lines)
    assert any(line.startswith("HEALTHCHECK") for line in lines)
    assert any("/readyz" in line for line in lines)
    assert any(line.startswith("USER ") and "root" not in line for line in lines)


def test_dockerfile_matches_the_makefile_and_copies_every_package() -> None:
    root = DEPLOY.parent
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    pinned = re.search(r"pip install -q (torch==[\d.]+)", (root / "Makefile").read_text(encoding="utf-8"))
    assert pinned and f"pip install {pinned.group(1)} " in dockerfile
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    copied = {m.group(1) for m in re.finditer(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE)}
    tops = {name.split(".")[0] for name in project["tool"]["setuptools"]["packages"]}
    assert tops <= copied, f"not copied into the image: {sorted(tops - copied)}"
    modules = project["tool"]["setuptools"]["py-modules"]
    assert all(f"{module}.py" in dockerfile for module in modules)
