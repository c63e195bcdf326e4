"""Pitch units shared by the synthesizer and the Harmonic CNN's filterbank: MIDI numbers (A4 = 69) and Hz."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Pitch = TypeVar("Pitch", float, np.ndarray)


def midi_to_hz(pitch: Pitch) -> Pitch:
    """Frequency in Hz of a (fractional) MIDI pitch or an array of them (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((pitch - 69) / 12)
