"""``mde index`` / ``mde search`` (mde.search): what an index stores, how updates add, re-embed and remove files,
that a killed update leaves the previous index usable and a rerun completes it, queries by example (clips and
aligned frames), by tags (probabilities and a tag encoder) and by text, the IVF path, and the CLI's output.

Tiny models only (the conftest's real ONNX graph and a richer one built here); real audio in one test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import build_tiny_model, write_tone
from test_cli import assert_one_line_error, run_mde

from mde.errors import MdeError
from mde.runtime import store
from mde.runtime.batch import file_sha256
from mde.runtime.extractor import load_model
from mde.search import Index, faiss_kinds, storage
from mde.search.build import RESUMED, build_index
from mde.search.manifest import read_manifest
from mde.search.vectors import unit_rows

RATE = 8000  # the tiny model's rate: 0.5 s windows, non-overlapping


def write_melody(path: Path, seconds: float, seed: int, rate: int = RATE) -> Path:
    """Tones of random pitch in segments of 0.2-0.6 s (not on the model's 0.5 s grid), a little noise."""
    rng = np.random.default_rng(seed)
    parts, total = [], int(seconds * rate)
    while sum(map(len, parts)) < total:
        t = np.arange(int(rng.uniform(0.2, 0.6) * rate)) / rate
        parts.append(0.5 * np.sin(2 * np.pi * rng.uniform(150, 3500) * t))
    samples = np.concatenate(parts)[:total] + rng.standard_normal(total) * 0.01
    sf.write(path, samples.astype(np.float32), rate, subtype="PCM_16")
    return path


def excerpt(source: Path, target: Path, start: float, seconds: float, rate: int = 16000) -> Path:
    """``seconds`` of ``source`` from ``start`` re-encoded at another rate (FLAC, or WAV by suffix)."""
    from mde.audio import load_audio

    samples, _ = load_audio(source, sr=rate)
    sf.write(target, samples[int(start * rate): int((start + seconds) * rate)], rate)
    return target


@pytest.fixture
def melodies(tmp_path) -> Path:
    folder = tmp_path / "songs"
    folder.mkdir()
    for i in range(5):
        write_melody(folder / f"song{i}.wav", 6.0, seed=i)
    return folder


def test_an_index_stores_unit_clip_and_frame_vectors_tags_and_a_manifest(tiny_model, melodies, tmp_path):
    report = Index.build([melodies], tmp_path / "idx", model=tiny_model)
    assert report.count("added") == 5 and not report.failed
    manifest = read_manifest(tmp_path / "idx")
    assert manifest is not None and manifest == report.manifest
    space = manifest.space
    assert (space.model, space.layer, space.window, space.hop, space.dim) == ("tiny", "embedding", 0.5, 0.5, 16)
    assert space.model_sha256 == file_sha256(store.resolve("tiny"))
    assert (manifest.n_files, manifest.n_frames, manifest.clip_index.kind, manifest.frame_index.kind) == (5, 60, "flat",
                                                                                                          "flat")
    document = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert document["format_version"] == 1 and document["data"] == "data-000001" and document["faiss_version"]
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [".lock", "data-000001", "manifest.json"]
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "idx" / "data-000001" / storage.FILES).to_pydict()
    assert list(table) == ["path", "size", "mtime_ns", "duration", "n_frames"]
    model, index = load_model(tiny_model), Index.open(tmp_path / "idx")
    for row, path in enumerate(sorted(melodies.iterdir())):
        stat = path.stat()
        assert (table["path"][row], table["size"][row], table["mtime_ns"][row]) == (str(path.resolve()),
                                                                                      stat.st_size, stat.st_mtime_ns)
        assert table["duration"][row] == pytest.approx(6.0) and table["n_frames"][row] == 12
        result = model.embed(path)
        np.testing.assert_allclose(index.arrays.clips[row], unit_rows(result.embedding.mean(axis=0)), atol=1e-6)
        np.testing.assert_allclose(index.arrays.frames[row * 12:(row + 1) * 12], unit_rows(result.embedding), atol=1e-6)
        np.testing.assert_allclose(index.arrays.frame_times[row * 12:(row + 1) * 12], result.timestamps)
        np.testing.assert_allclose(index.arrays.tags[row], result.mean_tags(), atol=1e-6)
    assert np.allclose(np.linalg.norm(index.arrays.frames, axis=1), 1, atol=1e-5)


