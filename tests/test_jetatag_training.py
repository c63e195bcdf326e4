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
                 recipe=JETATAG_RECIPE)(
            lambda **kwargs: Jetatag(SampleCNNEncoder("basic", widths=TINY_WIDTHS), features=features, **kwargs))
    return TINY


def settings(synth_corpus, out, **more):
    return {"dataset": "manifest", "data": str(synth_corpus), "out": str(out), "lr": 3e-3, "batch_size": 8,
            "crops_per_clip": 4, "eval_crops": 4, "device": "cpu", "seed": 0, **more}


def encoder_state(trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.net.encoder.state_dict().items()}


def test_with_je_trains_the_joint_space_then_the_classifier_on_the_frozen_encoder(synth_corpus, tmp_path):
    from mde.trainer.loop import Trainer

    name = register_tiny_jetatag()
    out = tmp_path / "je"
    trainer = Trainer(TrainConfig.for_model(name, **settings(synth_corpus, out, stage1_epochs=3, epochs=3)))
    assert [(s.name, s.start, s.epochs) for s in trainer.stages] == [("joint", 0, 3), ("classifier", 3, 3)]
    frozen: dict[str, dict[str, torch.Tensor]] = {}

    def on_epoch(row):
        if row["epoch"] == 3:
            frozen["encoder"] = encoder_state(trainer)

    results = trainer.run(on_epoch=on_epoch)
    assert results["test"]["roc_auc"] > 0.6, results  # 0.78 here (seed 0); chance is 0.5
    joint, classifier = results["stages"]["joint"], results["stages"]["classifier"]
    assert [r["epoch"] for r in joint] == [1, 2, 3] and [r["epoch"] for r in classifier] == [4, 5, 6]
    assert all("valid_score" not in r for r in joint) and all("valid_score" in r for r in classifier)
    assert joint[-1]["valid_loss"] < joint[0]["valid_loss"]  # the audio moves towards its tags' embedding
    assert results["best_epoch"] >= 4
    # the classifier stage leaves the encoder (weights and BatchNorm statistics) as the joint stage left it
    after = encoder_state(trainer)
    assert all(torch.equal(after[k], v) for k, v in frozen["encoder"].items())
    assert all(not p.requires_grad for p in trainer.net.encoder.parameters())
    saved = json.loads((out / "config.json").read_text())
    assert (saved["joint_embedding"], saved["stage1_epochs"], saved["optimizer"], saved["precise_bn"]) == (
        True, 3, "adam", 256)


def test_no_je_is_one_stage_and_resume_crosses_the_stage_boundary(synth_corpus, tmp_path):
    from mde.trainer.loop import Trainer, train

    name = register_tiny_jetatag()
    plain = train(TrainConfig.for_model(name, **settings(synth_corpus, tmp_path / "noje", joint_embedding=False,
                                                          epochs=2)))
    assert "stages" not in plain and plain["best_epoch"] >= 1
    # stop at the end of the joint stage, then resume into the classifier stage
    out = tmp_path / "resumed"
    train(TrainConfig.for_model(name, **settings(synth_corpus, out, stage1_epochs=2, epochs=1)))
    resumed = Trainer(TrainConfig.for_model(name, **settings(synth_corpus, out, stage1_epochs=2, epochs=2)),
                      resume=True)
    assert resumed.epoch == 3 and resumed.stage.name == "classifier"
    results = resumed.run()
    assert [r["epoch"] for r in results["stages"]["classifier"]] == [3, 4]


def test_the_joint_stage_needs_a_jetatag_model_and_an_epoch(synth_corpus, tmp_path):
    from mde.errors import MdeError
    from mde.trainer.loop import Trainer

    with pytest.raises(MdeError, match="needs a JETATAG model"):
        Trainer(TrainConfig(model="fcn05", joint_embedding=True, stage1_epochs=1,
                            **settings(synth_corpus, tmp_path / "fcn")))
    with pytest.raises(MdeError, match="at least one epoch"):
        TrainConfig.for_model(register_tiny_jetatag(), stage1_epochs=0, **settings(synth_corpus, tmp_path / "x"))
    assert get_model_spec("jetatag_sc").recipe["stage1_epochs"] == 100
