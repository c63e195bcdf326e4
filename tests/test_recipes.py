"""Training recipes as defaults (TrainConfig.for_model, mde train), the optimizers they need, --block, and
the initial weights a fresh run keeps in checkpoints/initial.pt."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mde.errors import MdeError  # noqa: E402
from mde.trainer.config import TrainConfig, default_settings  # noqa: E402
from mde.trainer.loop import build_optimizer, seed_everything, train  # noqa: E402
from mde.trainer.models import build_model, get_model_spec, registered_names  # noqa: E402
from mde.trainer.run_dir import RunDir  # noqa: E402

PLACES = dict(dataset="manifest", data="corpus.csv", out="run")


def test_for_model_takes_the_recipe_where_the_call_is_silent():
    recipe_run = TrainConfig.for_model("music2vec", **PLACES)
    assert (recipe_run.optimizer, recipe_run.lr, recipe_run.weight_decay, recipe_run.schedule) == (
        "rmsprop", 1e-3, 0.0, "none")
    assert (recipe_run.batch_size, recipe_run.epochs, recipe_run.crops_per_clip) == (25, 20, 1)
    assert recipe_run.single_label and recipe_run.eval_crops is None
    assert recipe_run.seed == default_settings()["seed"]  # the recipe is silent: the global default

    told = TrainConfig.for_model("music2vec", batch_size=4, eval_crops=2, single_label=False, **PLACES)
    assert (told.batch_size, told.eval_crops, told.single_label, told.optimizer) == (4, 2, False, "rmsprop")

    plain = TrainConfig(model="music2vec", **PLACES)  # the dataclass alone keeps its own defaults
    assert (plain.batch_size, plain.optimizer, plain.epochs) == (16, "adamw", 10)


def test_the_log_mel_families_keep_todays_defaults_and_every_recipe_is_valid():
    for name in registered_names():
        config = TrainConfig.for_model(name, **PLACES)  # raises for a recipe with an unknown or bad setting
        if get_model_spec(name).input_kind == "logmel" and not get_model_spec(name).recipe:  # (not multiscale)
            assert config == TrainConfig(model=name, **PLACES)
    samplecnn = TrainConfig.for_model("samplecnn_se", **PLACES)
    samplecnn.milestones.append(999)  # a run's lists are its own, not the registry's
    assert get_model_spec("samplecnn_se").recipe["milestones"] == [100, 120]
    with pytest.raises(MdeError, match="unknown architecture 'nope'"):
        TrainConfig.for_model("nope", **PLACES)


def test_rmsprop_is_keras_rmsprop_and_the_switch_to_sgd_takes_switch_lr():
    params = [torch.nn.Parameter(torch.zeros(3))]
    config = TrainConfig.for_model("music2vec", **PLACES)
    rmsprop = build_optimizer(config, params)
    assert isinstance(rmsprop, torch.optim.RMSprop)
    group = rmsprop.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"]) == (1e-3, 0.9, 1e-7, 0)

    config = TrainConfig.for_model("samplecnn", **PLACES)
    assert build_optimizer(config, params).param_groups[0]["lr"] == 1e-4  # Adam at lr
    sgd = build_optimizer(config, params, "sgd")  # what adam_then_sgd switches to
    assert sgd.param_groups[0]["lr"] == 1e-3 and sgd.param_groups[0]["nesterov"]
    with pytest.raises(MdeError, match="switch learning rate"):
        TrainConfig.for_model("samplecnn", switch_lr=0.0, **PLACES)


def test_a_fresh_run_keeps_its_initial_weights_and_resume_leaves_them(synth_corpus, tmp_path):
    out = tmp_path / "run"
    settings = dict(dataset="manifest", data=str(synth_corpus), out=str(out), batch_size=16, crops_per_clip=1,
                    lr=1e-3, device="cpu", eval_crops=2, seed=3, schedule="adam_then_sgd", switch_epoch=1,
                    switch_lr=0.05, optimizer="adam")
    train(TrainConfig.for_model("fcn05", epochs=1, **settings))
    run = RunDir(out)
    path = run.initial
    assert path == out / "checkpoints" / "initial.pt"
    initial, best = run.load_checkpoint(path), run.load_checkpoint(run.best)
    assert set(initial) == set(best) and initial["epoch"] == 0 and initial["valid"] == {}
    assert initial["architecture"] == "fcn05" and initial["tag_names"] == best["tag_names"]
    seed_everything(3)
    fresh = build_model("fcn05", n_tags=len(initial["tag_names"])).state_dict()
    for key, value in fresh.items():  # taken before any step: the seeded initialisation itself
        torch.testing.assert_close(initial["model"][key], value, rtol=0, atol=0)
    assert any(not torch.equal(initial["model"][k], best["model"][k]) for k in fresh if k.endswith("weight"))

    before = path.read_bytes()
    train(TrainConfig.for_model("fcn05", epochs=2, **settings), resume=True)
    assert path.read_bytes() == before
    rows = (out / "log.csv").read_text().splitlines()
    assert float(rows[2].split(",")[4]) == pytest.approx(0.05)  # epoch 2: SGD at switch_lr


def test_block_picks_the_samplecnn_variant():
    from mde.trainer.models.samplecnn import samplecnn_model

    assert [samplecnn_model("samplecnn", b) for b in ("basic", "se", "res", "rese")] == [
        "samplecnn", "samplecnn_se", "samplecnn_res", "samplecnn_rese"]
    assert samplecnn_model("fcn05", None) == "fcn05"
    with pytest.raises(MdeError, match="--block applies to --model samplecnn only"):
        samplecnn_model("fcn05", "se")
    with pytest.raises(MdeError, match="--block must be one of basic, se, res, rese, got 'deep'"):
        samplecnn_model("samplecnn", "deep")


def test_cli_block_errors_are_one_line(tmp_path):
    from test_cli import assert_one_line_error, run_mde

    bad = run_mde("train", "--model", "fcn05", "--block", "se", "--dataset", "manifest", "--data", "x.csv",
                  "--out", tmp_path / "run", cwd=tmp_path, home=tmp_path)
    assert_one_line_error(bad, "--block applies to --model samplecnn only")
    assert not (tmp_path / "run").exists()


def test_cli_train_resolves_the_recipe_and_flags_into_config_json(synth_corpus, tmp_path, monkeypatch):
    from test_waveform_models import register_tiny_samplecnn
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app

    name = register_tiny_samplecnn()  # Sample-CNN's recipe on a small input
    _register_commands()
    monkeypatch.chdir(tmp_path)
    helped = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "come from the model family's recipe" in helped.output
    assert "(default: the model's recipe, else 10)" in helped.output
    result = CliRunner().invoke(app, [
        "train", "--model", name, "--dataset", "manifest", "--data", str(synth_corpus), "--out", "run",
        "--epochs", "1", "--lr", "0.003", "--crops-per-clip", "2", "--eval-crops", "all",
        "--precise-bn", "16", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    recipe = get_model_spec(name).recipe
    from_recipe = ("optimizer", "schedule", "switch_epoch", "switch_lr", "milestones", "batch_size")
    assert {k: saved[k] for k in from_recipe} == {k: recipe[k] for k in from_recipe}
    assert (saved["epochs"], saved["lr"], saved["crops_per_clip"], saved["eval_crops"]) == (1, 0.003, 2, None)
    assert saved["precise_bn"] == 16
    assert saved["weight_decay"] == recipe["weight_decay"] and saved["single_label"] is False
    assert (tmp_path / "run" / "checkpoints" / "initial.pt").is_file()


JETATAG_FLAG_ERRORS = [
    (["--model", "jetatag"], "--model jetatag needs --encoder hc, ms, sc"),
    (["--model", "jetatag", "--encoder", "xx"], "--model jetatag needs --encoder hc, ms, sc, got 'xx'"),
    (["--model", "fcn05", "--encoder", "hc"], "--encoder applies to --model jetatag only, not 'fcn05'"),
    (["--model", "jetatag", "--encoder", "hc", "--block", "se"], "--block applies to the sc encoder only"),
    (["--model", "jetatag", "--encoder", "sc", "--block", "xx"], "unknown Sample-CNN block 'xx'"),
    (["--model", "jetatag", "--encoder", "sc", "--epochs", "3", "--stage2-epochs", "4"],
     "--epochs 3 and --stage2-epochs 4 disagree"),
]


def test_cli_jetatag_flag_errors(tmp_path, monkeypatch):
    """Each bad mix of --model, --encoder, --block and the stage epochs is refused before anything is
    written (in process); the command line prints the first as one line."""
    from test_cli import assert_one_line_error, run_mde
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app
    from mde.errors import MdeError

    _register_commands()
    monkeypatch.chdir(tmp_path)
    for args, message in JETATAG_FLAG_ERRORS:
        result = CliRunner().invoke(app, ["train", *args, "--dataset", "manifest", "--data", "x.csv", "--out", "run"])
        assert isinstance(result.exception, MdeError) and message in str(result.exception), (args, result.output)
    assert not (tmp_path / "run").exists()
    bad = run_mde("train", *JETATAG_FLAG_ERRORS[0][0], "--dataset", "manifest", "--data", "x.csv", "--out",
                  tmp_path / "run", cwd=tmp_path, home=tmp_path)
    assert_one_line_error(bad, JETATAG_FLAG_ERRORS[0][1])