def test_updates_add_re_embed_and_remove_files_under_the_given_paths_only(tiny_model, melodies, tmp_path):
    out = tmp_path / "idx"
    Index.build([melodies], out, model=tiny_model)
    more = tmp_path / "more"
    more.mkdir()
    write_melody(more / "extra.wav", 4.0, seed=10)
    write_melody(more / "gone.wav", 4.0, seed=11)
    report = Index.build([more], out)  # appends; the model, layer and hop are the index's
    assert report.count("added") == 2 and report.count("unchanged") == 0 and report.manifest.n_files == 7
    (more / "gone.wav").unlink()
    changed = write_melody(melodies / "song1.wav", 6.0, seed=20)  # same length, so the same size: a new mtime
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    (melodies / "song3.wav").unlink()
    report = Index.build([melodies], out)
    statuses = {Path(o.path).name: o.status for o in report.outcomes}
    assert statuses == {"song0.wav": "unchanged", "song1.wav": "updated", "song2.wav": "unchanged",
                        "song3.wav": "removed", "song4.wav": "unchanged"}
    index = Index.open(out)
    names = [Path(p).name for p in index.paths]
    assert names == ["song0.wav", "song2.wav", "song4.wav", "extra.wav", "gone.wav", "song1.wav"]  # kept, then new
    assert index.manifest.generation == 3 and index.manifest.n_frames == 12 * 4 + 8 * 2
    assert index.search(str(changed), k=1)[0].path == str(changed.resolve())
    assert index.search(str(changed), k=1)[0].score == pytest.approx(1.0, abs=1e-5)  # the new content's vectors
    report = Index.build([more], out)  # gone.wav lies under this path: now it goes
    assert [(Path(o.path).name, o.status) for o in report.outcomes] == [("extra.wav", "unchanged"),
                                                                        ("gone.wav", "removed")]
    assert sorted(p.name for p in out.iterdir()) == [".lock", "data-000004", "manifest.json"]
    assert Index.build([more], out).manifest.generation == 4  # nothing changed: no new version


def test_an_index_never_mixes_models_layers_or_hops(tiny_model, melodies, tmp_path):
    out = tmp_path / "idx"
    Index.build([melodies / "song0.wav"], out, model=tiny_model)
    store.save(build_tiny_model(name="other"), "other")
    with pytest.raises(MdeError, match=r"holds vectors of model tiny \(sha256 \w{12}\); other .* is another model"):
        Index.build([melodies], out, model="other")
    with pytest.raises(MdeError, match="holds layer 'embedding' of tiny; layer 'tags' would mix layers"):
        Index.build([melodies], out, layer="tags")
    with pytest.raises(MdeError, match=r"frames every 0\.5 s; --hop 0\.25 would mix framings"):
        Index.build([melodies], out, hop=0.25)
    assert Index.open(out).manifest.generation == 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(MdeError, match=r"is not an mde index \(it holds 'todo\.txt'\)"):
        Index.build([melodies], tmp_path / "notes")
    (tmp_path / "silence").mkdir()
    with pytest.raises(MdeError, match="no audio files found in the given paths"):
        Index.build([tmp_path / "silence"], tmp_path / "new", model=tiny_model)
    assert not (tmp_path / "new").exists()  # refusals come before anything is written
    proc = run_mde("index", melodies, "-o", out, "-m", "other", cwd=tmp_path, home=os.environ["MDE_HOME"])
    assert_one_line_error(proc, "mde: error:", "is another model")


