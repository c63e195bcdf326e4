"""``mde embed -o URI``: outputs on a pyarrow filesystem, through pyarrow's real filesystem layer.

The filesystem here is pyarrow's LocalFileSystem reached by ``file://`` URIs (no object store is reachable
from these machines); every byte goes through ``FileSystem.from_uri``, output streams, ``move`` and
listings, as it would for ``s3://`` or ``gs://``.
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_tone
from test_cli import assert_one_line_error, run_mde

from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.batch import EmbedSettings, embed_files
from mde.runtime.remote import RemotePath, is_uri, output_path, remove_partial_outputs, written_atomically


def _audio(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_tone(folder / f"clip{i}.wav", seconds=1.0 + 0.5 * i, freq=300.0 + 100 * i) for i in range(n)]


def test_uris_and_paths_are_told_apart():
    assert is_uri("s3://bucket/emb") and is_uri("file:///tmp/x") and is_uri("gs://b/k")
    assert not is_uri("/tmp/emb") and not is_uri("emb") and not is_uri("C:/music") and not is_uri("a:/b")
    folder = output_path("s3://bucket/emb/")
    assert isinstance(folder, RemotePath) and folder / "a.npz" == RemotePath("s3://bucket/emb/a.npz")
    assert (folder / "a.npz").name == "a.npz" and (folder / "a.npz").parent == RemotePath("s3://bucket/emb")
    assert pickle.loads(pickle.dumps(folder / "a.npz")) == folder / "a.npz"  # it travels to Ray actors
    assert str(output_path("emb")) == "emb" and not isinstance(output_path("emb"), RemotePath)


def test_embed_to_a_uri_writes_the_local_outputs_and_resumes(tiny_model, tmp_path):
    sources = _audio(tmp_path / "in")
    model = store.resolve(tiny_model)
    local = embed_files(model, sources, tmp_path / "local")
    remote_dir = tmp_path / "bucket" / "emb"
    remote = embed_files(model, sources, output_path(remote_dir.as_uri()))
    assert [o.status for o in local.outcomes] == [o.status for o in remote.outcomes] == ["done"] * 3
    assert remote.outcomes[0].target == RemotePath(f"{remote_dir.as_uri()}/clip0.npz")
    assert sorted(p.name for p in remote_dir.iterdir()) == ["clip0.npz", "clip1.npz", "clip2.npz"]  # no parts
    for source in sources:
        left, right = np.load(tmp_path / "local" / f"{source.stem}.npz"), np.load(remote_dir / f"{source.stem}.npz")
        assert left.files == right.files
        for key in left.files:
            assert np.array_equal(left[key], right[key]), key
    again = embed_files(model, sources, output_path(remote_dir.as_uri()))
    assert [o.status for o in again.outcomes] == ["skipped"] * 3  # read back through the filesystem


def test_a_damaged_remote_output_and_a_killed_upload_are_redone(tiny_model, tmp_path):
    sources = _audio(tmp_path / "in", n=2)
    model = store.resolve(tiny_model)
    remote_dir = tmp_path / "emb"
    folder = output_path(remote_dir.as_uri())
    settings = EmbedSettings(fmt="parquet")
    embed_files(model, sources, folder, settings)
    (remote_dir / "clip0.parquet").write_bytes(b"PAR1 cut short")
    (remote_dir / ".clip1.parquet.0a1b2c3d.part").write_bytes(b"half an upload")
    (remote_dir / ".other.parquet.0a1b2c3d.part").write_bytes(b"not ours")
    report = embed_files(model, sources, folder, settings)
    assert [o.status for o in report.outcomes] == ["done", "skipped"]
    assert "is unreadable" in report.outcomes[0].message
    assert pq.read_table(remote_dir / "clip0.parquet").num_rows > 0
    assert sorted(p.name for p in remote_dir.iterdir()) == [".other.parquet.0a1b2c3d.part", "clip0.parquet",
                                                            "clip1.parquet"]


def test_a_failed_write_leaves_no_part_on_the_filesystem(tmp_path):
    target = output_path((tmp_path / "emb").as_uri()) / "x.npz"
    (tmp_path / "emb").mkdir()
    with pytest.raises(RuntimeError), written_atomically(target) as local:
        local.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert list((tmp_path / "emb").iterdir()) == []
    with written_atomically(target) as local:
        local.write_bytes(b"whole")
    assert (tmp_path / "emb" / "x.npz").read_bytes() == b"whole"
    remove_partial_outputs([target])
    assert [p.name for p in (tmp_path / "emb").iterdir()] == ["x.npz"]


def test_an_unusable_uri_stops_before_any_work(tiny_model, tmp_path):
    sources = _audio(tmp_path / "in", n=1)
    with pytest.raises(MdeError, match="cannot open nosuch://bucket"):
        embed_files(store.resolve(tiny_model), sources, output_path("nosuch://bucket/emb"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(MdeError, match="cannot write outputs to file://"):
        embed_files(store.resolve(tiny_model), sources, output_path(f"{(tmp_path / 'afile').as_uri()}/emb"))


def test_cli_embed_to_a_uri(tiny_model, mde_home, tmp_path):
    _audio(tmp_path / "in", n=2)
    uri = (tmp_path / "emb").as_uri()
    ran = run_mde("embed", tmp_path / "in", "-m", tiny_model, "-o", uri, "-f", "jsonl", home=mde_home, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "2 embedded, 0 skipped (up to date), 0 too short, 0 failed" in ran.stderr and uri in ran.stderr
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["clip0.jsonl", "clip1.jsonl"]
    bad = run_mde("embed", tmp_path / "in", "-m", tiny_model, "-o", "nosuch://bucket/emb", home=mde_home,
                  cwd=tmp_path)
    assert_one_line_error(bad, "cannot open nosuch://bucket")
