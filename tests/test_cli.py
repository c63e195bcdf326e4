"""The command line as a user runs it: a real subprocess, real files, exit codes and stderr."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import write_tone


def run_mde(*args, cwd, home):
    env = {**os.environ, "MDE_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mde", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=300,
    )


def assert_one_line_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "command", [
        "embed", "tag", "models", "import seed", "import musicnn", "export", "train", "eval", "prepare", "synth",
        "stream", "viz", "bench models", "index", "search", "distill", "corpus debian", "probe",
    ]
)
def test_every_option_is_explained(command, tmp_path):
    proc = run_mde(*command.split(), "--help", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0
    help_text = proc.stdout
    import re

    options = set(re.findall(r"(--[a-z][a-z-]+)", help_text)) - {"--help"}
    assert options, help_text
    for line in help_text.splitlines():
        match = re.search(r"(--[a-z][a-z-]+)", line)
        if match and match.group(1) != "--help" and "│" in line:
            # rich help rows: "│ --option  TYPE  description │"; the description must not be empty
            described = line.split(match.group(1), 1)[1].strip(" │")
            assert described, f"{match.group(1)} has no help in: {line}"


def test_embed_writes_outputs_and_resumes(tiny_model, mde_home, tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    write_tone(tmp_path / "in" / "a.wav", 1.0)
    write_tone(tmp_path / "in" / "sub" / "b.wav", 1.5)
    out = tmp_path / "out"
    proc = run_mde("embed", tmp_path / "in", "--model", tiny_model, "--out", out, cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    assert "2 embedded, 0 skipped" in proc.stderr
    data = np.load(out / "b.npz")
    assert data["embedding"].shape == (3, 16) and list(data["timestamp"]) == [0.0, 0.5, 1.0]
    again = run_mde("embed", tmp_path / "in", "-m", tiny_model, "-o", out, cwd=tmp_path, home=mde_home)
    assert again.returncode == 0 and "0 embedded, 2 skipped" in again.stderr


def test_embed_lists_failures_keeps_going_and_exits_1(tiny_model, mde_home, tmp_path):
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "good.wav", 1.0)
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    (tmp_path / "in" / "text.mp3").write_text("hello, I am not audio")
    proc = run_mde("embed", tmp_path / "in", "-m", tiny_model, "-o", tmp_path / "out", "--format", "jsonl",
                   cwd=tmp_path, home=mde_home)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "1 embedded" in proc.stderr and "2 failed" in proc.stderr
    assert "empty.wav" in proc.stderr and "text.mp3" in proc.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good.jsonl"]


def test_short_clip_is_padded_with_a_note_or_skipped(tiny_model, mde_home, tmp_path):
    clip = write_tone(tmp_path / "short.wav", 0.2)
    proc = run_mde("embed", clip, "-m", tiny_model, "-o", tmp_path / "o1", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0 and "zero-padded" in proc.stderr
    assert bool(np.load(tmp_path / "o1" / "short.npz")["padded"])
    proc = run_mde("embed", clip, "-m", tiny_model, "-o", tmp_path / "o2", "--no-pad", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0 and "1 too short" in proc.stderr
    assert not (tmp_path / "o2" / "short.npz").exists()


def test_tag_prints_top_tags_as_text_and_json(tiny_model, mde_home, tmp_path):
    clip = write_tone(tmp_path / "song.wav", 1.0)
    proc = run_mde("tag", clip, "-m", tiny_model, "--top-k", "2", cwd=tmp_path, home=mde_home)
    assert proc.returncode == 0, proc.stderr
    path, shown = proc.stdout.strip().rsplit(": ", 1)
    assert path == str(clip)
    names = [entry.split()[0] for entry in shown.split(", ")]
    assert len(names) == 2 and set(names) <= {"tag0", "tag1", "tag2"}
    proc = run_mde("tag", clip, "-m", tiny_model, "--json", "--frames", "-k", "3", cwd=tmp_path, home=mde_home)
    [doc] = json.loads(proc.stdout)
    assert doc["model"] == tiny_model and len(doc["tags"]) == 3
    assert [f["timestamp"] for f in doc["frames"]] == [0.0, 0.5]
    assert doc["tags"][0]["p"] >= doc["tags"][1]["p"] >= doc["tags"][2]["p"]


def test_models_lists_the_store(tiny_model, mde_home, tmp_path):
    proc = run_mde("models", "--json", cwd=tmp_path, home=mde_home)
    [row] = json.loads(proc.stdout)
    assert row["name"] == "tiny" and row["window_s"] == 0.5 and row["embedding_dim"] == 16 and row["n_tags"] == 3
    assert (row["input_kind"], row["channels"], row["input_transform"]) == ("logmel", 1, None)
    table = run_mde("models", cwd=tmp_path, home=mde_home)
    assert "tiny" in table.stdout and "built by the test suite" in table.stdout and "log-mel" in table.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["embed", "missing.wav", "-m", "tiny"], "missing.wav"),
        (["embed", "song.wav", "-m", "nope"], "unknown model 'nope'"),
        (["embed", "song.wav", "-m", "tiny", "--format", "csv"], "unknown format 'csv'"),
        (["embed", "song.wav", "-m", "tiny", "--layer", "nope"], "no layer 'nope'"),
        (["embed", "song.wav", "-m", "tiny", "--hop", "0"], "hop must be positive"),
        (["tag", "missing.wav", "-m", "tiny"], "missing.wav"),
        (["import", "seed", "missing.ckpt"], "missing.ckpt"),
    ],
)
def test_bad_input_gives_one_line(tiny_model, mde_home, tmp_path, args, fragment):
    write_tone(tmp_path / "song.wav", 1.0)
    proc = run_mde(*args, cwd=tmp_path, home=mde_home)
    assert_one_line_error(proc, fragment)


@pytest.mark.parametrize("args, purpose", [
    (["train", "--model", "fcn05", "--dataset", "manifest", "--data", "x.csv", "--out", "run"], "Training"),
    (["eval", "MTT_musicnn", "--dataset", "manifest", "--data", "x.csv"], "Evaluating"),
])
def test_training_and_evaluation_without_scikit_learn_name_the_extra(args, purpose, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from mde.cli import train as train_cli
    from mde.cli.app import _register_commands, app
    from mde.errors import MissingExtraError, install_command

    real = importlib.util.find_spec
    monkeypatch.setattr(train_cli.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "sklearn" else real(name, *rest))
    monkeypatch.chdir(tmp_path)
    _register_commands()
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, MissingExtraError)
    assert str(result.exception) == (
        f"{purpose} needs the 'scikit-learn' package (mde's 'train' extra): {install_command('train')}")
