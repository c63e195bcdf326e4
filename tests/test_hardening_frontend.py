"""Front-end settings the float32 C kernel cannot honour are refused with one line, by FrontendConfig and,
for callers that bypass it, by the kernel itself; sizes that overflow size_t are an error code, not a crash."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mde.errors import FrontendError
from mde.runtime import _melspec
from mde.runtime.frontend import MelSpectrogram
from mde.runtime.frontend_config import FLOAT32_MAX, FLOAT32_MIN_NORMAL, SEED_FCN, FrontendConfig

# amin 1e-45 and 1e-39 round to subnormal float32 (1.4e-45 is 40 % off), 1e-46 to 0 (a -inf dB floor),
# 1e39 to +inf; a log_scale of 0 or below makes log10(1 + C x) meaningless.
BAD_SETTINGS = [
    ("amin", 0.0), ("amin", -1e-10), ("amin", 1e-45), ("amin", 1e-46), ("amin", FLOAT32_MIN_NORMAL / 2),
    ("amin", 1e39), ("amin", math.inf), ("amin", math.nan), ("amin", "1e-10"),
    ("log_scale", 0.0), ("log_scale", -10000.0), ("log_scale", 1e39), ("log_scale", math.inf),
    ("log_scale", math.nan), ("log_scale", 1e-40),
]


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_a_setting_float32_cannot_hold_is_one_line_naming_it(name: str, value: object) -> None:
    with pytest.raises(FrontendError) as caught:
        SEED_FCN.with_(**{name: value})
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{name} must be a positive number")
    assert repr(value) in message


@pytest.mark.parametrize(("changes", "message"), [
    ({"hop_length": "256"}, "hop_length must be a whole number of samples from 1 to 2147483647, got '256'"),
    ({"n_mels": 2**40}, "n_mels must be a whole number of bands from 1 to 2147483647, got 1099511627776"),
    ({"sample_rate": 16000.5}, "sample_rate must be a whole number of Hz from 1 to 2147483647, got 16000.5"),
    ({"hop_length": True}, "hop_length must be a whole number of samples from 1 to 2147483647, got True"),
    ({"f_min": "0"}, "f_min must be a number, got '0'"),
    ({"power": None}, "power must be a number, got None"),
    ({"n_fft": 512.0}, "n_fft=512.0 is not supported: use a power of two from 256 to 4096"),
])
def test_a_setting_of_the_wrong_type_or_beyond_a_c_int_is_one_line(changes: dict, message: str) -> None:
    with pytest.raises(FrontendError) as caught:
        FrontendConfig.from_dict({**SEED_FCN.to_dict(), **changes})
    assert str(caught.value) == message


@pytest.mark.parametrize(("name", "value"), [("amin", FLOAT32_MIN_NORMAL), ("amin", FLOAT32_MAX),
                                             ("log_scale", FLOAT32_MIN_NORMAL), ("amin", np.float32(1e-10))])
def test_the_ends_of_float32s_normal_range_are_accepted(name: str, value: float) -> None:
    config = SEED_FCN.with_(**{name: value}, log="log10p" if name == "log_scale" else "db")
    out = MelSpectrogram.from_config(config)(np.zeros(2000, np.float32))
    assert np.isfinite(out).all()


def _unchecked(config: FrontendConfig, **changes: float) -> FrontendConfig:
    """``config`` with fields set past FrontendConfig's checks, as a C caller could pass them."""
    for name, value in changes.items():
        object.__setattr__(config, name, value)
    return config


@pytest.mark.parametrize(("name", "value"), [("amin", 0.0), ("amin", 1e-45), ("amin", 1e39), ("amin", math.nan),
                                             ("log_scale", 0.0), ("log_scale", -1.0), ("log_scale", 1e39)])
def test_the_kernel_refuses_the_same_settings_itself(name: str, value: float) -> None:
    config = _unchecked(SEED_FCN.with_(), **{name: value})
    with pytest.raises(FrontendError, match=r"^cannot build the front end: invalid front-end settings$"):
        _melspec.MelPlan(config)


def test_a_batch_whose_size_overflows_size_t_is_an_error_code() -> None:
    plan = _melspec.MelPlan(SEED_FCN)
    frames = SEED_FCN.n_frames(16000)
    assert plan.output_size(3, 16000) == 3 * SEED_FCN.n_mels * frames
    assert plan.output_size(0, 16000) == 0
    for batch, n_samples in [(2**40, 2**40), (2**63, 16000), (2**57, 2**8)]:
        with pytest.raises(FrontendError, match=r"^input or output too large: its size overflows size_t \("):
            plan.output_size(batch, n_samples)