def test_a_killed_update_leaves_the_old_index_and_a_rerun_completes_it(tiny_model, melodies, tmp_path):
    out = tmp_path / "idx"
    Index.build([melodies], out, model=tiny_model)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(300):
        write_tone(many / f"tone{i:03d}.wav", 8.0, freq=100 + 7 * i)
    env = {**os.environ, "COLUMNS": "200"}
    # (cwd: outside the checkout, whose uncompiled mde/ would shadow the installed package under python -m)
    proc = subprocess.Popen([sys.executable, "-m", "mde", "index", str(many), "-o", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=tmp_path)
    staging, deadline = out / storage.STAGING, time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and len(list(staging.glob("*.npz"))) < 20:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    index = Index.open(out)  # the previous version, whole
    assert index.manifest.generation == 1 and len(index.paths) == 5
    assert index.search(str(melodies / "song2.wav"), k=1)[0].path == str((melodies / "song2.wav").resolve())
    staged = len(list(staging.glob("*.npz")))
    assert staged >= 20
    report = build_index([many], out)
    assert report.count("added") == 300 and not report.failed
    reused = [o for o in report.outcomes if o.message == RESUMED]
    assert len(reused) == staged  # a file being written at the kill was a temporary part: embedded again
    index = Index.open(out)
    assert len(index.paths) == 305 and index.manifest.generation == 2
    assert sorted(p.name for p in out.iterdir()) == [".lock", "data-000002", "manifest.json"]
    build_index([melodies, many], tmp_path / "fresh", model=tiny_model)
    fresh = Index.open(tmp_path / "fresh")
    rows = {path: row for row, path in enumerate(fresh.paths)}
    np.testing.assert_allclose(fresh.arrays.clips[[rows[p] for p in index.paths]], index.arrays.clips, atol=1e-6)
    assert fresh.manifest.n_frames == index.manifest.n_frames


def test_a_failure_while_committing_keeps_the_old_version_and_the_staged_files(tiny_model, melodies, tmp_path,
                                                                               monkeypatch):
    out = tmp_path / "idx"
    Index.build([melodies / "song0.wav"], out, model=tiny_model)

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    for target in ("mde.search.storage.os.rename", "mde.search.manifest.Manifest.write"):
        with monkeypatch.context() as patch:
            patch.setattr(target, crash)
            with pytest.raises(OSError, match="No space left"):
                Index.build([melodies], out)
        assert Index.open(out).manifest.generation == 1 and len(Index.open(out).paths) == 1
        assert len(list((out / storage.STAGING).glob("*.npz"))) == 4
    report = Index.build([melodies], out)
    assert report.count("added") == 4 and all(o.message for o in report.outcomes if o.status == "added")
    assert sorted(p.name for p in out.iterdir()) == [".lock", "data-000002", "manifest.json"]


def test_a_re_encoded_excerpt_finds_its_source_and_where_it_starts(tiny_model, melodies, tmp_path):
    Index.build([melodies], tmp_path / "idx", model=tiny_model)
    index = Index.open(tmp_path / "idx")
    source = melodies / "song3.wav"
    query = excerpt(source, tmp_path / "cut.flac", start=1.3, seconds=3.0)
    assert index.search(str(query), k=3)[0].path == str(source.resolve())
    best = index.search(str(query), k=3, frames=True)[0]
    assert best.path == str(source.resolve()) and abs(best.t - 1.3) <= 0.5 and 0.5 < best.score <= 1.0 + 1e-6
    vector = index.arrays.frames[3 * 12 + 7]  # one stored frame: found at its own time
    assert (index.search(vector, k=1, frames=True)[0].path, index.search(vector, k=1, frames=True)[0].t) == (
        str(source.resolve()), 3.5)
    with pytest.raises(MdeError, match=r"query vectors must be \(16,\) or \(n, 16\), got shape \(3,\)"):
        index.search(np.ones(3, np.float32))
    with pytest.raises(MdeError, match="k must be at least 1"):
        index.search(vector, k=0)


def test_real_audio_through_the_cli(shared_data, tiny_model, melodies, tmp_path):
    song = shared_data / "audio" / "TRWJAZW128F42760DD_test.mp3"
    other = shared_data / "audio" / "joram-moments_of_clarity-08-solipsism-59-88.mp3"
    home = os.environ["MDE_HOME"]
    proc = run_mde("index", song, other, melodies, "-o", tmp_path / "idx", "-m", tiny_model, "--workers", "2",
                   cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    assert "7 added, 0 updated, 0 removed, 0 unchanged, 0 failed" in proc.stderr
    query = excerpt(song, tmp_path / "cut.wav", start=7.3, seconds=10.0, rate=22050)
    proc = run_mde("search", tmp_path / "idx", query, "--frames", "--json", "-k", "3", cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 3 and all(set(r) == {"path", "score", "t"} for r in results)
    assert results[0]["path"] == str(song.resolve()) and abs(results[0]["t"] - 7.3) <= 0.5
    assert results[0]["score"] > results[1]["score"]
    proc = run_mde("search", tmp_path / "idx", query, cwd=tmp_path, home=home)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "rank" in lines[0] and "score" in lines[0] and "t (s)" not in lines[0]
    rows = [[cell.strip() for cell in line.split("│")] for line in lines[2:]]
    assert len(rows) == 7 and rows[0][0] == "1" and rows[0][2] == str(song.resolve()) and float(rows[0][1]) > 0.9
    proc = run_mde("search", tmp_path / "idx", "--tags", "tag1,tag5", cwd=tmp_path, home=home)
    assert_one_line_error(proc, "mde: error: tiny has no tag 'tag5'; did you mean")
    proc = run_mde("search", tmp_path / "idx", query, "--text", "piano", cwd=tmp_path, home=home)
    assert_one_line_error(proc, "mde: error: give one of QUERY (an audio file), --tags or --text, not QUERY and --text")


def test_tags_rank_files_by_their_mean_probabilities(tiny_model, melodies, tmp_path):
    Index.build([melodies], tmp_path / "idx", model=tiny_model)
    index = Index.open(tmp_path / "idx")
    model = load_model(tiny_model)
    means = np.stack([model.embed(p).mean_tags() for p in sorted(melodies.iterdir())])
    expected = means[:, [0, 2]].mean(axis=1)
    hits = index.search_tags(["tag0", "tag2"], k=5)
    assert [h.path for h in hits] == [str(p.resolve()) for p in np.array(sorted(melodies.iterdir()))[np.argsort(
        -expected, kind="stable")]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(expected)[::-1], atol=1e-6)
    with pytest.raises(MdeError, match="tag probabilities are stored per clip"):
        index.search_tags(["tag0"], frames=True)
    with pytest.raises(MdeError, match="text queries need an index of a text target layer"):
        index.search_text("piano")
    Index.build([melodies], tmp_path / "tags-idx", model=tiny_model, layer="tags")
    assert Index.open(tmp_path / "tags-idx").search_tags(["tag1"], k=1)[0].score == pytest.approx(means[:, 1].max())


def build_rich_model(n_topics: int = 4) -> bytes:
    """The tiny model with a joint audio-tag space (``joint``: the embedding normalised; a tag encoder: tags ->
    W -> normalised) and a text target head (``target_text``: the embedding times V) with its text space."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from mde.runtime.package import METADATA_KEY, info_from_metadata
    from mde.runtime.tag_space import encode_graph
    from mde.runtime.text_space import TextSpace

    base = onnx.load_from_string(build_tiny_model())
    rng = np.random.default_rng(5)
    graph = base.graph
    graph.initializer.append(numpy_helper.from_array(rng.standard_normal((16, n_topics)).astype(np.float32), "v"))
    graph.node.extend([helper.make_node("LpNormalization", ["embedding"], ["joint"], axis=1, p=2),
                       helper.make_node("MatMul", ["embedding", "v"], ["target_text"])])
    graph.output.extend([helper.make_tensor_value_info("joint", TensorProto.FLOAT, ["batch", 16]),
                         helper.make_tensor_value_info("target_text", TensorProto.FLOAT, ["batch", n_topics])])
    encoder = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["tags", "w"], ["raw"]), helper.make_node("LpNormalization", ["raw"], ["joint"],
                                                                               axis=1, p=2)],
        "tag-encoder", [helper.make_tensor_value_info("tags", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("joint", TensorProto.FLOAT, ["batch", 16])],
        initializer=[numpy_helper.from_array(rng.standard_normal((3, 16)).astype(np.float32), "w")],
    ), opset_imports=[helper.make_opsetid("", 18)])
    encoder.ir_version = 9
    vocabulary = ("w:piano", "w:guitar", "w:slow", "w:fast")
    space = TextSpace("text", vocabulary, np.ones(4), rng.standard_normal((n_topics, 4)))
    props = {p.key: p.value for p in base.metadata_props}
    import dataclasses

    info = dataclasses.replace(info_from_metadata(props, "tiny"), name="rich",
                               outputs={"embedding": 16, "tags": 3, "joint": 16, "target_text": n_topics},
                               tag_encoder=encode_graph(encoder.SerializeToString()),
                               text_spaces={"text": space.to_base64()})
    del base.metadata_props[:]
    helper.set_model_props(base, {METADATA_KEY: info.to_json()})
    return base.SerializeToString()


def test_tags_through_a_tag_encoder_and_text_through_a_text_space(mde_home, melodies, tmp_path):
    store.save(build_rich_model(), "rich")
    model = load_model("rich")
    Index.build([melodies], tmp_path / "joint", model="rich", layer="joint")
    joint = Index.open(tmp_path / "joint")
    point = model.embed_tags(["tag0", "tag2"])
    expected = joint.arrays.clips @ point
    hits = joint.search_tags(["tag0", "tag2"], k=5)
    np.testing.assert_allclose([h.score for h in hits], np.sort(expected)[::-1], atol=1e-5)
    assert joint.search_tags(["tag1"], k=2, frames=True)[0].t is not None
    Index.build([melodies], tmp_path / "text", model="rich", layer="target_text")
    text = Index.open(tmp_path / "text")
    point = unit_rows(model.embed_text("slow piano"))
    hits = text.search_text("slow piano", k=5)
    np.testing.assert_allclose([h.score for h in hits], np.sort(text.arrays.clips @ point)[::-1], atol=1e-5)
    with pytest.raises(MdeError, match="no word of 'zzz' is known to the text space of rich"):
        text.search_text("zzz")
    with pytest.raises(MdeError, match="text queries need an index of a text target layer"):
        joint.search_text("slow piano")


def clusters(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    return unit_rows(centres[rng.integers(0, 30, n)] + rng.standard_normal((n, dim)))


def test_beyond_the_exact_limit_an_ivf_index_reaches_its_recall(tmp_path):
    drawn = clusters(3200, 32, seed=0)
    vectors, queries = drawn[:3000], drawn[3000:]  # the queries are held out: same clusters, not indexed
    index, kind = faiss_kinds.build(vectors, exact_limit=1000)
    assert (kind.kind, kind.vectors, kind.nlist, kind.tuning_queries, kind.train_points) == ("ivf", 3000, 219, 200,
                                                                                             3000)
    assert kind.recall_at_10 >= faiss_kinds.TARGET_RECALL and 1 <= kind.nprobe <= 219
    exact, _ = faiss_kinds.search(faiss_kinds.build(vectors, exact=True)[0], queries, 10)
    found, ids = faiss_kinds.search(index, queries, 10)
    assert faiss_kinds.recall_at(found, exact) >= 0.9
    _, again_ids = faiss_kinds.search(faiss_kinds.rebuild(vectors, kind), queries, 10)
    np.testing.assert_array_equal(again_ids, ids)
    assert faiss_kinds.build(vectors, exact_limit=5000)[1].kind == "flat"
    with pytest.raises(MdeError, match="exact_limit must be at least 0"):
        faiss_kinds.build(vectors, exact_limit=-1)


def test_an_index_past_its_limit_searches_ivf_and_rebuilds_missing_faiss_files(tiny_model, melodies, tmp_path):
    out = tmp_path / "idx"
    report = Index.build([melodies], out, model=tiny_model, exact_limit=30)
    assert (report.manifest.clip_index.kind, report.manifest.frame_index.kind) == ("flat", "ivf")
    assert report.manifest.frame_index.nlist == round(4 * 60**0.5)
    source = melodies / "song4.wav"
    query = excerpt(source, tmp_path / "cut.wav", start=2.0, seconds=3.0)
    before = Index.open(out).search(str(query), k=3, frames=True)
    assert before[0].path == str(source.resolve()) and abs(before[0].t - 2.0) <= 0.5
    for name in (storage.CLIP_INDEX, storage.FRAME_INDEX):
        (out / "data-000001" / name).unlink()
    assert Index.open(out).search(str(query), k=3, frames=True) == before
    assert (out / "data-000001" / storage.FRAME_INDEX).is_file()  # written back
    exact = Index.build([melodies], tmp_path / "exact", model=tiny_model, exact_limit=30, exact=True)
    assert exact.manifest.frame_index.kind == "flat" and exact.manifest.exact
    write_melody(melodies / "song5.wav", 6.0, seed=5)
    assert Index.build([melodies], tmp_path / "exact", exact_limit=30).manifest.frame_index.kind == "flat"  # kept


def test_an_index_needs_faiss_and_says_how_to_install_it(tiny_model, melodies, tmp_path):
    blocker = tmp_path / "no-faiss"
    blocker.mkdir()
    (blocker / "faiss.py").write_text("raise ImportError('No module named faiss')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "mde", "index", str(melodies), "-o", str(tmp_path / "idx")],
                          env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "needs the 'faiss-cpu' package (mde's 'search' extra): ", "[search]")
    assert not (tmp_path / "idx").exists()


def test_an_empty_folder_is_no_index(tmp_path):
    with pytest.raises(MdeError, match=r"no index here \(no manifest\.json\)$"):
        Index.open(tmp_path)
    (tmp_path / storage.STAGING).mkdir()
    with pytest.raises(MdeError, match="an interrupted 'mde index' embedded files for it; re-run it"):
        Index.open(tmp_path)
