"""Errors a user can cause. Each is turned into one line on stderr by the CLI (no traceback)."""

from __future__ import annotations


class MdeError(Exception):
    """Base of every error that comes from bad input or a missing piece rather than a bug."""


class AudioError(MdeError):
    """The audio could not be read or is unusable."""


class AudioFileNotFound(AudioError):
    """The path does not exist."""


class EmptyAudioFile(AudioError):
    """The file has zero bytes or decodes to zero samples."""


class NotAudioError(AudioError):
    """The file is not in a format the decoder recognises."""


class CorruptAudioError(AudioError):
    """The file is recognised but truncated or damaged."""


class InvalidSamplesError(AudioError):
    """The samples contain NaN or infinity."""


class UnsupportedRateError(AudioError):
    """The sample rate is below what the runtime accepts."""


class FrontendError(MdeError):
    """A front-end configuration or input the C kernel cannot handle."""


class ModelError(MdeError):
    """A model file is missing, unknown or malformed."""


class ModelNotFound(ModelError):
    """No model of that name in the store, and no file at that path."""


class CheckpointError(MdeError):
    """A checkpoint could not be read or is not one we recognise."""


class ParityError(MdeError):
    """An exported model does not reproduce its source within tolerance."""


class MissingExtraError(MdeError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package: pip install 'mde[{extra}]'")
