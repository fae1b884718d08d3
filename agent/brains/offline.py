"""The offline brain: embedding routing, pattern slots and sentiment, replies from templates.

It needs no network and no LLM. Everything it says comes from the runbook, a tool's result, or
the fixed sentences below.
"""

from __future__ import annotations

import re
from datetime import datetime

from agent.brains.base import ReplyContext
from agent.state import Clause, Reply, Scored, Understanding
from core.pack import Runbook
from core.redact import EMAIL
from vectorstore.index import RunbookIndex

_CODE = re.compile(r"(?<![\d@])(\d{3})[ -]?(\d{3})(?!\d)")
_WORD = re.compile(r"[a-z']+")

_YES = re.compile(
    r"^\s*(?:y|yes|yep|yup|yeah|yea|ya|sure|correct|ok(?:ay)?|perfect|great|awesome|brilliant|excellent)\b"
    r"|\b(?:it|that|this)\s+(?:worked|works|did it|did the trick|fixed it|helped)\b"
    r"|\b(?:works|working)\s+(?:now|again|fine)\b|\ball (?:good|sorted|set|fixed)\b"
    r"|\b(?:fixed|solved|sorted|resolved)\b(?!\?)|\bi(?:'m| am)\s+in\b|\bcan (?:sign|log) in now\b",
    re.IGNORECASE,
)
_NO = re.compile(
    r"^\s*(?:n|no|nope|nah|not really|negative)\b"
    r"|\b(?:didn'?t|did not|doesn'?t|does not|don'?t|won'?t|can'?t|cannot|still (?:not|can'?t|doesn'?t|no))\b"
    r"|\bnot (?:working|fixed|yet|solved)\b|\bno (?:luck|change|joy|difference)\b|\bsame (?:problem|issue|error)\b"
    r"|\bstill\b",
    re.IGNORECASE,
)
_HUMAN = re.compile(
    r"\b(?:talk|speak|chat)\s+(?:to|with)\s+(?:a |an |some |the |your )?(?:real |actual |live )?"
    r"(?:human|person|agent|someone|somebody|representative|rep|technician|tech|operator|engineer|people|staff)\b"
    r"|\b(?:transfer|connect|put)\s+me\b.{0,20}\b(?:human|person|agent|someone|somebody|representative|technician)\b"
    r"|\b(?:get|give)\s+me\s+(?:a |an )?(?:real |actual |live )?(?:human|person|agent|representative|technician)\b"
    r"|\b(?:real|actual|live)\s+(?:human|person|agent|people)\b|\b(?:someone|somebody) real\b"
    r"|\b(?:explain|describe) (?:this|it) to (?:a|an) (?:human|person)\b"
    r"|^\s*(?:a\s+)?(?:human|agent|person|representative|operator)(?:\s+please)?[\s.!]*$"
    r"|\b(?:want|need|like)\s+(?:a |an |to talk to a |to speak to a |to speak with a )?"
    r"(?:human|person|agent|representative)\b"
    r"|\bescalate (?:this|it|me)\b|\bno more bots?\b|\bstop the bot\b",
    re.IGNORECASE,
)
_GREETING = re.compile(
    r"^\s*(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening)|greetings|yo)"
    r"(?:\s+(?:there|team|all|support|again))?[\s!.,]*$",
    re.IGNORECASE,
)
_THANKS = re.compile(
    r"^\s*(?:(?:ok(?:ay)?|great|perfect|cool|awesome)[,!.\s]*)?(?:thanks?|thank you|thx|ty|cheers|much appreciated)"
    r"(?:\s+(?:so much|a lot|again|very much))?[\s!.]*$",
    re.IGNORECASE,
)
_URGENT = re.compile(r"\b(?:urgent(?:ly)?|asap|emergency|immediately|right now|deadline|critical)\b", re.I)
_WIDE = re.compile(
    r"\b(?:everyone|everybody|whole (?:team|office|company|department|floor|building|site)"
    r"|all (?:of us|users|staff)|(?:nobody|no one|noone)(?: \S+){0,4}? can(?! (?:hear|see|reach|understand|call) me)"
    r"|(?:site|building|circuit|office|branch|floor|campus)s?(?: \w+)? (?:is |are |went |has gone )?"
    r"(?:hard |completely )?down"
    r"|is hard down)\b",
    re.IGNORECASE,
)

