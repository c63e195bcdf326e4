"""mde distill end to end with the real MTT_musicnn teacher on a synthesized folder: the student learns the
teacher, the command runs as a user runs it, its export carries the record, and resume refuses changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import store_at  # noqa: E402

from mde.distill import DistillConfig, DistillTrainer  # noqa: E402
from mde.errors import MdeError  # noqa: E402


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    """24 synthesized 8 s clips (numpy engine; 20 train, 2 valid, 2 test) and their manifest."""
    from mde.trainer.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("distill") / "synth", 24, seed=3, seconds=8.0,
                             engine="numpy", splits=(0.8, 0.1, 0.1))


def settings(music: Path, out: Path, **changes) -> DistillConfig:
    base = dict(data=str(music), out=str(out), epochs=3, batch_size=16, crops_per_clip=8, lr=3e-3,
                device="cpu", teacher_cache=str(music.parent.parent / "teacher"))
    return DistillConfig.for_student("fcn05", **{**base, **changes})


def test_the_student_learns_the_teacher(music, musicnn_home, tmp_path):
    """fcn05 on 20 clips: after 3 epochs of 160 windows its held-out BCE against the teacher is lower, and it
    agrees with the teacher better than at its initialisation, at every figure the README reports."""
    with store_at(musicnn_home):
        trainer = DistillTrainer(settings(music, tmp_path / "run"))
        trainer.prepare_data()
        before = trainer.evaluate("test")
        results = trainer.run()
    after = results["test"]
    assert after["loss"] < before["loss"] - 0.05, (before, after)
    assert after["pearson_clip"] > max(before["pearson_clip"], 0) + 0.1, (before, after)
    assert after["top5_clip"] > before["top5_clip"], (before, after)
    record = results["distillation"]
    assert record["teacher"] == "MTT_musicnn" and record["window_s"] == 0.5
    assert record["corpus"]["train"]["files"] == 20 and record["corpus"]["train"]["hours"] == pytest.approx(
        20 * 8 / 3600, abs=1e-3)


def test_distill_command_export_and_eval(music, musicnn_home, tmp_path):
    """`mde distill` in a subprocess (the teacher's outputs are reused from the shared cache, and a second
    student at 29 s shares them too), `mde export` of the run, and `mde eval` of its figures."""
    from test_cli import run_mde

    from mde.runtime.extractor import load_model

    run = tmp_path / "student"
    cache = tmp_path / "teacher"
    proc = run_mde("distill", "--teacher", "MTT_musicnn", "--data", music, "--student", "fcn05", "--out", run,
                   "--epochs", "1", "--crops-per-clip", "2", "--batch-size", "8", "--device", "cpu", "--cache", cache,
                   cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert set(results["test"]) >= {"loss", "roc_auc", "top5_window", "top5_clip", "pearson_clip_min"}
    assert "distilling MTT_musicnn into fcn05 (0.5 s windows)" in proc.stderr
    assert len(list(cache.glob("*.npz"))) == 24
    model_file = tmp_path / "student.onnx"
    proc = run_mde("export", run, "-o", model_file, cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    with store_at(musicnn_home):
        model, teacher = load_model(str(model_file)), load_model("MTT_musicnn")
    assert model.info.tag_names == teacher.info.tag_names
    assert model.info.metrics["distillation"]["teacher"] == "MTT_musicnn"
    assert model.info.metrics["distillation"]["test"]["top5_clip"] == results["test"]["top5_clip"]
    assert "teacher MTT_musicnn" in model.info.source
    clip = next(music.parent.glob("**/*.wav"))
    assert model.embed(clip).tags.shape[1] == 50
    proc = run_mde("eval", run, cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    assert "top5_clip" in proc.stdout and "fcn05" in proc.stdout
    stamp = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    proc = run_mde("distill", "--data", music, "--student", "fcn", "--out", tmp_path / "fcn29", "--epochs", "1",
                   "--crops-per-clip", "1", "--batch-size", "4", "--device", "cpu", "--cache", cache,
                   "--eval-windows", "1", cwd=tmp_path, home=musicnn_home)
    assert proc.returncode == 0, proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npz")} == stamp  # computed once, reused
    assert json.loads(proc.stdout)["distillation"]["window_s"] == pytest.approx(29.0)


def test_resume_continues_and_refuses_other_teacher_settings(music, musicnn_home, tmp_path):
    with store_at(musicnn_home):
        first = DistillTrainer(settings(music, tmp_path / "run", epochs=1, embedding_weight=0.5))
        first.run()
        assert first.projection is not None
        projection = first.projection.weight.detach().clone()
        resumed = DistillTrainer(settings(music, tmp_path / "run", epochs=2, embedding_weight=0.5), resume=True)
        assert resumed.epoch == 1 and resumed.projection is not None
        assert torch.equal(resumed.projection.weight, projection)
        resumed.run()
        log = (tmp_path / "run" / "log.csv").read_text().splitlines()
        assert len(log) == 3  # header and two epochs
        with pytest.raises(MdeError, match=r"different settings .*teacher_hop"):
            DistillTrainer(settings(music, tmp_path / "run", epochs=3, embedding_weight=0.5, teacher_hop=1.0,
                                    teacher_cache=str(tmp_path / "other-cache")), resume=True)
        with pytest.raises(MdeError, match=r"takes 0\.5 s windows only"):
            DistillTrainer(settings(music, tmp_path / "w", window=1.0))
        with pytest.raises(MdeError, match="no tag output"):
            DistillConfig.for_student("schindler", data=str(music), out=str(tmp_path / "s"))


def test_a_student_of_any_length_trains_at_the_window_asked(music, musicnn_home, tmp_path):
    """musicnn takes any length: --window 1.5 trains and exports 1.5 s windows."""
    from mde.export.export import export_model

    with store_at(musicnn_home):
        trainer = DistillTrainer(DistillConfig.for_student(
            "musicnn", data=str(music), out=str(tmp_path / "run"), epochs=1, crops_per_clip=1, batch_size=8,
            device="cpu", window=1.5, teacher_cache=str(music.parent.parent / "teacher")))
        trainer.run()
        assert trainer.spec.input_length == 24000
        info = export_model(tmp_path / "run", tmp_path / "m.onnx").info
    assert info.window_seconds == pytest.approx(1.5, abs=0.02)
    assert np.isclose(info.metrics["distillation"]["window_s"], 1.5)
