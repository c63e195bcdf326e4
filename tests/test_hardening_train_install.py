"""Install hints give a pip command that works from where mde was installed ('mde' on PyPI is another project)."""

from __future__ import annotations

import json
from importlib import metadata

import pytest

from mde.errors import MissingExtraError, install_command


class _Dist:
    def __init__(self, direct_url: dict | None) -> None:
        self._text = None if direct_url is None else json.dumps(direct_url)

    def read_text(self, name: str) -> str | None:
        return self._text if name == "direct_url.json" else None


@pytest.mark.parametrize("direct_url, command", [
    ({"url": "file:///home/me/mde", "dir_info": {"editable": True}}, "pip install '/home/me/mde[train]'"),
    ({"url": "file:///home/me/my%20code/mde", "dir_info": {}}, "pip install '/home/me/my code/mde[train]'"),
    ({"url": "https://github.com/me/mde", "vcs_info": {"vcs": "git", "commit_id": "abc123"}},
     "pip install 'mde[train] @ git+https://github.com/me/mde@abc123'"),
    ({"url": "file:///tmp/mde-0.1.0.tar.gz", "archive_info": {}}, "pip install 'mde[train] @ file:///tmp/mde-0.1.0.tar.gz'"),
    (None, "from the mde checkout: pip install '.[train]'"),
])
def test_the_hint_names_the_source_mde_was_installed_from(direct_url, command, monkeypatch):
    monkeypatch.setattr(metadata, "distributions", lambda name=None: [_Dist(direct_url)])
    assert install_command("train") == command
    assert str(MissingExtraError("scikit-learn", "train", "Training")) == (
        f"Training needs the 'scikit-learn' package (mde's 'train' extra): {command}")


def test_this_installation_gets_its_own_folder_never_the_index_name():
    command = install_command("train")
    assert "'mde[train]'" not in command
    origin = next((json.loads(d.read_text("direct_url.json")) for d in metadata.distributions(name="mde")
                   if d.read_text("direct_url.json")), None)
    if origin is not None and origin["url"].startswith("file://"):
        assert command == f"pip install '{origin['url'][len('file://'):]}[train]'"
