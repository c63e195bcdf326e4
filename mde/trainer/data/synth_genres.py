"""A synthesized single-label genre corpus in GTZAN's folder layout: ``DIR/genres/<genre>/<genre>.NNNNN.wav``.

Each genre is a style (:data:`GENRES`) that fixes the ensemble (the engines' voices and, for FluidSynth,
General MIDI programs), the tempo range, the scale and chord progression, and the rhythm of every part
and of the drums; a clip draws its tonic, tempo within the range, where the progression starts, the
melody, the velocities and each part's level in the mix. Rhythms are written on a grid of 16 steps per
4/4 bar (sixteenth notes); a swung style moves each off-beat eighth later in its beat.

===========  =======  =====================================================  =====================================
genre        bpm      ensemble (GM program)                                  drums
===========  =======  =====================================================  =====================================
classical    60-84    string chords (48), flute melody (73), piano broken      none
                      chords (0); major or harmonic minor triads
country      100-125  steel guitar boom-chick (25), bass roots and fifths      kick on 1 and 3, soft snare on 2 and 4
                      (32), fiddle in eighths (40) on the major pentatonic
electronic   122-132  saw-lead sixteenth arpeggio (81), synth bass on the      kick on every beat, snare on 2 and 4,
                      off-beats (38); natural minor                          off-beat hi-hat
hiphop       82-96    electric piano seventh chords (4), finger bass on the    boom-bap kick, loud snare on 2 and 4,
                      kick's steps (33); dorian, swung                       swung eighth hi-hats
jazz         110-170  piano comping on swung off-beats (0), walking bass       ride pattern on the hi-hat, feathered
                      (32); ii-V-I seventh chords                            kick
rock         112-148  distortion guitar power chords in eighths (30), pick     kick on 1, 3 and the and of 3, snare
                      bass in eighths (34); natural minor                    on 2 and 4, hi-hat eighths
===========  =======  =====================================================  =====================================

The numpy engine plays each part with its own voice (piano, strings, bass, guitar, flute, synth); only
FluidSynth uses the programs. Every clip's RMS level is drawn from the same range, so loudness tells the
genres nothing. Clip ``i`` of genre ``g`` (its index in :data:`GENRES`) draws everything from a generator
seeded with ``(seed, g, i)``, so the corpus depends only on its arguments, not on the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from mde.errors import MdeError
from mde.trainer.data.synth import ClipJob, check_render_arguments, describe_engine, make_clips, resolve_engine
from mde.trainer.data.synth_score import DrumHit, Note, Score, clip_notes

GENRE_ROOT = "genres"
"""The folder of genre folders inside the corpus folder, as in the GTZAN release."""
STEPS_PER_BAR = 16
"""Rhythm grid: sixteenth notes of a 4/4 bar."""
LEVEL_DBFS = (-24.0, -16.0)
"""RMS level range of every clip, in dB relative to full scale."""
PART_GAIN_DB = (-6.0, 0.0)
"""Range of each part's level in the mix relative to the others, in dB."""
VELOCITIES = {"X": (0.9, 1.0), "x": (0.65, 0.85), "o": (0.3, 0.45)}
"""Velocity range of a rhythm step: accented, normal, soft ('.' is a rest)."""

MAJOR = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
DORIAN = (0, 2, 3, 5, 7, 9, 10)
MAJOR_PENTATONIC = (0, 2, 4, 7, 9)

Chord = tuple[int, ...]
"""Chord tones as pitch classes above the tonic's, ascending (root first; may exceed 11)."""


@dataclass(frozen=True)
class PartStyle:
    """How one part plays.

    voice: the engine voice (piano, strings, bass, guitar, flute, synth); one part per voice in a style.
    program: its General MIDI program (FluidSynth). low: the lowest MIDI pitch of its register (the
    chord root or melody tonic is placed in the octave from there). rhythm: one bar of 16 steps, each
    'X', 'x', 'o' (an onset, accented to soft) or '.' (rest). length: note length in steps; 0 holds
    each note until the next onset (legato). notes: what each onset plays: 'chord' (every chord tone),
    'power' (root, fifth and octave), 'root', 'root_fifth' (root on the bar's even onsets, fifth on the
    odd), 'arpeggio' (one chord tone per onset in ``order``), 'melody' (a random walk over the style's
    melody scale) or 'walk' (a walking bass: root on beat 1, chord tones, a chromatic approach to the
    next bar's root).
    """

    voice: str
    program: int
    low: int
    rhythm: str
    length: float
    notes: str
    order: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class GenreStyle:
    """What makes a genre: tempo range (bpm), scales (one is drawn per clip), the progression (scale
    degrees, 0 = tonic, one chord per bar, cycled from a random bar; None: each bar draws one of I, IV, V,
    vi), chord size (3: triads, 4: seventh chords), the melody's scale (None: the drawn scale), swing
    (where an off-beat eighth falls, as a fraction of the beat: 0.5 is straight), the parts and the drums
    (kind -> one bar of 16 steps, as for :class:`PartStyle` rhythms)."""

    bpm: tuple[float, float]
    scales: tuple[tuple[int, ...], ...]
    progression: tuple[int, ...] | None
    chord_size: int
    melody_scale: tuple[int, ...] | None
    swing: float
    parts: tuple[PartStyle, ...]
    drums: dict[str, str]


