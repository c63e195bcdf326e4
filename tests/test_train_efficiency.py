"""Trainer efficiency (issue 12): crops per clip per epoch, one decode per file per run, throughput in the log."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mde.errors import MdeError  # noqa: E402
from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.data import loading  # noqa: E402
from mde.trainer.data.loading import TrainCrops, crops_for, decode_if_it_fits, train_loader  # noqa: E402
from mde.trainer.data.sources import load_dataset  # noqa: E402
from mde.trainer.loop import Trainer  # noqa: E402
from mde.trainer.models import get_model_spec  # noqa: E402

SPEC = get_model_spec("fcn05")  # 0.5 s windows at 16 kHz; the session corpus has 2 s clips


def config(corpus: Path, out: Path, **changes) -> TrainConfig:
    base = dict(model="fcn05", dataset="manifest", data=str(corpus), out=str(out), epochs=2, batch_size=16,
                lr=3e-3, device="cpu", eval_crops=4, seed=0)
    return TrainConfig(**{**base, **changes})


def count_decodes(monkeypatch) -> Counter:
    """Counts, per path, the files the trainer's loading module decodes from now on."""
    decoded = Counter()
    real = loading.load_audio

    def counting(path, sr=None, channels=1):
        decoded[Path(path)] += 1
        return real(path, sr=sr, channels=channels)

    monkeypatch.setattr(loading, "load_audio", counting)
    return decoded


def test_auto_crops_per_clip_fill_the_clip_with_windows(synth_corpus):
    dataset = load_dataset("manifest", synth_corpus)
    clips = dataset.split("train")
    auto = TrainCrops(dataset, SPEC.input_length, SPEC.sample_rate, seed=0, crops_per_clip="auto")
    per_clip = min(loading.MAX_AUTO_CROPS, auto.clips.length(0) // SPEC.input_length)
    assert per_clip == 4
    yielded = [y for _, y in train_loader(auto, 16, epoch=0)]
    assert sum(len(y) for y in yielded) == len(clips) * per_clip  # 64 clips, 4 crops each, whole batches
    starts = {tuple(auto[j][0][:4].tolist()) for j in range(per_clip)}  # clip 0's crops start apart
    assert len(starts) == per_clip and all(torch.equal(auto[j][1], auto[0][1]) for j in range(per_clip))
    assert len(TrainCrops(dataset, SPEC.input_length, SPEC.sample_rate, crops_per_clip=1)) == len(clips)
    assert crops_for(3 * 8000 + 7999, 8000, "auto") == 3
    assert crops_for(100 * 8000, 8000, "auto") == 4 and crops_for(3000, 8000, "auto") == 1
    assert crops_for(3000, 8000, 3) == 3


def test_crops_per_clip_setting_is_checked_and_old_run_folders_read_as_one(tmp_path):
    with pytest.raises(MdeError, match="crops per clip must be a positive integer or 'auto', got 0"):
        config(tmp_path, tmp_path / "x", crops_per_clip=0)
    with pytest.raises(MdeError, match="got 'some'"):
        config(tmp_path, tmp_path / "x", crops_per_clip="some")
    saved = config(tmp_path, tmp_path / "x").to_dict()
    assert saved["crops_per_clip"] == "auto"
    del saved["crops_per_clip"]  # a run folder written before the setting existed drew one crop per clip
    assert TrainConfig.from_dict(saved).crops_per_clip == 1


def test_a_run_resumed_after_the_validation_inputs_were_kept_continues_exactly(synth_corpus, tmp_path):
    """Validation inputs are computed once per Trainer, so evaluating must not draw from the global torch RNG
    (dropout does): else a run resumed at epoch 1 would draw again where the straight run does not."""
    straight = Trainer(config(synth_corpus, tmp_path / "straight", epochs=3, crops_per_clip=2))
    straight.run()
    Trainer(config(synth_corpus, tmp_path / "resumed", epochs=1, crops_per_clip=2)).run()
    resumed = Trainer(config(synth_corpus, tmp_path / "resumed", epochs=3, crops_per_clip=2), resume=True)
    resumed.run()
    for name, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[name]), name


def test_an_uncached_run_decodes_each_file_once(synth_corpus, tmp_path, monkeypatch):
    decoded = count_decodes(monkeypatch)
    trainer = Trainer(config(synth_corpus, tmp_path / "run", epochs=2, crops_per_clip=1))
    trainer.run()
    files = {clip.path for clips in load_dataset("manifest", synth_corpus).splits.values() for clip in clips}
    assert set(decoded) == files and set(decoded.values()) == {1}, decoded.most_common(3)
    assert "once into memory" in trainer.data_note and "validation inputs computed once" in trainer.data_note


