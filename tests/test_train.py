"""Real training runs on a synthesized corpus: learning, resume, Ctrl-C, single-label, schedules, eval."""

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mde.errors import MdeError  # noqa: E402
from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.loop import Trainer, train  # noqa: E402


@pytest.fixture(scope="module")
def learning_corpus(tmp_path_factory) -> Path:
    """160 synthesized 2 s clips (numpy engine) and their manifest: enough to learn the tags from with the
    default 4 crops per clip (test ROC-AUC 0.97 after 6 epochs, 18 s on 2 cores; 240 clips of 1 s with one
    crop per clip needed 14 epochs, 26 s, for 0.94). Over 2 s, 4 evaluation crops of 0.5 s cover the clip."""
    from mde.trainer.data.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("synth"), 160, seed=0, seconds=2.0, engine="numpy", workers=2)


@pytest.fixture
def corpus(synth_corpus) -> Path:
    """The session's small corpus (80 clips: 4 steps of 16 per epoch) for the tests of the bookkeeping."""
    return synth_corpus


def config(corpus: Path, out: Path, **changes) -> TrainConfig:
    """The bookkeeping tests' settings: one crop per clip per epoch keeps their epochs short."""
    base = dict(model="fcn05", dataset="manifest", data=str(corpus), out=str(out), epochs=2, batch_size=16,
                crops_per_clip=1, lr=3e-3, device="cpu", eval_crops=4, seed=0)
    base.update(changes)
    return TrainConfig(**base)


def test_fcn05_learns_the_synthesized_tags(learning_corpus, tmp_path):
    """The one learning test of the FCN family, with the default crops per clip (the others check bookkeeping
    on the small corpus)."""
    results = train(config(learning_corpus, tmp_path / "run", epochs=6, crops_per_clip="auto"))
    assert results["test"]["roc_auc"] >= 0.9, results
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"roc_auc", "pr_auc", "loss"} and metrics["best_epoch"] >= 1
    log = (run / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss") and len(log) == 7
    assert json.loads((run / "config.json").read_text())["model"] == "fcn05"
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["architecture"] == "fcn05" and len(best["tag_names"]) == best["model"]["dense.weight"].shape[0]
    assert any((run / "tensorboard").iterdir())


def test_resume_continues_exactly(corpus, tmp_path):
    straight = Trainer(config(corpus, tmp_path / "straight", epochs=3))
    straight.run()
    first = Trainer(config(corpus, tmp_path / "resumed", epochs=2))
    first.run()
    resumed = Trainer(config(corpus, tmp_path / "resumed", epochs=3), resume=True)
    assert resumed.epoch == 2
    resumed.run()
    for name, value in straight.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[name]), name
    assert len((tmp_path / "resumed" / "log.csv").read_text().splitlines()) == 4


def test_resume_refuses_other_settings_and_a_fresh_run_refuses_a_used_folder(fcn05_run, corpus):
    before = {path: path.read_bytes() for path in fcn05_run.rglob("*") if path.is_file()}
    with pytest.raises(MdeError, match="--resume with different settings \\(lr\\)"):
        Trainer(config(corpus, fcn05_run, lr=1e-2), resume=True)
    with pytest.raises(MdeError, match="already holds a run"):
        Trainer(config(corpus, fcn05_run))
    assert {path: path.read_bytes() for path in fcn05_run.rglob("*") if path.is_file()} == before


def test_ctrl_c_saves_the_last_checkpoint(corpus, tmp_path):
    trainer = Trainer(config(corpus, tmp_path / "run", epochs=3))

    def interrupt(step, steps, loss):
        if trainer.epoch == 1 and step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.run(on_batch=interrupt)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1  # the interrupted epoch is redone on resume
    results = Trainer(config(corpus, tmp_path / "run", epochs=3), resume=True).run()
    assert results["test"]["roc_auc"] > 0.5


