"""``mde probe``: linear probes on frozen embeddings, the decode-once cache, the report and the command.

Most tests use two tiny real ONNX models (conftest's ``build_tiny_model``: embedding = mean log-mel of each
window) on a corpus of tones whose pitch and loudness are the labels, so they run in seconds without torch;
one test trains fcn05 a little and checks that probing ranks it above its own initial weights.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import build_tiny_model

pytest.importorskip("sklearn")

RATE = 8000
PITCHES = {"low": 300.0, "mid": 1000.0, "high": 2800.0}
PER_SPLIT = {"train": 4, "valid": 2, "test": 2}  # clips per pitch class


def _tone(path: Path, freq: float, amplitude: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(RATE) / RATE  # 1 s
    x = amplitude * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), RATE, subtype="PCM_16")


def _corpus(root: Path) -> tuple[Path, Path]:
    """24 one-second tones (12 train, 6 valid, 6 test): a multi-label manifest (pitch | loud or quiet) and a
    single-label one (pitch) over the same files."""
    rng = np.random.default_rng(0)
    multi, single = ["path,split,tags"], ["path,split,tags"]
    seed = 0
    for split, n in PER_SPLIT.items():
        for k in range(n):
            for pitch, freq in PITCHES.items():
                loud = k % 2 == 0
                name = f"clips/{split}-{pitch}-{k}.wav"
                _tone(root / name, freq * (1 + 0.03 * rng.standard_normal()), 0.5 if loud else 0.03, seed)
                seed += 1
                multi.append(f"{name},{split},{pitch}|{'loud' if loud else 'quiet'}")
                single.append(f"{name},{split},{pitch}")
    (root / "multi.csv").write_text("\n".join(multi) + "\n")
    (root / "single.csv").write_text("\n".join(single) + "\n")
    return root / "multi.csv", root / "single.csv"


N_CLIPS = 3 * sum(PER_SPLIT.values())


@pytest.fixture(scope="module")
def tones(tmp_path_factory) -> dict[str, Path]:
    """Two tiny model files (other windows: other embeddings) and the tone corpus's two manifests."""
    root = tmp_path_factory.mktemp("probe-tones")
    (root / "tiny.onnx").write_bytes(build_tiny_model("tiny"))
    (root / "tiny2.onnx").write_bytes(build_tiny_model("tiny2", window=2000))
    multi, single = _corpus(root)
    return {"root": root, "a": root / "tiny.onnx", "b": root / "tiny2.onnx", "multi": multi, "single": single}


def _dataset(manifest: Path, single_label: bool = False):
    from mde.trainer.data.sources import load_dataset

    return load_dataset("manifest", manifest, single_label=single_label)


class _Counter:
    """Counts the decodes (mde.probe.features.load_audio) and the Model.embed calls of a probe."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import mde.probe.features as features
        from mde.runtime.extractor import Model

        self.decoded: list[Path] = []
        self.embedded: list[tuple[str, str]] = []
        self.arrays: list[bool] = []
        real_load, real_embed = features.load_audio, Model.embed

        def load_audio(path, *args, **kwargs):
            self.decoded.append(Path(path))
            return real_load(path, *args, **kwargs)

        def embed(model, audio, *args, **kwargs):
            self.arrays.append(isinstance(audio, np.ndarray))  # the probe hands decoded samples to the models
            self.embedded.append((model.name, kwargs.get("layer")))
            return real_embed(model, audio, *args, **kwargs)

        monkeypatch.setattr(features, "load_audio", load_audio)
        monkeypatch.setattr(Model, "embed", embed)


# --- the probe ranks a trained model above an untrained one ---------------------------------------------------

@pytest.fixture(scope="module")
def fcn05_models(pretrained_fcn05, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(trained .onnx, untrained .onnx, probe manifest): conftest's ``pretrained_fcn05`` and a fresh corpus
    (seed 1, 60/30/30 clips) to probe them on."""
    from mde.trainer.data.synth import synthesize_corpus

    probe_data = synthesize_corpus(tmp_path_factory.mktemp("probe-fcn05") / "probe-synth", 120, seed=1, seconds=2.0,
                                   engine="numpy", splits=(0.5, 0.25, 0.25))
    return pretrained_fcn05["trained"], pretrained_fcn05["untrained"], probe_data