GENRES: dict[str, GenreStyle] = {
    "classical": GenreStyle(
        (60.0, 84.0), (MAJOR, HARMONIC_MINOR), None, 3, None, 0.5,
        (PartStyle("strings", 48, 52, "x...............", 16, "chord"),
         PartStyle("flute", 73, 72, "x.......x...x...", 0, "melody"),
         PartStyle("piano", 0, 48, "o.o.o.o.o.o.o.o.", 2, "arpeggio", (0, 2, 1, 2))),
        {}),
    "country": GenreStyle(
        (100.0, 125.0), (MAJOR,), (0, 3, 4, 0), 3, MAJOR_PENTATONIC, 0.5,
        (PartStyle("guitar", 25, 52, "....x.x.....x.x.", 2, "chord"),
         PartStyle("bass", 32, 40, "x.......x.......", 4, "root_fifth"),
         PartStyle("strings", 40, 67, "x.x.x.x.x.x.x.x.", 0, "melody")),
        {"kick": "x.......x.......", "snare": "....o.......o..."}),
    "electronic": GenreStyle(
        (122.0, 132.0), (NATURAL_MINOR,), (0, 5, 2, 6), 3, None, 0.5,
        (PartStyle("synth", 81, 60, "xxxxxxxxxxxxxxxx", 1, "arpeggio", (0, 1, 2, 1)),
         PartStyle("bass", 38, 36, "..x...x...x...x.", 2, "root")),
        {"kick": "X...X...X...X...", "snare": "....x.......x...", "hihat": "..x...x...x...x."}),
    "hiphop": GenreStyle(
        (82.0, 96.0), (DORIAN,), (0, 3), 4, None, 0.6,
        (PartStyle("piano", 4, 53, "x.........x.....", 6, "chord"),
         PartStyle("bass", 33, 36, "x......x..x.....", 3, "root")),
        {"kick": "X......x..x.....", "snare": "....X.......X...", "hihat": "x.x.x.x.x.x.x.x."}),
    "jazz": GenreStyle(
        (110.0, 170.0), (MAJOR,), (1, 4, 0, 0), 4, None, 2 / 3,
        (PartStyle("piano", 0, 53, "......x.......x.", 3, "chord"),
         PartStyle("bass", 32, 36, "x...x...x...x...", 4, "walk")),
        {"kick": "o...o...o...o...", "hihat": "x...x.x.x...x.x."}),
    "rock": GenreStyle(
        (112.0, 148.0), (NATURAL_MINOR,), (0, 5, 6, 0), 3, None, 0.5,
        (PartStyle("guitar", 30, 40, "X.x.X.x.X.x.X.x.", 2, "power"),
         PartStyle("bass", 34, 28, "x.x.x.x.x.x.x.x.", 2, "root")),
        {"kick": "X.......X.x.....", "snare": "....X.......X...", "hihat": "x.x.x.x.x.x.x.x."}),
}
"""The genres of the corpus, by name (the folder and file names)."""

