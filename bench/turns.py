"""Per-turn latency of the offline brain, in-process, model load excluded.

Plays scripted conversations through the serving graph (SQLite checkpoints, Chroma index, SQLite
tools) and prints p50/p95 per customer turn and turns per second. With ``--pack DIR`` it plays
another pack: one conversation per runbook (up to 40), its last example then "yes".

    .venv/bin/python bench/turns.py [--rounds 40] [--pack DIR]
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.runtime import Runtime, open_runtime
from core.pack import load_pack
from core.settings import BUNDLED_RUNBOOKS, Settings
from vectorstore.embeddings import MiniLMEmbedder

SCRIPTS = [
    ["I forgot my password", "jane.doe@example.com", "{otp}", "yes"],
    ["my account is locked after too many tries", "bob.smith@example.com", "{otp}", "no", "no", "yes"],
    ["the vpn disconnects every few minutes", "no", "no", "no"],
    ["I clicked a link in a strange email and typed my password"],
    ["can you book me a flight to Lisbon"],
    ["hello", "outlook stopped syncing on my phone", "yes", "thanks"],
    ["is email down?", "yes"],
    ["printer on floor 3 shows offline", "still no", "let me talk to a human", "hello?"],
]


def play(runtime: Runtime, script: list[str]) -> list[float]:
    """Play one conversation; return each turn's latency in ms."""
    cid = runtime.resolver.start("api")
    out = []
    for turn in script:
        text = turn
        if turn == "{otp}":
            body = runtime.outbox.messages(cid)[-1]["body"]
            text = re.search(r"\d{6}", body).group(0)  # type: ignore[union-attr]
        started = time.perf_counter()
        runtime.resolver.send(cid, text)
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="times each script is played")
    parser.add_argument("--pack", type=Path, default=None, help="another runbook pack (default: the bundled one)")
    args = parser.parse_args()
    scripts = SCRIPTS
    if args.pack is not None:
        runbooks = load_pack(args.pack).runbooks
        scripts = [[runbooks[rid].meta.examples[-1], "yes"] for rid in sorted(runbooks)[:40]]
        args.rounds = max(1, args.rounds * len(SCRIPTS) * 4 // (len(scripts) * 2))  # about as many turns
    with tempfile.TemporaryDirectory() as tmp:
        load = time.perf_counter()
        # No embedding cache: every turn pays for its embedding, as a new message would.
        # The same two demo accounts verify and reset hundreds of times here: lift the per-account
        # abuse limits, which would (rightly) refuse that, so every round plays the whole script.
        settings = Settings(
            data_dir=Path(tmp),
            runbooks=args.pack or BUNDLED_RUNBOOKS,
            code_cooldown_seconds=0,
            codes_per_account_per_hour=1_000_000,
            account_actions_per_day=1_000_000,
        )
        runtime = open_runtime(settings, embedder=MiniLMEmbedder(cache_size=0))
        pack = runtime.index.pack
        print(
            f"open (model load, index build): {time.perf_counter() - load:.1f} s (excluded below); "
            f"{len(pack.runbooks)} runbooks, {runtime.index.count()} vectors, scorer {pack.policy.routing.scorer} "
            f"(head {runtime.index.head_state})"
        )
        for script in scripts:  # warm-up: first-call costs (ONNX Runtime, SQLite pages)
            play(runtime, script)
        latencies: list[float] = []
        wall = time.perf_counter()
        for _ in range(args.rounds):
            for script in scripts:
                latencies.extend(play(runtime, script))
        elapsed = time.perf_counter() - wall
    lat = np.array(latencies)
    print(f"turns: {len(lat)} in {elapsed:.1f} s = {len(lat) / elapsed:.1f} turns/s (one thread)")
    print(
        f"per turn: p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
        f"p99 {np.percentile(lat, 99):.1f} ms, mean {statistics.fmean(lat):.1f} ms"
    )


if __name__ == "__main__":
    main()
