"""The fp32 graph rewrites applied before int8 quantization (mde.export.graph_rewrite): musicnn's
post-ReLU BatchNorms moved after the max over mel, its k x 1 temporal convs transposed to 1 x k rows.
Both must leave the fp32 outputs equal (within 1e-5) and leave other graphs alone."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from mde.export.export import optimize_basic  # noqa: E402
from mde.export.graph_rewrite import (  # noqa: E402
    REWRITTEN_POOL_SUFFIX,
    pool_before_post_relu_batchnorm,
    transpose_column_convs,
)
from mde.export.quantize import float_nodes, rewrite_for_int8  # noqa: E402


def _randomize_batchnorms(module: torch.nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine weights far from their init: half the scales negative, one zero."""
    generator = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            with torch.no_grad():
                bn.weight.copy_(torch.randn(n, generator=generator))
                bn.weight[0] = 0.0
                bn.bias.copy_(torch.randn(n, generator=generator))
                bn.running_mean.copy_(torch.randn(n, generator=generator))
                bn.running_var.copy_(torch.rand(n, generator=generator) + 0.1)


def _onnx(module: torch.nn.Module, logmel: np.ndarray) -> onnx.ModelProto:
    """``module`` exported (dynamic batch and frames) and simplified by ORT BASIC, as mde export does."""
    buffer = io.BytesIO()
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(logmel),), buffer, dynamo=False, input_names=["logmel"],
                          dynamic_axes={"logmel": {0: "batch", 2: "frames"}}, opset_version=17)
    return onnx.load_from_string(optimize_basic(buffer.getvalue()))


def _outputs(model: onnx.ModelProto, logmel: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"logmel": logmel})


class _Outputs(torch.nn.Module):
    def __init__(self, module: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.module, self.names = module, names

    def forward(self, logmel):
        result = self.module(logmel)
        return tuple(result[name] for name in self.names)


def test_musicnn_rewrites_keep_fp32_outputs_and_move_the_batchnorms_after_the_mel_max():
    from mde.trainer.models import get_model_spec

    network = get_model_spec("musicnn").factory(n_tags=10)
    _randomize_batchnorms(network, seed=0)
    rng = np.random.default_rng(0)
    logmel = rng.normal(1.0, 1.0, size=(2, 96, 187)).astype(np.float32)
    model = _onnx(_Outputs(network, ("penultimate", "tags", "max_pool", "mean_pool")), logmel)
    before = onnx.ModelProto()
    before.CopyFrom(model)
    rewritten = rewrite_for_int8(model)
    onnx.checker.check_model(rewritten)

    nodes = list(rewritten.graph.node)
    pools = [node for node in nodes if node.op_type == "MaxPool"]
    assert len(pools) == 5 and all(node.name.endswith(REWRITTEN_POOL_SUFFIX) for node in pools)
    producer = {out: node for node in nodes for out in node.output}
    front_end = [node for node in nodes if node.op_type == "BatchNormalization" and "/module/t" in node.name]
    assert len(front_end) == 5  # timbral.0-1, temporal.0-2: now on the pooled (batch, filters, frames) map
    for bn in front_end:
        relu = producer[bn.input[0]]
        assert relu.op_type == "Relu" and producer[relu.input[0]].op_type in ("Squeeze", "Mul")
    rows = [node for node in nodes if node.op_type == "Conv" and node.name.endswith("/row")]
    assert len(rows) == 3  # the temporal 128, 64, 32 x 1 convs, now 1 x k
    assert float_nodes(rewritten) == []  # nothing left that int8 runs slower
    assert float_nodes(before) == [node.name for node in before.graph.node
                                   if node.op_type == "Conv" and "temporal" in node.name]

    for frames in (187, 150):  # the frame axis stays dynamic
        x = np.ascontiguousarray(logmel[:, :, :frames])
        for got, want in zip(_outputs(rewritten, x), _outputs(before, x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


class _SharedBatchNorm(torch.nn.Module):
    """conv -> ReLU -> BN -> max over the last axis, the BN output also read elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, (3, 5))
        self.bn = torch.nn.BatchNorm2d(4)

    def forward(self, logmel):
        y = self.bn(torch.relu(self.conv(logmel.unsqueeze(1))))
        return y.amax(dim=3), y.mean(dim=3)


def test_rewrites_leave_a_shared_batchnorm_and_other_graphs_alone(shared_data):
    module = _SharedBatchNorm()
    _randomize_batchnorms(module, seed=1)
    logmel = np.random.default_rng(1).normal(size=(1, 16, 20)).astype(np.float32)
    model = _onnx(module, logmel)
    ops = [node.op_type for node in model.graph.node]
    assert [node.op_type for node in transpose_column_convs(pool_before_post_relu_batchnorm(model)).graph.node] == ops

    from conftest import FCN05_CKPT

    from mde.export.examples import example_inputs
    from mde.export.importers.seed import load_seed

    network, info = load_seed(shared_data / FCN05_CKPT)
    fcn = _onnx(_Outputs(network, tuple(info.outputs)), example_inputs(info, 1))
    ops = [node.op_type for node in fcn.graph.node]
    assert [node.op_type for node in rewrite_for_int8(fcn).graph.node] == ops
