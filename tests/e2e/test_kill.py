"""SIGKILL the real server at random points of scripted conversations (bench/kill.py, a short fixed-seed run).

The suite runs 8 kills with one seed (about a minute); `python bench/kill.py --kills 30` is the longer run
whose figures README.md reports. Both check the same things; see bench/kill.py's docstring.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# Marked model: the server processes it kills load the embedding model.
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing_and_acts_once(tmp_path: Path) -> None:
    out = tmp_path / "kill.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "kill.py"), "--kills", "8", "--seed", "20261123", "--clients", "2"]
        + ["--data", str(tmp_path / "data"), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["kills"] == 8
    # The kills really interrupted work: some answers had to be asked for again.
    assert figures["client_resends"] > 0
    assert figures["conversations"] > 0 and figures["messages"] > 0
    assert figures["failures"] == [], "\n".join(figures["failures"])
