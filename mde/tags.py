"""Tag vocabularies shared by importers, training recipes and the runtime, and the one way to rank tags."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MTAT_TOP50: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)
"""The 50 most frequent MagnaTagATune tags, in the output order of the sota-music-tagging-models
recipe (and of the first seed's models)."""

MTT_MUSICNN_50: tuple[str, ...] = MTAT_TOP50
"""The output order of musicnn's MagnaTagATune models (MTT_musicnn, MTT_vgg): ``MTT_LABELS`` of the
``musicnn`` package's configuration.py, which is the same list as :data:`MTAT_TOP50`."""

MSD_50: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock",
    "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill", "instrumental",
    "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental", "female vocalist",
    "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy", "catchy", "funk",
    "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop", "sad", "House", "happy",
)
"""The output order of musicnn's Million Song Dataset models (MSD_musicnn, MSD_vgg): ``MSD_LABELS`` of the
``musicnn`` package's configuration.py (Last.fm tags, original capitalisation)."""


def top_tags(scores: np.ndarray, names: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` highest of ``scores`` (a (n_tags,) vector) as (name, score) pairs, highest first.

    Ties keep the model's tag order. ``names`` must name every score (model metadata is checked for
    that on load); a shorter list raises ValueError rather than an IndexError halfway through.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1 or len(names) != len(scores):
        raise ValueError(f"{len(names)} tag names for {scores.shape} scores")
    order = np.argsort(-scores, kind="stable")[: max(k, 0)]
    return [(names[i], float(scores[i])) for i in order]
