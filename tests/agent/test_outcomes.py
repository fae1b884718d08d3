"""Matching an answer to a step's outcomes: by meaning, then yes/no; a "no" never resolves.

The hashing embedder stands in for the model: texts that share words are close, which is all these
rules need. Whether the real model reads paraphrases is played in tests/agent/test_branches_graph.py.
"""

from __future__ import annotations

from agent.outcomes import OutcomeMatch, OutcomeMatcher, by_yes_no
from core.pack import Outcome, Step
from tests.fakes import HashingEmbedder

FIXED = Outcome(name="fixed", when=["the bars are back"], then="resolved")
ABROAD = Outcome(name="abroad", when=["I am travelling abroad"], then="roaming")
SAME = Outcome(name="no-change", when=["still no bars at all"], then="next")
STEP = Step(text="Turn airplane mode off.", id="airplane", outcomes=(FIXED, ABROAD, SAME))


def matcher() -> OutcomeMatcher:
    return OutcomeMatcher(HashingEmbedder(), min_score=0.6, min_margin=0.05)


def test_an_answer_in_the_outcomes_words_matches_by_meaning() -> None:
    found = matcher().match(STEP, "the bars are back", affirm=False, deny=False)
    assert found == OutcomeMatch(name="fixed", by="meaning", score=1.0)
    assert matcher().match(STEP, "I am travelling abroad", affirm=False, deny=False).name == "abroad"  # type: ignore[union-attr]


def test_a_plain_yes_or_no_takes_the_resolving_or_the_next_outcome() -> None:
    assert matcher().match(STEP, "yes", affirm=True, deny=False) == OutcomeMatch("fixed", "yes_no", 1.0)
    assert matcher().match(STEP, "nope", affirm=False, deny=True) == OutcomeMatch("no-change", "yes_no", 1.0)


def test_a_no_never_resolves_even_when_its_words_are_close() -> None:
    # "the bars are back? no" shares every word with the fixed outcome; the patterns read a no.
    found = matcher().match(STEP, "no the bars are back not", affirm=False, deny=True)
    assert found == OutcomeMatch("no-change", "yes_no", 1.0)


def test_nothing_close_and_no_yes_or_no_matches_nothing() -> None:
    assert matcher().match(STEP, "purple monkey dishwasher", affirm=False, deny=False) is None


def test_two_outcomes_that_lead_elsewhere_and_score_alike_match_neither() -> None:
    close = Step(
        text="x",
        id="x",
        outcomes=(
            Outcome(name="a", when=["printer offline"], then="resolved"),
            Outcome(name="b", when=["printer online"], then="next"),
        ),
    )
    assert matcher().match(close, "printer", affirm=False, deny=False) is None


def test_named_yes_and_no_outcomes_win_over_the_defaults() -> None:
    outcomes = [
        Outcome(name="yes", when=["sure"], then="top-up"),
        Outcome(name="fixed", when=["ok"], then="resolved"),
        Outcome(name="no", when=["nah"], then="handoff"),
    ]
    assert by_yes_no(outcomes, affirm=True, deny=False) == outcomes[0]
    assert by_yes_no(outcomes, affirm=False, deny=True) == outcomes[2]
    # Two resolving outcomes: a bare yes cannot say which.
    two = [FIXED, Outcome(name="also", when=["fine"], then="resolved")]
    assert by_yes_no(two, affirm=True, deny=False) is None


def test_a_step_without_outcomes_is_left_to_the_yes_no_check() -> None:
    assert matcher().match(Step(text="x", id="x"), "yes", affirm=True, deny=False) is None
