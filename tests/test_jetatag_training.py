"""JETATAG's two stages in the trainer (mde.trainer.stages): the joint-embedding stage, then the classifier
on the frozen encoder (withJE), against noJE's one stage, on the synthesized tagged corpus. The encoder is a
narrow seven-block Sample-CNN registered here only (6,561 samples), as the Sample-CNN learning test does;
everything else (heads, joint loss, stages, schedules, resume) is JETATAG's."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from mde.trainer.config import TrainConfig  # noqa: E402
from mde.trainer.models import get_model_spec, register, registered_names  # noqa: E402

TINY = "jetatag_tiny_test"
TINY_WIDTHS = (32, 32, 64, 64, 64, 64, 128)


def register_tiny_jetatag() -> str:
    """JETATAG on a narrow Sample-CNN encoder (256 features) with JETATAG's recipe, registered once."""
    from mde.runtime.input_transform import MULAW_PEAK
    from mde.trainer.models.jetatag import JETATAG_RECIPE, Jetatag
    from mde.trainer.models.samplecnn import SAMPLECNN_RATE, SampleCNNEncoder, input_samples

    if TINY not in registered_names():
        features = sum(TINY_WIDTHS[-3:])
        register(TINY, architecture="JETATAG_SampleCNN_basic", input_length=input_samples(len(TINY_WIDTHS)),
                 waveform_rate=SAMPLECNN_RATE, input_transform=MULAW_PEAK, embedding_dim=features,
                 recipe=JETATAG_RECIPE, layers=("joint",))(
            lambda **kwargs: Jetatag(SampleCNNEncoder("basic", widths=TINY_WIDTHS), features=features, **kwargs))
    return TINY


def settings(synth_corpus, out, **more):
    return {"dataset": "manifest", "data": str(synth_corpus), "out": str(out), "lr": 3e-3, "batch_size": 8,
            "crops_per_clip": 4, "eval_crops": 4, "device": "cpu", "seed": 0, **more}


def encoder_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.net.encoder.state_dict().items()}


@pytest.fixture(scope="module")
def je_run(synth_corpus, tmp_path_factory):
    """withJE, 3 joint epochs then 3 classifier epochs: (trainer, results, the encoder's state after the
    joint stage, the run folder)."""
    from mde.trainer.loop import Trainer

    out = tmp_path_factory.mktemp("jetatag") / "je"
    trainer = Trainer(TrainConfig.for_model(register_tiny_jetatag(),
                                            **settings(synth_corpus, out, stage1_epochs=3, epochs=3)))
    frozen: dict[str, dict[str, torch.Tensor]] = {}

    def on_epoch(row):
        if row["epoch"] == 3:
            frozen["encoder"] = encoder_state(trainer)

    results = trainer.run(on_epoch=on_epoch)
    return trainer, results, frozen["encoder"], out


@pytest.fixture(scope="module")
def no_je_run(synth_corpus, tmp_path_factory):
    """noJE, 2 epochs of encoder and classifier together: (results, the run folder)."""
    from mde.trainer.loop import train

    out = tmp_path_factory.mktemp("jetatag") / "noje"
    return train(TrainConfig.for_model(register_tiny_jetatag(),
                                       **settings(synth_corpus, out, joint_embedding=False, epochs=2))), out


def test_with_je_trains_the_joint_space_then_the_classifier_on_the_frozen_encoder(je_run):
    trainer, results, frozen, out = je_run
    assert [(s.name, s.start, s.epochs) for s in trainer.stages] == [("joint", 0, 3), ("classifier", 3, 3)]
    assert results["test"]["roc_auc"] > 0.6, results  # 0.78 here (seed 0); chance is 0.5
    joint, classifier = results["stages"]["joint"], results["stages"]["classifier"]
    assert [r["epoch"] for r in joint] == [1, 2, 3] and [r["epoch"] for r in classifier] == [4, 5, 6]
    assert all("valid_score" not in r for r in joint) and all("valid_score" in r for r in classifier)
    assert joint[-1]["valid_loss"] < joint[0]["valid_loss"]  # the audio moves towards its tags' embedding
    assert results["best_epoch"] >= 4
    # the classifier stage leaves the encoder (weights and BatchNorm statistics) as the joint stage left it
    after = encoder_state(trainer)
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert all(not p.requires_grad for p in trainer.net.encoder.parameters())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["joint_embedding"], saved["stage1_epochs"], saved["optimizer"], saved["precise_bn"]) == (
        True, 3, "adam", 256)


