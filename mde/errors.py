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
    """An optional dependency is not installed; the message ends with a pip command that installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the '{package}' package (mde's '{extra}' extra): {install_command(extra)}")


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to this mde from where it was installed.

    'mde' on the package index is another project, so the source is read from the installed
    distribution's PEP 610 ``direct_url.json``: a local folder (editable or not) gives
    ``pip install '<folder>[extra]'``, an archive or VCS URL ``pip install 'mde[extra] @ <url>'``;
    without one (e.g. run from a source tree), ``from the mde checkout: pip install '.[extra]'``.
    """
    import json
    import shlex
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    for dist in metadata.distributions(name="mde"):
        try:
            origin = json.loads(dist.read_text("direct_url.json") or "null")
        except (OSError, ValueError):
            continue
        if not isinstance(origin, dict) or not isinstance(origin.get("url"), str):
            continue
        url = origin["url"]
        if "dir_info" in origin and url.startswith("file://"):
            return f"pip install {shlex.quote(unquote(urlparse(url).path) + f'[{extra}]')}"
        vcs = origin.get("vcs_info")
        if isinstance(vcs, dict):
            url = f"{vcs.get('vcs', 'git')}+{url}" + (f"@{vcs['commit_id']}" if vcs.get("commit_id") else "")
        return f"pip install {shlex.quote(f'mde[{extra}] @ {url}')}"
    return f"from the mde checkout: pip install '.[{extra}]'"
