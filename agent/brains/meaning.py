"""Whether a model's rewording still says what the offline draft said: an offline meaning check.

The grounding check (``agent/brains/llm.py``) refuses invented links, addresses and numbers; this
one refuses invented or lost meaning, with the routing index's own embedding model and a few
patterns, so a model gone off script ("Access granted, your account has been deleted") never
reaches the customer. A rewording is cut into sentences; it is refused when:

- a sentence lies far from every sentence of the draft (``SENTENCE_FLOOR``): another runbook's
  steps, an insult, the system prompt;
- it claims an action or outcome ("I've deleted", "has been unlocked", "access granted") whose
  word the draft does not hold, or insults the customer;
- it drops what the draft must keep: a tool's result (its masked addresses and numbers, and its
  meaning), a promise, a question (``COVER_FLOOR``);
- the whole, as the mean of its sentences, has drifted from the draft's (``WHOLE_FLOOR``).

The floors come from ``bench/meaning.py`` (SECURITY.md, "Meaning of reworded replies"): the
false-refusal rate on recorded and hand-written faithful rewordings against the catch rate on
off-script ones (``eval/offscript.jsonl``).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vectorstore.embeddings import Embedder, MiniLMEmbedder, Vector

# Cosine floors, chosen by bench/meaning.py's sweep (SECURITY.md).
SENTENCE_FLOOR = 0.4
COVER_FLOOR = 0.55
WHOLE_FLOOR = 0.4

# Where a reply is cut into sentences: after a sentence's end (and a closing bracket or quote)
# or a line break. The streamed reply is released at the same places.
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][)\"'])\s+|\n+")
# Where a draft's sentence is also cut into clauses: a rewording may split "I've looked up your
# account: here is ..." in two, and the short half lies far from the whole sentence.
_CLAUSE_END = re.compile(r"(?<=\w)[:;]\s+")
_TAG = re.compile(r"\s*\[[a-z0-9][a-z0-9-]*\]\s*$")
_LETTERS = re.compile(r"[^\W\d_]{2,}")
_DIGITS = re.compile(r"\d+")
# An address in a tool's result, masked ("j***@example.com") or not.
_ADDRESS = re.compile(r"[\w.*+'-]+@[\w-]+(?:\.[\w-]+)+")
_WORD = re.compile(r"[a-z]+")
# Words that say an action was taken or an outcome holds ("I've deleted", "has been unlocked",
# "access granted", "identity verified"). A rewording may use one only where the draft does: the
# draft says what was done. A closed list, as a pattern for any past tense gave false refusals on
# faithful paraphrases ("I've emailed", "if paper is jammed").
_CLAIM = re.compile(
    r"(?<![\w-])(deleted|removed|reset|unlocked|granted|refunded|cancell?ed|disabled|enabled|approved|wiped|"
    r"transferred|upgraded|downgraded|credited|restored|reactivated|activated|escalated|closed|suspended|"
    r"terminated|verified|fixed|resolved|restarted|rebooted|ordered|changed|updated|created|issued|revoked|"
    r"blocked|unblocked|elevated|promoted|assigned|renewed|extended|waived|purged|erased|sent|given|cleared|"
    r"filed|marked|authori[sz]ed|admin(?:istrator)? rights)(?![\w-])",
    re.IGNORECASE,
)
# Words no reply of ours uses about a customer (the drafts hold none of them).
_INSULT = re.compile(
    r"\b(?:idiot\w*|stupid|fool(?:ish)?|moron\w*|dumb|clueless|hopeless|pathetic|incompetent|loser|lazy|"
    r"embarrassing|shut up|wasting my time|f+u+c+k\w*|shit\w*|crap|damn\w*|ass(?:hole)?|bloody)\b",
    re.IGNORECASE,
)
# A sentence of the draft that promises or states what happens next.
_PROMISE = re.compile(r"\b(?:i|we)(?:'ll|'ve| will| have)\b|\b(?:you|it|they)(?:'ll| will)\b|\bwill\b", re.IGNORECASE)
# Short courtesies a model adds around any reply; they carry no facts, so they need no match.
_COURTESY = re.compile(
    r"^(?:sure|of course|certainly|absolutely|no problem|no worries|happy to help|glad to help|"
    r"thanks?(?: you)?(?: for [a-z' ]+)?|sorry(?: about that| for [a-z' ]+)?|i'm sorry(?: [a-z' ]+)?|"
    r"hope (?:this|that) helps|let's (?:fix|sort) (?:this|that|it)(?: together)?|here(?:'s| is) what to do)"
    r"[ ,.!]*$",
    re.IGNORECASE,
)


def sentences(text: str) -> list[str]:
    """The sentences of a reply that carry words, without a trailing runbook tag."""
    parts = [part.strip() for part in SENTENCE_END.split(_TAG.sub("", text.strip()))]
    return [part for part in parts if _LETTERS.search(part)]


def _judged(text: str) -> list[str]:
    """The sentences of a rewording the embeddings judge: all but the short courtesies."""
    return [s for s in sentences(text) if not _COURTESY.match(s)]


def _unit(vectors: Vector) -> Vector:
    mean: Vector = vectors.mean(axis=0, dtype=np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm else mean


def _claims(text: str) -> set[str]:
    return {match.group(0).lower() for match in _CLAIM.finditer(_TAG.sub("", text))}


def _clauses(sentence: str) -> list[str]:
    parts = [part.strip() for part in _CLAUSE_END.split(sentence)]
    return parts if len(parts) > 1 and all(len(part.split()) >= 3 for part in parts) else []


def _must_keep(text: str) -> bool:
    return bool(_PROMISE.search(text)) or text.rstrip().endswith("?")


def _plain(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class Floors:
    """Cosine floors of the check (the defaults are the measured ones)."""

    sentence: float = SENTENCE_FLOOR
    cover: float = COVER_FLOOR
    whole: float = WHOLE_FLOOR


@dataclass
class Measures:
    """What the check found in a rewording so far; ``refusal`` judges it against floors."""

    nearest: list[float] = field(default_factory=list)
    to_whole: list[float] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    cover: float = 1.0
    whole: float = 1.0

    def refusal(self, floors: Floors, *, finished: bool = True) -> str | None:
        """Why the rewording is refused, or None when it keeps the draft's meaning.

        Args:
            floors: The cosine floors.
            finished: False while a stream is still arriving: what a whole reply must keep
                (``cover``, ``whole``, ``lost``) is judged only once it has ended.
        """
        if self.claims:
            return f"claims what the draft does not ({', '.join(sorted(self.claims))})"
        if self.nearest and min(self.nearest) < floors.sentence:
            return f"a sentence drifts from the draft (cosine {min(self.nearest):.2f})"
        if not finished:
            return None
        if self.lost:
            return f"drops the draft's {', '.join(self.lost)}"
        if self.cover < floors.cover:
            return f"drops a result, promise or question of the draft (cosine {self.cover:.2f})"
        if self.whole < floors.whole:
            return f"the whole drifts from the draft (cosine {self.whole:.2f})"
        return None


class DraftMeaning:
    """One draft's meaning, checked against a rewording sentence by sentence.

    The draft's sentences are embedded in the same batch as the first sentences checked (unless
    the check has them from an earlier reply) and kept for the later ones: a streamed reply checks
    each sentence as it is released. A sentence that repeats one of the draft's word for word is
    not embedded again; one embedded ahead (``ahead``) is not embedded twice.

    Args:
        check: The check whose embedding model (and cache of draft sentences) this uses.
        draft: The offline reply the model rewords.
        tool_result: The tool's result the draft carries ("" when none): it must be kept.
        semantic: False where the embedding model cannot judge (a reply in another language):
            only the tool result's addresses and numbers are checked. None: not known yet (a
            streamed reply whose first words cannot tell its language); claims and insults are
            checked at once, the rest when ``decide`` is called.
        floors: The cosine floors ``refusal`` judges by.
    """

    def __init__(
        self,
        check: MeaningCheck,
        draft: str,
        tool_result: str = "",
        *,
        semantic: bool | None = True,
        floors: Floors | None = None,
    ) -> None:
        self._check = check
        self.floors = floors or Floors()
        self._semantic = semantic
        whole = sentences(draft) or [draft.strip()]
        kept = set(sentences(tool_result))
        self._draft = list(whole)
        # What the rewording must keep: the tool's result, promises, questions. A sentence cut in
        # clauses is kept clause by clause, so "... is yours: what's the email address?" without
        # its question is not kept by a rewording of its first half.
        self._keep: list[int] = []
        for i, sentence in enumerate(whole):
            clauses = _clauses(sentence)
            if sentence in kept or _must_keep(sentence):
                own = [j for j, clause in enumerate(clauses) if sentence in kept or _must_keep(clause)]
                self._keep += [len(self._draft) + j for j in own] or [i]
            self._draft += clauses
        self._keep_plain = [_plain(self._draft[i]) for i in self._keep]
        self._sentences = len(whole)
        self._verbatim = {_plain(unit): i for i, unit in reversed(list(enumerate(self._draft)))}
        self._tokens = [*_ADDRESS.findall(tool_result), *_DIGITS.findall(tool_result)]
        self._draft_claims = _claims(draft)
        self._draft_vectors: Vector | None = None
        # Vectors of sentences embedded before they were judged (``ahead``), until they are.
        self._ahead: dict[str, Vector] = {}
        self._seen: list[Vector] = []
        self._text: list[str] = []
        self._undecided: list[str] = []
        self.measures = Measures()

    @property
    def semantic(self) -> bool | None:
        """Whether the embedding model judges this rewording (None: not decided yet)."""
        return self._semantic

    @property
    def text(self) -> str:
        """The rewording checked so far."""
        return "".join(self._text)

    def decide(self, semantic: bool) -> Measures:
        """Say whether the embedding model can judge the rewording, and judge what came before."""
        self._semantic = semantic
        held, self._undecided = self._undecided, []
        if semantic and held:
            self._measure(held)
        return self.measures

    def add(self, text: str) -> Measures:
        """Check the next part of the rewording (one streamed sentence, or the whole reply)."""
        self._text.append(text)
        m = self.measures
        m.claims += sorted(_claims(text) - self._draft_claims)
        m.claims += [f"insult {match.group(0).lower()!r}" for match in _INSULT.finditer(text)]
        judged = _judged(text)
        if self._semantic is None:
            self._undecided += judged
            return m
        if not judged or not self._semantic:
            return m
        return self._measure(judged)

    def ahead(self, text: str) -> None:
        """Embed the sentences of ``text`` now, before ``add`` is called with them.

        A streamed reply's last sentence is complete only when the stream ends, and its embedding
        then fell after the model's last byte. Passed here as soon as the text so far ends like a
        sentence, it is embedded while the model decides whether more follows; ``add`` then finds
        its vector. A sentence that goes on after all ("version 3." and then "5") is embedded again
        in full: nothing is judged here, and the vectors are those ``add`` would compute.
        """
        if not self._semantic:  # not judged at all, or not known yet
            return
        judged = _judged(text)
        if judged:
            self._embed(judged)

    def _embed(self, judged: list[str]) -> None:
        """Embed the sentences not word for word in the draft and not embedded yet (with the draft's, first)."""
        fresh = [s for s in dict.fromkeys(judged) if _plain(s) not in self._verbatim and s not in self._ahead]
        if self._draft_vectors is None:
            vectors = self._check.vectors(self._draft, fresh)
            self._draft_vectors, embedded = vectors[: len(self._draft)], vectors[len(self._draft) :]
        elif fresh:
            embedded = self._check.vectors([], fresh)
        else:
            return
        self._ahead.update(zip(fresh, embedded, strict=True))

    def _measure(self, judged: list[str]) -> Measures:
        """Embed the sentences (those not word for word in the draft) and measure them against it."""
        m = self.measures
        self._embed(judged)
        assert self._draft_vectors is not None  # set by the first _embed
        draft_vectors = self._draft_vectors
        new = np.stack(
            [
                draft_vectors[self._verbatim[_plain(s)]] if _plain(s) in self._verbatim else self._ahead[s]
                for s in judged
            ]
        )
        for s in judged:
            self._ahead.pop(s, None)
        sims = new @ draft_vectors.T
        m.nearest += [float(x) for x in sims.max(axis=1)]
        m.to_whole += [float(x) for x in new @ _unit(draft_vectors[: self._sentences])]
        self._seen.append(new)
        return m

    def finish(self) -> Measures:
        """Judge what the whole rewording must keep, once it is complete."""
        m = self.measures
        whole = " ".join(self._text)
        m.lost = [f"result {t!r}" for t in self._tokens if t.lower() not in whole.lower()]
        if self._semantic is None:
            self.decide(True)
        if not self._semantic:
            return m
        if self._draft_vectors is None or not self._seen:  # nothing but courtesies: none of the draft was said
            m.whole = 0.0
            m.cover = 0.0 if self._keep else 1.0
            return m
        seen = np.concatenate(self._seen)
        m.whole = float(_unit(seen) @ _unit(self._draft_vectors[: self._sentences]))
        if self._keep:
            covered = (self._draft_vectors[self._keep] @ seen.T).max(axis=1)
            # A sentence the rewording repeats word for word is kept, however it was cut.
            said = _plain(whole)
            m.cover = min(
                1.0 if plain in said else float(c) for plain, c in zip(self._keep_plain, covered, strict=True)
            )
        return m

    def refusal(self, *, finished: bool) -> str | None:
        """Why the rewording so far is refused, or None (see ``Measures.refusal``)."""
        if finished:
            self.finish()
        return self.measures.refusal(self.floors, finished=finished)


class MeaningCheck:
    """Offline meaning check of rewordings against their drafts, with one embedding model.

    Args:
        embedder: The routing index's embedding model (``RunbookIndex.embedder``). The bundled
            model is used with 8-bit weights (``MiniLMEmbedder.quantized``): the floors were
            measured on those, and the last sentence of a reply, checked after the model's last
            byte, costs half the float model's time or less.
        floors: The cosine floors; the measured ones by default.
    """

    # Draft sentences whose vectors are kept: a pack's drafts are its steps and a few fixed
    # sentences, a few hundred in all, so most drafts cost no embedding after their first use.
    _CACHE = 4096

    def __init__(self, embedder: Embedder, floors: Floors | None = None) -> None:
        self.embedder = embedder.quantized() if isinstance(embedder, MiniLMEmbedder) else embedder
        self.floors = floors or Floors()
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()

    def draft(self, draft: str, tool_result: str = "", *, semantic: bool | None = True) -> DraftMeaning:
        """Start checking rewordings of ``draft`` (see ``DraftMeaning``)."""
        return DraftMeaning(self, draft, tool_result, semantic=semantic, floors=self.floors)

    def vectors(self, draft: Sequence[str], rewording: Sequence[str]) -> Vector:
        """Vectors of draft sentences (kept between calls) and of rewording sentences, in one batch."""
        with self._lock:
            known = {unit: self._cache[unit] for unit in draft if unit in self._cache}
        missing = [unit for unit in dict.fromkeys(draft) if unit not in known]
        if missing or rewording:
            embedded = self.embedder.embed([*missing, *rewording])
            found = dict(zip(missing, embedded[: len(missing)], strict=True))
            with self._lock:
                self._cache.update(found)
                while len(self._cache) > self._CACHE:
                    self._cache.popitem(last=False)
            known.update(found)
            tail = embedded[len(missing) :]
        else:
            tail = np.empty((0, 0), dtype=np.float32)
        head = [known[unit] for unit in draft]
        if not head:
            return tail
        return np.concatenate([np.stack(head), tail]) if len(tail) else np.stack(head)

    def refusal(self, draft: str, rewording: str, tool_result: str = "", *, semantic: bool = True) -> str | None:
        """Why a whole rewording is refused, or None when it keeps the draft's meaning."""
        meaning = self.draft(draft, tool_result, semantic=semantic)
        meaning.add(rewording)
        return meaning.refusal(finished=True)
