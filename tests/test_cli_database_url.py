"""A wrong or unreachable TIERONE_DATABASE_URL stops `tierone serve` and `tierone migrate` at start.

The message names the setting and the host, never the password, whatever characters the password holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app

# Each: the URL, the password's text as a person would type it, and where the message must say it failed.
CASES = [
    (
        "postgresql://tierone:p%40ss%3Aw%2Fd%23%25x@127.0.0.1:1/tierone",
        ["p@ss:w/d#%x", "p%40ss"],
        "127.0.0.1:1/tierone",
    ),
    (
        "postgresql://tierone:Zq9%20s%C3%A9cret@127.0.0.1:1/tierone",
        ["Zq9 s", "Zq9%20", "sécret"],
        "127.0.0.1:1/tierone",
    ),
    # Not percent-encoded: libpq would read part of the password as the host; refused without showing it.
    ("postgresql://tierone:p@ss:w/d#x@127.0.0.1:1/tierone", ["p@ss", "ss:w", "w/d#x"], "an unreadable URL"),
    ("postgresql://tierone:Zq9 secret@db.internal:5432/tierone", ["Zq9", "secret"], "an unreadable URL"),
    ("host=127.0.0.1 port=1 dbname=tierone user=tierone password=Kx7!pw", ["Kx7!pw"], "127.0.0.1:1/tierone"),
]


@pytest.mark.parametrize(("url", "secrets", "where"), CASES)
@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["migrate"]])
def test_a_wrong_or_unreachable_database_fails_at_start_naming_the_setting_and_host_never_the_password(
    url: str, secrets: list[str], where: str, command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIERONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIERONE_DATABASE_URL", url)
    result = CliRunner().invoke(app, command)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"TIERONE_DATABASE_URL ({where})" in output
    for secret in secrets:
        assert secret not in result.output, secret
    assert not (tmp_path / "data").exists()  # nothing fell back to SQLite
