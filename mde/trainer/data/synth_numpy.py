"""The pure-numpy engine of the synthesized corpus: additive, plucked-string and noise synthesis.

Voices (each a function of one note, the sample rate in Hz and the clip's random generator):

* piano: slightly inharmonic partials, each decaying faster the higher it is, plus a hammer click;
* strings: three detuned band-limited sawtooths with vibrato, rolled off above 2 kHz, slow attack;
* bass: a sine with weak 2nd and 3rd harmonics, decaying to a sustain;
* guitar: Karplus-Strong plucked string (a noise burst recirculated through an averaging loop);
* flute: a near-sine with vibrato and breath noise around the fundamental;
* synth: a band-limited square wave, short and bright;
* drums: a pitch-dropping sine kick, a noise-and-tone snare, a high-passed noise hi-hat.

Deterministic for a given generator state. Output level is set by the caller.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mde.trainer.data.synth_score import DrumHit, Note, Score
from mde.trainer.pitch import midi_to_hz

_NYQUIST_MARGIN = 0.45
"""Partials are kept below this fraction of the sample rate (no aliasing)."""
_TABLE_SIZE = 4096
"""Samples in one tabulated period of a wavetable voice."""


def render(score: Score, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``score`` to float64 samples (round(seconds * sample_rate),).

    Each part (and the drums together) is scaled to an RMS of ``score.gains_db`` before mixing; the
    mix's overall level is left to the caller.
    """
    n = round(score.seconds * sample_rate)
    mix = np.zeros(n)
    for name, notes in score.parts.items():
        part = np.zeros(n)
        for note in notes:
            _add(part, round(note.start * sample_rate), _VOICES[name](note, sample_rate, rng))
        mix += _at_gain(part, score.gains_db[name])
    if score.drums:
        kit = np.zeros(n)
        for hit in score.drums:
            _add(kit, round(hit.start * sample_rate), _DRUMS[hit.kind](hit, sample_rate, rng))
        mix += _at_gain(kit, score.gains_db["drums"])
    return mix


def _add(out: np.ndarray, start: int, sound: np.ndarray) -> None:
    """Add ``sound`` into ``out`` from sample ``start``, cut at the end of ``out``."""
    end = min(len(out), start + len(sound))
    out[start:end] += sound[: end - start]


def _at_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    """``x`` scaled to an RMS of ``gain_db`` dB (silence stays silent)."""
    rms = np.sqrt(np.mean(x**2))
    return x * (10 ** (gain_db / 20) / rms) if rms > 0 else x


def _time(seconds: float, sample_rate: int) -> np.ndarray:
    """Sample times in seconds of a sound ``seconds`` long."""
    return np.arange(round(seconds * sample_rate)) / sample_rate


def _envelope(t: np.ndarray, attack: float, hold: float, release: float) -> np.ndarray:
    """Linear rise over ``attack`` s, level 1 until ``hold`` s, linear fall to 0 over ``release`` s."""
    rise = np.minimum(t / attack, 1.0)
    fall = np.clip(1.0 - (t - hold) / release, 0.0, 1.0)
    return rise * fall


def _harmonics(f0: float, sample_rate: int, most: int) -> np.ndarray:
    """Harmonic numbers 1..K (K <= ``most``) whose frequency stays below the Nyquist margin; (K, 1)."""
    count = max(1, min(most, int(_NYQUIST_MARGIN * sample_rate / f0)))
    return np.arange(1, count + 1, dtype=np.float64)[:, None]


def _piano(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    release = 0.08
    t = _time(note.duration + release, sample_rate)
    f0 = midi_to_hz(note.pitch)
    k = _harmonics(f0 * 1.1, sample_rate, 16)
    frequency = k * f0 * np.sqrt(1 + 4e-4 * k**2)
    partials = k**-1.5 * np.exp(-t * (1.5 + 1.5 * (k - 1))) * np.sin(
        2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi, k.shape)
    )
    hammer = 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.004)
    return note.velocity * (partials.sum(axis=0) + hammer) * _envelope(t, 0.002, note.duration, release)