def test_no_je_is_one_stage_and_resume_crosses_the_stage_boundary(no_je_run, synth_corpus, tmp_path):
    from mde.trainer.loop import Trainer, train

    plain, _ = no_je_run
    assert "stages" not in plain and plain["best_epoch"] >= 1
    # stop at the end of the joint stage, then resume into the classifier stage
    name = register_tiny_jetatag()
    out = tmp_path / "resumed"
    train(TrainConfig.for_model(name, **settings(synth_corpus, out, stage1_epochs=2, epochs=1)))
    resumed = Trainer(TrainConfig.for_model(name, **settings(synth_corpus, out, stage1_epochs=2, epochs=2)),
                      resume=True)
    assert resumed.epoch == 3 and resumed.stage.name == "classifier"
    results = resumed.run()
    assert [r["epoch"] for r in results["stages"]["classifier"]] == [3, 4]


def test_eval_tables_the_runs_by_variant(je_run, no_je_run, synth_corpus, tmp_path):
    """`mde eval RUN RUN` (in process: the tiny encoder is registered here only): the runs' own test figures,
    then the same table re-evaluated on a split given with --dataset and --data."""
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app

    _register_commands()
    (_, je_results, _, je_out), (no_je_results, no_je_out) = je_run, no_je_run
    table = tmp_path / "table.json"
    result = CliRunner().invoke(app, ["eval", str(no_je_out), str(je_out), "--markdown", "--out", str(table)])
    assert result.exit_code == 0, result.output
    header, rule, row = result.stdout.strip().splitlines()
    assert rule == "|---|---:|---:|---:|---:|"
    assert header == "| model | noJE ROC-AUC | noJE PR-AUC | withJE ROC-AUC | withJE PR-AUC |"
    assert row == (f"| {TINY} | {no_je_results['test']['roc_auc']:.4f} | {no_je_results['test']['pr_auc']:.4f} | "
                   f"{je_results['test']['roc_auc']:.4f} | {je_results['test']['pr_auc']:.4f} |")
    written = json.loads(table.read_text())
    assert [(r["variant"], r["roc_auc"]) for r in written["runs"]] == [
        ("noJE", no_je_results["test"]["roc_auc"]), ("withJE", je_results["test"]["roc_auc"])]
    # re-evaluated on the valid split: the best checkpoints' figures as the runs measured them at the end
    result = CliRunner().invoke(app, ["eval", str(je_out), str(no_je_out), "--dataset", "manifest", "--data",
                                      str(synth_corpus), "--split", "valid", "--eval-crops", "4", "--out", str(table)])
    assert result.exit_code == 0, result.output
    runs = {r["variant"]: r for r in json.loads(table.read_text())["runs"]}
    assert runs["withJE"]["roc_auc"] == pytest.approx(je_results["valid"]["roc_auc"], abs=1e-6)
    assert runs["noJE"]["pr_auc"] == pytest.approx(no_je_results["valid"]["pr_auc"], abs=1e-6)