# A question whether it is wide ("down for everyone or just me?") is not a report that it is.
_ASKS_IF_WIDE = re.compile(
    r"\b(?:every(?:one|body)|all of us) or (?:is it )?(?:just|only) me\b|\b(?:just|only) me or\b", re.IGNORECASE
)

# Sentiment: weights chosen so one strong sign of anger at the service, or two lesser signs,
# reach the handoff threshold (-0.6 in the bundled policy.yaml); plain frustration does not.
_PROFANITY = re.compile(
    r"\b(?:f+u+c+k\w*|shit\w*|wtf|bullshit|crap|damn(?:ed|it)?|bloody|piss(?:ed)?|arse|ass(?:hole)?)\b", re.I
)
_ANGRY = re.compile(
    r"\b(?:useless|pathetic|ridiculous|unacceptable|incompetent|worst|terrible|awful|horrible|"
    r"disgrace(?:ful)?|joke|garbage|rubbish|furious|livid|outrageous|hate|stupid|idiot\w*|"
    r"sick (?:and tired )?of|fed up|had enough|waste of (?:my )?time|absolute(?:ly)? (?:useless|joke))\b",
    re.IGNORECASE,
)
_AT_US = re.compile(
    r"\b(?:you|your|this is|this bot|bot|support|service|company|this chat|you guys|you people)\b", re.I
)
_WAITING = re.compile(
    r"\b(?:waiting|waited|been trying)\b.{0,30}\b(?:hours?|days?|weeks?|forever|ages)\b"
    r"|\bnobody (?:helps|answers|replies|cares)\b|\bno one (?:helps|answers|replies|cares)\b",
    re.IGNORECASE,
)
# Having to come back again and again is anger, however politely it is put.
_REPEAT = re.compile(
    r"\b(?:third|fourth|fifth|\d+(?:rd|th)) time\b|\bhow many times\b|\bagain and again\b"
    r"|\bkeep (?:having|needing) to\b",
    re.IGNORECASE,
)
# Saying so is what makes a repeat contact of a first message; a bare "again" is not enough
# ("locked out. again." is one lockout, not a report that an earlier fix failed).
_RECONTACT = re.compile(
    r"\b(?:second|third|fourth|fifth|\d+(?:nd|rd|th)) time\b|\bhow many times\b|\bagain and again\b"
    r"|\bi(?:'ve| have)? already (?:wrote|written|contacted|reported|asked|called|messaged|been in touch|raised)\b"
    r"|\b(?:wrote|written|contacted you|reported (?:this|it)|raised (?:this|it)) (?:before|earlier|last (?:week|time)"
    r"|yesterday)\b|\bstill not (?:fixed|sorted|solved|resolved)\b|\b(?:same|this) (?:problem|issue) again\b"
    r"|\bkeeps? coming back\b|\b(?:happening|dropping|failing|crashing|back) again\b",
    re.IGNORECASE,
)
# A joining phrase that may put a second problem in the same message ("... and also ...").
_JOIN = re.compile(
    r"[,;.]?\s*\b(?:and also|plus|(?:and )?another thing(?: is)?|on top of that|and separately|separately)\b[,:]?\s*",
    re.IGNORECASE,
)
_POSITIVE = re.compile(r"\b(?:thanks?|thank you|great|perfect|appreciate|lovely|awesome)\b", re.I)


