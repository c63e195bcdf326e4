"""fp32 graph rewrites applied before int8 quantization (:func:`mde.export.quantize.rewrite_for_int8`).

musicnn's front end is five branches ``Conv -> Relu -> BatchNormalization -> ReduceMax`` over the mel
axis. The BatchNorm follows the ReLU, so it cannot be folded into the conv, and it runs in float32 on the
whole (batch, filters, frames, mel) map. :func:`pool_before_post_relu_batchnorm` moves the max over mel
ahead of the ReLU and the BatchNorm, as a MaxPool that ONNX Runtime runs on the int8 conv output, so the
float work is done on a map 30-96 times smaller. :func:`transpose_column_convs` then turns the k x 1
temporal convs into 1 x k ones on the transposed input, the layout ORT's int8 convolution is fast on.
Both are exact in real arithmetic and keep the fp32 outputs equal up to float rounding (see each
docstring); ``to_int8`` checks that on real windows and ``tests/test_quantize_fold.py`` in the tests.
Graphs without these patterns (FCN, ...) are left unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

REWRITTEN_POOL_SUFFIX = "/mel_maxpool"
"""Name suffix of the MaxPool nodes :func:`pool_before_post_relu_batchnorm` inserts."""


def _sole_reader_finder(graph: Any) -> Callable[[str, str], Any]:
    """A function (tensor, op_type) -> the one node that reads ``tensor`` if it is of ``op_type`` and
    the tensor is not a graph output, else None."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {output.name for output in graph.output}

    def only_reader(tensor: str, op_type: str) -> Any:
        readers = consumers.get(tensor, [])
        if tensor in outputs or len(readers) != 1 or readers[0].op_type != op_type:
            return None
        return readers[0]

    return only_reader


def pool_before_post_relu_batchnorm(model: Any) -> Any:
    """``model`` (an onnx.ModelProto, changed in place and returned) with every chain
    ``Conv -> Relu -> BatchNormalization -> ReduceMax(last axis, keepdims=0)`` (each tensor read only by
    the next node, a static last axis) replaced by
    ``Conv' -> MaxPool(1 x last axis) -> Squeeze -> [Mul(sign)] -> Relu -> BatchNormalization``.

    Per channel c the BatchNorm is y = a_c * x + b_c with a_c = scale_c / sqrt(var_c + eps). Where
    a_c >= 0, y is non-decreasing in x, and so is ReLU: max over mel of BN(ReLU(x)) = BN(ReLU(max x)).
    Where a_c < 0 the max is reached at the smallest x: BN(ReLU(min x)) = BN(ReLU(-max(-x))); Conv' is
    the conv with the weights and bias of those channels negated (so it outputs -x there), and Mul
    multiplies the pooled value by the sign s_c = -1 back. Float rounding is monotone too, so the rewrite
    is exact in principle; in practice ONNX Runtime's BatchNorm kernel may round a value differently on
    the smaller map (about 1 ulp: max |delta| ~4e-7 relative on MTT_musicnn). The MaxPool is quantizable:
    ONNX Runtime runs it on the int8 conv output.

    The last axis must have a static size: run shape-resolving simplification first (the file
    ``quant_pre_process`` writes, or ORT's BASIC optimization, folds musicnn's computed Pad amounts).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    only_reader = _sole_reader_finder(graph)
    producer = {out: node for node in graph.node for out in node.output}
    shapes = _static_shapes(model)

    replaced: dict[int, list[Any]] = {}
    removed: set[int] = set()
    for reduce in graph.node:
        if reduce.op_type != "ReduceMax" or len(reduce.input) != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in reduce.attribute}
        shape = shapes.get(reduce.input[0])
        if shape is None or len(shape) < 3 or attrs.get("keepdims", 1) != 0:
            continue
        axes = [axis % len(shape) for axis in attrs.get("axes", [])]
        width = shape[-1]
        if axes != [len(shape) - 1] or not isinstance(width, int) or width < 1:
            continue
        bn = producer.get(reduce.input[0])
        if bn is None or bn.op_type != "BatchNormalization" or only_reader(bn.output[0], "ReduceMax") is not reduce:
            continue
        relu = producer.get(bn.input[0])
        if relu is None or relu.op_type != "Relu" or only_reader(relu.output[0], "BatchNormalization") is not bn:
            continue
        conv = producer.get(relu.input[0])
        if conv is None or conv.op_type != "Conv" or only_reader(conv.output[0], "Relu") is not relu:
            continue
        if not all(name in inits for name in [*conv.input[1:], *bn.input[1:]]):
            continue
        scale = numpy_helper.to_array(inits[bn.input[1]])
        sign = np.where(scale < 0, -1.0, 1.0).astype(np.float32)
        prefix = conv.name or conv.output[0]
        new_conv = helper.make_node("Conv", [conv.input[0], *conv.input[1:]], [f"{prefix}/signed_output"],
                                    name=f"{prefix}/signed")
        new_conv.attribute.extend(conv.attribute)
        if (sign < 0).any():
            for k, name in enumerate(conv.input[1:3]):
                value = numpy_helper.to_array(inits[name])
                flipped = value * sign.reshape((-1,) + (1,) * (value.ndim - 1))
                new_name = f"{prefix}/{('weight', 'bias')[k]}_signed"
                graph.initializer.append(numpy_helper.from_array(flipped.astype(value.dtype), new_name))
                new_conv.input[1 + k] = new_name
        pool_out = f"{prefix}{REWRITTEN_POOL_SUFFIX}_output"
        kernel = [1] * (len(shape) - 3) + [width]
        nodes = [new_conv,
                 helper.make_node("MaxPool", [new_conv.output[0]], [pool_out], name=f"{prefix}{REWRITTEN_POOL_SUFFIX}",
                                  kernel_shape=kernel),
                 helper.make_node("Squeeze", [pool_out, f"{prefix}/squeeze_axes"], [f"{prefix}/pooled"],
                                  name=f"{prefix}/squeeze")]
        squeeze_axes = np.array([len(shape) - 1], np.int64)
        graph.initializer.append(numpy_helper.from_array(squeeze_axes, f"{prefix}/squeeze_axes"))
        pooled = f"{prefix}/pooled"
        if (sign < 0).any():
            sign_shape = (-1,) + (1,) * (len(shape) - 3)
            graph.initializer.append(numpy_helper.from_array(sign.reshape(sign_shape), f"{prefix}/channel_sign"))
            nodes.append(helper.make_node("Mul", [pooled, f"{prefix}/channel_sign"], [f"{prefix}/unsigned"],
                                          name=f"{prefix}/unsign"))
            pooled = f"{prefix}/unsigned"
        nodes.append(helper.make_node("Relu", [pooled], [f"{prefix}/pooled_relu"], name=relu.name))
        new_bn = helper.make_node("BatchNormalization", [f"{prefix}/pooled_relu", *bn.input[1:]], [reduce.output[0]],
                                  name=bn.name)
        new_bn.attribute.extend(bn.attribute)
        nodes.append(new_bn)
        replaced[id(conv)] = nodes
        removed.update({id(relu), id(bn), id(reduce)})
    if replaced:
        _splice(graph, replaced, removed)
    return model


def _splice(graph: Any, replaced: dict[int, list[Any]], removed: set[int]) -> Any:
    """``graph`` with the nodes keyed (by id) in ``replaced`` swapped for their new nodes, those in
    ``removed`` dropped, initializers nothing reads dropped and stale value_info cleared."""
    kept = []
    for node in graph.node:
        if id(node) in replaced:
            kept.extend(replaced[id(node)])
        elif id(node) not in removed:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    read = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in read]
    for init in unused:
        graph.initializer.remove(init)
    del graph.value_info[:]  # stale shapes of the removed tensors
    return graph


def _static_shapes(model: Any) -> dict[str, list[Any]]:
    """{tensor: dims} from ONNX shape inference; an int for a known dim, a str or None otherwise."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return shapes