def test_probe_ranks_a_trained_model_above_an_untrained_one(fcn05_models, tmp_path):
    from mde.probe import probe

    trained, untrained, manifest = fcn05_models
    report = probe([trained, untrained], _dataset(manifest), cache=tmp_path / "cache", threads=1)
    auc = {(row.model, row.pool): row.fit.test["roc_auc"] for row in report.rows}
    assert report.splits == {"train": 60, "valid": 30, "test": 30}
    for pool in ("mean", "meanmax"):
        assert auc[str(trained), pool] > auc[str(untrained), pool], auc


def test_a_probe_of_shuffled_labels_scores_near_chance(fcn05_models, tmp_path):
    """The control: the same embeddings with every clip's tags given to another clip (within its split)
    carry no signal, so the probe's test ROC-AUC falls to about 0.5 (a leak of test labels into the fit or
    the choice of C would keep it high)."""
    from mde.probe import probe

    trained, _, manifest = fcn05_models
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        members = [row for row in rows if row["split"] == split]
        for row, shuffled in zip(members, rng.permutation([row["tags"] for row in members])):
            row["tags"] = str(shuffled)
    shuffled_manifest = manifest.parent / "shuffled.csv"  # beside the manifest: its relative paths still hold
    with open(shuffled_manifest, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    real = probe([trained], _dataset(manifest), cache=tmp_path / "cache", threads=1)
    control = probe([trained], _dataset(shuffled_manifest), cache=tmp_path / "cache", threads=1)
    for real_row, control_row in zip(real.rows, control.rows):
        assert abs(control_row.fit.test["roc_auc"] - 0.5) < 0.12, control_row.fit.test
        assert real_row.fit.test["roc_auc"] > control_row.fit.test["roc_auc"] + 0.2


# --- features: one decode per file, the cache --------------------------------------------------------------------

def test_models_and_layers_share_one_decode_per_file(tones, tmp_path, monkeypatch):
    from mde.probe import probe
    from mde.probe.features import FeatureCache, Target, clip_key
    from mde.runtime.batch import file_sha256
    from mde.runtime.extractor import load_model

    counter = _Counter(monkeypatch)
    ds = _dataset(tones["multi"])
    report = probe([tones["a"], tones["b"]], ds, layers=["embedding", "tags"], cache=tmp_path / "cache")
    assert len(counter.decoded) == N_CLIPS and len(set(counter.decoded)) == N_CLIPS  # once per file, not per model
    assert sorted(set(counter.embedded)) == [("tiny", "embedding"), ("tiny", "tags"), ("tiny2", "embedding"),
                                             ("tiny2", "tags")]
    assert len(counter.embedded) == 4 * N_CLIPS and all(counter.arrays)
    assert (report.decoded, report.embedded, report.cached) == (N_CLIPS, 4 * N_CLIPS, 0)
    assert [(r.model, r.layer, r.pool, r.dim) for r in report.rows][:4] == [
        (str(tones["a"]), "embedding", "mean", 16), (str(tones["a"]), "embedding", "meanmax", 32),
        (str(tones["a"]), "tags", "mean", 3), (str(tones["a"]), "tags", "meanmax", 6)]
    # the shared decoding gives each model what embedding the file itself gives it (its own rate, window)
    clip = ds.split("test")[0].path
    for path in (tones["a"], tones["b"]):
        model = load_model(path)
        frames = model.embed(clip).embedding
        target = Target(str(path), model, "embedding", file_sha256(path))
        cached = FeatureCache(tmp_path / "cache").load(target, clip_key(clip))
        assert cached is not None and cached.frames == len(frames)
        np.testing.assert_allclose(cached.mean, frames.mean(axis=0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cached.max, frames.max(axis=0), rtol=1e-5, atol=1e-5)


def test_a_rerun_reads_the_cache_and_a_changed_file_is_embedded_again(tones, tmp_path, monkeypatch):
    from mde.probe import probe
    from mde.probe.features import clip_key

    ds = _dataset(tones["multi"])
    cache = tmp_path / "cache"
    first = probe([tones["a"]], ds, cache=cache)
    files = sorted(cache.rglob("*.npz"))
    assert len(files) == N_CLIPS and first.embedded == N_CLIPS
    stamps = [f.stat().st_mtime_ns for f in files]

    counter = _Counter(monkeypatch)
    again = probe([tones["a"]], ds, cache=cache)
    assert counter.decoded == [] and counter.embedded == []
    assert (again.embedded, again.cached, again.decoded) == (0, N_CLIPS, 0)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert [r.fit.test["roc_auc"] for r in again.rows] == [r.fit.test["roc_auc"] for r in first.rows]

    # an edited audio file (new mtime) and a damaged cache file are computed again, nothing else
    changed = ds.split("train")[0].path
    damaged = next(f for f in files if f.stem != clip_key(changed))
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    damaged.write_bytes(b"not an npz")
    third = probe([tones["a"]], ds, cache=cache)
    assert third.embedded == 2 and third.cached == N_CLIPS - 2
    assert changed in counter.decoded and len(counter.decoded) == 2


def test_a_file_that_fails_to_decode_is_skipped_for_every_model(tones, tmp_path):
    from mde.probe import probe

    root = tmp_path / "data"
    root.mkdir()
    lines = tones["multi"].read_text().splitlines()
    broken = root / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    manifest = root / "m.csv"
    rows = [lines[0], *(f"{tones['root'] / line.split(',')[0]},{line.split(',', 1)[1]}" for line in lines[1:])]
    manifest.write_text("\n".join([*rows, f"{broken},train,low|loud"]) + "\n")
    failures: list[tuple[Path, str]] = []
    report = probe([tones["a"], tones["b"]], _dataset(manifest), cache=tmp_path / "cache",
                   on_failure=lambda path, line: failures.append((path, line)))
    assert [path for path, _ in failures] == [broken] and "\n" not in failures[0][1]
    assert list(report.failed) == [broken]
    assert report.splits == {"train": 12, "valid": 6, "test": 6}


# --- fitting ----------------------------------------------------------------------------------------------------

def test_multi_label_probe_learns_pitch_and_loudness(tones, tmp_path):
    from mde.probe import probe

    report = probe([tones["a"]], _dataset(tones["multi"]), cache=tmp_path / "cache")
    for row in report.rows:
        assert row.fit.test["roc_auc"] > 0.95 and row.fit.test["pr_auc"] > 0.9, row
        assert row.fit.c in row.fit.valid and len(row.fit.valid) == 6
        assert row.fit.valid_score == max(row.fit.valid.values())
        assert set(row.fit.test["per_tag"]) == {"high", "loud", "low", "mid", "quiet"}
        assert "accuracy" not in row.fit.test


def test_single_label_reports_accuracy_and_weighted_f1(tones, tmp_path):
    from mde.probe import probe
    from mde.probe.report import as_json, header

    report = probe([tones["a"]], _dataset(tones["single"], single_label=True), cache=tmp_path / "cache")
    assert report.single_label and report.tag_names == ("high", "low", "mid")
    for row in report.rows:
        assert row.fit.test["accuracy"] == 1.0 and row.fit.test["f1"] == 1.0
        assert "roc_auc" not in row.fit.test
    assert header(report)[-3:] == ["valid accuracy", "test accuracy", "test weighted F1"]
    document = as_json(report)
    assert document["task"] == "single-label"
    assert {"accuracy", "f1"} <= set(document["results"][0]) and "roc_auc" not in document["results"][0]


def test_a_probe_of_labels_unrelated_to_the_features_stays_near_chance():
    """The probe is tested on held-out clips: random labels of random features score near 1/3, not above."""
    from mde.probe.fit import fit_probe

    rng = np.random.default_rng(0)
    x = {split: rng.standard_normal((n, 8)) for split, n in (("train", 60), ("valid", 30), ("test", 300))}
    y = {split: np.eye(3)[rng.integers(0, 3, len(v))] for split, v in x.items()}
    fit = fit_probe(x, y, ["a", "b", "c"], single_label=True)
    assert fit.test["accuracy"] < 0.5
    y["train"] = np.eye(3)[np.zeros(60, int)]
    from mde.errors import MdeError

    with pytest.raises(MdeError, match="at least 2 classes"):
        fit_probe(x, y, ["a", "b", "c"], single_label=True)


# --- the command ------------------------------------------------------------------------------------------------

def _invoke(*args: object):
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, ["probe", *map(str, args)])


def test_cli_prints_the_table_and_writes_json_and_markdown(tones, tmp_path):
    out = tmp_path / "out"
    result = _invoke(tones["a"], tones["b"], "--dataset", "manifest", "--data", tones["multi"], "--out", out,
                     "--pool", "meanmax")
    assert result.exit_code == 0, result.output
    assert "ROC-AUC" in result.stdout  # the terminal table (the subprocess test reads it whole)
    document = json.loads((out / "probe.json").read_text())
    assert [(r["model"], r["pool"]) for r in document["results"]] == [(str(tones["a"]), "meanmax"),
                                                                     (str(tones["b"]), "meanmax")]
    assert all(0.9 < r["roc_auc"] <= 1 and 0 < r["pr_auc"] <= 1 for r in document["results"])
    assert document["splits"] == {"train": 12, "valid": 6, "test": 6}
    markdown = (out / "probe.md").read_text().splitlines()
    assert markdown[2] == "| model | layer | pool | dim | C | valid ROC-AUC | test ROC-AUC | test PR-AUC |"
    assert len(markdown) == 6 and markdown[4].startswith(f"| {tones['a']} | embedding | meanmax | 32 |")
    assert len(list((out / "cache").rglob("*.npz"))) == 2 * N_CLIPS  # the default cache: OUT/cache

    again = _invoke(tones["a"], "--dataset", "manifest", "--data", tones["single"], "--single-label", "--json",
                    "--cache", out / "cache", "--layer", "embedding,nope")
    assert again.exit_code == 0, again.output
    printed = json.loads(again.stdout)
    assert [r["pool"] for r in printed["results"]] == ["mean", "meanmax"]
    assert printed["cached"] == N_CLIPS and printed["embedded"] == 0  # the same clips, read from the cache
    assert printed["notes"] == [f"{tones['a']} has no layer 'nope' (its layers: embedding, tags): skipped"]

    shown = _invoke(tones["a"], "--dataset", "manifest", "--data", tones["multi"], "--markdown", "--pool", "mean")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[2].startswith("| model | layer | pool |")


@pytest.mark.parametrize("args, fragment", [
    (["nosuchmodel", "--dataset", "manifest", "--data", "{multi}"], "unknown model 'nosuchmodel'"),
    (["{a}", "--dataset", "manifest", "--data", "{root}/missing.csv"], "manifest not found"),
    (["{a}", "--dataset", "nope", "--data", "{multi}"], "unknown dataset 'nope'"),
    (["{a}", "--dataset", "manifest", "--data", "{multi}", "--pool", "median"], "--pool 'median'"),
    (["{a}", "--dataset", "manifest", "--data", "{multi}", "--layer", "nope"], "nothing to probe"),
    (["{a}", "--dataset", "manifest", "--data", "{multi}", "--json", "--markdown"], "one of --markdown and --json"),
    (["{a}", "--dataset", "manifest", "--data", "{novalid}"], "no clips in split 'valid'"),
])
def test_bad_input_is_one_line(tones, args, fragment):
    from mde.errors import MdeError

    novalid = tones["root"] / "novalid.csv"
    novalid.write_text("\n".join(line for line in tones["multi"].read_text().splitlines() if ",valid," not in line))
    paths = {"multi": tones["multi"], "a": tones["a"], "root": tones["root"], "novalid": novalid}
    result = _invoke(*(arg.format(**paths) for arg in args))
    assert isinstance(result.exception, MdeError), result.output
    assert fragment in str(result.exception) and "\n" not in str(result.exception)


def test_the_command_explains_every_option_and_imports_no_torch(tones, tmp_path):
    """A real ``mde probe`` process: an unknown model is one line on stderr, a probe runs without torch. (Run
    outside the checkout, as the installed package: the source tree's ``mde`` has no compiled front end in CI.)"""
    env = {**os.environ, "COLUMNS": "200", "MDE_HOME": str(tmp_path / "home")}
    helped = subprocess.run([sys.executable, "-m", "mde", "probe", "--help"], capture_output=True, text=True,
                            env=env, timeout=120, cwd=tmp_path)
    assert helped.returncode == 0
    for option in ("--dataset", "--data", "--layer", "--pool", "--single-label", "--out", "--cache", "--markdown",
                   "--json", "--threads"):
        assert option in helped.stdout
    script = ("import sys\nfrom mde.cli.app import main\nsys.argv = ['mde', *sys.argv[1:]]\n"
              "try:\n    main()\nfinally:\n    print('torch loaded' if 'torch' in sys.modules else 'no torch', "
              "file=sys.stderr)\n")
    ran = subprocess.run([sys.executable, "-c", script, "probe", str(tones["a"]), "--dataset", "manifest", "--data",
                          str(tones["multi"])], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stderr.strip().endswith("no torch")
    assert "test ROC-AUC" in ran.stdout and "test PR-AUC" in ran.stdout and "linear probes on multi.csv" in ran.stdout
    table = [line for line in ran.stdout.splitlines() if str(tones["a"]) in line]
    assert len(table) == 2 and "meanmax" in table[1], ran.stdout  # a row per pooling
    unknown = subprocess.run([sys.executable, "-m", "mde", "probe", "nosuchmodel", "--dataset", "manifest", "--data",
                              str(tones["multi"])], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert unknown.returncode == 1
    lines = unknown.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mde: error: unknown model 'nosuchmodel'"), unknown.stderr
