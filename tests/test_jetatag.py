"""JETATAG's heads and joint loss against the source's layer list (jaehwlee/jetatag, training/model.py and
solver.py at b6a1aac): parameter counts worked out here from the table, the alignment the loss intends
(not the source's sign slip), and the registered variants."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mde.runtime.input_transform import MULAW_PEAK  # noqa: E402
from mde.trainer.models import build_model, get_model_spec  # noqa: E402
from mde.trainer.models.jetatag import Jetatag, jetatag_model, joint_loss  # noqa: E402


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


HEADS = {  # the source's layer list for MagnaTagATune (50 tags, latent 128), weights + biases
    "projector": dense(1024, 128) + dense(128, 128),
    "classifier": dense(1024, 256) + dense(256, 256) + dense(256, 50),
    "tag_encoder": dense(50, 128) + dense(128, 128),
    "tag_decoder": dense(128, 128) + dense(128, 50),
}


@pytest.fixture(scope="module")
def net() -> Jetatag:
    torch.manual_seed(0)
    return Jetatag("sc", block="basic").eval()


def test_heads_match_the_layer_list(net):
    for name, expected in HEADS.items():
        assert count(getattr(net, name)) == expected, name


@pytest.mark.parametrize("block", ["basic", "se", "res", "rese"])
def test_the_sample_cnn_encoder_is_sample_cnn_without_its_tag_head(block):
    encoder = Jetatag("sc", block=block).encoder
    tagger = build_model(f"samplecnn{'' if block == 'basic' else '_' + block}")
    assert count(encoder) == count(tagger) - dense(1024, 50)


def test_outputs_and_the_joint_space(net):
    waveform = torch.rand(2, 59049) * 2 - 1
    with torch.no_grad():
        out = net(waveform)
        z = net.embed_tags(torch.tensor([[1.0] * 3 + [0.0] * 47, [0.0] * 49 + [1.0]]))
    assert out["embedding"].shape == (2, 1024) and out["joint"].shape == (2, 128)
    assert out["logits"].shape == out["tags"].shape == (2, 50)
    assert torch.allclose(out["tags"], torch.sigmoid(out["logits"]))
    assert torch.allclose(out["joint"].norm(dim=1), torch.ones(2), atol=1e-5)
    assert z.shape == (2, 128) and torch.allclose(z.norm(dim=1), torch.ones(2), atol=1e-5)


def test_the_joint_loss_aligns_audio_with_tags(net):
    tags = (torch.rand(8, 50) < 0.1).float()
    with torch.no_grad():
        z_tags = net.tag_encoder(tags)
    same = joint_loss(net, z_tags, tags)
    assert same["alignment"].item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        decoded = torch.sigmoid(net.tag_decoder(z_tags))
    assert same["reconstruction"].item() == pytest.approx(((decoded - tags) ** 2).mean().item(), rel=1e-5)
    assert same["total"].item() == pytest.approx(same["reconstruction"].item() + same["alignment"].item())
    # gradient descent on the audio side moves it towards the tags' embedding (the source's 1 + cos would
    # push it away)
    joint = torch.nn.functional.normalize(torch.randn(8, 128), dim=1).requires_grad_()
    before = joint_loss(net, joint, tags)["alignment"]
    before.backward()
    with torch.no_grad():
        moved = joint - 0.5 * joint.grad
        cos_before = torch.nn.functional.cosine_similarity(joint, z_tags).mean()
        cos_after = torch.nn.functional.cosine_similarity(moved, z_tags).mean()
    assert joint_loss(net, moved, tags)["alignment"] < before and cos_after > cos_before


def test_registered_variants():
    assert [jetatag_model("sc", b) for b in (None, "basic", "se", "res", "rese")] == [
        "jetatag_sc", "jetatag_sc", "jetatag_sc_se", "jetatag_sc_res", "jetatag_sc_rese"]
    assert (jetatag_model("hc", None), jetatag_model("ms", None)) == ("jetatag_hc", "jetatag_ms")
    for encoder, block in (("hc", "se"), ("ms", "rese"), ("xx", None), ("sc", "xx")):
        with pytest.raises(ValueError):
            jetatag_model(encoder, block)
    for name, samples in (("jetatag_hc", 80000), ("jetatag_ms", 59049), ("jetatag_sc_rese", 59049)):
        spec = get_model_spec(name)
        assert (spec.input_length, spec.sample_rate, spec.input_transform, spec.embedding_dim) == (
            samples, 16000, MULAW_PEAK, 1024)
        assert spec.recipe["schedule"] == "adam_then_sgd" and spec.recipe["milestones"] == [80, 100]
