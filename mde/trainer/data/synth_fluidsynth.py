"""The FluidSynth engine of the synthesized corpus: a score as a General MIDI file, rendered offline.

Needs the ``fluidsynth`` command and a General MIDI SoundFont (Debian/Ubuntu:
``apt-get install fluidsynth timgm6mb-soundfont``). The SoundFont is ``$MDE_SOUNDFONT`` when set,
else the first of :data:`SOUNDFONT_NAMES` found in :data:`SOUNDFONT_DIRS`.
Parts map to GM programs (piano 0, strings 48, bass 33, guitar 25, flute 73, synth 80, unless the
score's ``programs`` name another) and the drums to channel 10 (kick 36, snare 38, closed hi-hat 42);
each part's mix gain becomes its channel volume (CC7, which FluidSynth applies as amplitude (cc/127)^2).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from mde.errors import MdeError
from mde.trainer.data.synth_score import Score

SOUNDFONT_ENV = "MDE_SOUNDFONT"
SOUNDFONT_DIRS = (
    Path("/usr/share/sounds/sf2"), Path("/usr/share/soundfonts"), Path("/usr/local/share/soundfonts")
)
SOUNDFONT_NAMES = ("FluidR3_GM.sf2", "TimGM6mb.sf2", "default-GM.sf2")
"""SoundFonts looked for, in order: the larger, better FluidR3 (Debian fluid-soundfont-gm) first."""
INSTALL_HINT = "apt-get install fluidsynth timgm6mb-soundfont"

_PROGRAMS = {"piano": 0, "strings": 48, "bass": 33, "guitar": 25, "flute": 73, "synth": 80}
_DRUM_CHANNEL = 9
_DRUM_KEYS = {"kick": 36, "snare": 38, "hihat": 42}
_TICKS_PER_QUARTER = 480
_TICKS_PER_SECOND = 960
"""At the default tempo of 120 bpm (500,000 us per quarter), which the file never changes."""
_RENDER_TIMEOUT = 120.0
"""Seconds one fluidsynth run may take before it is treated as hung."""


def find_fluidsynth() -> tuple[str, Path] | None:
    """The fluidsynth command and a SoundFont, or None when either is missing."""
    command = shutil.which("fluidsynth")
    soundfont = find_soundfont()
    return (command, soundfont) if command and soundfont else None


def find_soundfont() -> Path | None:
    """``$MDE_SOUNDFONT`` if set (an error if that file is missing), else the first one installed."""
    chosen = os.environ.get(SOUNDFONT_ENV)
    if chosen:
        if not Path(chosen).is_file():
            raise MdeError(f"{SOUNDFONT_ENV}={chosen}: no such SoundFont file")
        return Path(chosen)
    candidates = (folder / name for name in SOUNDFONT_NAMES for folder in SOUNDFONT_DIRS)
    return next((path for path in candidates if path.is_file()), None)


def render(score: Score, sample_rate: int, command: str, soundfont: Path) -> np.ndarray:
    """Render ``score`` with fluidsynth to mono float64 samples (round(seconds * sample_rate),).

    Chorus and reverb stay at FluidSynth's defaults; the level is left to the caller.
    Raises MdeError when fluidsynth fails.
    """
    with tempfile.TemporaryDirectory(prefix="mde-synth-") as tmp:
        midi, wav = Path(tmp, "clip.mid"), Path(tmp, "clip.wav")
        midi.write_bytes(score_to_midi(score))
        argv = [command, "-ni", "-q", "-F", str(wav), "-T", "wav", "-O", "float", "-r", str(sample_rate),
                str(soundfont), str(midi)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=_RENDER_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise MdeError(f"fluidsynth did not finish a {score.seconds:g} s clip in {_RENDER_TIMEOUT:g} s "
                           f"with {soundfont}; try --engine numpy") from None
        if done.returncode != 0 or not wav.is_file():
            reason = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()
            raise MdeError(f"fluidsynth failed with {soundfont}: {reason[-1]}")
        audio, _ = sf.read(wav, dtype="float64", always_2d=True)
    samples = audio.mean(axis=1)
    n = round(score.seconds * sample_rate)
    return np.pad(samples[:n], (0, max(0, n - len(samples))))


def score_to_midi(score: Score) -> bytes:
    """A format-0 Standard MIDI File of ``score`` (120 bpm, 480 ticks per quarter).

    Notes that would start at or after the clip's end are left out: clamped to the end, their note-on would
    follow their note-off there and hold the note forever, and FluidSynth's file renderer, which plays
    until every voice has ended, then never finishes (with a sustained program)."""
    end = _ticks(score.seconds)
    events: list[tuple[int, int, bytes]] = []  # (tick, order at that tick, message)
    for channel, name in enumerate(score.parts):
        volume = round(127 * 10 ** (score.gains_db[name] / 40))
        program = score.programs.get(name, _PROGRAMS[name])
        events += [(0, 0, bytes([0xC0 | channel, program])), (0, 0, bytes([0xB0 | channel, 7, volume]))]
        for note in score.parts[name]:
            if _ticks(note.start) < end:
                events += _note(channel, note.pitch, note.velocity, note.start, note.start + note.duration)
    if score.drums:
        volume = round(127 * 10 ** (score.gains_db["drums"] / 40))
        events.append((0, 0, bytes([0xB0 | _DRUM_CHANNEL, 7, volume])))
        for hit in score.drums:
            if _ticks(hit.start) < end:
                events += _note(_DRUM_CHANNEL, _DRUM_KEYS[hit.kind], hit.velocity, hit.start, hit.start + 0.1)
    track, now = bytearray(), 0
    for tick, _, message in sorted(events, key=lambda e: e[:2]):
        track += _variable_length(min(tick, end) - now) + message
        now = min(tick, end)
    track += _variable_length(end - now) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += _TICKS_PER_QUARTER.to_bytes(2, "big")
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def _note(channel: int, key: int, velocity: float, start: float, stop: float) -> list[tuple[int, int, bytes]]:
    """Note-on and note-off events; at equal ticks offs (order 1) sort before ons (order 2)."""
    strength = max(1, min(127, round(127 * velocity)))
    return [
        (_ticks(start), 2, bytes([0x90 | channel, key, strength])),
        (_ticks(stop), 1, bytes([0x80 | channel, key, 0])),
    ]


def _ticks(seconds: float) -> int:
    return round(seconds * _TICKS_PER_SECOND)


def _variable_length(value: int) -> bytes:
    """A MIDI variable-length quantity: 7 bits per byte, most significant first."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))