@pytest.mark.parametrize("workers", [0, 2])
def test_preparing_the_data_reports_each_file_and_happens_once(synth_corpus, tmp_path, workers):
    reports = []
    trainer = Trainer(config(synth_corpus, tmp_path / "run", epochs=1, crops_per_clip=1, workers=workers))
    note = trainer.prepare_data(lambda *report: reports.append(report))
    assert note == trainer.data_note and "once into memory" in note
    assert reports == [("decoding", done, 72) for done in range(1, 73)] + [
        ("validation inputs", done, 8) for done in range(1, 9)]
    first = trainer._source.signals[trainer.data.dataset.split("valid")[0].path]
    assert trainer.prepare_data(lambda *report: reports.append(report)) == note and len(reports) == 80
    from mde.audio import load_audio

    assert np.array_equal(first, load_audio(trainer.data.dataset.split("valid")[0].path, sr=16000)[0])


def test_over_the_budget_the_files_are_decoded_at_each_use(synth_corpus):
    dataset = load_dataset("manifest", synth_corpus)
    source, note = decode_if_it_fits(dataset, SPEC.sample_rate, ("train", "valid"), budget=1000)
    assert source is dataset
    assert note.startswith("decoding each file at every use: the 72 train and valid files take") and "--cache" in note


def test_a_zero_memory_budget_decodes_every_file_at_every_use(synth_corpus, tmp_path, monkeypatch):
    """--memory-budget 0 is the loop before issue 12 (with --crops-per-clip 1): the benchmark's baseline."""
    decoded = count_decodes(monkeypatch)
    trainer = Trainer(config(synth_corpus, tmp_path / "run", epochs=2, crops_per_clip=1, memory_budget=0))
    assert trainer.data_note == (
        "data: decoding each file at every use: the 72 train and valid files take 9 MiB of float32, over the 0 MiB "
        "memory budget (--cache auto, or mde prepare and --cache, is faster); 64 training windows per epoch (1 per "
        "clip, --crops-per-clip 1); validation inputs cut every epoch (1 MiB, over the 0 MiB memory budget)")
    trainer.run()
    valid = {clip.path for clip in load_dataset("manifest", synth_corpus).split("valid")}
    assert {decoded[path] for path in valid} == {3}  # two epochs and the final evaluation
    with pytest.raises(MdeError, match="the memory budget must be a number of GiB >= 0, got -1"):
        config(synth_corpus, tmp_path / "x", memory_budget=-1)


def test_cache_auto_over_the_budget_trains_from_a_temporary_cache(synth_corpus, tmp_path):
    trainer = Trainer(config(synth_corpus, tmp_path / "run", epochs=1, crops_per_clip=1, cache="auto",
                             memory_budget=1e-6))
    assert trainer.data_note.startswith(f"data: decoding every file once into the temporary cache {tmp_path}/run/"
                                        "auto-cache: the 72 train and valid files take 9 MiB of float32, over")
    assert "validation inputs cut every epoch" in trainer.data_note
    assert trainer.run()["test"]["roc_auc"] > 0
    assert not (tmp_path / "run" / "auto-cache").exists()


def test_cli_train_logs_the_data_path_and_the_throughput(synth_corpus, tmp_path):
    from test_cli import assert_one_line_error, run_mde

    proc = run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", synth_corpus, "--epochs", "1",
                   "--out", tmp_path / "run", "--device", "cpu", "--eval-crops", "2", "--crops-per-clip", "2",
                   cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data_line = ("data: decoding the 72 train and valid files once into memory (9 MiB of float32, within the 2 GiB "
                 "memory budget); 128 training windows per epoch (2 per clip, --crops-per-clip 2)")
    assert data_line in proc.stderr, proc.stderr
    epoch = next(line for line in proc.stderr.splitlines() if line.startswith("epoch 1:"))
    assert " windows/s, ETA 0 s" in epoch, epoch
    assert json.loads((tmp_path / "run" / "config.json").read_text())["crops_per_clip"] == 2
    assert_one_line_error(
        run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", synth_corpus, "--out", tmp_path / "y",
                "--crops-per-clip", "many", cwd=tmp_path, home=tmp_path),
        "--crops-per-clip must be a whole number or 'auto', got 'many'")