def synthesize_genres(
    out_dir: Path,
    n: int,
    *,
    seed: int = 0,
    sample_rate: int = 16000,
    seconds: float = 4.0,
    engine: str = "auto",
    workers: int = 1,
    genres: Sequence[str] | None = None,
    announce: Callable[[str], None] | None = None,
    on_clip: Callable[[int], None] | None = None,
) -> Path:
    """Write ``n`` clips of ``seconds`` s at ``sample_rate`` Hz, shared out over the genres (``genres``, a
    subset of :data:`GENRES` in any order; None: all) as evenly as possible (the first genres in GENRES' order
    get one more), to ``out_dir/genres/<genre>/<genre>.NNNNN.wav``; return
    ``out_dir``, which ``mde train --dataset gtzan --data out_dir`` reads (its seeded 80/10/10 split per
    genre: valid and test get round(n / 10) clips of each genre, at least one from 3 clips up).

    ``engine``, ``workers``, ``announce`` and ``on_clip`` are as for
    :func:`mde.trainer.data.synth.synthesize_corpus`. Files already there under the same names are
    overwritten; a ``genres`` folder holding anything else is refused (the gtzan loader would read it).
    A clip of a genre is the same whichever other genres are made beside it.
    Raises MdeError for bad arguments, an unknown genre, fewer clips than genres, and a missing fluidsynth
    when asked for.
    """
    check_render_arguments(n, sample_rate, seconds, workers)
    chosen = _chosen_genres(genres)
    if n < len(chosen):
        raise MdeError(f"the genre corpus needs at least one clip per genre: n >= {len(chosen)}, got n={n}")
    root = out_dir / GENRE_ROOT
    counts = [n // len(chosen) + (g < n % len(chosen)) for g in range(len(chosen))]
    width = max(5, len(str(max(counts) - 1)))
    paths = {genre: [root / genre / f"{genre}.{i:0{width}d}.wav" for i in range(count)]
             for genre, count in zip(chosen, counts)}
    _refuse_strangers(root, paths)
    fluidsynth = resolve_engine(engine)
    if announce:
        announce(describe_engine(fluidsynth))
    jobs = []
    for genre, genre_paths in paths.items():
        (root / genre).mkdir(parents=True, exist_ok=True)
        composer = partial(compose_genre, genre=genre)
        g = list(GENRES).index(genre)
        jobs += [ClipJob(path, (seed, g, i), composer, sample_rate, seconds, fluidsynth)
                 for i, path in enumerate(genre_paths)]
    make_clips(jobs, workers, on_clip)
    return out_dir


def _chosen_genres(genres: Sequence[str] | None) -> list[str]:
    """The genres to make, in GENRES' order (MdeError for an unknown, a repeated or no genre)."""
    if genres is None:
        return list(GENRES)
    unknown = [genre for genre in genres if genre not in GENRES]
    if unknown:
        raise MdeError(f"unknown genre {unknown[0]!r}; the genres are {', '.join(GENRES)}")
    if not genres or len(set(genres)) != len(genres):
        raise MdeError(f"give each genre once, at least one: got {', '.join(genres) or 'none'}")
    return [genre for genre in GENRES if genre in genres]


def _refuse_strangers(root: Path, paths: dict[str, list[Path]]) -> None:
    """MdeError if ``root`` holds a file or folder that is not one of ``paths`` or their genre folders."""
    if not root.is_dir():
        return
    expected = {path for genre_paths in paths.values() for path in genre_paths} | {root / genre for genre in paths}
    stranger = next((path for path in sorted(root.rglob("*")) if path not in expected), None)
    if stranger is not None:
        raise MdeError(f"{root} holds {stranger.relative_to(root)}, which this corpus does not make "
                       f"(the gtzan loader would read it); write to an empty --out")


def compose_genre(rng: np.random.Generator, seconds: float, genre: str) -> Score:
    """Draw a random score of ``seconds`` length in ``genre``'s style; its one tag is the genre."""
    style = GENRES[genre]
    bpm = float(rng.uniform(*style.bpm))
    grid = _Grid(60.0 / bpm, style.swing, math.ceil(seconds * bpm / 240.0))
    tonic = int(rng.integers(12))
    scale = style.scales[int(rng.integers(len(style.scales)))]
    harmony = _Harmony(_progression(rng, scale, style, grid.bars), style.melody_scale or scale)
    parts = {}
    for part in style.parts:
        notes = _NOTE_WRITERS[part.notes](rng, part, harmony, grid)
        parts[part.voice] = clip_notes([_transposed(note, tonic) for note in notes], seconds)
    drums = tuple(
        DrumHit(start, kind, velocity)
        for kind, rhythm in style.drums.items() for start, velocity in grid.onsets(rng, rhythm) if start < seconds
    )
    gains_db = {name: float(rng.uniform(*PART_GAIN_DB)) for name in [*parts, *(["drums"] if drums else [])]}
    return Score(seconds, bpm, parts, gains_db, drums, float(rng.uniform(*LEVEL_DBFS)), (genre,),
                 {part.voice: part.program for part in style.parts})


@dataclass(frozen=True)
class _Harmony:
    """A clip's chords (one per bar, above a tonic of C) and the scale its melodies walk on."""

    chords: list[Chord]
    melody_scale: tuple[int, ...]


@dataclass(frozen=True)
class _Grid:
    """The rhythm grid of a clip: beat length in seconds, swing (see :class:`GenreStyle`), bars."""

    beat: float
    swing: float
    bars: int

    def step_time(self, bar: int, step: int) -> float:
        """Onset in seconds of sixteenth ``step`` (0-15) of ``bar``, with the off-beat eighth swung."""
        beat, within = divmod(step, 4)
        offset = self.swing if within == 2 else within / 4
        return (4 * bar + beat + offset) * self.beat

    def onsets(self, rng: np.random.Generator, rhythm: str) -> list[tuple[float, float]]:
        """(onset in seconds, velocity) of every onset of ``rhythm`` over all bars."""
        return [(self.step_time(bar, step), float(rng.uniform(*VELOCITIES[mark])))
                for bar in range(self.bars) for step, mark in enumerate(rhythm) if mark != "."]

    def steps(self, rhythm: str) -> list[int]:
        """The onset steps of ``rhythm`` within a bar."""
        return [step for step, mark in enumerate(rhythm) if mark != "."]


def _progression(rng: np.random.Generator, scale: tuple[int, ...], style: GenreStyle, bars: int) -> list[Chord]:
    """One chord per bar, stacked in thirds on the style's scale degrees."""
    if style.progression is None:
        degrees = [int(d) for d in rng.choice((0, 3, 4, 5), size=bars)]
    else:
        start = int(rng.integers(len(style.progression)))
        degrees = [style.progression[(start + bar) % len(style.progression)] for bar in range(bars)]
    return [tuple(scale[(d + 2 * k) % 7] + 12 * ((d + 2 * k) // 7) for k in range(style.chord_size)) for d in degrees]


def _voiced(chord: Chord, low: int) -> list[int]:
    """MIDI pitches (above a tonic of C) of ``chord`` in root position, its root in the octave from ``low``."""
    root = low + (chord[0] - low) % 12
    return [root + tone - chord[0] for tone in chord]


def _transposed(note: Note, tonic: int) -> Note:
    """``note`` moved up by ``tonic`` semitones, then down an octave when that lifts it 6 or more."""
    shift = tonic if tonic < 6 else tonic - 12
    return Note(note.start, note.duration, note.pitch + shift, note.velocity)


def _timed(rng: np.random.Generator, part: PartStyle, grid: _Grid,
           pitches_of: Callable[[int, int], list[int]]) -> list[Note]:
    """The notes of ``part``: at each onset (bar, k-th onset of the bar) the pitches ``pitches_of(bar, k)``."""
    steps = grid.steps(part.rhythm)
    notes = []
    for bar in range(grid.bars):
        for k, step in enumerate(steps):
            start = grid.step_time(bar, step)
            following = steps[k + 1] if k + 1 < len(steps) else STEPS_PER_BAR + steps[0]
            steps_long = part.length or following - step
            duration = 0.95 * steps_long * grid.beat / 4
            velocity = float(rng.uniform(*VELOCITIES[part.rhythm[step]]))
            notes += [Note(start, duration, pitch, velocity) for pitch in pitches_of(bar, k)]
    return notes


def _chord_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    return _timed(rng, part, grid, lambda bar, k: _voiced(harmony.chords[bar], part.low))


def _power_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    def power(bar: int, k: int) -> list[int]:
        voiced = _voiced(harmony.chords[bar], part.low)
        return [voiced[0], voiced[2], voiced[0] + 12]

    return _timed(rng, part, grid, power)


def _root_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    return _timed(rng, part, grid, lambda bar, k: _voiced(harmony.chords[bar], part.low)[:1])


def _root_fifth_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    return _timed(rng, part, grid, lambda bar, k: [_voiced(harmony.chords[bar], part.low)[0 if k % 2 == 0 else 2]])


def _arpeggio_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    def tone(bar: int, k: int) -> list[int]:
        voiced = _voiced(harmony.chords[bar], part.low)
        return [voiced[part.order[k % len(part.order)] % len(voiced)]]

    return _timed(rng, part, grid, tone)


def _walk_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    def step(bar: int, k: int) -> list[int]:
        voiced = _voiced(harmony.chords[bar], part.low)
        if k == 0:
            return [voiced[0]]
        if k == 3:  # a semitone below or above the next bar's root
            following = _voiced(harmony.chords[(bar + 1) % len(harmony.chords)], part.low)[0]
            return [following + (-1 if rng.random() < 0.5 else 1)]
        return [voiced[int(rng.integers(1, len(voiced)))]]

    return _timed(rng, part, grid, step)


def _melody_notes(rng: np.random.Generator, part: PartStyle, harmony: _Harmony, grid: _Grid) -> list[Note]:
    """A random walk over the melody scale from the tonic at ``low``: each onset moves -1, 0, +1 or +2
    scale steps, kept within two octaves."""
    scale = harmony.melody_scale
    index = [0]

    def next_pitch(bar: int, k: int) -> list[int]:
        index[0] = int(np.clip(index[0] + rng.choice((-1, 0, 1, 2)), 0, 2 * len(scale) - 1))
        octave, degree = divmod(index[0], len(scale))
        return [part.low + 12 * octave + scale[degree]]

    return _timed(rng, part, grid, next_pitch)


_NOTE_WRITERS: dict[str, Callable[[np.random.Generator, PartStyle, _Harmony, _Grid], list[Note]]] = {
    "chord": _chord_notes, "power": _power_notes, "root": _root_notes, "root_fifth": _root_fifth_notes,
    "arpeggio": _arpeggio_notes, "walk": _walk_notes, "melody": _melody_notes,
}
"""What each onset of a part plays, by :attr:`PartStyle.notes`."""