def test_single_label_runs_report_accuracy_and_a_confusion_matrix(corpus, tmp_path):
    from mde.trainer.data.manifest import read_manifest, write_manifest

    single = write_manifest([(row.path, row.split, ["drums" if "drums" in row.tags else "no drums"])
                             for row in read_manifest(corpus)], tmp_path / "single.csv")
    results = train(config(single, tmp_path / "run", single_label=True, epochs=2))
    assert {"accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "loss"} <= set(results["test"])
    assert (tmp_path / "run" / "confusion_matrix.csv").is_file()
    assert (tmp_path / "run" / "confusion_matrix.png").is_file()


def test_schedules_and_early_stopping(corpus, tmp_path):
    step = Trainer(config(corpus, tmp_path / "step", epochs=2, schedule="step", milestones=[1], gamma=0.5))
    step.run()
    assert step.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * 0.5)
    switch = Trainer(config(corpus, tmp_path / "switch", epochs=2, optimizer="adam", schedule="adam_then_sgd",
                            switch_epoch=1))
    switch.run()
    assert isinstance(switch.optimizer, torch.optim.SGD)
    stopped = Trainer(config(corpus, tmp_path / "stop", epochs=6, early_stop=2))
    valid = stopped.evaluate("valid")
    stopped.evaluate = lambda split: valid  # a validation score that never improves, on any machine
    stopped.run()
    assert stopped.epoch == 3  # the best epoch, then two without improvement
    with pytest.raises(MdeError, match="switch-epoch"):
        config(corpus, tmp_path / "x", schedule="adam_then_sgd")


def test_eval_of_a_run_matches_its_metrics(fcn05_run, corpus):
    from mde.trainer.assess import assess

    results = json.loads((fcn05_run / "metrics.json").read_text())  # what train() returned
    again = assess(str(fcn05_run), "manifest", corpus, "test", eval_crops=4, single_label=False)
    assert again["roc_auc"] == pytest.approx(results["test"]["roc_auc"], abs=1e-6)
    assert again["loss"] == pytest.approx(results["test"]["loss"], abs=1e-6)


def test_cli_train_and_its_errors(corpus, tmp_path):
    """`mde train` in a subprocess, as a user runs it; `mde eval` and the refusals in process (the one-line
    form of every MdeError is tested once, in test_cli)."""
    from test_cli import run_mde
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app

    out = tmp_path / "run"
    proc = run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", corpus, "--epochs", "1",
                   "--crops-per-clip", "1", "--out", out, "--device", "cpu", "--eval-crops", "2",
                   cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["test"]["roc_auc"] > 0
    _register_commands()
    result = CliRunner().invoke(app, ["eval", str(out), "--dataset", "manifest", "--data", str(corpus),
                                      "--eval-crops", "2"])
    assert result.exit_code == 0 and "roc_auc" in result.stdout, result.output
    for flags, message in ((["--model", "nope"], "unknown architecture 'nope'"),
                           (["--model", "fcn05", "--eval-crops", "some"], "--eval-crops")):
        result = CliRunner().invoke(app, ["train", *flags, "--dataset", "manifest", "--data", str(corpus),
                                          "--out", str(tmp_path / "x")])
        assert isinstance(result.exception, MdeError) and message in str(result.exception), result.output
    assert not (tmp_path / "x").exists()


def test_cli_synth_prepare_and_train_from_the_cache(tmp_path):
    from test_cli import assert_one_line_error, run_mde

    proc = run_mde("synth", "--out", tmp_path / "corpus", "--n", "40", "--seconds", "2", "--engine", "numpy",
                   cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "corpus" / "manifest.csv"
    assert manifest.read_text().startswith("path,split,tags") and len(manifest.read_text().splitlines()) == 41
    (tmp_path / "corpus" / "clips" / "00001.wav").write_bytes(b"broken")
    proc = run_mde("prepare", "--dataset", "manifest", "--data", manifest, "--out", tmp_path / "cache",
                   "--model", "fcn05", "--seconds", "2", "--workers", "2", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "39 prepared" in proc.stderr and "1 failed" in proc.stderr and "00001.wav" in proc.stderr
    proc = run_mde("train", "--model", "fcn05", "--dataset", "manifest", "--data", manifest, "--cache",
                   tmp_path / "cache", "--epochs", "1", "--batch-size", "8", "--out", tmp_path / "run",
                   "--device", "cpu", "--eval-crops", "2", cwd=tmp_path, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best_epoch"] == 1
    assert_one_line_error(
        run_mde("synth", "--out", tmp_path / "x", "--n", "2", "--engine", "banjo", cwd=tmp_path, home=tmp_path),
        "banjo")
