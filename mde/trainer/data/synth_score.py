"""Random scores for the synthesized corpus: what each clip plays, and the tags that follow from it.

A :class:`Score` is engine-neutral (notes in seconds and MIDI pitches); ``synth_numpy`` and
``synth_fluidsynth`` render it. Every tag is a fact of the score:

* ``piano``, ``strings``, ``bass``, ``guitar``, ``flute``, ``synth``: that part plays (each with
  probability 0.4, at least one per clip). Parts differ in register and rhythm as well as timbre
  (each plays chord tones within one octave from the pitch given): piano block chords on the beat
  (C3), sustained string chords per bar (G3), bass roots and fifths on the beat (C2), guitar
  arpeggios in eighths (E3), a legato flute melody in quarters and halves (C5), a staccato
  square-wave synth arpeggio in eighths (C4).
* ``drums`` (kick on beats 1 and 3, snare on 2 and 4, hi-hat on eighths) or else ``no drums``.
* ``fast`` (145-180 bpm) or ``slow`` (60-85 bpm); a third of clips are in between (95-135 bpm) and
  get neither. All parts move on beat subdivisions, so the tempo shows without drums too.
* ``loud`` (RMS -13 to -10 dBFS) or ``quiet`` (-38 to -34 dBFS); a third in between (-26 to -22).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

INSTRUMENTS = ("piano", "strings", "bass", "guitar", "flute", "synth")
DRUM_KINDS = ("kick", "snare", "hihat")
TAGS = (*INSTRUMENTS, "drums", "no drums", "fast", "slow", "loud", "quiet")
"""Every tag a synthesized clip can carry."""
Chord = tuple[int, int, int]
"""A triad as pitch classes (root, third, fifth), C = 0, possibly above 11."""

INSTRUMENT_PROBABILITY = 0.4
DRUMS_PROBABILITY = 0.5
TEMPO_BPM = {"slow": (60.0, 85.0), "medium": (95.0, 135.0), "fast": (145.0, 180.0)}
LEVEL_DBFS = {"quiet": (-38.0, -34.0), "medium": (-26.0, -22.0), "loud": (-13.0, -10.0)}
"""Target RMS level ranges of the whole clip, in dB relative to full scale."""
PART_GAIN_DB = (-6.0, 0.0)
"""Range of each part's level in the mix relative to the others, in dB."""

_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PROGRESSION_DEGREES = (0, 3, 4, 5)
"""Scale degrees (I, IV, V, vi) a bar's chord is built on."""


@dataclass(frozen=True)
class Note:
    """One pitched note: onset and length in seconds, MIDI pitch, velocity in (0, 1]."""

    start: float
    duration: float
    pitch: int
    velocity: float


@dataclass(frozen=True)
class DrumHit:
    """One drum stroke: onset in seconds, kind (one of :data:`DRUM_KINDS`), velocity in (0, 1]."""

    start: float
    kind: str
    velocity: float


@dataclass(frozen=True)
class Score:
    """What a clip plays.

    seconds: clip length. bpm: tempo. parts: instrument -> notes (only the instruments that play).
    gains_db: instrument or 'drums' -> level in the mix (dB, <= 0). drums: the drum strokes (empty
    when there are no drums). level_dbfs: target RMS of the rendered clip. tags: its tags. programs:
    instrument -> General MIDI program, for FluidSynth, where it differs from that voice's default (the
    numpy engine renders each instrument with its own voice whatever the program).
    """

    seconds: float
    bpm: float
    parts: dict[str, tuple[Note, ...]]
    gains_db: dict[str, float]
    drums: tuple[DrumHit, ...]
    level_dbfs: float
    tags: tuple[str, ...]
    programs: Mapping[str, int] = field(default_factory=dict)


def compose(rng: np.random.Generator, seconds: float) -> Score:
    """Draw a random score of ``seconds`` length (see the module docstring for what is drawn)."""
    tempo = str(rng.choice(list(TEMPO_BPM)))
    level = str(rng.choice(list(LEVEL_DBFS)))
    bpm = float(rng.uniform(*TEMPO_BPM[tempo]))
    level_dbfs = float(rng.uniform(*LEVEL_DBFS[level]))
    playing = [name for name in INSTRUMENTS if rng.random() < INSTRUMENT_PROBABILITY]
    if not playing:
        playing = [str(rng.choice(INSTRUMENTS))]
    has_drums = bool(rng.random() < DRUMS_PROBABILITY)

    beat = 60.0 / bpm
    chords = _chords(rng, n_bars=math.ceil(seconds / (4 * beat)))
    parts = {name: clip_notes(_PART_WRITERS[name](rng, chords, beat), seconds) for name in playing}
    drums = _drums(rng, beat, seconds) if has_drums else ()
    gains_db = {name: float(rng.uniform(*PART_GAIN_DB)) for name in [*playing, *(["drums"] if has_drums else [])]}

    tags = [*playing, "drums" if has_drums else "no drums"]
    tags += [t for t in (tempo, level) if t != "medium"]
    return Score(seconds, bpm, parts, gains_db, drums, level_dbfs, tuple(sorted(tags, key=TAGS.index)))


