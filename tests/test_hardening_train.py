"""Training input that cannot pick a best checkpoint is refused before the first epoch, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_tone
from test_cli import assert_one_line_error, run_mde

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from mde.errors import MdeError
from mde.trainer.config import TrainConfig
from mde.trainer.loop import Trainer


def _manifest(folder: Path, rows: list[tuple[str, str]]) -> Path:
    """A manifest of 0.6 s tones, one per (split, tags) row."""
    lines = ["path,split,tags"]
    for i, (split, tags) in enumerate(rows):
        write_tone(folder / f"c{i}.wav", 0.6, rate=16000, freq=200.0 + 50 * i)
        lines.append(f"c{i}.wav,{split},{tags}")
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(manifest: Path, out: Path, **changes) -> TrainConfig:
    return TrainConfig(model="fcn05", dataset="manifest", data=str(manifest), out=str(out), epochs=3,
                       batch_size=2, device="cpu", eval_crops=1, **changes)


def test_a_valid_split_without_a_tag_of_both_kinds_is_refused_before_training(tmp_path):
    # every valid clip has 'a' and lacks 'b': no tag has both classes there, the ROC-AUC is undefined
    manifest = _manifest(tmp_path, [("train", "a"), ("train", "b"), ("train", "a|b"), ("valid", "a"),
                                    ("valid", "a"), ("test", "b")])
    with pytest.raises(MdeError, match="no tag is both present and absent among the 2 clips of the valid split"):
        Trainer(_config(manifest, tmp_path / "run"))
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_a_single_label_manifest_with_one_class_is_refused(tmp_path):
    manifest = _manifest(tmp_path, [("train", "piano"), ("train", "piano"), ("valid", "piano"), ("test", "piano")])
    with pytest.raises(MdeError, match=r"single-label training needs at least 2 classes, got 1 \(piano\)"):
        Trainer(_config(manifest, tmp_path / "run", single_label=True))
    proc = run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", manifest, "--single-label",
                   "--out", tmp_path / "cli-run", "--device", "cpu", cwd=tmp_path, home=tmp_path)
    assert_one_line_error(proc, "mde: error: manifest.csv: single-label training needs at least 2 classes")
    assert not (tmp_path / "cli-run").exists()


def test_trainable_inputs_pass_the_check(tmp_path):
    manifest = _manifest(tmp_path, [("train", "a"), ("train", "b"), ("valid", "a"), ("valid", "b"), ("test", "a")])
    Trainer(_config(manifest, tmp_path / "multi")).data.dataset.check_trainable()
    Trainer(_config(manifest, tmp_path / "single", single_label=True)).data.dataset.check_trainable()