def sentiment(text: str) -> float:
    """Score a message from -1 (furious) to 1 (delighted) with a small, explainable lexicon."""
    score = 0.0
    score -= 0.7 * min(len(_PROFANITY.findall(text)), 2)
    angry = len(_ANGRY.findall(text))
    if angry:
        score -= 0.45 + 0.25 * (min(angry, 3) - 1)
        if _AT_US.search(text):
            score -= 0.2
    if _WAITING.search(text):
        score -= 0.35
    if _REPEAT.search(text):
        score -= 0.3
    letters = [c for c in text if c.isalpha()]
    words = text.split()
    if len(words) >= 3 and len(letters) >= 12 and sum(c.isupper() for c in letters) / len(letters) > 0.7:
        score -= 0.35
    if re.search(r"[!?]{3,}|!!", text):
        score -= 0.2
    score += 0.3 * min(len(_POSITIVE.findall(text)), 2)
    return max(-1.0, min(1.0, round(score, 3)))


def fill_slots(text: str, slots: dict[str, object]) -> str:
    """A step's text with each `{slot}` replaced by its value (left as written when unknown)."""
    return re.sub(r"\{([a-z0-9_-]+)\}", lambda m: str(slots.get(m.group(1), m.group(0))), text)


def split_clauses(text: str) -> list[str]:
    """The message's two parts around its first joining phrase; empty when there is none.

    Each part must have words of its own (at least two), so "plus" in "Office plus" splits nothing.
    """
    join = _JOIN.search(text)
    if join is None:
        return []
    parts = [text[: join.start()].strip(" ,.;"), text[join.end() :].strip(" ,.;")]
    if any(len(_WORD.findall(part.lower())) < 2 for part in parts):
        return []
    return parts


def routing_query(text: str) -> str:
    """The part of a message routing looks at: addresses and codes say nothing about the problem."""
    return _CODE.sub(" ", EMAIL.sub(" ", text)).strip()