def test_the_exported_run_places_tags_and_audio_in_one_space(je_run, no_je_run, synth_corpus, tmp_path):
    """withJE exports its joint output and tag encoder (ONNX Runtime against torch); a clip's joint point lies
    nearer its own tags' point than other clips' tags; noJE, whose tag space never trained, exports neither."""
    import csv

    import numpy as np

    from mde.errors import MdeError, ModelError
    from mde.export.export import export_model
    from mde.runtime.extractor import load_model

    (trainer, _, _, je_out), (_, no_je_out) = je_run, no_je_run
    info = export_model(je_out, tmp_path / "je.onnx").info
    assert info.outputs["joint"] == 128 and info.tag_encoder is not None
    model = load_model(tmp_path / "je.onnx", threads=1)
    names = list(info.tag_names)
    net = trainer.net.cpu().eval()
    with torch.no_grad():
        want = net.embed_tags(torch.tensor([[float(n in ("piano", "slow")) for n in names]]))[0].numpy()
    point = model.embed_tags(["piano", "slow"])
    assert np.abs(point - want).max() < 1e-5 and abs(float(np.linalg.norm(point)) - 1) < 1e-5

    root = synth_corpus.parent
    with open(synth_corpus, newline="") as f:
        test = [(root / r["path"], r["tags"].split("|")) for r in csv.DictReader(f) if r["split"] == "test"]
    audio = np.stack([model.embed(path, layer="joint").embedding.mean(axis=0) for path, _ in test])
    tags = np.stack([model.embed_tags(t) for _, t in test])
    similarity = audio @ tags.T  # row: a clip's audio, column: a clip's tags
    own, other = np.diag(similarity).mean(), similarity[~np.eye(len(test), dtype=bool)].mean()
    assert own > other, (own, other)

    with pytest.raises(MdeError, match="has no tag 'pianoo'; did you mean 'piano'"):
        model.embed_tags(["pianoo"])
    with pytest.raises(MdeError, match="at least one tag"):
        model.embed_tags([])
    plain = export_model(no_je_out, tmp_path / "noje.onnx").info
    assert "joint" not in plain.outputs and plain.tag_encoder is None
    with pytest.raises(ModelError, match="has no tag encoder"):
        load_model(tmp_path / "noje.onnx").embed_tags(["piano"])


def test_mde_embed_writes_the_joint_layer_of_real_audio(je_run, shared_data, tmp_path):
    """`mde embed -m M.onnx --layer joint` on a real MP3: one unit-norm 128-d row per window, as the API gives."""
    import numpy as np
    from typer.testing import CliRunner

    from mde.cli.app import _register_commands, app
    from mde.export.export import export_model
    from mde.runtime.extractor import load_model

    export_model(je_run[3], tmp_path / "je.onnx")
    clip = shared_data / "audio" / "TRWJAZW128F42760DD_test.mp3"
    _register_commands()
    result = CliRunner().invoke(app, ["embed", str(clip), "-m", str(tmp_path / "je.onnx"), "--layer", "joint",
                                      "-o", str(tmp_path / "emb")])
    assert result.exit_code == 0, result.output
    stored = np.load(next((tmp_path / "emb").glob("*.npz")))["embedding"]
    assert stored.shape[1] == 128 and stored.shape[0] > 1
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1, atol=1e-4)
    direct = load_model(tmp_path / "je.onnx").embed(clip, layer="joint").embedding
    np.testing.assert_allclose(stored, direct, atol=1e-5)


def test_the_joint_stage_needs_a_jetatag_model_and_an_epoch(synth_corpus, tmp_path):
    from mde.errors import MdeError
    from mde.trainer.loop import Trainer

    with pytest.raises(MdeError, match="needs a JETATAG model"):
        Trainer(TrainConfig(model="fcn05", joint_embedding=True, stage1_epochs=1,
                            **settings(synth_corpus, tmp_path / "fcn")))
    with pytest.raises(MdeError, match="at least one epoch"):
        TrainConfig.for_model(register_tiny_jetatag(), stage1_epochs=0, **settings(synth_corpus, tmp_path / "x"))
    assert get_model_spec("jetatag_sc").recipe["stage1_epochs"] == 100
