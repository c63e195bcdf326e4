import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import write_tone

from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.batch import EmbedSettings, embed_files, output_settings, plan_outputs
from mde.runtime.extractor import load_model
from mde.runtime.writers import write_result


@pytest.mark.parametrize("fmt", ["npz", "parquet", "jsonl"])
def test_each_format_holds_the_result(tiny_model, tmp_path, fmt):
    path = write_tone(tmp_path / "tone.wav", seconds=1.2)
    result = load_model(tiny_model).embed(path)
    made_with = output_settings(store.resolve(tiny_model), EmbedSettings())
    target = write_result(result, tmp_path / f"out.{fmt}", fmt, made_with)
    if fmt == "npz":
        data = np.load(target)
        np.testing.assert_array_equal(data["embedding"], result.embedding)
        np.testing.assert_array_equal(data["tags"], result.tags)
        np.testing.assert_array_equal(data["timestamp"], result.timestamps)
        assert list(data["tag_names"]) == list(result.tag_names) and str(data["model"]) == "tiny"
    elif fmt == "parquet":
        table = pq.read_table(target)
        assert table.num_rows == 2
        np.testing.assert_array_equal(np.array(table["embedding"].to_pylist(), np.float32), result.embedding)
        assert json.loads(table.schema.metadata[b"mde.tag_names"]) == list(result.tag_names)
    else:
        header, *rows = [json.loads(line) for line in target.read_text().splitlines()]
        assert header["mde"]["tag_names"] == list(result.tag_names)
        assert [r["timestamp"] for r in rows] == [0.0, 0.5]
        assert rows[1]["tags"]["tag2"] == pytest.approx(float(result.tags[1, 2]))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failing_writer_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    path = write_tone(tmp_path / "tone.wav", seconds=0.6)
    result = load_model(tiny_model).embed(path)
    from mde.runtime import writers

    def explode(result, settings, path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setitem(writers._WRITERS, "npz", explode)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        write_result(result, out / "x.npz", "npz", output_settings(store.resolve(tiny_model), EmbedSettings()))
    assert list(out.iterdir()) == []


def test_batch_skips_existing_reports_failures_and_resumes(tiny_model, tmp_path):
    (tmp_path / "in").mkdir()
    good = [write_tone(tmp_path / "in" / f"{n}.wav", seconds=1.0) for n in ("a", "b")]
    bad = tmp_path / "in" / "c.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "out"
    model_path = store.resolve(tiny_model)
    report = embed_files(model_path, [*good, bad], out)
    assert [o.status for o in report.outcomes] == ["done", "done", "failed"]
    assert "c.wav" in report.failed[0].message
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz"]
    first = (out / "a.npz").stat().st_mtime_ns
    again = embed_files(model_path, good, out)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]
    assert (out / "a.npz").stat().st_mtime_ns == first
    forced = embed_files(model_path, good, out, EmbedSettings(overwrite=True))
    assert [o.status for o in forced.outcomes] == ["done", "done"]


def test_worker_processes_give_the_same_outputs(tiny_model, tmp_path):
    (tmp_path / "in").mkdir()
    sources = [write_tone(tmp_path / "in" / f"{i}.wav", seconds=1.0, freq=200 + 100 * i) for i in range(3)]
    model_path = store.resolve(tiny_model)
    embed_files(model_path, sources, tmp_path / "one")
    report = embed_files(model_path, sources, tmp_path / "two", workers=2)
    assert report.count("done") == 3
    for source in sources:
        a = np.load(tmp_path / "one" / f"{source.stem}.npz")
        b = np.load(tmp_path / "two" / f"{source.stem}.npz")
        np.testing.assert_array_equal(a["embedding"], b["embedding"])


def test_outputs_that_would_collide_are_refused(tmp_path):
    from pathlib import Path

    with pytest.raises(MdeError, match="would both write"):
        plan_outputs([Path("a/x.mp3"), Path("b/x.wav")], tmp_path, "npz")
    with pytest.raises(MdeError, match="unknown format"):
        EmbedSettings(fmt="csv")
    with pytest.raises(MdeError, match="hop must be positive"):
        EmbedSettings(hop=-1.0)
