"""The one description of a log-mel front end.

Every consumer reads this dataclass: the C kernel (``mde.runtime.frontend``), the torch twin used for
training, the exporters, and the model-file metadata. Units are stated per field.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Optional

from mde.errors import FrontendError

MelScale = Literal["htk", "slaney"]
LogMode = Literal["db", "log10p", "ln"]
DbReference = Literal["one", "max"]

SUPPORTED_N_FFT = (256, 512, 1024, 2048, 4096)
FLOAT32_MIN_NORMAL = 1.1754943508222875e-38  # C's FLT_MIN: below it float32 loses precision
FLOAT32_MAX = 3.4028234663852886e38  # C's FLT_MAX
C_INT_MAX = 2**31 - 1  # the kernel's sample_rate, hop_length and n_mels are C ints


@dataclass(frozen=True)
class FrontendConfig:
    """Settings of a mel-spectrogram front end.

    sample_rate: input rate in Hz.
    n_fft: FFT size in samples (power of two, 256..4096); also the Hann window length.
    hop_length: frame step in samples.
    n_mels: number of mel bands.
    f_min, f_max: band edges in Hz (``f_max=None`` means sample_rate / 2).
    mel_scale: 'htk' (2595 log10(1 + f/700)) or 'slaney' (linear below 1 kHz, log above).
    norm: None (peak 1 triangles) or 'slaney' (each triangle scaled to unit area, 2 / bandwidth).
    center: pad n_fft // 2 samples on both sides so frame t is centred on sample t * hop_length.
    pad_mode: 'reflect' or 'constant' (zeros) padding when ``center``.
    power: 2.0 for the power spectrum |X|^2, 1.0 for the magnitude |X|.
    log: 'db' for 10 log10(max(x, amin)) in dB, 'log10p' for log10(1 + log_scale * x), 'ln' for the natural
      log ln(max(x, amin)) (the multi-scale CNN's, whose clip value is amin = 1e-20), None for none.
    amin: floor in spectrum units applied before the dB or ln log; a normal float32 (1.2e-38 to 3.4e38), as
      the kernel computes in float32.
    top_db: if set, dB values are clipped to (peak) - top_db, the peak (dB) over all frames and bands of one
      input signal (of all channels of one window, for multichannel input).
    db_ref: 'one' for dB relative to one spectrum unit (10 log10(x)); 'max' for dB relative to the same peak
      (librosa's ``power_to_db(ref=np.max)``, the third seed's): the peak is subtracted after the top_db
      clip, so each signal's values end at 0 dB. 'max' needs log='db'.
    log_scale: the C of 'log10p' (dimensionless); a normal float32 (1.2e-38 to 3.4e38).
    fp16_round: round the mel energies to float16 before the log (musicnn's recipe).
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 128
    f_min: float = 0.0
    f_max: Optional[float] = None
    mel_scale: MelScale = "htk"
    norm: Optional[Literal["slaney"]] = None
    center: bool = True
    pad_mode: Literal["reflect", "constant"] = "reflect"
    power: float = 2.0
    log: Optional[LogMode] = "db"
    amin: float = 1e-10
    top_db: Optional[float] = None
    db_ref: DbReference = "one"
    log_scale: float = 10000.0
    fp16_round: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n_fft, numbers.Integral) or self.n_fft not in SUPPORTED_N_FFT:
            raise FrontendError(
                f"n_fft={self.n_fft} is not supported: use a power of two from 256 to 4096"
            )
        _check_count("hop_length", self.hop_length, "samples")
        _check_count("n_mels", self.n_mels, "bands")
        _check_count("sample_rate", self.sample_rate, "Hz")
        for name in ("f_min", "f_max", "power", "top_db"):
            value = getattr(self, name)
            if not ((value is None and name in ("f_max", "top_db")) or _is_real(value)):
                raise FrontendError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= self.f_min < self.fmax_hz <= self.sample_rate / 2:
            raise FrontendError(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.fmax_hz}"
            )
        if self.mel_scale not in ("htk", "slaney"):
            raise FrontendError(f"mel_scale must be 'htk' or 'slaney', got {self.mel_scale!r}")
        if self.norm not in (None, "slaney"):
            raise FrontendError(f"norm must be None or 'slaney', got {self.norm!r}")
        if self.pad_mode not in ("reflect", "constant"):
            raise FrontendError(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.power not in (1.0, 2.0):
            raise FrontendError(f"power must be 1.0 or 2.0, got {self.power}")
        if self.log not in (None, "db", "log10p", "ln"):
            raise FrontendError(f"log must be 'db', 'log10p', 'ln' or None, got {self.log!r}")
        if self.db_ref not in ("one", "max"):
            raise FrontendError(f"db_ref must be 'one' or 'max', got {self.db_ref!r}")
        if self.db_ref == "max" and self.log != "db":
            raise FrontendError(f"db_ref='max' needs log='db', got log={self.log!r}")
        _check_float32("amin", self.amin)
        _check_float32("log_scale", self.log_scale)

    @property
    def fmax_hz(self) -> float:
        """Upper band edge in Hz, with None resolved to the Nyquist frequency."""
        return float(self.sample_rate) / 2 if self.f_max is None else float(self.f_max)

    @property
    def n_freqs(self) -> int:
        """Number of one-sided FFT bins, n_fft // 2 + 1."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a signal of ``n_samples`` samples."""
        if self.center:
            return n_samples // self.hop_length + 1
        if n_samples < self.n_fft:
            return 0
        return (n_samples - self.n_fft) // self.hop_length + 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (stored in model metadata)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontendConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error so that typos do not pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise FrontendError(f"unknown front-end settings: {sorted(unknown)}")
        return cls(**data)

    def with_(self, **changes: Any) -> FrontendConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _is_real(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy; not a bool, not a string)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_count(name: str, value: Any, unit: str) -> None:
    """FrontendError unless ``value`` is a whole number from 1 to C_INT_MAX (what the kernel's int holds)."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and 1 <= int(value) <= C_INT_MAX):
        raise FrontendError(f"{name} must be a whole number of {unit} from 1 to {C_INT_MAX}, got {value!r}")


def _check_float32(name: str, value: Any) -> None:
    """FrontendError unless ``value`` is a real number in float32's normal range (what the kernel keeps)."""
    if not (_is_real(value) and FLOAT32_MIN_NORMAL <= value <= FLOAT32_MAX):
        raise FrontendError(
            f"{name} must be a positive number from {FLOAT32_MIN_NORMAL:.3g} to {FLOAT32_MAX:.3g} "
            f"(float32's normal range), got {value!r}"
        )


SEED_FCN = FrontendConfig(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=128, f_min=0.0, f_max=8000.0,
    mel_scale="htk", norm=None, center=True, pad_mode="reflect", power=2.0, log="db", amin=1e-10,
)
"""The first seed's torchaudio front end: 128 HTK mels, power, 10 log10(max(x, 1e-10))."""

MUSICNN = FrontendConfig(
    sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, f_min=0.0, f_max=8000.0,
    mel_scale="slaney", norm="slaney", center=True, pad_mode="reflect", power=2.0,
    log="log10p", log_scale=10000.0, fp16_round=True,
)
"""musicnn's training-era front end: 96 Slaney mels, float16 rounding, log10(1 + 10000 x)."""

MULTISCALE = FrontendConfig(
    sample_rate=11025, n_fft=2048, hop_length=512, n_mels=128, f_min=0.0, f_max=None,
    mel_scale="slaney", norm="slaney", center=True, pad_mode="reflect", power=2.0, log="ln", amin=1e-20,
)
"""The multi-scale CNN's front end: librosa's melspectrogram defaults of its era at 11,025 Hz (centred
frames, reflection padding, 128 Slaney mels up to 5,512.5 Hz), then ln(max(power, 1e-20))."""

SCHINDLER = FrontendConfig(
    sample_rate=22050, n_fft=1024, hop_length=256, n_mels=128, f_min=0.0, f_max=None,
    mel_scale="slaney", norm="slaney", center=True, pad_mode="reflect", power=2.0, log="db", amin=1e-10,
    top_db=80.0, db_ref="max",
)
"""The third seed's front end (Schindler et al.): librosa's melspectrogram of its era at 22,050 Hz (n_fft 1024,
hop 256, 128 Slaney mels up to 11,025 Hz, centred frames with reflection padding), then
``power_to_db(ref=np.max)`` with librosa's defaults (amin 1e-10, top_db 80): dB relative to the window's
peak over both channels, from -80 to 0 dB."""