def _chords(rng: np.random.Generator, n_bars: int) -> list[Chord]:
    """One triad per bar in a random major or minor key."""
    tonic = int(rng.integers(12))
    scale = _MAJOR if rng.random() < 0.5 else _MINOR
    chords = []
    for degree in rng.choice(_PROGRESSION_DEGREES, size=n_bars):
        root, third, fifth = (tonic + scale[(degree + step) % 7] for step in (0, 2, 4))
        chords.append((root, third, fifth))
    return chords


def _pitch(pitch_class: int, low: int) -> int:
    """The MIDI pitch of ``pitch_class`` in the octave from ``low`` up."""
    return low + (pitch_class - low) % 12


def _piano(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    return [
        Note((4 * bar + b) * beat, 0.9 * beat, _pitch(pc, 48), float(rng.uniform(0.6, 0.9)))
        for bar, chord in enumerate(chords) for b in range(4) for pc in chord
    ]


def _strings(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    return [
        Note(4 * bar * beat, 4 * beat, _pitch(pc, 55), float(rng.uniform(0.6, 0.8)))
        for bar, chord in enumerate(chords) for pc in chord
    ]


def _bass(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    return [
        Note((4 * bar + b) * beat, 0.8 * beat, _pitch(chord[0 if b % 2 == 0 else 2], 36),
             float(rng.uniform(0.7, 1.0)))
        for bar, chord in enumerate(chords) for b in range(4)
    ]


def _guitar(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    pattern = (0, 1, 2, 1, 0, 2, 1, 2)
    return [
        Note((8 * bar + e) * beat / 2, beat, _pitch(chord[pattern[e]], 52), float(rng.uniform(0.6, 0.9)))
        for bar, chord in enumerate(chords) for e in range(8)
    ]


def _flute(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    notes, t, step = [], 0.0, 0
    total = 4 * beat * len(chords)
    while t < total:
        chord = chords[int(t // (4 * beat))]
        length = beat * int(rng.choice([1, 2]))
        step = int(np.clip(step + rng.integers(-1, 2), 0, 2))
        notes.append(Note(t, 0.95 * length, _pitch(chord[step], 72), float(rng.uniform(0.6, 0.9))))
        t += length
    return notes


def _synth(rng: np.random.Generator, chords: list[Chord], beat: float) -> list[Note]:
    pattern = (0, 1, 2, 0, 2, 1, 0, 2)
    return [
        Note((8 * bar + e) * beat / 2, 0.25 * beat, _pitch(chord[pattern[e]], 60), float(rng.uniform(0.7, 1.0)))
        for bar, chord in enumerate(chords) for e in range(8)
    ]


def _drums(rng: np.random.Generator, beat: float, seconds: float) -> tuple[DrumHit, ...]:
    hits = []
    for eighth in range(int(seconds / (beat / 2)) + 1):
        t = eighth * beat / 2
        if eighth % 4 == 0:
            hits.append(DrumHit(t, "kick", float(rng.uniform(0.8, 1.0))))
        if eighth % 4 == 2:
            hits.append(DrumHit(t, "snare", float(rng.uniform(0.8, 1.0))))
        hits.append(DrumHit(t, "hihat", float(rng.uniform(0.5, 0.8))))
    return tuple(h for h in hits if h.start < seconds)


def clip_notes(notes: list[Note], seconds: float) -> tuple[Note, ...]:
    """Notes that start inside the clip, shortened to end by its end."""
    return tuple(
        Note(n.start, min(n.duration, seconds - n.start), n.pitch, n.velocity) for n in notes if n.start < seconds
    )


_PART_WRITERS: dict[str, Callable[[np.random.Generator, list[Chord], float], list[Note]]] = {
    "piano": _piano, "strings": _strings, "bass": _bass, "guitar": _guitar, "flute": _flute, "synth": _synth,
}