def transpose_column_convs(model: Any) -> Any:
    """``model`` (an onnx.ModelProto, changed in place and returned) with every single-input-channel 2-d
    Conv whose kernel is a k x 1 column (k > 1), read only by a MaxPool over the whole last axis (as
    :func:`pool_before_post_relu_batchnorm` writes it) read only by a Squeeze of that axis, computed on
    the transposed map: ``Transpose(x) -> Conv(1 x k) -> MaxPool(W x 1) -> Squeeze(axis 2)``.

    The sums are the same products (in another order: equal up to float rounding, ~1e-7 relative). The
    point is speed in int8: ONNX Runtime's QLinearConv gathers each output's receptive field (im2col)
    along the last axis, so a k x 1 column over one channel is k one-byte copies per output, and
    musicnn's temporal convs (128, 64, 32 x 1) ran 4x slower in int8 than in fp32; a 1 x k row is one
    k-byte copy.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    only_reader = _sole_reader_finder(graph)

    replaced: dict[int, list[Any]] = {}
    removed: set[int] = set()
    for conv in graph.node:
        if conv.op_type != "Conv" or len(conv.input) < 2 or conv.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if weight.ndim != 4 or weight.shape[1] != 1 or weight.shape[3] != 1 or weight.shape[2] < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if attrs.get("group", 1) != 1 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        pool = only_reader(conv.output[0], "MaxPool")
        if pool is None:
            continue
        pool_attrs = {a.name: helper.get_attribute_value(a) for a in pool.attribute}
        kernel = list(pool_attrs.get("kernel_shape", []))
        if (len(kernel) != 2 or kernel[0] != 1 or set(pool_attrs) - {"kernel_shape"}
                or len(pool.output) != 1):
            continue
        squeeze = only_reader(pool.output[0], "Squeeze")
        if (squeeze is None or len(squeeze.input) != 2 or squeeze.input[1] not in inits
                or numpy_helper.to_array(inits[squeeze.input[1]]).tolist() not in ([3], [-1])):
            continue
        prefix = conv.name or conv.output[0]
        swapped = f"{prefix}/transposed_input"
        new_weight = f"{prefix}/weight_row"
        graph.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(weight.transpose(0, 1, 3, 2)), new_weight))
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        new_attrs: dict[str, Any] = {
            "kernel_shape": [1, int(weight.shape[2])], "pads": [pads[1], pads[0], pads[3], pads[2]],
            "strides": list(attrs.get("strides", [1, 1]))[::-1],
            "dilations": list(attrs.get("dilations", [1, 1]))[::-1]}
        axes = f"{prefix}/squeeze_time_axes"
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
        replaced[id(conv)] = [
            helper.make_node("Transpose", [conv.input[0]], [swapped], name=f"{prefix}/transpose", perm=[0, 1, 3, 2]),
            helper.make_node("Conv", [swapped, new_weight, *conv.input[2:]], [f"{prefix}/row_output"],
                             name=f"{prefix}/row", **new_attrs),
            helper.make_node("MaxPool", [f"{prefix}/row_output"], [pool.output[0]], name=pool.name,
                             kernel_shape=[kernel[1], 1]),
            helper.make_node("Squeeze", [pool.output[0], axes], list(squeeze.output), name=squeeze.name),
        ]
        removed.update({id(pool), id(squeeze)})
    if replaced:
        _splice(graph, replaced, removed)
    return model
