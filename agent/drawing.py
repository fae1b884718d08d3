"""docs/stages.md, drawn from the code it describes: the stage table and the LangGraph graph.

``python -m agent.drawing > docs/stages.md`` writes it again; tests/test_stages.py fails while the
committed file differs from what this prints.
"""

from __future__ import annotations

import sys

from agent.graph import build_graph
from agent.stages import INITIAL, TRANSITIONS, mermaid

COMMAND = "python -m agent.drawing > docs/stages.md"


def document() -> str:
    """The text of docs/stages.md."""
    rows = [f"| `{move.source}` | `{move.event}` | `{move.target}` | {move.doc} |" for move in TRANSITIONS]
    return "\n".join(
        [
            "# Stages and the graph",
            "",
            f"Generated from agent/stages.py and agent/graph.py by `{COMMAND}`; tests/test_stages.py",
            "fails while this file is stale. Edit the code, not this file.",
            "",
            "## The stage machine (agent/stages.py)",
            "",
            "A conversation is in one stage at a time. Nodes never write a stage: they name what happened",
            "(the event) and `agent.stages.advance` finds the stage it leads to; an event not declared for",
            f"the current stage raises. A new conversation starts in `{INITIAL}`. One turn may make several",
            "moves: a first message whose runbook needs identity goes triage → steps → identity.",
            "",
            "```mermaid",
            mermaid().rstrip("\n"),
            "```",
            "",
            "| from | event | to | why |",
            "|---|---|---|---|",
            *rows,
            "",
            "## The graph (agent/graph.py)",
            "",
            "One run per customer message. `decide` applies the policy (agent/policy.py); acting decisions",
            "loop through `act` and back to `decide` until the turn ends in a reply or a handoff. A reply that",
            "closes a solved problem goes back to `decide` when the customer raised another in the same",
            "message (agent/problems.py), so that one begins in the same turn.",
            "",
            "```mermaid",
            build_graph().get_graph().draw_mermaid().rstrip("\n"),
            "```",
            "",
        ]
    )


def main() -> None:
    """Print the document."""
    sys.stdout.write(document())


if __name__ == "__main__":
    main()
