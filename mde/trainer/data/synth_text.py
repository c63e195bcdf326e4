"""Short free-text descriptions of synthesized clips, in English or German, for text targets.

A clip's description says what its tags say (:data:`~mde.trainer.data.synth_score.TAGS`: instruments,
drums, tempo, loudness) in a sentence of one of two languages, with the wording varied by a seeded choice
of opening, so that the text is not its tag list: "A fast, loud piece for piano and guitar, with drums." or
"Hier ist ein langsames, leises Stück für Klavier und Flöte, ohne Schlagzeug."
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mde.trainer.data.synth_score import INSTRUMENTS

LANGUAGES = ("en", "de")
_WORDS = {
    "en": {"piano": "piano", "strings": "strings", "bass": "bass", "guitar": "guitar", "flute": "flute",
           "synth": "synthesizer", "fast": "fast", "slow": "slow", "loud": "loud", "quiet": "quiet"},
    "de": {"piano": "Klavier", "strings": "Streicher", "bass": "Bass", "guitar": "Gitarre", "flute": "Flöte",
           "synth": "Synthesizer", "fast": "schnelles", "slow": "langsames", "loud": "lautes", "quiet": "leises"},
}
_OPENINGS = {"en": ("A", "This is a", "Here is a"), "de": ("Ein", "Das ist ein", "Hier ist ein")}
_PIECE = {"en": "piece for", "de": "Stück für"}
_AND = {"en": "and", "de": "und"}
_DRUMS = {"en": ("with drums", "without drums"), "de": ("mit Schlagzeug", "ohne Schlagzeug")}


def describe(tags: Sequence[str], language: str, rng: np.random.Generator) -> str:
    """One sentence in ``language`` ('en' or 'de') saying what ``tags`` (a synthesized clip's) say."""
    words = _WORDS[language]
    adjectives = [words[t] for t in ("fast", "slow", "loud", "quiet") if t in tags]
    instruments = [words[t] for t in INSTRUMENTS if t in tags]
    listed = instruments[0] if len(instruments) == 1 else (
        f"{', '.join(instruments[:-1])} {_AND[language]} {instruments[-1]}")
    drums = _DRUMS[language][0 if "drums" in tags else 1]
    opening = str(rng.choice(_OPENINGS[language]))
    head = f"{opening} {', '.join(adjectives)}" if adjectives else opening
    return f"{head} {_PIECE[language]} {listed}, {drums}."


def clip_description(tags: Sequence[str], seed: int, index: int) -> str:
    """The description of clip ``index`` of the corpus made with ``seed``: its language and wording are
    drawn from their own seeded stream, so the audio and the tags do not change with them."""
    rng = np.random.default_rng((seed, index, 0x7E47))
    return describe(tags, str(rng.choice(LANGUAGES)), rng)
