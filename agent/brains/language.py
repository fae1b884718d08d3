"""A small deterministic guess at the language a message is written in.

The LLM brain asks the model for the language; this guess is what it falls back to when the model
is unavailable, so that the policy can tell a conversation the offline brain cannot read (it is
English-only) from one it can.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

# Short function words that are frequent in support messages and rare in the other languages.
_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the and is my i it to not can't cannot don't doesn't with for on in of this that have has you "
        "your me was what how when please help".split()
    ),
    "de": frozenset(
        "ich und ist mein meine nicht kann das die der den dem mit für auf ein eine einen bitte hilfe "
        "habe hat wie wenn mir mich es sich noch geht funktioniert vergessen".split()
    ),
    "fr": frozenset(
        "je et est mon ma mes ne pas peux le la les un une des avec pour sur dans ce cette aide "
        "j'ai il elle vous mot passe oublié marche fonctionne plus".split()
    ),
    "es": frozenset(
        "yo y es mi mis no puedo el la los las un una con para en este esta ayuda tengo ha he "
        "olvidé contraseña funciona me se que por favor".split()
    ),
    "it": frozenset(
        "io e è il lo la mio mia non posso con per su questo questa aiuto ho ha password "
        "dimenticato funziona mi si che più".split()
    ),
    "nl": frozenset(
        "ik en is mijn niet kan de het een met voor op dit dat hulp heb wachtwoord vergeten werkt mij me nog".split()
    ),
    "pt": frozenset(
        "eu e é meu minha não posso o a os as um uma com para em este esta ajuda tenho senha "
        "esqueci funciona me se que".split()
    ),
}


def guess_language(text: str) -> str:
    """The ISO 639-1 code of the language ``text`` most likely uses; "en" when unsure.

    Args:
        text: A customer message.

    Returns:
        One of en, de, fr, es, it, nl, pt. Another language wins only with at least two of its
        function words and more hits than English.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    apostrophes = re.findall(r"\b\w+'\w+\b", text.lower())
    words += apostrophes
    if not words:
        return "en"
    hits = {lang: sum(1 for w in words if w in stop) for lang, stop in _STOPWORDS.items()}
    best = max(hits, key=lambda lang: (hits[lang], lang == "en"))
    if best == "en" or hits[best] < 2 or hits[best] <= hits["en"]:
        return "en"
    return best
