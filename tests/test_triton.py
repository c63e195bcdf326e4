"""The Triton repository layout: config.pbtxt parses strictly as Triton's ModelConfig; the model file runs."""

import json
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from mde.export.triton import write_triton_repository
from mde.runtime import store
from mde.runtime.package import read_model_info

F = descriptor_pb2.FieldDescriptorProto


def _model_config_class():
    """ModelConfig built from a faithful subset of triton-inference-server/common protobuf/model_config.proto
    (same package, message, field and enum names and numbers)."""
    proto = descriptor_pb2.FileDescriptorProto(name="mde_test_model_config.proto", package="inference", syntax="proto3")
    data_type = proto.enum_type.add(name="DataType")
    for name, number in [("TYPE_INVALID", 0), ("TYPE_BOOL", 1), ("TYPE_UINT8", 2), ("TYPE_UINT16", 3),
                         ("TYPE_UINT32", 4), ("TYPE_UINT64", 5), ("TYPE_INT8", 6), ("TYPE_INT16", 7),
                         ("TYPE_INT32", 8), ("TYPE_INT64", 9), ("TYPE_FP16", 10), ("TYPE_FP32", 11),
                         ("TYPE_FP64", 12), ("TYPE_STRING", 13), ("TYPE_BF16", 14)]:
        data_type.value.add(name=name, number=number)

    def field(message, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None):
        entry = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            entry.type_name = type_name

    group = proto.message_type.add(name="ModelInstanceGroup")
    kind = group.enum_type.add(name="Kind")
    for name, number in [("KIND_AUTO", 0), ("KIND_GPU", 1), ("KIND_CPU", 2), ("KIND_MODEL", 3)]:
        kind.value.add(name=name, number=number)
    field(group, "name", 1, F.TYPE_STRING)
    field(group, "count", 2, F.TYPE_INT32)
    field(group, "gpus", 3, F.TYPE_INT32, F.LABEL_REPEATED)
    field(group, "kind", 4, F.TYPE_ENUM, type_name=".inference.ModelInstanceGroup.Kind")
    model_input = proto.message_type.add(name="ModelInput")
    field(model_input, "name", 1, F.TYPE_STRING)
    field(model_input, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(model_input, "dims", 4, F.TYPE_INT64, F.LABEL_REPEATED)
    model_output = proto.message_type.add(name="ModelOutput")
    field(model_output, "name", 1, F.TYPE_STRING)
    field(model_output, "data_type", 2, F.TYPE_ENUM, type_name=".inference.DataType")
    field(model_output, "dims", 3, F.TYPE_INT64, F.LABEL_REPEATED)
    batching = proto.message_type.add(name="ModelDynamicBatching")
    field(batching, "preferred_batch_size", 1, F.TYPE_INT32, F.LABEL_REPEATED)
    field(batching, "max_queue_delay_microseconds", 2, F.TYPE_UINT64)
    parameter = proto.message_type.add(name="ModelParameter")
    field(parameter, "string_value", 1, F.TYPE_STRING)
    config = proto.message_type.add(name="ModelConfig")
    entry = config.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_MESSAGE, type_name=".inference.ModelParameter")
    field(config, "name", 1, F.TYPE_STRING)
    field(config, "platform", 2, F.TYPE_STRING)
    field(config, "max_batch_size", 4, F.TYPE_INT32)
    field(config, "input", 5, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInput")
    field(config, "output", 6, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelOutput")
    field(config, "instance_group", 7, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelInstanceGroup")
    field(config, "dynamic_batching", 11, F.TYPE_MESSAGE, type_name=".inference.ModelDynamicBatching")
    field(config, "parameters", 14, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".inference.ModelConfig.ParametersEntry")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


def _parse(folder: Path):
    config = _model_config_class()()
    text_format.Parse((folder / "config.pbtxt").read_text(), config)  # strict: unknown fields raise
    return config


def test_onnx_entry_parses_as_model_config_and_runs_like_the_source(tiny_model, tmp_path):
    import onnxruntime as ort

    source = store.resolve(tiny_model)
    folder = write_triton_repository(source, tmp_path / "repo", max_batch=16)
    assert folder == tmp_path / "repo" / "tiny"
    config = _parse(folder)
    assert config.name == "tiny" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 16
    kinds = {field.name: field for field in config.DESCRIPTOR.fields}
    data_type = kinds["input"].message_type.fields_by_name["data_type"].enum_type
    assert [(i.name, data_type.values_by_number[i.data_type].name, list(i.dims)) for i in config.input] == [
        ("logmel", "TYPE_FP32", [16, -1])
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("embedding", [16]), ("tags", [3])]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert len(config.instance_group) == 1 and config.instance_group[0].kind == 2  # KIND_CPU
    assert json.loads(config.parameters["mde"].string_value) == json.loads(read_model_info(source).to_json())

    batch = np.random.default_rng(0).standard_normal((3, 16, 31)).astype(np.float32)
    outputs = {}
    for path in (source, folder / "1" / "model.onnx"):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs[path] = session.run(None, {"logmel": batch})
    for ours, theirs in zip(*outputs.values()):
        np.testing.assert_array_equal(ours, theirs)


def test_plan_entry_is_a_gpu_tensorrt_model(tiny_model, tmp_path):
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"engine bytes")
    folder = write_triton_repository(store.resolve(tiny_model), tmp_path / "repo", max_batch=8, plan=plan)
    config = _parse(folder)
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == 1  # KIND_GPU
    assert (folder / "1" / "model.plan").read_bytes() == b"engine bytes"
    assert not (folder / "1" / "model.onnx").exists()


def test_config_with_an_unknown_field_is_refused_by_the_parser(tiny_model, tmp_path):
    folder = write_triton_repository(store.resolve(tiny_model), tmp_path / "repo")
    config_file = folder / "config.pbtxt"
    config_file.write_text(config_file.read_text() + "not_a_field: 1\n")
    with pytest.raises(text_format.ParseError):
        _parse(folder)