def _strings(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    release = 0.3
    t = _time(note.duration + release, sample_rate)
    f0 = midi_to_hz(note.pitch)
    k = _harmonics(f0 * 1.01, sample_rate, 24)
    rolloff = 1 / k / (1 + (k * f0 / 2000) ** 2)
    vibrato = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
    cycles = f0 * np.cumsum(vibrato) / sample_rate
    tone = sum(
        _wavetable(rolloff, rng.uniform(0, 2 * np.pi, k.shape), cycles * detune) for detune in (0.994, 1.0, 1.006)
    )
    return note.velocity * tone * _envelope(t, 0.25, note.duration, release)


def _wavetable(amplitudes: np.ndarray, phases: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """A periodic wave of harmonics 1..K (amplitudes and phases (K, 1)) read at ``cycles`` periods.

    One period is tabulated and read with linear interpolation, so the cost does not grow with K.
    """
    u = np.arange(_TABLE_SIZE + 1) / _TABLE_SIZE
    k = np.arange(1, len(amplitudes) + 1)[:, None]
    table = (amplitudes * np.sin(2 * np.pi * k * u + phases)).sum(axis=0)
    return np.interp(cycles % 1.0 * _TABLE_SIZE, np.arange(_TABLE_SIZE + 1), table)


def _bass(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    release = 0.05
    t = _time(note.duration + release, sample_rate)
    f0 = midi_to_hz(note.pitch)
    tone = sum(a * np.sin(2 * np.pi * h * f0 * t) for h, a in ((1, 1.0), (2, 0.4), (3, 0.15)))
    decay = 0.6 + 0.4 * np.exp(-t / 0.3)
    return note.velocity * tone * decay * _envelope(t, 0.005, note.duration, release)


def _guitar(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong, one loop period per step: each period is the previous one averaged with itself
    shifted by a sample and damped, so the pluck's noise decays into a harmonic tone, highs first."""
    release = 0.05
    length = round((note.duration + release) * sample_rate)
    period = max(2, round(sample_rate / midi_to_hz(note.pitch)))
    t60 = 1.2  # seconds for the loop to lose 60 dB
    damping = 10 ** (-3 * period / (sample_rate * t60))
    periods = np.empty((-(-length // period), period))
    burst = rng.uniform(-1, 1, period)
    periods[0] = burst - burst.mean()
    for i in range(1, len(periods)):
        previous = periods[i - 1]
        periods[i] = damping * 0.5 * (previous + np.roll(previous, 1))
    t = _time(note.duration + release, sample_rate)
    return note.velocity * periods.ravel()[:length] * _envelope(t, 0.001, note.duration, release)


def _flute(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    release = 0.08
    t = _time(note.duration + release, sample_rate)
    f0 = midi_to_hz(note.pitch)
    vibrato = 1 + 0.005 * np.sin(2 * np.pi * 5.0 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * f0 * np.cumsum(vibrato) / sample_rate
    tone = np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
    smooth = max(1, sample_rate // 400)  # moving average: noise below ~200 Hz, shifted up to f0
    breath = np.convolve(rng.standard_normal(len(t)), np.ones(smooth) / smooth, mode="same")
    noise = 2.0 * breath * np.sin(phase) + 0.02 * rng.standard_normal(len(t))
    return note.velocity * (tone + noise) * _envelope(t, 0.06, note.duration, release)


def _synth(note: Note, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    release = 0.02
    t = _time(note.duration + release, sample_rate)
    f0 = midi_to_hz(note.pitch)
    k = 2 * _harmonics(2 * f0, sample_rate, 20) - 1  # odd harmonics 1, 3, 5, ...
    square = (np.sin(2 * np.pi * k * f0 * t) / k).sum(axis=0)
    return note.velocity * square * _envelope(t, 0.003, note.duration, release)


def _kick(hit: DrumHit, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.35, sample_rate)
    frequency = 45 + 110 * np.exp(-t / 0.03)
    body = np.sin(2 * np.pi * np.cumsum(frequency) / sample_rate) * np.exp(-t / 0.15)
    click = 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.002)
    return hit.velocity * (body + click)


def _snare(hit: DrumHit, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.25, sample_rate)
    rattle = np.diff(rng.standard_normal(len(t) + 1)) * np.exp(-t / 0.08)
    tone = 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.04)
    return hit.velocity * (rattle + tone)


def _hihat(hit: DrumHit, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    t = _time(0.08, sample_rate)
    hiss = np.diff(rng.standard_normal(len(t) + 2), n=2) / 2
    return hit.velocity * hiss * np.exp(-t / 0.02)


_VOICES: dict[str, Callable[[Note, int, np.random.Generator], np.ndarray]] = {
    "piano": _piano, "strings": _strings, "bass": _bass, "guitar": _guitar, "flute": _flute, "synth": _synth,
}
_DRUMS: dict[str, Callable[[DrumHit, int, np.random.Generator], np.ndarray]] = {
    "kick": _kick, "snare": _snare, "hihat": _hihat,
}
