"""Matching a customer's answer after a step to one of the step's outcomes.

An outcome lists example phrasings (``when``). The answer is embedded with the routing model and
compared with every phrasing; the best outcome wins when it is similar enough and clearly ahead of
the best outcome that leads elsewhere. When meaning does not decide, the yes/no patterns do, as for
linear runbooks. A "no" never closes a problem as solved: embeddings read "it didn't work" close to
"it works", so a meaning match that would resolve a denied answer is set aside.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from core.pack import Outcome, Step
from vectorstore.embeddings import Embedder, Vector

MatchedBy = Literal["meaning", "yes_no"]


@dataclass(frozen=True)
class OutcomeMatch:
    """The outcome an answer matched, how, and how sure."""

    name: str
    by: MatchedBy
    score: float


def by_yes_no(outcomes: Sequence[Outcome], *, affirm: bool, deny: bool) -> Outcome | None:
    """The outcome a plain yes or no stands for: one named so, else the resolving / the `next` one."""
    if affirm == deny:
        return None
    named = next((o for o in outcomes if o.name == ("yes" if affirm else "no")), None)
    if named is not None:
        return named
    if affirm:
        resolving = [o for o in outcomes if o.then == "resolved"]
        return resolving[0] if len(resolving) == 1 else None
    return next((o for o in outcomes if o.then == "next"), None)


class OutcomeMatcher:
    """Matches answers to a step's outcomes with the routing embeddings, then yes/no patterns."""

    def __init__(self, embedder: Embedder, *, min_score: float = 0.6, min_margin: float = 0.05) -> None:
        """Match with ``embedder``; a meaning match needs ``min_score`` and a ``min_margin`` lead."""
        self._embedder = embedder
        self.min_score = min_score
        self.min_margin = min_margin
        self._phrasings: dict[tuple[str, ...], Vector] = {}

    def _vectors(self, phrasings: tuple[str, ...]) -> Vector:
        # The phrasings of a step are embedded once per process.
        if phrasings not in self._phrasings:
            self._phrasings[phrasings] = self._embedder.embed(list(phrasings))
        return self._phrasings[phrasings]

    def by_meaning(self, outcomes: Sequence[Outcome], text: str) -> OutcomeMatch | None:
        """The outcome whose phrasings the answer means, if one clearly does."""
        owners = [o for o in outcomes for _ in o.when]
        phrasings = tuple(p for o in outcomes for p in o.when)
        if not phrasings or not text.strip():
            return None
        sims = self._vectors(phrasings) @ self._embedder.embed([text])[0]
        best: dict[str, float] = {}
        for owner, sim in zip(owners, sims.tolist(), strict=True):
            best[owner.name] = max(best.get(owner.name, -1.0), float(sim))
        name = max(best, key=lambda n: best[n])
        top = next(o for o in outcomes if o.name == name)
        # Only an outcome that leads elsewhere competes: two phrasings of the same move do not.
        rivals = [best[o.name] for o in outcomes if o.name != name and o.then != top.then]
        margin = best[name] - max(rivals) if rivals else 1.0
        if best[name] < self.min_score or margin < self.min_margin:
            return None
        return OutcomeMatch(name=name, by="meaning", score=round(float(np.float32(best[name])), 4))

    def match(self, step: Step, text: str, *, affirm: bool, deny: bool) -> OutcomeMatch | None:
        """The outcome of ``step`` the answer matched, or None when nothing clearly did."""
        if not step.outcomes:
            return None
        meant = self.by_meaning(step.outcomes, text)
        if meant is not None:
            outcome = next(o for o in step.outcomes if o.name == meant.name)
            if not (deny and outcome.then == "resolved"):
                return meant
        said = by_yes_no(step.outcomes, affirm=affirm, deny=deny)
        return OutcomeMatch(name=said.name, by="yes_no", score=1.0) if said is not None else None
