"""Accepting a suggestion: apply it to a copy of the pack, lint it, eval it against the pack before, then keep it.

Nothing in the author's folder changes until the changed copy lints, its case file loads, and no gate
that held before breaks (unless forced); then the changed files are copied over and the suggestion is
marked accepted. A refusal leaves every file as it was and says why.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.teaching import Suggestion, Suggestions, TeachingError, apply_to_files
from core.pack import lint_pack
from core.settings import Settings
from eval.cases import load_case_file
from eval.harness import Evaluator
from eval.scoring import compare
from vectorstore.embeddings import Embedder, MiniLMEmbedder


class GateBroken(TeachingError):
    """The changed pack breaks a gate that held before; nothing was changed."""


@dataclass(frozen=True)
class Accepted:
    """What accepting a suggestion changed, and what the eval saw before and after."""

    suggestion: Suggestion
    files: list[Path]
    before: dict[str, Any]
    after: dict[str, Any]
    comparison: dict[str, Any]
    broken_gates: list[str]

    def changes(self) -> list[str]:
        """The eval's changes in words: metrics that moved, and cases that newly pass, fail or were added."""
        lines = [
            f"{key}: {d['before']} -> {d['after']} ({d['delta']:+g})"
            for key, d in self.comparison["metrics"].items()
            if d["delta"] and not key.startswith(("latency", "tokens", "cost"))
        ]
        after = {row["id"]: row for row in self.after["cases"]}
        for case_id in self.comparison["new_cases"]:
            row = after[case_id]
            verdict = "passes" if row["passed"] else "fails: " + "; ".join(row.get("failures") or [])
            lines.append(f"new case {case_id} {verdict}")
        lines += [f"newly passing: {c}" for c in self.comparison["newly_passing"]]
        lines += [f"newly failing: {c}" for c in self.comparison["newly_failing"]]
        return lines or ["no metric moved"]


def accept(
    suggestions: Suggestions,
    suggestion_id: str,
    runbooks: Path,
    cases: Path,
    *,
    force: bool = False,
    category: str | None = None,
    settings: Settings | None = None,
    embedder: Embedder | None = None,
) -> Accepted:
    """Apply an open suggestion to the pack and case file once it lints and the eval holds; mark it accepted.

    Raises:
        TeachingError: The suggestion is not open, the changed pack or case file would not load (nothing
            changed), or the case file cannot be appended to.
        GateBroken: A gate of the case file held before and fails after, and ``force`` is off.
    """
    suggestion = suggestions.get(suggestion_id)
    if suggestion.state != "open":
        raise TeachingError(f"{suggestion.id} is already {suggestion.state}; only an open suggestion can be accepted")
    if not runbooks.is_dir():
        raise TeachingError(f"--runbooks {runbooks}: no such folder")
    _, already = lint_pack(runbooks)
    if already:
        listed = "\n  ".join(str(p) for p in already)
        raise TeachingError(f"--runbooks {runbooks} does not lint now; fix it before accepting anything:\n  {listed}")
    before_file = load_case_file(cases)
    with tempfile.TemporaryDirectory(prefix="tierone-accept-") as tmp:
        pack_copy, cases_copy = Path(tmp) / "pack", Path(tmp) / cases.name
        shutil.copytree(runbooks, pack_copy)
        shutil.copy2(cases, cases_copy)
        written = apply_to_files(suggestion, pack_copy, cases_copy, category)
        _, problems = lint_pack(pack_copy)
        if problems:
            listed = "\n  ".join(str(p) for p in problems)
            raise TeachingError(
                f"accepting {suggestion.id} would leave the pack failing lint, so nothing was changed:\n  {listed}"
            )
        after_file = load_case_file(cases_copy)
        # Loaded only now: a suggestion that cannot lint is refused without waiting for the model.
        embedder = embedder or MiniLMEmbedder()
        before = Evaluator(runbooks, settings=settings, embedder=embedder).run(before_file.cases)
        after = Evaluator(pack_copy, settings=settings, embedder=embedder).run(after_file.cases)
        comparison = compare(after, before)
        broken = [
            f"{gate}: was {before['summary'].get(gate.metric)}, now {after['summary'].get(gate.metric)}"
            for gate in after_file.gates
            if gate.holds(before["summary"].get(gate.metric)) and not gate.holds(after["summary"].get(gate.metric))
        ]
        result = Accepted(suggestion, [], before, after, comparison, broken)
        if broken and not force:
            raise GateBroken(
                f"accepting {suggestion.id} breaks a gate that held before, so nothing was changed"
                " (--force keeps it anyway):\n  " + "\n  ".join(broken + result.changes())
            )
        kept = []
        for path in written:
            target = runbooks / path.relative_to(pack_copy)
            shutil.copy2(path, target)
            kept.append(target)
        shutil.copy2(cases_copy, cases)
        kept.append(cases)
    why = "; ".join(result.changes())
    done = suggestions.decide(suggestion.id, "accepted", why)
    return Accepted(done, kept, before, after, comparison, broken)