class OfflineBrain:
    """Understands with embeddings and patterns; replies from the runbook and fixed templates."""

    name = "offline"

    def __init__(self, index: RunbookIndex, k: int = 5) -> None:
        self._index = index
        self._k = k

    def understand(self, text: str, *, routing_text: str, spent_tokens: int = 0) -> Understanding:
        """Route, extract slots and read sentiment of one message (it spends no tokens)."""
        candidates = self._route(routing_text)
        email = EMAIL.search(text)
        code = _CODE.search(text)
        deny = bool(_NO.search(text))
        return Understanding(
            clauses=[Clause(text=part, candidates=self._route(part)) for part in split_clauses(text)],
            says_repeat=bool(_RECONTACT.search(text)),
            text=text,
            candidates=candidates,
            email=email.group(0) if email else None,
            code="".join(code.groups()) if code else None,
            affirm=bool(_YES.search(text)) and not deny,
            deny=deny,
            wants_human=bool(_HUMAN.search(text)),
            greeting_only=bool(_GREETING.match(text)),
            thanks_only=bool(_THANKS.match(text)),
            sentiment=sentiment(text),
            urgent=bool(_URGENT.search(text)),
            wide_impact=bool(_WIDE.search(text)) and not _ASKS_IF_WIDE.search(text),
        )

    def _route(self, text: str) -> list[Scored]:
        query = routing_query(text)
        if not _WORD.search(query.lower()):
            return []
        return [Scored(runbook_id=c.runbook_id, score=c.score) for c in self._index.query(query, self._k)]

    def reply(self, ctx: ReplyContext) -> Reply:
        """Word the reply for the decision from fixed sentences, the runbook and tool results."""
        return Reply(text=self.text_for(ctx))

    def text_for(self, ctx: ReplyContext) -> str:
        """The reply's text (the LLM brain falls back to it when its own wording is refused)."""
        d = ctx.decision
        rb = ctx.runbook
        if d.action == "greet":
            return (
                "Hi! I'm the support assistant. Tell me what's going wrong and I'll help you fix it. "
                "You can ask for a person at any time."
            )
        if d.action == "clarify":
            return (
                "I want to be sure I help with the right thing. Could you tell me a little more: "
                "what are you trying to do, and what happens instead?"
            )
        if d.action == "choose":
            first, second = (ctx.titles.get(o, o) for o in d.options[:2])
            return f'Just to be sure I pick the right fix: is this about "{first}" or "{second}"?'
        if d.action == "ask_identity":
            assert rb is not None
            if rb.meta.verify == "knowledge":
                # The same words whether the number is unknown or a fact did not match.
                if "code_mismatch" in d.reasons:
                    left = ctx.code_attempts_left
                    return (
                        "That doesn't match what we have on file. Please check the mobile number of the line "
                        f"and your date of birth and send both again ({left} {'try' if left == 1 else 'tries'} left)."
                    )
                if ctx.repeat:
                    return "I still need the mobile number of the line and your date of birth before I can look at it."
                return (
                    f"I can help with that ({rb.meta.title.lower()}). First I need to make sure the line is "
                    "yours: what's the mobile number of the line, and your date of birth (for example 03/04/1990)?"
                )
            if rb.meta.verify == "otp_sms":
                if ctx.repeat:
                    return "I still need the mobile number of your line before I can change anything on it."
                return (
                    f"I can help with that ({rb.meta.title.lower()}). First I need to make sure the line is "
                    "yours: what's the mobile number of the line? I'll text a code to it."
                )
            if ctx.repeat:
                return (
                    "I still need the email address of your account before I can change anything on it "
                    "(for example name@company.com)."
                )
            return (
                f"I can help with that ({rb.meta.title.lower()}). First I need to make sure the account "
                "is yours: what's the email address on your account?"
            )
        if d.action == "ask_code":
            if "code_mismatch" in d.reasons:
                left = ctx.code_attempts_left
                return (
                    f"That code didn't match. Please check the newest message and type the code again "
                    f"({left} {'try' if left == 1 else 'tries'} left)."
                )
            if ctx.tool_message and not ctx.repeat:  # the code has just gone out: the send's own words
                return ctx.tool_message
            # A message without a code while one is awaited: most often it has not arrived.
            by_text = rb is not None and rb.meta.verify == "otp_sms"
            contact = "mobile number" if by_text else "email address"
            return (
                "Please type the 6-digit code I sent to the contact on your account. It can take a minute to "
                f"arrive{'' if by_text else ' (check your spam folder too)'}. If it hasn't come after a minute or two, "
                f"send me your {contact} again and I'll send a new code."
            )
        if d.action == "present_step":
            assert rb is not None
            step = rb.steps[ctx.step]
            lead = "That didn't do it, so let's try the next step. " if ctx.step > 0 else ""
            if ctx.jumped and ctx.step > 0:
                lead = "Thanks, that helps. "
            done = f" {ctx.tool_message}" if ctx.tool_message and step.tool else ""
            text = f"{lead}{fill_slots(step.text, ctx.slots)}{done}".strip()
            return f"{text}\n\n{rb.question(ctx.step)}"
        if d.action == "reask_confirmation":
            assert rb is not None
            outcomes = rb.steps[ctx.step].outcomes if ctx.step < len(rb.steps) else ()
            if outcomes:
                # Rephrased: what the bot can understand, in the pack's own words.
                said = ", ".join(f'"{o.when[0]}"' for o in outcomes)
                return (
                    f"Sorry, I'm not sure what happened. {rb.question(ctx.step)} "
                    f"For example, you could tell me: {said}."
                )
            return f"Sorry, I didn't catch that. {rb.question(ctx.step)} A yes or no is enough."
        if d.action == "ask_slot":
            assert rb is not None and d.slot is not None
            ask = rb.slots[d.slot].ask
            if "slot_invalid_answer" in d.reasons:
                return f"Sorry, I couldn't use that answer ({d.note or 'it did not fit'}). {ask}"
            return ask
        if d.action == "close_resolved":
            return (
                "Great, I'm glad that's working again! I've marked this as solved. "
                "If anything else comes up, just write here."
            )
        if d.action == "acknowledge":
            return "You're welcome! Is there anything else I can help with?"
        if d.action == "handoff":
            return self._handoff_reply(ctx)
        if d.action == "relay":
            return "Thanks, I've added that to your ticket so the technician sees it."
        raise ValueError(f"the offline brain has no reply for action {d.action!r}")

    def _handoff_reply(self, ctx: ReplyContext) -> str:
        handoff = ctx.handoff or {}
        reasons = set(ctx.decision.reasons)
        rb = ctx.runbook
        if "customer_requested_human" in reasons:
            why = "Of course, I'm passing you to a support technician."
        elif "repeat_contact" in reasons:
            why = (
                "I'm sorry you've had to come back about this. Rather than start over, I'm passing it to a "
                "support technician with what was tried before."
            )
        elif "tier2_runbook" in reasons and rb is not None:
            why = f"This needs a support technician ({rb.meta.title.lower()}), so I'm passing it on now."
        elif "no_runbook_fits" in reasons:
            why = "That's not something I can solve here, so I'm passing it to a support technician."
        elif "negative_sentiment" in reasons:
            why = "I'm sorry this has been so frustrating. I'm passing you to a support technician now."
        elif "outcome_handoff" in reasons:
            why = "From what you describe, this needs a support technician, so I'm passing it on now."
        elif "slot_invalid" in reasons:
            why = "I couldn't get the detail I need here, so I'm passing this to a support technician."
        elif "runbook_switched" in reasons and rb is not None:
            why = f"That sounds like a different problem ({rb.meta.title.lower()}), so I'm passing it to a technician."
        elif "tool_failed" in reasons:
            why = "I couldn't complete that from here, so I'm passing it to a support technician."
        elif reasons & {"steps_exhausted", "step_failed"}:
            why = "I'm sorry the steps didn't fix it. I'm passing this to a support technician."
        elif "verification_failed" in reasons or "identity_not_provided" in reasons:
            why = (
                "I couldn't confirm the account, so I can't change anything on it from here. "
                "A support technician will take over."
            )
        else:
            why = "I'm passing this to a support technician."
        parts = [why, "They'll see everything we've discussed, so you won't need to repeat yourself."]
        due = handoff.get("first_response_due")
        if due:
            when = datetime.fromisoformat(due).strftime("%H:%M UTC on %a %d %b")
            parts.append(
                f"Your ticket is {handoff.get('packet_id')} (priority {handoff.get('priority')}); "
                f"expect a first reply by {when}."
            )
        if rb is not None and rb.meta.tier == 2 and rb.steps:
            advice = " ".join(s.text for s in rb.steps)
            parts.append(f"Meanwhile: {advice}")
        return " ".join(parts)

    def hypothesis(self, runbook: Runbook | None, reasons: list[str], tried: list[str], problem: str) -> Reply:
        """A short working hypothesis for L2, from the runbook's notes and what was tried."""
        return Reply(text=self.hypothesis_text(runbook, reasons, tried, problem))

    @staticmethod
    def hypothesis_text(runbook: Runbook | None, reasons: list[str], tried: list[str], problem: str) -> str:
        """The hypothesis's text (the LLM brain's fallback, too)."""
        if runbook is None:
            return f'No runbook fits. The customer wrote: "{problem[:300]}"'
        lines = [f"Likely {runbook.meta.title.lower()} ({runbook.id})."]
        if tried:
            lines.append("Tried: " + "; ".join(tried) + ".")
        if runbook.l2_notes:
            lines.append(runbook.l2_notes)
        lines.append("Handed off because: " + ", ".join(reasons) + ".")
        return " ".join(lines)
